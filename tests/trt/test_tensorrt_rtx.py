"""The engine builder, its refusals, the sidecar and the runner's runtime checks against the real TensorRT-RTX
(``pip install -e ".[test]"`` installs it; CI does). Its ONNX parser and builder run without a GPU; engines cannot be
deserialized or run here (no GPU), so running stays with tests/trt/test_runner_stand_in.py and
tests/trt/test_engines_on_a_gpu.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.onnx_graphs import single_node_model

from carafe_deploy.errors import DeployError, MissingDependencyError
from carafe_deploy.trt import tensorrt_available
from carafe_deploy.trt.builder import BuildOptions, _make_progress_monitor, build_engine, dtype_name
from carafe_deploy.trt.sidecar import read_sidecar, sha256_file

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(not tensorrt_available("tensorrt-rtx"),
                       reason="TensorRT-RTX is not installed (pip install -e '.[test]' installs it)"),
]
RTX = "tensorrt-rtx"


@pytest.fixture(scope="module")
def trt():
    from carafe_deploy.trt.runtime import import_tensorrt

    return import_tensorrt(RTX)


def _save(model, path):
    onnx.save(model, str(path))
    return path


def _build(path, **kw):
    return build_engine(BuildOptions(onnx_path=path, backend=RTX, progress=kw.pop("progress", False), **kw))


def _static_carafe(tmp_path, mode="up", k=3, g=1, s=2, elem=TensorProto.FLOAT, function=True, name="m"):
    ho = 8 * s if mode == "up" else -(-8 // s)
    model = single_node_model(k, g, s, mode, elem_type=elem, function=function,
                              dims=([1, 8, 8, 8], [1, g * k * k, ho, ho]))
    return _save(model, tmp_path / f"{name}.onnx")


DYN_PROFILE = dict(min_shapes={"features": (1, 8, 2, 2), "kernels": (1, 18, 4, 4)},
                   opt_shapes={"features": (2, 8, 8, 8), "kernels": (2, 18, 16, 16)},
                   max_shapes={"features": (4, 8, 16, 16), "kernels": (4, 18, 32, 32)})


def test_unrolled_engine_and_its_sidecar(tmp_path):
    path = _static_carafe(tmp_path)
    result = _build(path, use_plugin=False)
    engine = result.engine_path
    assert engine == tmp_path / "m.engine"
    assert engine.read_bytes()[:4] == b"vtrt"  # TensorRT-RTX's engine magic
    side = read_sidecar(engine)  # validates against the schema
    assert side == result.sidecar
    assert side["runtime"] == {"name": "tensorrt-rtx", "version": "1.7.1.116"}
    assert side["engine"] == {"file": "m.engine", "bytes": engine.stat().st_size, "sha256": sha256_file(engine)}
    assert side["onnx"]["sha256"] == sha256_file(path)
    assert side["graph"] == {"carafe_nodes": 1, "mmcv_converted": 0, "carafe_form": "unrolled"}
    assert side["plugin"] == {"used": False, "library": None, "sha256": None, "serialized_in_engine": False}
    # what the parsed INetwork says, not the ONNX file
    assert side["inputs"] == [{"name": "features", "dtype": "float32", "shape": [1, 8, 8, 8]},
                              {"name": "kernels", "dtype": "float32", "shape": [1, 9, 16, 16]}]
    assert side["outputs"] == [{"name": "output", "dtype": "float32", "shape": [1, 8, 16, 16]}]
    assert side["precision"] == {"mode": "fp32", "onnx_float_types": ["float32"], "builder_flags": [],
                                 "strongly_typed": True}
    assert side["gpu"] is None and side["version_compatible"] is False
    assert result.warnings == []  # in particular no "A node named ... already exists"


@pytest.mark.parametrize("mode", ["up", "down"])
def test_dynamic_profile_reaches_the_network(tmp_path, mode):
    model = single_node_model(3, 2, 2, mode, function=False, dims=(["N", 8, "H", "W"], ["N", 18, "Ho", "Wo"]))
    path = _save(model, tmp_path / "dyn.onnx")
    profile = DYN_PROFILE if mode == "up" else {
        k: {"features": v["features"], "kernels": (v["kernels"][0], 18, *[-(-d // 2) for d in v["features"][2:]])}
        for k, v in DYN_PROFILE.items()}
    result = _build(path, use_plugin=False, **profile)
    side = result.sidecar
    assert side["inputs"][0]["shape"] == [-1, 8, -1, -1]  # the network's own dynamic dims
    assert len(side["outputs"][0]["shape"]) == 4 and side["outputs"][0]["shape"][2:] == [-1, -1]
    assert side["profiles"][0]["features"] == {"min": [1, 8, 2, 2], "opt": [2, 8, 8, 8], "max": [4, 8, 16, 16]}
    assert side["profiles"][0]["kernels"]["max"] == list(profile["max_shapes"]["kernels"])


def test_float16_graph_builds_in_float16(tmp_path):
    result = _build(_static_carafe(tmp_path, elem=TensorProto.FLOAT16), use_plugin=False)
    side = result.sidecar
    assert side["precision"]["mode"] == "fp16" and side["precision"]["strongly_typed"] is True
    assert {t["dtype"] for t in side["inputs"] + side["outputs"]} == {"float16"}


def test_fp16_weights_with_float32_io_count_as_fp16(tmp_path):
    model = single_node_model(3, 1, 2, "up", function=False, dims=([1, 8, 8, 8], [1, 9, 16, 16]))
    # an fp16 initializer stands in for the weights of an fp16 export that keeps float32 inputs/outputs
    model.graph.initializer.append(numpy_helper.from_array(np.ones(1, np.float16), "w16"))
    result = _build(_save(model, tmp_path / "w16.onnx"), use_plugin=False)
    assert result.sidecar["precision"]["mode"] == "fp16"
    assert result.sidecar["precision"]["onnx_float_types"] == ["float16", "float32"]


def test_parser_errors_name_node_op_and_local_function(tmp_path):
    bar = helper.make_node("Bar", ["x"], ["y"], name="bar", domain="foo")
    io = ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("foo", 1), helper.make_opsetid("mine", 1)]
    model = helper.make_model(helper.make_graph([bar], "g", *io), opset_imports=opsets)
    with pytest.raises(DeployError) as info:
        _build(_save(model, tmp_path / "bar.onnx"), use_plugin=False)
    assert str(info.value).splitlines() == [
        f"TensorRT-RTX 1.7.1.116's ONNX parser rejected {tmp_path / 'bar.onnx'}:",
        "  node #0 'bar' (op Bar): creator && \"Plugin not found, are the plugin name, version, and namespace "
        "correct?\" [INVALID_NODE]"]

    fn = helper.make_function("mine", "Helper", ["x"], ["y"], [helper.make_node("Bar", ["x"], ["y"], domain="foo")],
                              opsets[:2])
    call = helper.make_node("Helper", ["x"], ["y"], name="helper_call", domain="mine")
    model = helper.make_model(helper.make_graph([call], "g", *io), opset_imports=opsets, functions=[fn])
    with pytest.raises(DeployError, match=r"node #0 \(op Bar\) in local function helper_call \(Helper\): creator"):
        _build(_save(model, tmp_path / "fn.onnx"), use_plugin=False)


def test_the_decomposed_export_builds(tmp_path):
    """The generic function (a Loop over the source rows, since the issue 12 rewrite) builds inlined too."""
    import onnx.inliner

    inlined = onnx.inliner.inline_local_functions(onnx.load(str(_static_carafe(tmp_path))))
    assert any(n.op_type == "Loop" for n in inlined.graph.node)
    result = _build(_save(inlined, tmp_path / "decomposed.onnx"), use_plugin=False)
    assert result.engine_path.stat().st_size > 0 and result.sidecar["graph"]["carafe_form"] == "none"


def _loop_slicing_at_the_iteration_number(path):
    """The shape of the first function body (a Loop over the k² taps): a Slice whose start is the iteration number."""
    body = helper.make_graph(
        [helper.make_node("Unsqueeze", ["i", "axis"], ["start"]), helper.make_node("Add", ["start", "one"], ["end"]),
         helper.make_node("Slice", ["x", "start", "end", "axis"], ["row"]),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("row", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(np.array([0], np.int64), "axis"), numpy_helper.from_array(np.array([1], np.int64), "one")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "c"], ["rows"], body=body, name="rows")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [4, 1, 8])],
        [numpy_helper.from_array(np.array(4, np.int64), "n"), numpy_helper.from_array(np.array(True), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return _save(model, path)


def test_builder_failure_shows_tensorrt_errors_and_why(tmp_path):
    """A failed build shows TensorRT's own error, then the known cause: here the Loop of an earlier decomposed export."""
    path = _loop_slicing_at_the_iteration_number(tmp_path / "loop.onnx")
    with pytest.raises(DeployError) as info:
        _build(path, use_plugin=False)
    lines = str(info.value).splitlines()
    assert lines[0] == f"TensorRT-RTX 1.7.1.116 could not build an engine from {path}:"
    assert "makeScopeNodesContiguous" in lines[1]
    assert "re-export it" in lines[2]
    assert not (tmp_path / "loop.engine").exists()


def test_timing_cache_is_refused(tmp_path):
    """TensorRT-RTX's timing-cache calls are no-ops (its DeprecationWarning says so since 1.2): a cache file would be
    an empty promise."""
    cache = tmp_path / "timing.cache"
    with pytest.raises(DeployError, match=r"--timing-cache: TensorRT-RTX 1.7.1.116 has no timing cache"):
        _build(_static_carafe(tmp_path), use_plugin=False, timing_cache=cache)
    assert not cache.exists()


def test_workspace_opt_level_and_the_progress_monitor_tensorrt_calls(tmp_path, monkeypatch):
    from carafe_deploy.trt import builder

    real, phases = builder._make_progress_monitor, []

    def recording(trt):
        class Recording(type(real(trt))):
            def phase_start(self, phase_name, parent_phase, num_steps):
                phases.append(phase_name)
                super().phase_start(phase_name, parent_phase, num_steps)

        return Recording()

    monkeypatch.setattr(builder, "_make_progress_monitor", recording)
    result = _build(_static_carafe(tmp_path), use_plugin=False, workspace_bytes=64 << 20, optimization_level=1,
                    progress=True)
    assert result.sidecar["workspace_bytes"] == 64 << 20
    assert phases, "TensorRT-RTX reported no build phase to the progress monitor"


def test_progress_monitor_tracks_nested_phases(trt):
    monitor = _make_progress_monitor(trt)  # a subclass of the real trt.IProgressMonitor
    assert isinstance(monitor, trt.IProgressMonitor)
    monitor.phase_start("Build", None, 2)
    monitor.phase_start("Tactics", "Build", 5)
    assert monitor.step_complete("Tactics", 2) is True  # never asks TensorRT to cancel
    tasks = {t.description.strip(): t for t in monitor.progress.tasks}
    assert tasks["Tactics"].completed == 3 and tasks["Tactics"].total == 5
    assert tasks["Tactics"].description == "  Tactics"  # indented under its parent
    monitor.phase_finish("Tactics")
    assert [t.description for t in monitor.progress.tasks] == ["Build"]


def test_dtype_names_of_the_real_enum(trt):
    assert dtype_name(trt.DataType.HALF) == "float16" and dtype_name(trt.DataType.BF16) == "bfloat16"
    assert dtype_name(trt.DataType.FLOAT) == "float32" and dtype_name(trt.DataType.INT64) == "int64"


@pytest.mark.parametrize("flag", ["fp16", "bf16"])
def test_precision_flags_are_refused(tmp_path, flag):
    with pytest.raises(DeployError, match=rf"--{flag}: TensorRT-RTX 1.7.1.116 is strongly typed and has no "
                                          rf"{flag.upper()} builder flag; export a {flag} ONNX instead"):
        _build(_static_carafe(tmp_path), use_plugin=False, **{flag: True})


def test_version_compatible_is_refused_before_parsing(tmp_path):
    with pytest.raises(DeployError, match=r"--version-compatible: TensorRT-RTX 1.7.1.116 has no lean runtime"):
        _build(_static_carafe(tmp_path), use_plugin=False, version_compatible=True)
    assert not (tmp_path / "m.engine").exists()


def _detector_ops(with_roi_align: bool) -> onnx.ModelProto:
    """The two detector ops TensorRT-RTX cannot build here, as the detectors' exporter writes them."""
    nodes = [helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou"], ["keep"], name="nms")]
    inputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 100, 4]),
              helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 100])]
    outputs = [helper.make_tensor_value_info("keep", TensorProto.INT64, [None, 3])]
    inits = [numpy_helper.from_array(np.array([10], np.int64), "max_out"),
             numpy_helper.from_array(np.array([0.5], np.float32), "iou")]
    if with_roi_align:
        nodes += [helper.make_node("RoiAlign", ["feat", "rois", "idx"], ["pooled"], name="roi", output_height=7,
                                   output_width=7, sampling_ratio=0, spatial_scale=0.25,
                                   coordinate_transformation_mode="half_pixel"),
                  helper.make_node("RoiAlign", ["feat", "rois", "idx"], ["pooled2"], name="roi2")]
        inputs += [helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, 8, 32, 32]),
                   helper.make_tensor_value_info("rois", TensorProto.FLOAT, [10, 4])]
        inits.append(numpy_helper.from_array(np.zeros(10, np.int64), "idx"))
        outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [10, 8, 7, 7]) for n in ("pooled", "pooled2")]
    graph = helper.make_graph(nodes, "det", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_detector_ops_are_refused_before_parsing_with_both_reasons(tmp_path, monkeypatch):
    from carafe_deploy.trt import rtx

    monkeypatch.setattr(rtx, "cuda_device_count", lambda: 0)  # as on this machine: no driver
    with pytest.raises(MissingDependencyError) as info:
        _build(_save(_detector_ops(True), tmp_path / "det.onnx"), use_plugin=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == (
        "TensorRT-RTX 1.7.1.116 cannot build this graph: NonMaxSuppression (1 node) has no TensorRT-RTX "
        "implementation (github.com/NVIDIA/TensorRT-RTX/issues/5); RoiAlign (2 nodes) needs a CUDA device when the "
        "graph is parsed (TensorRT-RTX's ROIAlign_TRT plugin reads the GPU's properties when it is created) and this "
        "machine has none; build it with full TensorRT (--backend tensorrt)")
    # with a GPU only NMS is in the way
    monkeypatch.setattr(rtx, "cuda_device_count", lambda: 1)
    with pytest.raises(MissingDependencyError, match=r"NonMaxSuppression \(1 node\) has no TensorRT-RTX "
                                                     r"implementation[^;]*; build it with full TensorRT"):
        _build(tmp_path / "det.onnx", use_plugin=False)


def test_nms_fails_the_build_without_the_refusal(tmp_path, monkeypatch):
    """The refusal table is measured, not assumed: without it TensorRT-RTX fails on NMS at build time."""
    from carafe_deploy.trt import rtx

    monkeypatch.setattr(rtx, "UNBUILDABLE_OPS", {})
    with pytest.raises(DeployError, match=r"could not build an engine from .*nms.onnx:\n.* nms_0 has no runners that "
                                          r"implement it"):
        _build(_save(_detector_ops(False), tmp_path / "nms.onnx"), use_plugin=False)


def test_roi_align_without_a_gpu_fails_to_parse_without_the_refusal(tmp_path, monkeypatch):
    from carafe_deploy.trt import rtx

    if rtx.cuda_device_count():
        pytest.skip("this machine has a CUDA device: RoiAlign may parse")
    model = _detector_ops(True)
    del model.graph.node[0]
    del model.graph.output[0]
    path = _save(model, tmp_path / "roi.onnx")
    with pytest.raises(MissingDependencyError, match=r"RoiAlign \(2 nodes\) needs a CUDA device"):
        _build(path, use_plugin=False)
    monkeypatch.setattr(rtx, "_NEEDS_A_GPU_TO_PARSE", {})
    with pytest.raises(DeployError, match=r"node #0 'roi' \(op RoiAlign\): .*ROIAlign plugin was not found in the "
                                          r"plugin registry"):
        _build(path, use_plugin=False)


def _engine(tmp_path):
    return _build(_static_carafe(tmp_path), use_plugin=False).engine_path


def test_runner_refuses_an_engine_of_the_other_runtime(tmp_path):
    from carafe_deploy.trt.runner import EngineRunner, engine_runtime

    engine = _engine(tmp_path)
    with pytest.raises(DeployError, match=r"m.engine was built by TensorRT-RTX \(its sidecar says tensorrt-rtx "
                                          r"1.7.1.116\); an engine runs only on the runtime that built it, not on "
                                          r"TensorRT: run it with --backend tensorrt-rtx, or rebuild it with "
                                          r"--backend tensorrt"):
        EngineRunner(engine, backend="tensorrt")
    # without a sidecar the file's magic picks the default runtime (it refuses nothing: full TensorRT's is unknown)
    (tmp_path / "m.engine.json").unlink()
    assert engine_runtime(engine) == ("tensorrt-rtx", "the file starts with 'vtrt'")
    other = tmp_path / "other.engine"
    other.write_bytes(b"ftrt" + engine.read_bytes()[4:])
    assert engine_runtime(other) == (None, "")


def test_runner_asks_for_the_runtime_the_sidecar_names(tmp_path):
    from carafe_deploy.trt.runner import EngineRunner

    engine = _engine(tmp_path)
    side = json.loads((tmp_path / "m.engine.json").read_text())
    side["runtime"] = {"name": "tensorrt", "version": "10.13.0.35"}
    (tmp_path / "m.engine.json").write_text(json.dumps(side))
    if tensorrt_available("tensorrt"):
        pytest.skip("full TensorRT is installed here")
    with pytest.raises(MissingDependencyError, match=r"m.engine was built by TensorRT \(its sidecar says tensorrt "
                                                     r"10.13.0.35\); TensorRT is not installed: pip install tensorrt"):
        EngineRunner(engine)
    with pytest.raises(DeployError, match=r"built by TensorRT \(its sidecar says tensorrt 10.13.0.35\); an engine "
                                          r"runs only on the runtime that built it, not on TensorRT-RTX"):
        EngineRunner(engine, backend="tensorrt-rtx")


def test_running_without_a_gpu_is_a_missing_dependency(tmp_path):
    from carafe_deploy.trt.availability import run_unavailable
    from carafe_deploy.trt.runner import EngineRunner

    if run_unavailable() is None:
        pytest.skip("this machine has CUDA buffers: tests/trt/test_engines_on_a_gpu.py runs engines")
    from carafe_deploy.trt.runtime import cuda_device_count

    with pytest.raises(MissingDependencyError) as info:
        EngineRunner(_engine(tmp_path))
    if cuda_device_count():  # a GPU, but no CUDA torch and no pycuda to reach it
        assert "torch has no CUDA device" in str(info.value)
    else:  # no GPU at all: said so, with no advice to install pycuda (which would not help)
        assert "no CUDA device here (the NVIDIA driver sees no GPU)" in str(info.value)
        assert "pycuda" not in str(info.value)


def _in_child(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter: LD_LIBRARY_PATH is read when a process starts, and an abort must not
    take pytest with it."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)


def _link_is_installed(trt) -> bool:
    from carafe_deploy.trt import rtx

    folder = rtx._parser_folder(trt)
    return folder is not None and (folder / rtx.CORE_LIBRARY).exists()


def test_plugin_mode_without_the_core_library_link_is_refused_not_aborted(tmp_path, trt):
    """The parser would abort the process (std::terminate) on a plugin node; the builder refuses first."""
    if _link_is_installed(trt):
        pytest.skip("this TensorRT-RTX install has the libtensorrt_rtx.so link")
    lib = tmp_path / "libcarafe_trt_plugin.so"
    lib.write_bytes(b"\x7fELF never loaded: the refusal comes first")
    onnx.save(onnx.load(str(_static_carafe(tmp_path, function=False))), str(tmp_path / "p.onnx"))
    proc = _in_child(f"""
        from carafe_deploy.cli import main
        raise SystemExit(main(["build", {str(tmp_path / "p.onnx")!r}, "--plugin", {str(lib)!r}, "--backend",
                               "tensorrt-rtx", "--no-progress"]))
        """, {"LD_LIBRARY_PATH": ""})
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("carafe-deploy build: error: TensorRT-RTX 1.7.1.116 cannot use the CARAFE plugin here: "
                           "its ONNX parser opens libtensorrt_rtx.so")
    assert "fix: ln -s libtensorrt_rtx.so.1 " in last and last.endswith("or build with --no-plugin")
    assert not (tmp_path / "p.engine").exists()


def test_plugin_check_follows_the_loader(tmp_path, trt):
    """With a libtensorrt_rtx.so link on LD_LIBRARY_PATH from process start the check passes; set later, it
    cannot (the loader has read it already)."""
    from carafe_deploy.trt import rtx

    core = rtx._parser_folder(trt) / "libtensorrt_rtx.so.1"
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "libtensorrt_rtx.so").symlink_to(core)
    code = """
        import os, sys
        if len(sys.argv) > 1: os.environ["LD_LIBRARY_PATH"] = sys.argv[1]
        from carafe_deploy.trt import rtx
        from carafe_deploy.trt.runtime import import_tensorrt
        print(rtx.plugin_unusable(import_tensorrt("tensorrt-rtx")))
        """
    at_start = _in_child(code, {"LD_LIBRARY_PATH": str(shim)})
    assert at_start.returncode == 0 and at_start.stdout.strip() == "None", at_start.stderr
    if _link_is_installed(trt):
        return
    late = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(shim)], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}, timeout=300)
    assert late.stdout.startswith("TensorRT-RTX 1.7.1.116 cannot use the CARAFE plugin here"), late.stderr


def test_plugin_library_the_registry_refuses(tmp_path, trt):
    from carafe_deploy.trt.plugin import load_plugin_library
    from carafe_deploy.trt.runtime import make_logger

    bad = tmp_path / "libcarafe_trt_plugin.so"
    bad.write_bytes(b"\x7fELF not a library")
    with pytest.raises(DeployError, match=rf"TensorRT-RTX 1.7.1.116 could not load the plugin library {bad}"):
        load_plugin_library(trt, bad, make_logger(trt, False))


def test_plugin_library_is_loaded_once_per_process(trt):
    """TensorRT-RTX's registry returns None for a second load_library of the same file; a process that builds two
    plugin engines (or builds, then runs one) must not take that for a failure."""
    from carafe_deploy.trt.plugin import load_plugin_library, plugin_library
    from carafe_deploy.trt.runtime import make_logger

    lib = plugin_library(required=False)
    if lib is None:
        pytest.skip("libcarafe_trt_plugin.so is not built here (CI has no TensorRT headers)")
    for _ in range(2):
        load_plugin_library(trt, lib, make_logger(trt, False))
    assert {"CARAFE", "MMCVCARAFE"} <= {c.name for c in trt.get_plugin_registry().all_creators}
