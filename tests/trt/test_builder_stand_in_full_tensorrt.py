"""The engine builder's control flow against a stand-in ``tensorrt`` module (tests/support/fake_tensorrt.py).

These check what carafe_deploy.trt.builder asks of TensorRT and what it writes; the real TensorRT never ran here.
"""

import json
import sys

import onnx
import pytest
from support.trt_toys import carafe_model

from support import fake_tensorrt
from carafe_deploy.errors import DeployError
from carafe_deploy.trt.builder import BuildOptions, build_engine, dtype_name, parse_size
from carafe_deploy.trt.sidecar import read_sidecar


@pytest.fixture
def plugin_lib(tmp_path, monkeypatch):
    lib = tmp_path / "libcarafe_trt_plugin.so"
    lib.write_bytes(b"\x7fELF not really")
    monkeypatch.setenv("CARAFE_DEPLOY_PLUGIN", str(lib))
    return lib


def _install(monkeypatch, **kwargs):
    trt = fake_tensorrt.make(**kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def _dynamic_options(tmp_path, **kw):
    path = tmp_path / "toy.onnx"
    onnx.save(kw.pop("model", carafe_model(function=True, dynamic=True)), path)
    return BuildOptions(
        onnx_path=path,
        min_shapes={"features": (1, 4, 4, 4), "kernels": (1, 9, 8, 8)},
        opt_shapes={"features": (2, 4, 8, 8), "kernels": (2, 9, 16, 16)},
        max_shapes={"features": (4, 4, 16, 16), "kernels": (4, 9, 32, 32)},
        **{"progress": True, **kw},
    )


def test_plugin_build_end_to_end(tmp_path, monkeypatch, plugin_lib):
    trt = _install(monkeypatch)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    result = build_engine(_dynamic_options(tmp_path, workspace_bytes=1 << 30, timing_cache=cache,
                                           version_compatible=True, optimization_level=4))

    # the plugin is loaded before parsing and the parser saw no CARAFE function, so it took the plugin path
    assert trt.log[0] == ("load_library", str(plugin_lib))
    assert ("import_via_plugin", "carafe_up") in trt.log
    assert list(trt.parsed_model.functions) == []
    cfg = trt.config
    assert cfg.profiles[0].shapes == {"features": ((1, 4, 4, 4), (2, 4, 8, 8), (4, 4, 16, 16)),
                                      "kernels": ((1, 9, 8, 8), (2, 9, 16, 16), (4, 9, 32, 32))}
    assert cfg.pools == {"WORKSPACE": 1 << 30}
    assert cfg.flags == {"VERSION_COMPATIBLE"}
    assert cfg.plugins_to_serialize == [str(plugin_lib)]
    assert cfg.builder_optimization_level == 4
    assert trt.network.flags == 0  # TensorRT 11: strongly typed without asking
    assert cache.read_bytes() == b"old|timed"

    assert result.engine_path.read_bytes().startswith(b"FAKE-ENGINE")
    side = read_sidecar(result.engine_path)  # validates against the schema
    assert side["tensorrt_version"] == "11.4.0.106"
    assert side["plugin"]["used"] and side["plugin"]["serialized_in_engine"]
    assert side["graph"] == {"carafe_nodes": 1, "mmcv_converted": 0, "carafe_function": "dropped"}
    assert side["inputs"] == [{"name": "features", "dtype": "float32", "shape": [-1, 4, -1, -1]},
                              {"name": "kernels", "dtype": "float32", "shape": [-1, 9, -1, -1]}]
    assert side["profiles"][0]["features"] == {"min": [1, 4, 4, 4], "opt": [2, 4, 8, 8], "max": [4, 4, 16, 16]}
    assert side["precision"] == {"mode": "fp32", "onnx_float_types": ["float32"], "builder_flags": [],
                                 "strongly_typed": True}
    assert side["workspace_bytes"] == 1 << 30 and side["version_compatible"] is True


def test_no_plugin_parses_the_function_and_loads_nothing(tmp_path, monkeypatch):
    trt = _install(monkeypatch)
    result = build_engine(_dynamic_options(tmp_path, use_plugin=False, progress=False))
    assert trt.loaded_libraries == []
    assert ("import_via_function", "carafe_up") in trt.log
    assert result.sidecar["plugin"] == {"used": False, "library": None, "sha256": None, "serialized_in_engine": False}
    assert result.sidecar["graph"]["carafe_function"] == "kept"


def test_parser_errors_name_node_op_and_reason(tmp_path, monkeypatch):
    _install(monkeypatch, parse_errors=[(0, "carafe_up", "CARAFE", "Plugin not found", ["carafe::CARAFE"])])
    with pytest.raises(DeployError) as info:
        build_engine(_dynamic_options(tmp_path, use_plugin=False))
    msg = str(info.value)
    assert "ONNX parser rejected" in msg
    assert "node #0 'carafe_up' (op CARAFE) in local function carafe::CARAFE: Plugin not found [UNSUPPORTED_NODE]" in msg


def test_builder_failure_shows_tensorrt_errors(tmp_path, monkeypatch, plugin_lib):
    _install(monkeypatch, build_error="Internal error: no tactic for node carafe_up")
    with pytest.raises(DeployError, match=r"could not build an engine.*\n  Internal error: no tactic for node carafe_up"):
        build_engine(_dynamic_options(tmp_path))
    assert not (tmp_path / "toy.engine").exists()


def test_fp16_flag_on_tensorrt_11_is_refused(tmp_path, monkeypatch, plugin_lib):
    _install(monkeypatch)
    with pytest.raises(DeployError, match=r"strongly typed and has no FP16 builder flag; export a fp16 ONNX"):
        build_engine(_dynamic_options(tmp_path, fp16=True))


def test_fp16_flag_on_tensorrt_10(tmp_path, monkeypatch, plugin_lib):
    trt = _install(monkeypatch, version="10.13.0.35")
    result = build_engine(_dynamic_options(tmp_path, fp16=True))
    assert trt.config.flags == {"FP16"}
    assert trt.network.flags == 0  # weakly typed, so the flag can act
    assert result.sidecar["precision"]["mode"] == "fp16"
    assert result.sidecar["precision"]["builder_flags"] == ["FP16"]
    assert result.sidecar["precision"]["strongly_typed"] is False


def test_tensorrt_10_without_flags_asks_for_strong_typing(tmp_path, monkeypatch, plugin_lib):
    trt = _install(monkeypatch, version="10.13.0.35")
    build_engine(_dynamic_options(tmp_path))
    assert trt.network.flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def test_fp16_onnx_gives_an_fp16_engine(tmp_path, monkeypatch, plugin_lib):
    _install(monkeypatch)
    model = carafe_model(function=False, dynamic=True, dtype=onnx.TensorProto.FLOAT16)
    result = build_engine(_dynamic_options(tmp_path, model=model))
    assert result.sidecar["precision"]["mode"] == "fp16"
    assert result.sidecar["inputs"][0]["dtype"] == "float16"


def test_static_model_needs_no_shapes_and_progress_monitor_runs(tmp_path, monkeypatch, plugin_lib):
    trt = _install(monkeypatch)
    path = tmp_path / "static.onnx"
    onnx.save(carafe_model(function=False, hw=6), path)
    result = build_engine(BuildOptions(onnx_path=path, engine_path=tmp_path / "out" / "s.plan"))
    assert trt.config.progress_monitor is not None  # phases were reported to it by the fake builder
    assert result.engine_path == tmp_path / "out" / "s.plan"
    assert json.loads((tmp_path / "out" / "s.plan.json").read_text())["profiles"][0]["kernels"]["opt"] == [1, 9, 12, 12]


def test_size_and_dtype_helpers():
    assert parse_size("2G") == 2 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("1000") == 1000
    with pytest.raises(ValueError, match="bad size"):
        parse_size("lots")
    trt = fake_tensorrt.make()
    assert dtype_name(trt.DataType.HALF) == "float16" and dtype_name(trt.DataType.BF16) == "bfloat16"


def test_progress_monitor_tracks_nested_phases():
    from carafe_deploy.trt.builder import _make_progress_monitor

    monitor = _make_progress_monitor(fake_tensorrt.make())
    monitor.phase_start("Build", None, 2)
    monitor.phase_start("Tactics", "Build", 5)
    assert monitor.step_complete("Tactics", 2) is True  # never asks TensorRT to cancel
    tasks = {t.description.strip(): t for t in monitor.progress.tasks}
    assert tasks["Tactics"].completed == 3 and tasks["Tactics"].total == 5
    assert tasks["Tactics"].description == "  Tactics"  # indented under its parent
    monitor.phase_finish("Tactics")
    assert [t.description for t in monitor.progress.tasks] == ["Build"]


def test_fp16_weights_with_float32_io_count_as_fp16(tmp_path, monkeypatch, plugin_lib):
    import numpy as np
    from onnx import numpy_helper

    _install(monkeypatch)
    model = carafe_model(function=False, dynamic=True)
    # an fp16 initializer stands in for the weights of an fp16 export that keeps float32 inputs/outputs
    model.graph.initializer.append(numpy_helper.from_array(np.ones(1, np.float16), "w16"))
    result = build_engine(_dynamic_options(tmp_path, model=model))
    assert result.sidecar["precision"]["mode"] == "fp16"
    assert result.sidecar["precision"]["onnx_float_types"] == ["float16", "float32"]


def test_plugin_library_that_tensorrt_cannot_load(tmp_path, monkeypatch, plugin_lib):
    trt = _install(monkeypatch)

    def refuse(path):
        raise RuntimeError(f"dlopen failed: {path}: invalid ELF header")

    trt.get_plugin_registry().load_library = refuse
    with pytest.raises(DeployError, match=r"could not load the plugin library .*invalid ELF header"):
        build_engine(_dynamic_options(tmp_path))
