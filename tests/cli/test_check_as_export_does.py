"""Issue 22: `check` compares as `export` does. A detector exported with random weights checks against the same
--model rebuilt and calibrated as the export calibrated it, detections matched one to one; and the element-wise
defaults scale with the outputs: a correct fp32 export whose outputs are large passes, and says the tolerances it
used, while a genuinely wrong one (one weight off by 1 %) still fails."""

import json
import textwrap

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from carafe_deploy.cli import main

pytestmark = pytest.mark.slow

DET = ["--model", "faster_rcnn_r50_fpn_carafe", "--tiny"]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    path = tmp_path_factory.mktemp("det") / "det.onnx"
    assert main(["export", *DET, "-o", str(path)]) == 0
    return path


def test_check_passes_the_detector_export_just_wrote(detector, tmp_path, capsys):
    capsys.readouterr()
    report = tmp_path / "r.json"
    assert main(["check", str(detector), *DET, "-o", str(report)]) == 0, capsys.readouterr().out
    data = json.loads(report.read_text())
    (ort,) = data["backends"]
    assert data["task"] == "detection" and ort["status"] == "passed"
    details = ort["details"]
    assert details["reference"] > 10 and details["match_rate"] == 1.0  # real detections, every one matched
    assert details["min_iou"] > 0.99


def test_the_calibration_is_what_makes_it_the_same_model(detector, tmp_path, capsys):
    # the same file, but its metadata sends check to calibrate the random heads on another image: another model,
    # whose detections do not match (the comparison is not vacuous)
    model = onnx.load(str(detector))
    props = {p.key: p for p in model.metadata_props}
    assert props["carafe_deploy.calibrated_on"].value == "800x1216"
    props["carafe_deploy.calibrated_on"].value = "320x480"
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    capsys.readouterr()
    assert main(["check", str(other), *DET]) == 1
    assert "FAILED" in capsys.readouterr().out


NET_PY = textwrap.dedent("""
    import torch
    import torch.nn.functional as F
    from carafe_deploy.nn import CARAFEUpsample

    class Net(torch.nn.Module):
        \"\"\"A refinement head: what CARAFE adds to nearest up-sampling of features in the hundreds (outputs up to
        about 800; near their zeros, float32 rounding of the two large terms is a few 1e-5).\"\"\"

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.stem = torch.nn.Conv2d(8, 16, 3, padding=1)
            self.up = CARAFEUpsample(16, compressed_channels=8)

        def forward(self, x):
            f = self.stem(x) * 300.0
            return self.up(f) - F.interpolate(f, scale_factor=2.0, mode="nearest")
""")


@pytest.fixture(scope="module")
def large_outputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("large")
    (tmp / "net.py").write_text(NET_PY)
    path = tmp / "net.onnx"
    assert main(["export", "--python", str(tmp / "net.py"), "--class", "Net", "--input-shape", "1,8,16,16",
                 "-o", str(path)]) == 0
    return tmp, path


def _run_both(tmp, path):
    """ONNX Runtime and PyTorch on check's own inputs (random_feeds, seed 0), for the test's own judgement."""
    import onnxruntime as ort

    from carafe_deploy.backends.onnxrt import random_feeds
    from carafe_deploy.tasks import ModelSource

    model = onnx.load(str(path))
    feeds = random_feeds(model, None, seed=0)
    actual = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    net = ModelSource(python=str(tmp / "net.py"), class_name="Net").load().model
    with torch.no_grad():
        expected = net(torch.from_numpy(next(iter(feeds.values())))).numpy()
    return actual.astype(np.float64), expected.astype(np.float64)


def test_default_tolerances_scale_with_the_outputs_and_are_reported(large_outputs, tmp_path, capsys):
    tmp, path = large_outputs
    actual, expected = _run_both(tmp, path)
    scale = np.abs(expected).max()
    assert scale > 100 and np.abs(actual - expected).max() / scale < 1e-6  # a correct export
    # the old fixed defaults fail it: near its zeros the rounding of the large terms is over 1e-5
    assert not np.allclose(actual, expected, rtol=1e-4, atol=1e-5)
    report = tmp_path / "r.json"
    capsys.readouterr()
    assert main(["check", str(path), "--python", str(tmp / "net.py"), "--class", "Net", "-o", str(report)]) == 0
    out = capsys.readouterr().out
    assert "rtol 0.0001, atol 1e-05 x each output's max |reference|" in out
    data = json.loads(report.read_text())
    (diff,) = data["backends"][0]["outputs"]
    assert diff["atol"] == pytest.approx(1e-5 * scale, rel=1e-6) and diff["scale"] == pytest.approx(scale, rel=1e-6)
    assert diff["atol_rule"].startswith("1e-05 x max |reference|") and diff["passed"]
    # an explicit atol is absolute, as numpy's
    assert main(["check", str(path), "--python", str(tmp / "net.py"), "--class", "Net", "--atol", "1e-5"]) == 1


def test_a_genuinely_wrong_export_still_fails(large_outputs, tmp_path, capsys):
    tmp, path = large_outputs
    model = onnx.load(str(path))
    weight = next(t for t in model.graph.initializer if t.name == "up.content_encoder.weight")  # CARAFE's kernels
    w = numpy_helper.to_array(weight).copy()
    w.flat[0] *= 1.01  # one weight off by 1 %: max |diff| / max |reference| 6.5e-5 (measured)
    weight.CopyFrom(numpy_helper.from_array(w, weight.name))
    wrong = tmp_path / "wrong.onnx"
    onnx.save(model, str(wrong))
    capsys.readouterr()
    assert main(["check", str(wrong), "--python", str(tmp / "net.py"), "--class", "Net"]) == 1
    assert "no" in capsys.readouterr().out
