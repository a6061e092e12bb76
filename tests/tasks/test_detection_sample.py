"""The trained detector sample: synthetic scenes, mmdet's training losses, and a test-sized run whose exports must keep
PyTorch's box AP (evaluate on the COCO set it writes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from carafe_deploy.models.detection_parts import delta2bbox
from carafe_deploy.tasks.detection_training import RCNN_STDS, _assign, box_iou, detector_losses, encode_deltas
from carafe_deploy.tasks.samples import metric_of
from carafe_deploy.tasks.synthetic_shapes import CLASSES, make_scenes

pytest.importorskip("pycocotools", reason="the COCO evaluator: pip install -e '.[eval]'")


def test_scenes_are_deterministic_and_boxes_hold_their_masks():
    a, b = make_scenes(12, 64, seed=3), make_scenes(12, 64, seed=3)
    assert all(np.array_equal(x.image, y.image) and np.array_equal(x.boxes, y.boxes) for x, y in zip(a, b))
    objects = 0
    for scene in a:
        assert scene.image.shape == (64, 64, 3) and scene.image.dtype == np.uint8
        assert set(scene.classes.tolist()) <= set(range(1, len(CLASSES)))
        for box, mask in zip(scene.boxes, scene.masks):
            ys, xs = np.nonzero(mask)
            # the box is the visible mask's extent, in pixel edges (COCO's x, y, w, h from it)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        # objects do not share pixels
        assert scene.masks.sum(0).max(initial=0) <= 1
        objects += len(scene.classes)
    assert objects >= 12
    with pytest.raises(ValueError, match="size >= 32"):
        make_scenes(1, 16, seed=0)


def test_box_iou_and_the_delta_coding_by_hand():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([50 / 150, 0.0, 1.0])
    rois = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    gt = torch.tensor([[12.0, 18.0, 40.0, 50.0]])
    d = encode_deltas(rois, gt, (1.0, 1.0, 1.0, 1.0))
    # mmdet's DeltaXYWHBBoxCoder: dx = (gx - px) / pw, dw = log(gw / pw): centres 20,40 -> 26,34, sizes 20,40 -> 28,32
    assert d[0].tolist() == pytest.approx([6 / 20, -6 / 40, np.log(28 / 20), np.log(32 / 40)])
    # the model's decoder (with its stds) takes the deltas back to the box
    back = delta2bbox(rois, encode_deltas(rois, gt, RCNN_STDS), RCNN_STDS, 1000, 1000)
    assert back[0].tolist() == pytest.approx(gt[0].tolist(), abs=1e-4)


def test_assignment_follows_max_iou_rules():
    iou = torch.tensor([[0.8, 0.1], [0.5, 0.2], [0.1, 0.25], [0.0, 0.0]])
    labels, assigned = _assign(iou, pos_iou=0.7, neg_iou=0.3, min_pos_iou=None)
    assert labels.tolist() == [1, -1, 0, 0] and assigned[0] == 0
    # low-quality matches: the second object's best candidate (0.25) is below min_pos_iou 0.3: not taken
    labels, _ = _assign(iou, 0.7, 0.3, 0.3)
    assert labels.tolist() == [1, -1, 0, 0]
    labels, assigned = _assign(iou, 0.7, 0.3, 0.2)
    assert labels.tolist() == [1, -1, 1, 0] and assigned[2] == 1


def test_losses_train_every_part_through_roi_align():
    """One backward pass reaches the backbone, the FPN's CARAFE modules, the RPN and the box head (RoI Align's
    gradient included)."""
    from carafe_deploy.tasks.detection_sample import small_detector

    torch.manual_seed(0)
    model = small_detector().train()
    scenes = make_scenes(2, 64, seed=1)
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float()
    losses = detector_losses(model, images, [torch.from_numpy(s.boxes) for s in scenes],
                             [torch.from_numpy(s.classes - 1) for s in scenes])
    assert set(losses) == {"rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("backbone.conv1.weight", "neck.upsample_modules.0.channel_compressor.weight",
                 "rpn_head.rpn_cls.weight", "roi_head.bbox_head.shared_fcs.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.slow
def test_trained_sample_keeps_box_ap_in_onnxruntime(tmp_path):
    """A test-sized run (the full sample is the demo's and docs/DETECTION.md's): ONNX Runtime fp32 must give
    PyTorch's box AP within 0.005 (NMS decisions at the IoU threshold can flip between runtimes: the full sample
    measured -0.0012). Without the custom-op library the plugin-form row is skipped with the reason; the engine row is
    built and not run, or skipped with the reason no engine can be built (TensorRT-RTX refuses NonMaxSuppression)."""
    from carafe_deploy.tasks import evaluation
    from carafe_deploy.tasks.detection_sample import run

    res = run(str(tmp_path), steps=60, batch=4, size=64, train_count=128, test_count=16,
              backends=("portable", "plugin", "tensorrt"), progress=False, log=lambda *a: None, threads=1)
    rows = {e["form"]: e for e in res["report"]["backends"]}
    if evaluation._plugin_library_missing() is not None:
        assert rows["plugin"]["status"] == "skipped" and "custom-op library" in rows["plugin"]["reason"]
    else:  # the plugin form's CARAFE nodes on the custom-op library: the same detections as the portable function's
        assert rows["plugin"]["status"] == "evaluated"
        assert abs(rows["plugin"]["metrics"]["bbox_mAP_50"] - rows["portable"]["metrics"]["bbox_mAP_50"]) <= 0.005
    (engine,) = [e for e in res["report"]["backends"] if e["backend"].startswith("TensorRT")]
    assert engine["status"] in ("skipped", "built, not run", "evaluated") and (engine["reason"] or engine["metrics"])
    losses = res["losses"]
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    report = res["report"]
    torch_ap, ort_ap = (metric_of(report, "PyTorch", "eager", "fp32", "bbox_mAP_50"),
                        metric_of(report, "ONNX Runtime", "portable", "fp32", "bbox_mAP_50"))
    assert torch_ap > 0.005, "the test-sized model detects nothing: the comparison would be vacuous"
    assert abs(ort_ap - torch_ap) <= 0.005
    assert abs(metric_of(report, "ONNX Runtime", "portable", "fp32") - metric_of(report, "PyTorch", "eager",
                                                                                  "fp32")) <= 0.005
    # the COCO set, the files and the command that reproduces the table
    coco = json.loads((tmp_path / "coco" / "instances.json").read_text())
    assert len(coco["images"]) == 16 and [c["name"] for c in coco["categories"]] == list(CLASSES[1:])
    assert all("segmentation" in a for a in coco["annotations"])
    for f in res["files"].values():
        assert (tmp_path / f.split("/")[-1]).is_file(), f
    assert res["command"].startswith("carafe-deploy evaluate ") and "--tiny --set num_classes=4" in res["command"]
