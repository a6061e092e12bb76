"""The synthetic segmentation sample: data, mIoU, and a test-sized training run that must converge and export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from carafe_deploy.tasks.segmentation_sample import format_table, run
from carafe_deploy.tasks.synthetic_shapes import CLASSES, make_set, mean_iou


def test_mean_iou_by_hand():
    label = np.array([[0, 0, 1, 1], [0, 0, 1, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 2]])
    # class 0: inter 3, union 4; class 1: inter 2, union 4; class 2: inter 1, union 2; class 3 absent
    miou, iou = mean_iou(pred, label, 4)
    np.testing.assert_allclose(iou[:3], [3 / 4, 2 / 4, 1 / 2])
    assert np.isnan(iou[3])
    assert miou == pytest.approx(100 * (0.75 + 0.5 + 0.5) / 3)


def test_synthetic_set_is_deterministic_and_labelled():
    x1, y1 = make_set(6, 32, seed=5)
    x2, y2 = make_set(6, 32, seed=5)
    x3, _ = make_set(6, 32, seed=6)
    assert x1.shape == (6, 32, 32, 3) and x1.dtype == np.uint8 and y1.shape == (6, 32, 32)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and not np.array_equal(x1, x3)
    assert set(np.unique(y1)) <= set(range(len(CLASSES))) and len(np.unique(y1)) >= 3
    with pytest.raises(ValueError, match="size >= 8"):
        make_set(2, 4, seed=0)


@pytest.mark.slow
def test_training_converges_and_exports_keep_miou(tmp_path):
    res = run(str(tmp_path), steps=80, batch=8, size=48, train_count=160, test_count=16,
              backends=("portable",), progress=False, log=lambda *a: None)
    losses = res["losses"]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    # chance = always the majority class (background), ~17 here; 80 steps reach ~37 (measured)
    assert res["miou"]["PyTorch"] > res["chance_miou"] + 12
    # one export keeps the test short; the R50 tests cover both export modes
    assert abs(res["miou"]["ORT portable"] - res["miou"]["PyTorch"]) <= 0.1
    assert res["argmax_agreement"]["ORT portable"] >= 0.999
    for f in res["files"].values():
        assert (tmp_path / f.split("/")[-1]).is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["miou"] == pytest.approx(res["miou"])
    assert "| ORT portable |" in format_table(res)


def test_tensorrt_backend_is_reported_skipped_when_absent(tmp_path):
    from carafe_deploy.trt.availability import engine_unavailable

    reason = engine_unavailable()
    if reason is None:
        pytest.skip("TensorRT is usable here: test_tensorrt_keeps_miou covers it")
    res = run(str(tmp_path), steps=2, batch=2, size=32, train_count=4, test_count=2, backends=("tensorrt",),
              progress=False, log=lambda *a: None)
    assert res["skipped"] == {"TensorRT": reason} and "TensorRT" not in res["miou"]
    assert "| TensorRT | skipped:" in format_table(res)


@pytest.mark.tensorrt
@pytest.mark.cuda
def test_tensorrt_keeps_miou(tmp_path):
    from carafe_deploy.trt.availability import engine_unavailable

    reason = engine_unavailable()
    if reason is not None:
        pytest.skip(f"needs TensorRT and a CUDA device: {reason}")
    res = run(str(tmp_path), steps=80, batch=8, size=48, train_count=160, test_count=16, backends=("tensorrt",),
              progress=False, log=lambda *a: None)
    assert abs(res["miou"]["TensorRT"] - res["miou"]["PyTorch"]) <= 0.1
    assert res["argmax_agreement"]["TensorRT"] >= 0.999


def test_unknown_backend_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'tvm'"):
        run(str(tmp_path), steps=1, batch=2, size=32, train_count=2, test_count=2, backends=("tvm",),
            progress=False, log=lambda *a: None)
