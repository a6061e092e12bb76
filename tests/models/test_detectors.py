"""Faster / Mask R-CNN R50-FPN-CARAFE: mmdet parameter names, checkpoint loading, input checks, and the fixed-shape
deploy forward against a data-dependent reference (the export pipeline is tested in tests/tasks/test_detection.py)."""

import math

import numpy as np
import onnx
import pytest
import torch

from carafe_deploy import models
from carafe_deploy.models.checkpoint import CheckpointMismatchError
from carafe_deploy.models.detection_parts import base_anchors, delta2bbox, grid_anchors
from carafe_deploy.models.detectors import TINY, calibrate_random_heads
from carafe_deploy.tasks.detection import parity_image
from carafe_deploy.tasks.detection_parity import compare_detections

FASTER, MASK = "faster_rcnn_r50_fpn_carafe", "mask_rcnn_r50_fpn_carafe"
# same structure and names as the released models, narrower, so tests stay fast
LIGHT = TINY


@pytest.fixture(scope="module")
def full_mask_rcnn():
    torch.manual_seed(0)
    return models.build(MASK)


# shapes as mmdetection's mask-rcnn_r50_fpn-carafe_1x_coco builds them
MMDET_KEYS = {
    "backbone.conv1.weight": (64, 3, 7, 7),
    "backbone.layer4.2.conv3.weight": (2048, 512, 1, 1),
    "backbone.layer1.0.downsample.1.running_var": (256,),
    "neck.lateral_convs.0.conv.weight": (256, 256, 1, 1),
    "neck.lateral_convs.3.conv.bias": (256,),
    "neck.lateral_convs.4.conv.weight": (256, 2048, 3, 3),  # the extra level: stride-2 conv on C5
    "neck.fpn_convs.4.conv.weight": (256, 256, 3, 3),
    "neck.upsample_modules.0.channel_compressor.weight": (64, 256, 1, 1),
    "neck.upsample_modules.3.content_encoder.weight": (100, 64, 3, 3),  # 2²·5² kernels, encoder 3
    "neck.upsample_modules.3.content_encoder.bias": (100,),
    "rpn_head.rpn_conv.weight": (256, 256, 3, 3),
    "rpn_head.rpn_cls.weight": (3, 256, 1, 1),
    "rpn_head.rpn_reg.weight": (12, 256, 1, 1),
    "roi_head.bbox_head.shared_fcs.0.weight": (1024, 256 * 7 * 7),
    "roi_head.bbox_head.shared_fcs.1.weight": (1024, 1024),
    "roi_head.bbox_head.fc_cls.weight": (81, 1024),
    "roi_head.bbox_head.fc_reg.weight": (320, 1024),
    "roi_head.mask_head.convs.0.conv.weight": (256, 256, 3, 3),
    "roi_head.mask_head.convs.3.conv.bias": (256,),
    "roi_head.mask_head.upsample.channel_compressor.weight": (64, 256, 1, 1),
    "roi_head.mask_head.upsample.content_encoder.weight": (100, 64, 3, 3),
    "roi_head.mask_head.conv_logits.weight": (80, 256, 1, 1),
}


def test_mmdet_parameter_names_and_shapes(full_mask_rcnn):
    state = full_mask_rcnn.state_dict()
    for key, shape in MMDET_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert {k.split(".")[0] for k in state} == {"backbone", "neck", "rpn_head", "roi_head"}
    assert sum(k.startswith("neck.upsample_modules.") and k.endswith("content_encoder.weight") for k in state) == 4
    assert sum(k.startswith("neck.lateral_convs.") and k.endswith(".weight") for k in state) == 5
    assert not any(k.startswith("neck.upsample_modules.4") or k.startswith("roi_head.mask_head.convs.4")
                   for k in state)
    faster = models.build(FASTER, **LIGHT).state_dict()
    assert not any("mask_head" in k for k in faster)


def test_anchors_and_box_decoding_follow_mmdet():
    # mmdet AnchorGenerator(strides=[4, ...], ratios=[0.5, 1, 2], scales=[8]) base anchors of the first level
    s2 = 16 * 2**0.5
    expected = torch.tensor([[-s2, -s2 / 2, s2, s2 / 2], [-16, -16, 16, 16], [-s2 / 2, -s2, s2 / 2, s2]])
    torch.testing.assert_close(base_anchors(4), expected)
    grid = grid_anchors(base_anchors(8), 2, 3, 8)  # (y, x, anchor) order
    torch.testing.assert_close(grid[3 * 4 + 1], torch.tensor([8 - 32.0, 8 - 32, 8 + 32, 8 + 32]))
    # decode: centre moves by dx·w, size scales by exp(dw); dw clamped at |log(16/1000)|; clipped to the image
    rois = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    out = delta2bbox(rois, torch.tensor([[0.5, -0.25, math.log(2.0), 0.0]]), (1, 1, 1, 1), 100, 100)
    torch.testing.assert_close(out, torch.tensor([[10.0, 10.0, 50.0, 50.0]]))
    out = delta2bbox(rois, torch.tensor([[0.0, 0.0, 10.0, 0.0]]), (1, 1, 1, 1), 100, 100)
    assert out[0, 0] == 0 and out[0, 2] == 100  # exp(4.135)·20 ≈ 1250 px wide, clipped


def test_checkpoint_in_mmdet_format_loads(tmp_path):
    torch.manual_seed(1)
    source = models.build(MASK, **LIGHT)
    path = tmp_path / "mask_rcnn_carafe.pth"
    meta = {"mmdet_version": "3.3.0", "CLASSES": ["person"], "epoch": 12}
    torch.save({"meta": meta, "state_dict": source.state_dict(), "optimizer": {}}, path)
    torch.manual_seed(2)
    loaded = models.build(MASK, checkpoint=str(path), **LIGHT)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert not loaded.training

    state = source.state_dict()
    renamed = "roi_head.mask_head.upsample.content_encoder.weight"
    state[renamed.replace("content_encoder", "encoder")] = state.pop(renamed)
    torch.save({"meta": meta, "state_dict": state}, path)
    with pytest.raises(CheckpointMismatchError, match="content_encoder.weight") as err:
        models.build(MASK, checkpoint=str(path), **LIGHT)
    assert "upsample.encoder.weight" in str(err.value)
    with pytest.raises(CheckpointMismatchError, match="mask_head"):  # a Mask R-CNN checkpoint in Faster R-CNN
        models.build(FASTER, checkpoint=source.state_dict(), **LIGHT)


@pytest.fixture(scope="module")
def light_faster():
    torch.manual_seed(0)
    model = models.build(FASTER, **LIGHT)
    calibrate_random_heads(model, parity_image(192, 192))
    return model


@pytest.mark.parametrize("shape,error,match", [
    ((1, 1, 256, 256), ValueError, "3 colour channels"),
    ((1, 4, 256, 256), ValueError, "3 colour channels"),
    ((3, 256, 256), ValueError, "3 colour channels"),
    ((1, 3, 16, 256), ValueError, "at least 32 pixels"),
    ((1, 3, 256, 20), ValueError, "at least 32 pixels"),
])
def test_bad_images_are_rejected(light_faster, shape, error, match):
    with pytest.raises(error, match=match):
        light_faster(torch.zeros(shape))


def test_integer_image_is_rejected(light_faster):
    with pytest.raises(TypeError, match="float"):
        light_faster(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_batch_equals_single_images(light_faster):
    a, b = parity_image(192, 192, seed=3), parity_image(192, 192, seed=4)
    with torch.no_grad():
        both = light_faster(torch.cat([a, b]))
        single = [light_faster(a), light_faster(b)]
    assert (both[1][0] >= 0).sum() > 20
    for i in range(2):
        # batched convolutions round differently, which can flip a near-threshold NMS decision or the last slot;
        # an image mix-up would match almost nothing
        result = compare_detections([t[i : i + 1].numpy() for t in both], [t.numpy() for t in single[i]])
        assert result.match_rate >= 0.95, result.summary()


def test_test_config_overrides(light_faster):
    torch.manual_seed(0)
    model = models.build(FASTER, score_thr=0.3, max_per_img=20, **LIGHT)
    model.load_state_dict(light_faster.state_dict())
    with torch.no_grad():
        dets, labels = model(parity_image(256, 256))
    assert dets.shape == (1, 20, 5) and labels.shape == (1, 20)
    kept = labels[0] >= 0
    assert kept.any() and (dets[0, kept, 4] > 0.3).all()
    assert (dets[0, ~kept] == 0).all() and (labels[0, ~kept] == -1).all()
    with pytest.raises(ValueError, match="unknown detector option"):
        models.build(FASTER, score_threshold=0.3)


def test_bgr_input_order_flips_channels(light_faster):
    model = models.build(FASTER, input_order="bgr", **LIGHT)
    model.load_state_dict(light_faster.state_dict())
    image = parity_image(128, 160, seed=5)
    with torch.no_grad():
        rgb = light_faster(image)
        bgr = model(image.flip(1))
    torch.testing.assert_close(bgr[0], rgb[0], rtol=0, atol=0)
    torch.testing.assert_close(bgr[1], rgb[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="input_order"):
        models.build(FASTER, input_order="yuv", **LIGHT)


# ---- the fixed-shape deploy forward against a plain, data-dependent version of mmdet's test path ----------------


def _greedy_nms(boxes, scores, iou_thr):
    """Textbook greedy NMS in float64 (mmcv semantics: suppress when IoU > thr); returns kept indices by score."""
    from carafe_deploy.tasks.detection_parity import box_iou

    order = np.argsort(-scores, kind="stable")
    iou = box_iou(boxes, boxes)
    keep, removed = [], np.zeros(len(boxes), bool)
    for i in order:
        if removed[i]:
            continue
        keep.append(i)
        removed |= iou[i] > iou_thr
    return np.asarray(keep, dtype=np.int64)


def _reference_detect(model, image):
    """mmdet's RPN + RoI head test path with dynamic shapes: filter, sort, per-group NMS, slice."""
    from carafe_deploy.models.detectors import STRIDES
    from carafe_deploy.ops import roi_align

    cfg = model.test_cfg
    h, w = image.shape[2:]
    feats = model.features(image)
    boxes_l, scores_l, level_l = [], [], []
    for lvl, feat in enumerate(feats):
        cls, reg = model.rpn_head(feat)
        scores = cls[0].permute(1, 2, 0).reshape(-1).sigmoid()
        deltas = reg[0].permute(1, 2, 0).reshape(-1, 4)
        anchors = grid_anchors(base_anchors(STRIDES[lvl]), feat.shape[2], feat.shape[3], STRIDES[lvl])
        if scores.numel() > cfg.rpn_nms_pre:
            scores, idx = scores.sort(descending=True)
            scores, idx = scores[: cfg.rpn_nms_pre], idx[: cfg.rpn_nms_pre]
            deltas, anchors = deltas[idx], anchors[idx]
        boxes_l.append(delta2bbox(anchors, deltas, (1, 1, 1, 1), h, w))
        scores_l.append(scores)
        level_l.append(np.full(len(scores), lvl))
    boxes, scores, levels = torch.cat(boxes_l).numpy(), torch.cat(scores_l).numpy(), np.concatenate(level_l)
    ok = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    boxes, scores, levels = boxes[ok], scores[ok], levels[ok]
    kept = np.concatenate([np.nonzero(levels == lv)[0][_greedy_nms(boxes[levels == lv], scores[levels == lv],
                                                                   cfg.rpn_nms_iou)] for lv in np.unique(levels)])
    kept = kept[np.argsort(-scores[kept], kind="stable")][: cfg.rpn_max_per_img]
    rois = torch.from_numpy(boxes[kept])
    # mmdet SingleRoIExtractor: each RoI pooled only at its own level
    scale = torch.sqrt((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1]))
    target = torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(0, 3)
    roi_feats = torch.zeros(len(rois), feats[0].shape[1], 7, 7)
    for lv in range(4):
        inds = torch.nonzero(target == lv).flatten()
        if len(inds):
            roi_feats[inds] = roi_align(feats[lv], rois[inds], torch.zeros(len(inds), dtype=torch.int64), (7, 7),
                                        1 / STRIDES[lv], 0)
    cls, reg = model.roi_head.bbox_head(roi_feats)
    c = model.num_classes
    probs = torch.softmax(cls, -1)[:, :c].numpy()
    dec = delta2bbox(rois[:, None].expand(-1, c, 4), reg.reshape(-1, c, 4), (0.1, 0.1, 0.2, 0.2), h, w).numpy()
    r, k = np.nonzero(probs > cfg.score_thr)
    cand_boxes, cand_scores = dec[r, k], probs[r, k]
    sel = np.concatenate([np.nonzero(k == lab)[0][_greedy_nms(cand_boxes[k == lab], cand_scores[k == lab],
                                                              cfg.nms_iou)] for lab in np.unique(k)])
    sel = sel[np.argsort(-cand_scores[sel], kind="stable")][: cfg.max_per_img]
    dets = np.zeros((1, cfg.max_per_img, 5), np.float32)
    labels = np.full((1, cfg.max_per_img), -1)
    dets[0, : len(sel), :4], dets[0, : len(sel), 4], labels[0, : len(sel)] = cand_boxes[sel], cand_scores[sel], k[sel]
    return dets, labels


def test_deploy_forward_matches_data_dependent_reference(light_faster):
    image = parity_image(192, 256, seed=7)
    with torch.no_grad():
        got = [t.numpy() for t in light_faster(image)]
        ref = _reference_detect(light_faster, image)
    result = compare_detections(ref, got)
    print(result.summary())
    assert result.reference >= 50, result.summary()
    assert result.match_rate >= 0.95, result.summary()


def test_plugin_ops_compute_the_same_detections(light_faster):
    """detection_ops = "plugin" (one batched_nms / multi_level_roi_align op per step, the TensorRT plugins' nodes):
    the detections of the standard-op forward, and so of the data-dependent reference."""
    image = parity_image(192, 256, seed=7)
    try:
        with torch.no_grad():
            standard = [t.numpy() for t in light_faster(image)]
            reference = _reference_detect(light_faster, image)
            light_faster.detection_ops = "plugin"
            plugin = [t.numpy() for t in light_faster(image)]
    finally:
        light_faster.detection_ops = "standard"
    assert (standard[1] >= 0).sum() >= 50
    for s, p in zip(standard, plugin):
        np.testing.assert_array_equal(s, p)
    result = compare_detections(reference, plugin)
    assert result.match_rate >= 0.95, result.summary()
    light_faster.detection_ops = "fused"
    with pytest.raises(ValueError, match="detection_ops must be one of"):
        light_faster(image)
    light_faster.detection_ops = "standard"
