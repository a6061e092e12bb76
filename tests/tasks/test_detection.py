"""The detection pipeline: export → IoU-matched parity in ONNX Runtime → engine step, through the API and the CLI."""

import onnx
import pytest
import torch

from carafe_deploy import models
from carafe_deploy.cli import main
from carafe_deploy.models.detectors import TINY, calibrate_random_heads
from carafe_deploy.tasks import CheckOptions, EngineOptions, ExportOptions, ModelSource, deploy
from carafe_deploy.tasks.detection import parity_image
from carafe_deploy.trt import tensorrt_available

FASTER, MASK = "faster_rcnn_r50_fpn_carafe", "mask_rcnn_r50_fpn_carafe"


@pytest.mark.parametrize("name", [FASTER, MASK])
def test_export_parity_onnxruntime(name, tmp_path):
    loaded = ModelSource(model=name, tiny=True).load()
    calibrate_random_heads(loaded.model, parity_image(320, 320))  # what the pipeline does for random weights
    loaded.weights = "given model"
    report = deploy(loaded, ExportOptions(output=tmp_path / f"{name}.onnx", input_shapes=[(1, 3, 320, 320)]),
                    CheckOptions(), EngineOptions(path=tmp_path / "x.plan", use_plugin=False), log=lambda *_: None)
    (check,) = report["checks"]
    parity = check["details"]
    assert check["backend"] == "onnxruntime" and check["status"] == "passed" and check["gated"]
    assert parity["reference"] >= 50, "too few detections for a meaningful comparison"
    assert parity["match_rate"] >= 0.95, parity
    assert parity["max_score_diff"] < 1e-3
    if name == MASK:
        assert parity["max_mask_diff"] is not None and parity["max_mask_diff"] <= 1e-3
    assert report["passed"]
    ops = report["onnx"]["ops"]
    assert {"NonMaxSuppression", "RoiAlign", "TopK", "carafe::CARAFE"} <= set(ops)
    assert all("::" not in op or op == "carafe::CARAFE" for op in ops)  # only the plugin is custom
    # the engine step: TensorRT-RTX (CI) refuses before parsing, with one line naming what stops it
    if tensorrt_available("tensorrt-rtx") and not tensorrt_available("tensorrt"):
        reason = report["engine"]["skipped"]
        assert reason.startswith("TensorRT-RTX 1.7.1.116 cannot build this graph: NonMaxSuppression (2 nodes) has "
                                 "no TensorRT-RTX implementation"), reason
        assert "RoiAlign (" in reason and "\n" not in reason
    elif not tensorrt_available():
        assert report["engine"]["skipped"].startswith("TensorRT is not installed")
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / f"{name}.onnx"), load_external_data=False).metadata_props}
    assert meta["carafe_deploy.model"] == name and meta["carafe_deploy.weights"] == "given model"
    assert meta["carafe_deploy.task"] == "detection"


def test_random_weights_are_calibrated_and_labelled(tmp_path):
    """Without a checkpoint the pipeline calibrates the random classifier (so the parity compares real detections),
    compares at a second size when the graph is dynamic, and records "random" in the file."""
    logs = []
    report = deploy(ModelSource(model=FASTER, tiny=True).load(),
                    ExportOptions(output=tmp_path / "f.onnx", input_shapes=[(1, 3, 256, 256)], dynamic=True),
                    log=logs.append)
    assert any("RANDOM weights" in line for line in logs)
    assert [c["inputs"] for c in report["checks"]] == [[[1, 3, 256, 256]], [[1, 3, 288, 192]]]
    assert all(c["status"] == "passed" and c["details"]["reference"] > 0 for c in report["checks"]), report["checks"]
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "f.onnx")).metadata_props}
    assert meta["carafe_deploy.weights"] == "random"


def test_export_cli_errors(tmp_path, capsys):
    out = str(tmp_path / "a.onnx")
    assert main(["export", "--model", FASTER, "--tiny", "-o", out, "--set", "bogus=1"]) == 2
    assert "unknown detector option(s): bogus" in capsys.readouterr().err
    assert main(["export", "--model", FASTER, "--tiny", "-o", out, "--input-shape", "1,3,16,256"]) == 1
    assert "at least 32" in capsys.readouterr().err
    missing = tmp_path / "missing.pth"
    assert main(["export", "--model", FASTER, "-o", out, "--checkpoint", str(missing)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    # --tiny takes a checkpoint of its widths (the detector sample's); a full-width one fails naming the keys
    full = tmp_path / "full.pth"
    torch.save(models.build(FASTER).state_dict(), full)
    assert main(["export", "--model", FASTER, "--tiny", "--checkpoint", str(full), "-o", out]) == 1
    assert "wrong shape" in capsys.readouterr().err
    assert not (tmp_path / "a.onnx").exists()


def test_plugin_form_is_checked_with_its_function_attached(tmp_path):
    torch.manual_seed(0)
    report = deploy(ModelSource(model=MASK, tiny=True).load(),
                    ExportOptions(output=tmp_path / "m.onnx", mode="plugin", input_shapes=[(1, 3, 256, 256)]),
                    log=lambda *_: None)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert not proto.functions  # the file is the plugin form ...
    assert report["checks"][0]["status"] == "passed"  # ... and ONNX Runtime checked the same nodes with the function
    assert models.spec(MASK).task == "detection"
