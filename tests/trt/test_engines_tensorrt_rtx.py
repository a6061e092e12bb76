"""Every engine that can be built on this machine, built by the real TensorRT-RTX (CI does this from a clean clone):
CARAFE up and down from the ``plugin`` and ``portable`` exports, fp32 and fp16 graphs, unrolled; the same with the
plugin where its library is built (not in CI: no TensorRT headers there); TinyCarafeNet; and the detectors as far
as TensorRT-RTX allows (their feature network; the whole graph is refused before parsing, see
tests/tasks/test_detection.py). Both UperNet segmenters are built by tests/tasks/test_segmentation.py, from the
export that test checks. What each engine is built from is first run in ONNX Runtime against PyTorch in
float64. The engines themselves cannot run here (no GPU). docs/TENSORRT.md lists the sizes and build times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import torch

from carafe_deploy.trt import tensorrt_available

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(not tensorrt_available("tensorrt-rtx"),
                       reason="TensorRT-RTX is not installed (pip install -e '.[test]' installs it)"),
]
RTX = "tensorrt-rtx"
C = 16
PROFILE = {"min_shapes": {"x": (1, C, 4, 4)}, "opt_shapes": {"x": (1, C, 8, 8)}, "max_shapes": {"x": (2, C, 32, 32)}}


@pytest.fixture(scope="module")
def modules():
    from carafe_deploy.nn import CARAFEDownsample, CARAFEUpsample

    torch.manual_seed(0)
    return {"up": CARAFEUpsample(C).eval(), "down": CARAFEDownsample(C).eval()}


def _export(module, path, mode: str, fp16: bool):
    from carafe_deploy.onnx import export
    from carafe_deploy.onnx.files import save_model

    proto = export(module, (torch.randn(1, C, 8, 8),), None, mode=mode, input_names=["x"], output_names=["y"],
                   dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}}, fp16=fp16)
    return save_model(proto, path)


def _float64(module, x: np.ndarray) -> np.ndarray:
    import copy

    with torch.no_grad():
        return copy.deepcopy(module).double()(torch.from_numpy(x).double()).numpy()


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("form", ["plugin", "portable"])
@pytest.mark.parametrize("mode", ["up", "down"])
def test_unrolled_op_engines(modules, tmp_path, mode, form, fp16):
    from carafe_deploy.trt.builder import BuildOptions, build_engine, plan_build

    path = _export(modules[mode], tmp_path / f"{mode}_{form}.onnx", form, fp16)
    options = BuildOptions(onnx_path=path, use_plugin=False, backend=RTX, progress=False, **PROFILE)
    plan = plan_build(options)
    # what TensorRT is given, run in ONNX Runtime, against the module in float64 at two sizes of the dynamic graph
    session = ort.InferenceSession(plan.prepared.model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for shape in ((1, C, 8, 8), (2, C, 7, 13)):
        x = rng.standard_normal(shape).astype(np.float32)
        want = _float64(modules[mode], x)
        got = session.run(None, {"x": x})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() / np.abs(want).max() <= (1e-2 if fp16 else 1e-5), shape
    result = build_engine(options, plan)
    side = result.sidecar
    assert result.engine_path.read_bytes()[:4] == b"vtrt"
    assert side["runtime"]["name"] == RTX and side["graph"]["carafe_form"] == "unrolled"
    assert side["precision"]["mode"] == ("fp16" if fp16 else "fp32")
    assert side["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, C, -1, -1]}]  # fp16 keeps fp32 I/O
    assert not [w for w in result.warnings if "already exists" in w]


def _plugin_or_skip():
    from carafe_deploy.trt.plugin import plugin_library

    lib = plugin_library(required=False)
    if lib is None:
        pytest.skip("libcarafe_trt_plugin.so is not built here (it needs the TensorRT headers, which CI does not "
                    "have): cmake -S . -B build/trt -DTensorRT_INCLUDE_DIR=<TensorRT 11 include>")
    return lib


def _link_folder(tmp_path):
    """A folder with the libtensorrt_rtx.so link the parser needs for plugin nodes (plugins/tensorrt/README.md)."""
    from carafe_deploy.trt import rtx
    from carafe_deploy.trt.runtime import import_tensorrt

    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / rtx.CORE_LIBRARY).symlink_to(rtx._parser_folder(import_tensorrt(RTX)) / f"{rtx.CORE_LIBRARY}.1")
    return shim


def test_plugin_engines(modules, tmp_path):
    """The CARAFE plugin (built against the TensorRT 11.1 headers) in TensorRT-RTX engines: both modes, fp32 and fp16,
    dynamic. In a child process that starts with the libtensorrt_rtx.so link on LD_LIBRARY_PATH."""
    lib = _plugin_or_skip()
    paths = []
    for mode in ("up", "down"):
        for fp16 in (False, True):
            paths.append(_export(modules[mode], tmp_path / f"{mode}{'_fp16' if fp16 else ''}.onnx", "plugin", fp16))
    code = f"""
        import json, sys
        from carafe_deploy.trt.builder import BuildOptions, build_engine
        out = []
        for path in {[str(p) for p in paths]!r}:
            r = build_engine(BuildOptions(onnx_path=path, plugin_path={str(lib)!r}, backend="tensorrt-rtx",
                                          progress=False, **{PROFILE!r}))
            out.append(r.sidecar)
        print(json.dumps(out))
        """
    env = {**os.environ, "LD_LIBRARY_PATH": str(_link_folder(tmp_path))}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sidecars = json.loads(proc.stdout.strip().splitlines()[-1])
    for path, side in zip(paths, sidecars):
        assert side["graph"]["carafe_form"] == "plugin" and side["plugin"]["used"], path
        assert side["precision"]["mode"] == ("fp16" if "fp16" in path.name else "fp32")
        engine = path.with_suffix(".engine").read_bytes()
        assert engine[:4] == b"vtrt" and b"CARAFE" in engine  # the plugin's creator name is serialized with it


def _export_and_build(tmp_path, model: str, *extra):
    from carafe_deploy.cli import main

    report = tmp_path / "report.json"
    argv = ["export", "--model", model, "-o", str(tmp_path / f"{model}.onnx"), "--save-engine",
            str(tmp_path / f"{model}.engine"), "--no-plugin", "--backend", RTX, "--save-report", str(report), *extra]
    assert main(argv) == 0
    return json.loads(report.read_text())


def test_tiny_carafe_net(tmp_path):
    data = _export_and_build(tmp_path, "tiny_carafe_net")
    assert data["engine"]["runtime"] == {"name": RTX, "version": "1.7.1.116"}
    assert data["engine"]["carafe_form"] == "unrolled"
    side = json.loads((tmp_path / "tiny_carafe_net.engine.json").read_text())
    assert side["graph"]["carafe_nodes"] == 2 and side["inputs"][0]["shape"] == [-1, 3, -1, -1]
    checks = {c["backend"]: c for c in data["checks"]}
    assert checks["onnxruntime"]["status"] == "passed"
    assert checks["tensorrt"]["status"] == "skipped"  # no GPU to run it on: said so, not passed


def test_export_save_engine_without_the_plugin_library_builds_unrolled(tmp_path, monkeypatch):
    """The one engine choice: `export --save-engine` with no plugin library found builds the unrolled form (it used
    to skip the engine), and the report says why."""
    from carafe_deploy.cli import main
    from carafe_deploy.trt import plugin

    monkeypatch.delenv(plugin.ENV_VAR, raising=False)
    monkeypatch.setattr(plugin, "_candidates", lambda: [tmp_path / "nowhere.so"])
    report = tmp_path / "report.json"
    assert main(["export", "--model", "tiny_carafe_net", "-o", str(tmp_path / "tiny.onnx"), "--save-engine",
                 str(tmp_path / "tiny.engine"), "--backend", RTX, "--save-report", str(report)]) == 0
    engine = json.loads(report.read_text())["engine"]
    assert engine["carafe_form"] == "unrolled" and "plugin library libcarafe_trt_plugin.so is not built" in engine["note"]
    assert (tmp_path / "tiny.engine").read_bytes()[:4] == b"vtrt"


def test_detector_feature_network(tmp_path):
    """Backbone + FPN_CARAFE (the detectors' four CARAFE ops): the part of Faster/Mask R-CNN that TensorRT-RTX can
    build; RPN and RoI heads need NMS (refused, tests/tasks/test_detection.py)."""
    from carafe_deploy import models
    from carafe_deploy.models.detectors import TINY, FeatureNetwork
    from carafe_deploy.onnx import export
    from carafe_deploy.onnx.files import save_model
    from carafe_deploy.trt.builder import BuildOptions, build_engine

    features = FeatureNetwork(models.build("faster_rcnn_r50_fpn_carafe", **TINY)).eval()
    image = torch.rand(1, 3, 320, 320) * 255
    path = save_model(export(features, (image,), None, mode="plugin", input_names=["image"],
                             output_names=[f"p{i}" for i in range(2, 7)]), tmp_path / "features.onnx")
    result = build_engine(BuildOptions(onnx_path=path, use_plugin=False, backend=RTX, progress=False))
    side = result.sidecar
    assert side["graph"]["carafe_nodes"] == 4 and side["graph"]["carafe_form"] == "unrolled"
    assert [o["shape"] for o in side["outputs"]] == [[1, 32, 80 // 2 ** i, 80 // 2 ** i] for i in range(5)]


def test_no_plugin_build_raises_an_old_opset_as_convert_does(tmp_path, capsys):
    """An opset-11 plugin-form file (as mmdeploy and old TorchScript exports write them) builds without the plugin:
    the opset is raised to what the unrolled form needs (13), and a note says so."""
    from support.onnx_graphs import single_node_model

    from carafe_deploy.cli import main
    from carafe_deploy.onnx.files import save_model

    path = save_model(single_node_model(5, 1, 2, "up", opset=11, function=False,
                                        dims=([1, C, 8, 8], [1, 25, 16, 16])), tmp_path / "opset11.onnx")
    engine = tmp_path / "opset11.engine"
    assert main(["build", str(path), "--no-plugin", "--backend", RTX, "-o", str(engine), "--no-progress"]) == 0
    assert engine.read_bytes()[:4] == b"vtrt"
    out = capsys.readouterr()
    assert "ONNX opset 11 -> 13" in out.out + out.err


def test_whole_detector_engines(tmp_path):
    """Faster and Mask R-CNN (--tiny) as ONE TensorRT-RTX engine each, CARAFE, RoI Align and NMS included: `export
    --save-engine` with the plugin library found exports the plugin form (checked against PyTorch in ONNX Runtime
    first), and `build` builds the same file. In a child process that starts with the libtensorrt_rtx.so link on
    LD_LIBRARY_PATH. Where the library is not built (CI) this is skipped with the reason, and the detectors are
    refused before parsing (tests/tasks/test_detection.py)."""
    lib = _plugin_or_skip()
    code = f"""
        import json, sys
        from carafe_deploy.cli import main
        out = {str(tmp_path)!r}
        for name in ("faster_rcnn_r50_fpn_carafe", "mask_rcnn_r50_fpn_carafe"):
            rc = main(["export", "--model", name, "--tiny", "--input-shape", "1,3,320,320", "-o", f"{{out}}/{{name}}.onnx",
                       "--save-engine", f"{{out}}/{{name}}.engine", "--backend", "tensorrt-rtx",
                       "--save-report", f"{{out}}/{{name}}.json"])
            assert rc == 0, name
        rc = main(["build", f"{{out}}/faster_rcnn_r50_fpn_carafe.onnx", "-o", f"{{out}}/rebuilt.engine",
                   "--backend", "tensorrt-rtx", "--no-progress"])
        assert rc == 0
        print("done")
        """
    env = {**os.environ, "LD_LIBRARY_PATH": str(_link_folder(tmp_path)), "CARAFE_DEPLOY_PLUGIN": str(lib)}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=1200)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    for name, outputs in (("faster_rcnn_r50_fpn_carafe", ["dets", "labels"]),
                          ("mask_rcnn_r50_fpn_carafe", ["dets", "labels", "masks"])):
        report = json.loads((tmp_path / f"{name}.json").read_text())
        assert report["onnx"]["detection_ops"] == "plugin"
        assert {"carafe::BatchedNMS", "carafe::MultiLevelRoIAlign"} <= set(report["onnx"]["ops"])
        checks = {c["backend"]: c for c in report["checks"]}
        assert checks["onnxruntime"]["status"] == "passed" and checks["onnxruntime"]["details"]["reference"] >= 50
        assert checks["tensorrt"]["status"] == "skipped"  # no GPU to run it on: said so, not passed
        side = json.loads((tmp_path / f"{name}.engine.json").read_text())
        assert side["runtime"]["name"] == RTX and side["plugin"]["used"]
        assert side["graph"]["carafe_form"] == "plugin" and side["graph"]["detection_form"] == "plugin"
        assert side["graph"]["detection_nodes"] == (4 if "mask" in name else 3)
        assert [o["name"] for o in side["outputs"]] == outputs
        assert side["outputs"][0]["shape"] == [1, 100, 5]
        engine = (tmp_path / f"{name}.engine").read_bytes()
        # one engine: the plugins' names are serialized in it, and no standard NMS / RoiAlign layer is
        assert engine[:4] == b"vtrt" and b"BatchedNMS" in engine and b"MultiLevelRoIAlign" in engine
        assert b"CARAFE" in engine and b"ROIAlign_TRT" not in engine
    rebuilt = json.loads((tmp_path / "rebuilt.engine.json").read_text())
    assert rebuilt["graph"]["detection_form"] == "plugin" and rebuilt["graph"]["detection_nodes"] == 3
