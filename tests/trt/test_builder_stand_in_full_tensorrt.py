"""What the engine builder asks of *full* TensorRT (10 and 11), against a stand-in ``tensorrt`` module
(tests/support/fake_tensorrt.py): full TensorRT cannot be installed here, and these paths are the ones TensorRT-RTX
does not have (TensorRT 10's FP16/BF16 flags and weak typing, version-compatible engines with a serialized plugin,
timing caches) or cannot reach here (a plugin node parsed through a plugin library). Everything TensorRT-RTX covers
(parsing, errors, profiles, dynamic shapes, precision, sidecar, network inspection) is tested for real in
tests/trt/test_tensorrt_rtx.py. Nothing here says that full TensorRT works: it says what the builder asks of it.
"""

import sys

import onnx
import pytest
from support import fake_tensorrt
from support.trt_toys import carafe_model

from carafe_deploy.trt.builder import BuildOptions, build_engine
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
        **{"progress": True, "backend": "tensorrt", **kw},
    )


def test_stand_in_full_tensorrt_plugin_build_end_to_end(tmp_path, monkeypatch, plugin_lib):
    trt = _install(monkeypatch)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    result = build_engine(_dynamic_options(tmp_path, workspace_bytes=1 << 30, timing_cache=cache,
                                           version_compatible=True, optimization_level=4))

    # TensorRT's own plugins (ROIAlign_TRT for RoiAlign) and the CARAFE plugin are registered before parsing, and
    # the parser saw no CARAFE function, so it took the plugin path
    assert trt.log[:2] == [("init_libnvinfer_plugins", ""), ("load_library", str(plugin_lib))]
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
    assert trt.config.progress_monitor is not None

    side = read_sidecar(result.engine_path)  # validates against the schema
    assert side["runtime"] == {"name": "tensorrt", "version": "11.4.0.106"}
    assert side["plugin"]["used"] and side["plugin"]["serialized_in_engine"]
    assert side["graph"] == {"carafe_nodes": 1, "mmcv_converted": 0, "carafe_form": "plugin"}
    assert side["workspace_bytes"] == 1 << 30 and side["version_compatible"] is True


def test_stand_in_tensorrt_11_refuses_precision_flags(tmp_path, monkeypatch, plugin_lib):
    from carafe_deploy.errors import DeployError

    _install(monkeypatch)
    with pytest.raises(DeployError, match=r"--fp16: TensorRT 11.4.0.106 is strongly typed and has no FP16 builder"):
        build_engine(_dynamic_options(tmp_path, fp16=True))


def test_stand_in_tensorrt_10_fp16_flag(tmp_path, monkeypatch, plugin_lib):
    trt = _install(monkeypatch, version="10.13.0.35")
    result = build_engine(_dynamic_options(tmp_path, fp16=True))
    assert trt.config.flags == {"FP16"}
    assert trt.network.flags == 0  # weakly typed, so the flag can act
    assert result.sidecar["precision"]["mode"] == "fp16"
    assert result.sidecar["precision"]["builder_flags"] == ["FP16"]
    assert result.sidecar["precision"]["strongly_typed"] is False


def test_stand_in_tensorrt_10_without_flags_asks_for_strong_typing(tmp_path, monkeypatch, plugin_lib):
    trt = _install(monkeypatch, version="10.13.0.35")
    build_engine(_dynamic_options(tmp_path))
    assert trt.network.flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def test_stand_in_full_tensorrt_builds_the_unrolled_form_without_the_plugin(tmp_path, monkeypatch):
    trt = _install(monkeypatch)
    result = build_engine(_dynamic_options(tmp_path, use_plugin=False, progress=False))
    assert trt.loaded_libraries == []
    assert not any(n.domain for n in trt.parsed_model.graph.node)  # standard ops only reach the parser
    assert result.sidecar["graph"]["carafe_form"] == "unrolled"


def test_stand_in_plugin_library_that_tensorrt_cannot_load(tmp_path, monkeypatch, plugin_lib):
    from carafe_deploy.errors import DeployError

    trt = _install(monkeypatch)

    def refuse(path):
        raise RuntimeError(f"dlopen failed: {path}: invalid ELF header")

    trt.get_plugin_registry().load_library = refuse
    with pytest.raises(DeployError, match=r"TensorRT 11.4.0.106 could not load the plugin library .*invalid ELF"):
        build_engine(_dynamic_options(tmp_path))
