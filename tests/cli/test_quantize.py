"""carafe-deploy quantize, then check with the file next to its fp32 and fp16 files: a segmenter judged at the task's
level (argmax agreement; INT8's limit in carafe_deploy.tasks.segmentation.THRESHOLDS), a generic model element-wise
at INT8's tolerance; a detector's INT8 matches reported, not gated."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from carafe_deploy.cli import main
from carafe_deploy.onnx.quantized import carafe_placements, quantized_precision
from carafe_deploy.tasks.detection import MATCHING, DetectionTask
from carafe_deploy.tasks.segmentation import THRESHOLDS

NET = '''
import torch
from carafe_deploy.nn import CARAFEUpsample


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.up = CARAFEUpsample(8, compressed_channels=8)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.up(torch.relu(self.stem(x))))
'''


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    """The tiny UperNet-CARAFE (random weights) in fp32 with its PyTorch reference, and in fp16."""
    d = tmp_path_factory.mktemp("seg")
    common = ["--model", "upernet_r50_carafe", "--tiny", "--input-shape", "2,3,64,64", "--no-check"]
    assert main(["export", *common, "-o", str(d / "up.onnx"), "--save-reference", str(d / "ref.npz")]) == 0
    assert main(["export", *common, "--fp16", "-o", str(d / "up16.onnx")]) == 0
    return d


def test_quantize_then_check_next_to_fp32_and_fp16(segmenter, capsys):
    d = segmenter
    report = d / "quantize.json"
    assert main(["quantize", str(d / "up.onnx"), "--calibration-random", "8", "--input-shape", "1,3,64,64", "--quiet",
                 "--save-report", str(report)]) == 0
    text = capsys.readouterr().err
    assert "kernel sum kept" in text and "wrote" in text
    int8 = d / "up_int8.onnx"  # the default name beside the input
    model = onnx.load(str(int8))
    assert quantized_precision(model) == "int8"
    saved = json.loads(report.read_text())
    assert saved["task"] == "segmentation" and len(saved["carafe"]) == 10
    assert all(c["kernels_sum_kept"] and c["features"] == "dequantized" for c in saved["carafe"])
    assert [p.kernels_sum_kept for p in carafe_placements(model)] == [True] * 10

    result = d / "check.json"
    rc = main(["check", str(int8), "--reference", str(d / "ref.npz"), "--also", str(d / "up.onnx"), str(d / "up16.onnx"),
               "-o", str(result)])
    out = capsys.readouterr().out
    assert rc == 0, out
    data = json.loads(result.read_text())
    assert data["task"] == "segmentation" and data["passed"]
    rows = {r["file"]: r for r in data["backends"]}
    assert {f: r["precision"] for f, r in rows.items()} == {"up_int8.onnx": "int8", "up.onnx": "fp32",
                                                            "up16.onnx": "fp16"}
    assert all(r["status"] == "passed" for r in rows.values())
    int8_row = rows["up_int8.onnx"]["details"]
    assert int8_row["min_argmax_agreement"] == THRESHOLDS["int8"][1] and int8_row["max_rel_limit"] is None
    assert int8_row["argmax_agreement"] >= THRESHOLDS["int8"][1]
    assert rows["up.onnx"]["details"]["max_rel"] <= 1e-4  # the fp32 file is judged by fp32's limits
    assert "int8" in out and "fp16" in out
    # against PyTorch itself (--model builds the same seeded weights as the export): the task from the model's spec
    assert main(["check", str(int8), "--model", "upernet_r50_carafe", "--tiny", "--input-shape", "1,3,64,64",
                 "-o", str(result)]) == 0
    assert json.loads(result.read_text())["backends"][0]["precision"] == "int8"


def test_a_broken_int8_file_fails_the_check(segmenter, tmp_path, capsys):
    """The INT8 limit is not vacuous: calibrated as a detector (0..255 pixels into a normalised segmenter), the file
    no longer agrees with PyTorch."""
    d = segmenter
    wrong = tmp_path / "wrong_int8.onnx"
    assert main(["quantize", str(d / "up.onnx"), "--calibration-random", "4", "--input-shape", "1,3,64,64", "--quiet",
                 "--task", "detection", "-o", str(wrong)]) == 0
    result = tmp_path / "check.json"
    assert main(["check", str(wrong), "--reference", str(d / "ref.npz"), "-o", str(result)]) == 1
    row = json.loads(result.read_text())["backends"][0]
    assert row["status"] == "failed" and row["details"]["argmax_agreement"] < THRESHOLDS["int8"][1]


def test_a_generic_model_element_wise(tmp_path, capsys):
    py = tmp_path / "net.py"
    py.write_text(NET)
    src, ref = tmp_path / "net.onnx", tmp_path / "ref.npz"
    assert main(["export", "--python", str(py), "--class", "Net", "--input-shape", "1,3,12,10", "--dynamic",
                 "-o", str(src), "--save-reference", str(ref)]) == 0
    out = tmp_path / "net_q.onnx"
    assert main(["quantize", str(src), "-o", str(out), "--calibration-random", "8", "--input-shape", "1,3,12,10",
                 "--quiet"]) == 0
    capsys.readouterr()
    result = tmp_path / "check.json"
    assert main(["check", str(out), "--reference", str(ref), "--also", str(src), "-o", str(result)]) == 0
    text = capsys.readouterr().out
    assert "int8: rtol 0.1, atol 0.1" in text and "fp32: rtol 0.0001, atol 1e-05" in text
    data = json.loads(result.read_text())
    assert data["precision"] == {"onnxruntime int8 net_q.onnx": "int8", "onnxruntime fp32 net.onnx": "fp32"}
    int8, fp32 = data["backends"]
    assert int8["status"] == fp32["status"] == "passed"
    assert 1e-4 < int8["outputs"][0]["max_rel"] <= 0.1  # quantized indeed, and within INT8's tolerance
    # the same INT8 file judged by fp32's tolerance fails: the tolerance is what lets it pass
    assert main(["check", str(out), "--reference", str(ref), "--rtol", "1e-4", "--atol", "1e-5"]) == 1


def test_int8_detections_are_reported_not_gated():
    dets = np.array([[[10, 10, 50, 50, 0.9], [60, 60, 90, 90, 0.8]]], np.float32)
    moved = dets.copy()
    moved[0, 0, :4] += 12  # IoU with the reference 0.33: below any matching threshold
    result = DetectionTask().compare({"dets": dets, "labels": np.array([[1, 2]])},
                                     {"dets": moved, "labels": np.array([[1, 2]])}, "int8")
    assert not result.passed and not result.gated
    assert result.details["iou_thr"] == MATCHING["int8"][0]
    assert DetectionTask().compare({"dets": dets, "labels": np.array([[1, 2]])},
                                   {"dets": moved, "labels": np.array([[1, 2]])}, "fp32").gated


@pytest.mark.parametrize("argv, status, words", [
    (["quantize", "{src}"], 2, "one of the arguments --calibration-images --calibration-random is required"),
    (["quantize", "{src}", "--calibration-random", "2", "-o", "{src}"], 1, "would overwrite an input"),
    (["quantize", "{src}", "--calibration-random", "0"], 2, "--calibration-random must be >= 1"),
    (["quantize", "{src}", "--calibration-images", "{tmp}/none"], 1, "no such folder"),
    (["quantize", "{tmp}/missing.onnx", "--calibration-random", "2"], 2, "does not exist"),
])
def test_clear_errors(segmenter, tmp_path, capsys, argv, status, words):
    argv = [a.format(src=segmenter / "up.onnx", tmp=tmp_path) for a in argv]
    if "required" in words:  # argparse's own refusal
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == status
    else:
        assert main(argv) == status
    err = capsys.readouterr().err
    assert words in " ".join(err.split()), err
