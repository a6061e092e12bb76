"""samples/detect.py and what it uses (carafe_deploy.tasks.detection, .drawing): mask pasting, drawing, error messages,
and a run of the sample on the bundled image through PyTorch and through ONNX Runtime."""

import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from carafe_deploy.models.detectors import COCO_CLASSES, paste_masks

ROOT = Path(__file__).resolve().parents[2]


def _load_sample():
    spec = importlib.util.spec_from_file_location("detect_sample", ROOT / "samples" / "detect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_coco_classes():
    assert len(COCO_CLASSES) == 80 and COCO_CLASSES[0] == "person" and COCO_CLASSES[79] == "toothbrush"


def test_paste_masks_fills_the_box():
    masks = torch.ones(2, 28, 28)
    masks[1, :, 14:] = 0  # right half empty
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 28.0, 28.0]])
    pasted = paste_masks(masks, boxes, 60, 70)
    expected = np.zeros((60, 70), bool)
    expected[20:40, 10:50] = True
    np.testing.assert_array_equal(pasted[0].numpy(), expected)
    # pixel centres left of the mask's middle are in, right of it out (bilinear at the boundary: 0.5)
    assert pasted[1, 5, :13].all() and not pasted[1, 5, 15:].any() and not pasted[1, 30:].any()


def test_draw_labels_random_weights():
    from carafe_deploy.tasks.drawing import draw_detections

    img = Image.new("RGB", (200, 120), (0, 0, 0))
    dets = np.array([[20, 60, 120, 110, 0.9], [0, 0, 0, 0, 0]], np.float32)
    labels = np.array([2, -1])
    masks = np.ones((2, 28, 28), np.float32)
    out = np.asarray(draw_detections(img, dets, labels, masks, COCO_CLASSES, 0.3, "RANDOM WEIGHTS"))
    assert out[3, 100, 0] > 150 and out[3, 100, 1] < 60  # the red banner across the top
    assert (out[80:100, 40:100] != 0).any()  # the mask tints the box


def test_sample_reports_bad_inputs(tmp_path, capsys):
    sample = _load_sample()
    assert sample.main([str(tmp_path / "nope.png"), "-o", str(tmp_path / "o.png")]) == 1
    assert "image not found" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert sample.main([str(bad), "-o", str(tmp_path / "o.png")]) == 1
    assert "cannot read image" in capsys.readouterr().err
    assert (ROOT / "samples" / "data" / "scene.png").is_file()
