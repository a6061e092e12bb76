"""The segmentation pipeline: export → logits/argmax parity in ONNX Runtime → engine, through the API and the CLI."""

import json

import numpy as np
import pytest
import torch

from carafe_deploy.cli import main
from carafe_deploy.tasks import CheckOptions, EngineOptions, ExportOptions, ModelSource, deploy
from carafe_deploy.tasks.segmentation import SegmentationTask, logits_parity
from carafe_deploy.trt import tensorrt_available
from carafe_deploy.trt.availability import run_unavailable


def test_logits_parity_by_hand():
    ref = np.zeros((1, 3, 1, 4), np.float32)
    ref[0, :, 0] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2]]  # argmax: 0, 1, 2, 2
    out = ref.copy()
    out[0, 0, 0, 3] = 3.0  # flips the last pixel's argmax to 0
    p = logits_parity(ref, out)
    assert p["max_abs"] == 3.0 and p["max_rel"] == 1.5 and p["argmax_agreement"] == 0.75
    result = SegmentationTask().compare({"logits": ref}, {"logits": out}, "fp32")
    assert not result.passed and "75.000%" in result.summary


@pytest.mark.parametrize("name", ["upernet_r50_carafe", "upernet_r50_carafe_pp"])
def test_dynamic_export_checked_at_batch_one_and_built(name, tmp_path):
    torch.manual_seed(0)
    report = deploy(ModelSource(model=name, tiny=True).load(),
                    ExportOptions(output=tmp_path / "s.onnx", input_shapes=[(2, 3, 64, 96)]),
                    CheckOptions(), EngineOptions(path=tmp_path / "s.engine", use_plugin=False), log=lambda *_: None)
    check = report["checks"][0]
    assert check["backend"] == "onnxruntime"
    assert report["onnx"]["dynamic"] and check["inputs"] == [[1, 3, 64, 96]]  # batch 1 of a batch-2 export
    assert check["status"] == "passed", check
    assert check["details"]["max_rel"] <= 1e-4 and check["details"]["argmax_agreement"] >= 0.999
    if not tensorrt_available():
        assert report["engine"]["skipped"].startswith("TensorRT is not installed")
        return
    # the same graph built by TensorRT (TensorRT-RTX in CI: its builder needs no GPU), CARAFE unrolled
    assert report["engine"]["carafe_form"] == "unrolled", report["engine"]
    side = json.loads((tmp_path / "s.engine.json").read_text())
    assert side["graph"]["carafe_nodes"] == report["onnx"]["carafe_nodes"] >= 10
    assert side["inputs"][0]["shape"] == [-1, 3, -1, -1] and side["outputs"][0]["shape"][1] == 150
    if run_unavailable():
        assert report["checks"][1]["backend"] == "tensorrt" and report["checks"][1]["status"] == "skipped"


def test_cli_report_and_a_bad_checkpoint(tmp_path, capsys):
    out, report = tmp_path / "seg.onnx", tmp_path / "seg.json"
    assert main(["export", "--model", "upernet_r50_carafe", "--tiny", "--input-shape", "2,3,64,64", "-o", str(out),
                 "--save-report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["passed"] and data["task"] == "segmentation" and data["checks"][0]["status"] == "passed"
    assert "argmax agreement" in capsys.readouterr().out

    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"decode_head.conv_seg.weight": torch.zeros(150, 512, 1, 1)}}, bad)
    code = main(["export", "--model", "upernet_r50_carafe", "--checkpoint", str(bad), "-o", str(tmp_path / "x.onnx")])
    assert code == 1
    err = capsys.readouterr().err
    assert "does not fit" in err and "missing: backbone.bn1.bias" in err
    assert not (tmp_path / "x.onnx").exists()
