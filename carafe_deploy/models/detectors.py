"""Faster / Mask R-CNN R50-FPN-CARAFE as one deployable graph: image in, detections out.

The forward is mmdetection's test path (``data_preprocessor`` → backbone → FPN_CARAFE → RPN → RoI heads) written
with fixed-size tensors so that ``torch.export`` and the ONNX exporter see no data-dependent shapes: per-level top-k
with k taken from static shapes, NMS as a keep mask (:func:`~carafe_deploy.ops.nms_keep`) followed by a masked
top-k, every RoI pooled at every level and the right level picked by a mask. Slots without a detection are
zero-padded (score 0, label -1, empty mask).

``detection_ops = "plugin"`` (set by the deploy pipeline for the export when the plugin library is found) puts the
same steps in one op each, the nodes of the TensorRT plugins: RoI features through
:func:`~carafe_deploy.ops.multi_level_roi_align`, each NMS (the RPN's per level, the box head's per class) through
:func:`~carafe_deploy.ops.batched_nms` with its fixed-size outputs. It computes the same detections.

Outputs, for an (N, 3, H, W) image batch: ``dets`` (N, max_per_img, 5) as x1 y1 x2 y2 score in input pixels,
``labels`` (N, max_per_img) int64 COCO class indices, and for Mask R-CNN ``masks`` (N, max_per_img, 28, 28): the
sigmoid mask probability of the detected class in its box (mmdet pastes these into the image and thresholds the
pasted probabilities at ``mask_thr_binary``; :func:`paste_masks` does that).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..imaging import IMAGENET_MEAN, IMAGENET_STD
from ..ops.detection import batched_nms, nms_keep
from . import ModelSpec, register
from .detection_parts import (
    FCNMaskHead,
    FPNCARAFE,
    RoIHead,
    RPNHead,
    Shared2FCBBoxHead,
    base_anchors,
    delta2bbox,
    extract_roi_features,
    grid_anchors,
)
from .resnet import ResNet

__all__ = ["TestConfig", "TwoStageDetector", "FeatureNetwork", "COCO_CLASSES", "paste_masks", "MIN_IMAGE_SIZE",
           "DETECTORS", "TINY", "calibrate_random_heads", "DETECTION_OPS"]

DETECTORS = ("faster_rcnn_r50_fpn_carafe", "mask_rcnn_r50_fpn_carafe")

# mmdet DetDataPreprocessor for the COCO configs (RGB order, 0..255): the graph normalizes with these
MEAN, STD = IMAGENET_MEAN, IMAGENET_STD
PAD_DIVISOR = 64  # the CARAFE configs pad to 64 (the extra FPN level is stride 64)
MIN_IMAGE_SIZE = 32
STRIDES = (4, 8, 16, 32, 64)
DETECTION_OPS = ("standard", "plugin")  # how NMS and RoI Align appear in the graph (module docstring)

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip


@dataclass(frozen=True)
class TestConfig:
    """mmdet's test_cfg of the R50-FPN configs; every field can be overridden through ``build(..., name=value)``."""

    rpn_nms_pre: int = 1000
    rpn_nms_iou: float = 0.7
    rpn_max_per_img: int = 1000
    rpn_min_bbox_size: float = 0.0
    score_thr: float = 0.05
    nms_iou: float = 0.5
    max_per_img: int = 100
    mask_size: int = 28
    mask_thr_binary: float = 0.5
    bbox_sampling_ratio: int = 0
    mask_sampling_ratio: int = 0
    input_order: str = "rgb"  # "bgr" flips the channels in the graph (mmdet's bgr_to_rgb)


def _check_image(image: Tensor) -> None:
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (N, 3, H, W) with 3 colour channels, got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"image must be a float tensor with values 0..255, got {image.dtype}")
    if image.shape[2] < MIN_IMAGE_SIZE or image.shape[3] < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image is {image.shape[2]}x{image.shape[3]}; both sides must be at least {MIN_IMAGE_SIZE} pixels"
        )


def _masked_topk(scores: Tensor, keep: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``k`` kept entries per row (score order); returns (scores, indices, valid)."""
    ranked = torch.where(keep, scores, torch.full_like(scores, float("-inf")))
    values, idx = ranked.topk(k, dim=1)
    # the padding slots tie at -inf and their order is runtime-specific: their validity comes from the mask
    return values, idx, torch.gather(keep, 1, idx)


def _gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """x (N, M, D), idx (N, K) -> (N, K, D)."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


class TwoStageDetector(nn.Module):
    """Faster / Mask R-CNN with ResNet, FPN_CARAFE, RPN and RoI heads under mmdetection's parameter names.

    ``upsample_cfg`` / ``mask_upsample_cfg``: the CARAFE arguments of the neck's and the mask head's upsamplers
    (mmdet's ``neck.upsample_cfg`` and ``roi_head.mask_head.upsample_cfg``: up_kernel, up_group, encoder_kernel,
    encoder_dilation, compressed_channels), over ``compressed_channels``.
    """

    def __init__(self, with_mask: bool, num_classes: int = 80, base_channels: int = 64, neck_channels: int = 256,
                 fc_channels: int = 1024, mask_channels: int = 256, compressed_channels: int = 64,
                 test_cfg: TestConfig | None = None, depth: int = 50, upsample_cfg: dict | None = None,
                 mask_upsample_cfg: dict | None = None):
        super().__init__()
        self.backbone = ResNet(depth=depth, out_indices=(0, 1, 2, 3), base_channels=base_channels)
        up = {"compressed_channels": compressed_channels, **(upsample_cfg or {})}
        mask_up = {"compressed_channels": compressed_channels, **(mask_upsample_cfg or {})}
        self.neck = FPNCARAFE(self.backbone.out_channels, neck_channels, num_outs=5, upsample_cfg=up)
        self.rpn_head = RPNHead(neck_channels, neck_channels, num_anchors=3)
        bbox_head = Shared2FCBBoxHead(neck_channels, 7, fc_channels, num_classes)
        mask_head = FCNMaskHead(neck_channels, mask_channels, 4, num_classes, mask_up) if with_mask else None
        self.roi_head = RoIHead(bbox_head, mask_head)
        self.num_classes = num_classes
        self.test_cfg = test_cfg or TestConfig()
        if self.test_cfg.input_order not in ("rgb", "bgr"):
            raise ValueError(f"input_order must be 'rgb' or 'bgr', got {self.test_cfg.input_order!r}")
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        for i, s in enumerate(STRIDES):
            self.register_buffer(f"base_anchors_{i}", base_anchors(s), persistent=False)
        self.detection_ops = "standard"

    @property
    def _plugin_ops(self) -> bool:
        if self.detection_ops not in DETECTION_OPS:
            raise ValueError(f"detection_ops must be one of {DETECTION_OPS}, got {self.detection_ops!r}")
        return self.detection_ops == "plugin"

    @property
    def with_mask(self) -> bool:
        return self.roi_head.with_mask

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("dets", "labels", "masks") if self.with_mask else ("dets", "labels")

    # ---- stages --------------------------------------------------------------------------------------------

    def preprocess(self, image: Tensor) -> Tensor:
        if self.test_cfg.input_order == "bgr":
            image = image.flip(1)
        x = (image - self.mean) / self.std
        h, w = x.shape[2], x.shape[3]
        # mmdet pads the normalized image with zeros at the bottom/right to a multiple of the divisor
        pad_w = (PAD_DIVISOR - w % PAD_DIVISOR) % PAD_DIVISOR
        pad_h = (PAD_DIVISOR - h % PAD_DIVISOR) % PAD_DIVISOR
        return F.pad(x, (0, pad_w, 0, pad_h))

    def features(self, image: Tensor) -> tuple[Tensor, ...]:
        return self.neck(self.backbone(self.preprocess(image)))

    def proposals(self, feats, img_h, img_w) -> tuple[Tensor, Tensor]:
        """mmdet RPNHead.predict: per-level top nms_pre, decode, drop empty boxes, NMS per level, top max_per_img.

        Returns boxes (N, P, 4) and valid (N, P); P = min(rpn_max_per_img, 5 · rpn_nms_pre), whatever the image size.
        """
        cfg = self.test_cfg
        n = feats[0].shape[0]
        all_scores, all_deltas, all_anchors, all_levels, real = [], [], [], [], []
        for lvl, feat in enumerate(feats):
            cls, reg = self.rpn_head(feat)
            h, w = feat.shape[2], feat.shape[3]
            scores = cls.permute(0, 2, 3, 1).reshape(n, -1).sigmoid()
            deltas = reg.permute(0, 2, 3, 1).reshape(n, -1, 4)
            anchors = grid_anchors(getattr(self, f"base_anchors_{lvl}"), h, w, STRIDES[lvl])
            # mmdet keeps the top nms_pre, or all when a level has fewer. Padding with nms_pre slots that lose every
            # comparison makes k = nms_pre whatever the image size: a constant TopK K, no shape arithmetic
            k = cfg.rpn_nms_pre
            count = scores.shape[1]
            padded = torch.cat([scores, scores.new_full((n, k), -1.0)], dim=1)  # sigmoid scores are >= 0
            scores, idx = padded.topk(k, dim=1)
            real.append(idx < count)
            idx = idx.clamp(max=count - 1)  # padding slots read a real anchor; `real` marks them invalid
            all_scores.append(scores)
            all_deltas.append(_gather_rows(deltas, idx))
            all_anchors.append(anchors[idx])
            all_levels.append(torch.full((k,), lvl, dtype=torch.float32, device=feat.device))
        scores = torch.cat(all_scores, 1)
        boxes = delta2bbox(torch.cat(all_anchors, 1), torch.cat(all_deltas, 1), (1.0, 1.0, 1.0, 1.0), img_h, img_w)
        levels = torch.cat(all_levels)
        min_size = cfg.rpn_min_bbox_size
        valid = ((boxes[..., 2] - boxes[..., 0]) > min_size) & ((boxes[..., 3] - boxes[..., 1]) > min_size)
        valid = valid & torch.cat(real, 1)
        k = min(cfg.rpn_max_per_img, scores.shape[1])
        if self._plugin_ops:  # the levels are the classes: each box scores in its own level's column only
            own = levels[None, :, None] == torch.arange(len(feats), device=levels.device, dtype=levels.dtype)
            level_scores = torch.where(own & valid[..., None], scores[..., None], -2.0)
            proposals, _, _, count = batched_nms(boxes[:, :, None, :], level_scores, -1.0, cfg.rpn_nms_iou, k)
            return proposals, torch.arange(k, device=count.device)[None, :] < count[:, None]
        keep = self._batched_nms(boxes, scores, levels[None, :], valid, cfg.rpn_nms_iou, -1.0,
                                 cfg.rpn_max_per_img)
        _, idx, ok = _masked_topk(scores, keep, k)
        return _gather_rows(boxes, idx), ok

    @staticmethod
    def _batched_nms(boxes, scores, groups, valid, iou, score_thr, max_output) -> Tensor:
        """mmdet batched_nms: NMS within each group (level / class) by offsetting each group's boxes apart.

        As mmdet, the offset is group · (largest coordinate among the candidates + 1). Non-candidates get a score
        below the threshold, so they neither survive nor suppress.
        """
        # float32 whatever the model's dtype: the offsets (up to classes · image size) overflow float16
        boxes, scores, groups = boxes.float(), scores.float(), groups.float()
        cand = valid & (scores > score_thr)
        max_coord = torch.where(cand[..., None], boxes, torch.zeros_like(boxes)).amax(dim=(1, 2))
        shifted = boxes + (groups * (max_coord[:, None] + 1))[..., None]
        low = torch.full_like(scores, min(score_thr, 0.0) - 1.0)
        return nms_keep(shifted, torch.where(cand, scores, low), iou, score_thr, max_output)

    def detect(self, feats, proposals: Tensor, prop_valid: Tensor, img_h, img_w):
        """mmdet StandardRoIHead.predict_bbox + multiclass_nms: (dets (N, K, 5), labels (N, K), valid (N, K))."""
        cfg = self.test_cfg
        n, p = proposals.shape[:2]
        c = self.num_classes
        rois = proposals.reshape(-1, 4)
        bidx = torch.arange(n, device=rois.device)[:, None].expand(n, p).reshape(-1)
        roi_feats = extract_roi_features(feats[:4], rois, bidx, STRIDES[:4], 7, cfg.bbox_sampling_ratio,
                                         plugin=self._plugin_ops)
        cls, reg = self.roi_head.bbox_head(roi_feats)
        scores = F.softmax(cls, dim=-1)[:, :c].reshape(n, p * c)
        boxes = delta2bbox(rois[:, None, :].expand(-1, c, 4), reg.reshape(-1, c, 4), (0.1, 0.1, 0.2, 0.2),
                           img_h, img_w).reshape(n, p * c, 4)
        labels = torch.arange(c, device=rois.device).repeat(p)  # flattened (proposal, class), as mmdet
        valid = prop_valid[:, :, None].expand(n, p, c).reshape(n, p * c)
        if self._plugin_ops:
            cand = torch.where(valid, scores, min(cfg.score_thr, 0.0) - 1.0).reshape(n, p, c)
            det_boxes, det_scores, det_labels, count = batched_nms(boxes.reshape(n, p, c, 4), cand, cfg.score_thr,
                                                                   cfg.nms_iou, cfg.max_per_img)
            ok = torch.arange(cfg.max_per_img, device=count.device)[None, :] < count[:, None]
            return torch.cat([det_boxes, det_scores[..., None]], dim=-1), det_labels.long(), ok
        keep = self._batched_nms(boxes, scores, labels[None, :].to(boxes.dtype), valid, cfg.nms_iou, cfg.score_thr,
                                 cfg.max_per_img)
        k = min(cfg.max_per_img, p * c)
        values, idx, ok = _masked_topk(scores, keep, k)
        det_boxes = torch.where(ok[..., None], _gather_rows(boxes, idx), 0.0)
        det_scores = torch.where(ok, values, 0.0)
        det_labels = torch.where(ok, labels[idx], -1)
        dets = torch.cat([det_boxes, det_scores[..., None]], dim=-1)
        if k < cfg.max_per_img:  # fewer candidates than output slots: pad
            pad = cfg.max_per_img - k
            dets = F.pad(dets, (0, 0, 0, pad))
            det_labels = F.pad(det_labels, (0, pad), value=-1)
            ok = F.pad(ok, (0, pad), value=False)
        return dets, det_labels, ok

    def segment(self, feats, dets: Tensor, labels: Tensor, ok: Tensor) -> Tensor:
        """mmdet predict_mask without pasting: the sigmoid 28×28 mask of each detection's class."""
        cfg = self.test_cfg
        n, k = labels.shape
        rois = dets[..., :4].reshape(-1, 4)
        bidx = torch.arange(n, device=rois.device)[:, None].expand(n, k).reshape(-1)
        mask_feats = extract_roi_features(feats[:4], rois, bidx, STRIDES[:4], cfg.mask_size // 2,
                                          cfg.mask_sampling_ratio, plugin=self._plugin_ops)
        logits = self.roi_head.mask_head(mask_feats)  # (n·k, classes, 28, 28)
        cls = labels.reshape(-1).clamp(min=0)
        picked = torch.gather(logits, 1, cls[:, None, None, None].expand(-1, 1, *logits.shape[2:]))[:, 0]
        masks = picked.sigmoid().reshape(n, k, *logits.shape[2:])
        return torch.where(ok[..., None, None], masks, 0.0)

    def forward(self, image: Tensor):
        _check_image(image)
        img_h, img_w = image.shape[2], image.shape[3]
        feats = self.features(image)
        proposals, prop_valid = self.proposals(feats, img_h, img_w)
        dets, labels, ok = self.detect(feats, proposals, prop_valid, img_h, img_w)
        if not self.with_mask:
            return dets, labels
        return dets, labels, self.segment(feats, dets, labels, ok)


class FeatureNetwork(nn.Module):
    """A detector's preprocessing, backbone and FPN_CARAFE: ``image -> (p2, ..., p6)``. The part of the detectors
    that TensorRT-RTX builds (the RPN and RoI heads need NMS, which it has no implementation of)."""

    def __init__(self, detector: TwoStageDetector):
        super().__init__()
        self.detector = detector

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        return self.detector.features(image)


def paste_masks(masks, boxes, height: int, width: int, threshold: float = 0.5):
    """mmdet's ``_do_paste_mask``: sample each (28×28) mask over the image inside its box, then threshold.

    ``masks`` (K, 28, 28) probabilities, ``boxes`` (K, 4) in pixels; returns (K, height, width) bool.
    """
    masks = torch.as_tensor(masks, dtype=torch.float32)
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    if masks.shape[0] == 0:
        return torch.zeros(0, height, width, dtype=torch.bool)
    x0, y0, x1, y1 = boxes.unbind(1)
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    gy = (ys[None] - y0[:, None]) / (y1 - y0).clamp(min=1e-6)[:, None] * 2 - 1
    gx = (xs[None] - x0[:, None]) / (x1 - x0).clamp(min=1e-6)[:, None] * 2 - 1
    grid = torch.stack(
        [gx[:, None, :].expand(-1, height, -1), gy[:, :, None].expand(-1, -1, width)], dim=3
    )
    pasted = F.grid_sample(masks[:, None], grid, align_corners=False)[:, 0]
    return pasted >= threshold


# --------------------------------------------------------------------------------------------------------------
# registry

_CFG_FIELDS = set(TestConfig.__dataclass_fields__)


def _cfg_value(name: str, value):
    """``value`` for TestConfig field ``name`` if it has the field's type (an int where the default is one, any
    finite number for a float, a string for a string), else ``ValueError`` naming the field."""
    import math

    default = getattr(TestConfig, name)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        ok, want = isinstance(value, str), "a string"
    elif isinstance(default, int):
        ok, want = number and float(value).is_integer(), "an integer"
    else:
        ok, want = number and math.isfinite(value), "a finite number"
    if not ok:
        raise ValueError(f"{name} must be {want} (default {default!r}), got {value!r}")
    return type(default)(value)


def _builder(with_mask: bool):
    def build(**overrides) -> TwoStageDetector:
        cfg_over = {k: _cfg_value(k, overrides.pop(k)) for k in list(overrides) if k in _CFG_FIELDS}
        unknown = set(overrides) - {"num_classes", "base_channels", "neck_channels", "fc_channels", "mask_channels",
                                    "compressed_channels", "depth", "upsample_cfg", "mask_upsample_cfg"}
        if unknown:
            raise ValueError(f"unknown detector option(s): {', '.join(sorted(unknown))}")
        return TwoStageDetector(with_mask, test_cfg=replace(TestConfig(), **cfg_over), **overrides)

    return build


_DYNAMIC = {"image": {0: "batch", 2: "height", 3: "width"}}
# narrow widths, same structure and names: quick checks of the graph (tests, --tiny)
TINY = dict(base_channels=8, neck_channels=32, fc_channels=64, mask_channels=32, compressed_channels=16)

register(ModelSpec(
    task="detection",
    name="faster_rcnn_r50_fpn_carafe",
    builder=_builder(False),
    input_names=("image",),
    output_names=("dets", "labels"),
    default_input_shape=(1, 3, 800, 1216),
    dynamic_axes=_DYNAMIC,
    dynamic_by_default=False,
    tiny=TINY,
    description="mmdet faster-rcnn_r50_fpn-carafe_1x_coco (box AP 37.8): image -> dets, labels",
))
register(ModelSpec(
    task="detection",
    name="mask_rcnn_r50_fpn_carafe",
    builder=_builder(True),
    input_names=("image",),
    output_names=("dets", "labels", "masks"),
    default_input_shape=(1, 3, 800, 1216),
    dynamic_axes=_DYNAMIC,
    dynamic_by_default=False,
    tiny=TINY,
    description="mmdet mask-rcnn_r50_fpn-carafe_1x_coco (box 38.6 / mask 35.6): image -> dets, labels, masks",
))


@torch.no_grad()
def calibrate_random_heads(model: TwoStageDetector, image: Tensor, logit_std: float = 2.0, delta_std: float = 0.1,
                           seed: int = 0) -> None:
    """Give a randomly initialised detector classifier logits and box deltas of a chosen spread on ``image``.

    With random weights the un-normalised activations make mmdet's initialisation of ``fc_cls``/``fc_reg`` give
    either uniform class scores (nothing above score_thr) or saturated ones (ties). Tests and the random-weights
    sample rescale the two layers from a measured input scale so that a random model yields real detections.
    Never use this on trained weights.
    """
    head = model.roi_head.bbox_head
    seen = {}

    def grab(module, inputs, output) -> None:
        seen["x"] = inputs[0]

    handle = head.fc_cls.register_forward_hook(grab)
    try:
        model(image)
    finally:
        handle.remove()
    x = seen["x"]
    scale = float(x.pow(2).mean().sqrt().clamp(min=1e-6)) * x.shape[1] ** 0.5
    gen = torch.Generator().manual_seed(seed)
    for fc, target in ((head.fc_cls, logit_std), (head.fc_reg, delta_std)):
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=gen) * (target / scale))
        fc.bias.zero_()
