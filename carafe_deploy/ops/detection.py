"""Detection ops for whole-graph detectors: non-maximum suppression and RoI Align as ``torch.library`` custom ops.

torchvision does not run here, and the detectors must export to the standard ONNX ``NonMaxSuppression`` and
``RoiAlign`` nodes (both parsed natively by TensorRT), so each op has three parts: an eager kernel in plain torch that
reproduces ONNX Runtime's implementation of the ONNX op, a fake kernel with static output shapes for ``torch.export``,
and an ONNX translation (:mod:`carafe_deploy.onnx.detection`).

``nms_keep`` returns a fixed-shape keep mask instead of ONNX's variable-length index list: the dynamo exporter and
TensorRT both prefer static shapes, and callers rank the kept boxes with a masked top-k (single class, so ONNX's
output order is the score order anyway).

The detectors' plugin form uses two more ops, one node each in ONNX (``carafe::MultiLevelRoIAlign``,
``carafe::BatchedNMS``, the TensorRT plugins of plugins/tensorrt/): ``multi_level_roi_align`` (mmdet's
SingleRoIExtractor: every RoI pooled at its FPN level, :func:`pool_roi_levels`) and ``batched_nms`` (per-class NMS
with fixed-size outputs). Their eager kernels compute the same as the standard ops above.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["nms_keep", "roi_align", "roi_levels", "pool_roi_levels", "multi_level_roi_align", "batched_nms"]


# --------------------------------------------------------------------------------------------------------------
# NMS


def _nms_single(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, score_threshold: float, max_output: int):
    """Indices ONNX Runtime's NonMaxSuppression selects for one image and one class.

    ORT: candidates are boxes with score > score_threshold, visited in descending score, ties by ascending index; a
    candidate is dropped when its IoU with an already selected box is > iou_threshold; IoU is 0 (no suppression) when
    either area or the intersection is not positive. All arithmetic in float32 as ORT does it.
    """
    cand = np.nonzero(scores > np.float32(score_threshold))[0]
    order = cand[np.argsort(-scores[cand], kind="stable")]
    x_min = np.minimum(boxes[:, 0], boxes[:, 2])
    x_max = np.maximum(boxes[:, 0], boxes[:, 2])
    y_min = np.minimum(boxes[:, 1], boxes[:, 3])
    y_max = np.maximum(boxes[:, 1], boxes[:, 3])
    area = (x_max - x_min) * (y_max - y_min)
    thr = np.float32(iou_threshold)
    selected: list[int] = []
    sel = np.empty(0, dtype=np.int64)
    for i in order:
        if len(selected) >= max_output:
            break
        if sel.size:
            iw = np.maximum(np.minimum(x_max[sel], x_max[i]) - np.maximum(x_min[sel], x_min[i]), np.float32(0))
            ih = np.maximum(np.minimum(y_max[sel], y_max[i]) - np.maximum(y_min[sel], y_min[i]), np.float32(0))
            inter = ih * iw
            union = area[sel] + area[i] - inter
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = inter / union
            suppress = (inter > 0) & (area[sel] > 0) & (area[i] > 0) & (union > 0) & (iou > thr)
            if suppress.any():
                continue
        selected.append(int(i))
        sel = np.asarray(selected, dtype=np.int64)
    return sel


@torch.library.custom_op("carafe_deploy::nms_keep", mutates_args=())
def _nms_keep_op(
    boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float, max_output: int
) -> Tensor:
    b, m = scores.shape
    keep = torch.zeros(b, m, dtype=torch.bool, device=scores.device)
    bx = boxes.detach().to(torch.float32).cpu().numpy()
    sc = scores.detach().to(torch.float32).cpu().numpy()
    for i in range(b):
        idx = _nms_single(bx[i], sc[i], iou_threshold, score_threshold, max_output)
        keep[i, torch.from_numpy(idx).to(keep.device)] = True
    return keep


@_nms_keep_op.register_fake
def _nms_keep_fake(boxes, scores, iou_threshold, score_threshold, max_output):
    return scores.new_empty(scores.shape, dtype=torch.bool)


def nms_keep(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float, max_output: int) -> Tensor:
    """(B, M) bool mask of the boxes ONNX ``NonMaxSuppression`` keeps (one class, ``center_point_box=0``).

    ``boxes`` (B, M, 4) as (x1, y1, x2, y2), ``scores`` (B, M). At most ``max_output`` boxes per image are kept: the
    highest-scoring ones, since suppression is greedy in score order. Only boxes with score > ``score_threshold`` are
    candidates (a box that is not a candidate suppresses nothing).
    """
    if not isinstance(boxes, Tensor) or not isinstance(scores, Tensor):
        raise TypeError("boxes and scores must be torch.Tensor")
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, M, 4), got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:2]:
        raise ValueError(f"scores must be (B, M) = {tuple(boxes.shape[:2])}, got {tuple(scores.shape)}")
    if isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 1:
        raise ValueError(f"max_output must be an int >= 1, got {max_output!r}")
    return torch.ops.carafe_deploy.nms_keep(boxes, scores, float(iou_threshold), float(score_threshold), max_output)


# --------------------------------------------------------------------------------------------------------------
# RoI Align


def _axis_samples(start: Tensor, bin_size: Tensor, grid: int, pooled: int, size: int):
    """Bilinear taps along one axis for the ``grid`` samples of each of ``pooled`` bins: (low, high, w_low, w_high).

    Each is (K, pooled, grid); ORT's border rules (a sample beyond [-1, size] weighs zero; below 0 it clamps to 0; at
    or past size - 1 it reads the last row only) and ORT's float32 arithmetic for the sample position
    ``start + p * bin + (i + .5) * bin / grid``. A 2-D sample's four weights are products of these (ORT's w1..w4),
    and so is its "outside" rule.
    """
    dev = start.device
    p = torch.arange(pooled, device=dev, dtype=torch.float32)[None, :, None]
    i = torch.arange(grid, device=dev, dtype=torch.float32)[None, None, :]
    b = bin_size[:, None, None]
    pos = start[:, None, None] + p * b + (i + 0.5) * b / grid
    inside = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0)
    low = pos.floor().to(torch.int64)  # truncation == floor for pos >= 0
    last = low >= size - 1
    low = torch.where(last, torch.full_like(low, size - 1), low)
    high = torch.where(last, low, low + 1)
    frac = torch.where(last, torch.zeros_like(pos), pos - low.to(pos.dtype))
    zero = torch.zeros_like(frac)
    return low, high, torch.where(inside, 1.0 - frac, zero), torch.where(inside, frac, zero)


# Gathered values per chunk of RoIs (C · K · pooled_h · pooled_w · 4 · grid_h · grid_w floats), about 32 MB
_ROI_GATHER_ELEMS = 1 << 23


def _pool_group(feat: Tensor, y0, bin_h, x0, bin_w, gh: int, gw: int, oh: int, ow: int) -> Tensor:
    """(K, C, oh, ow) for RoIs of one image that share the sample grid (gh, gw): the 4·gh·gw bilinear taps of each
    bin are gathered from ``feat`` (C, H, W) and averaged; nothing else of the feature map is read."""
    c, h, w = feat.shape
    ylo, yhi, wylo, wyhi = _axis_samples(y0, bin_h, gh, oh, h)
    xlo, xhi, wxlo, wxhi = _axis_samples(x0, bin_w, gw, ow, w)
    rows = torch.stack([ylo, yhi], -1).reshape(-1, oh, 1, 2 * gh, 1)  # (K, oh, 1, taps_y, 1)
    cols = torch.stack([xlo, xhi], -1).reshape(-1, 1, ow, 1, 2 * gw)  # (K, 1, ow, 1, taps_x)
    # the average over the bin's samples folded into the weights; ORT's w1..w4 are these products
    wy = (torch.stack([wylo, wyhi], -1) / (gh * gw)).reshape(-1, oh, 1, 2 * gh, 1)
    wx = torch.stack([wxlo, wxhi], -1).reshape(-1, 1, ow, 1, 2 * gw)
    k = rows.shape[0]
    taps = 4 * gh * gw
    flat = (rows * w + cols).reshape(-1)  # (K, oh, ow, taps_y, taps_x): each bin's taps last
    vals = feat.reshape(c, h * w).index_select(1, flat).reshape(c, k, oh, ow, taps)
    return vals.mul_((wy * wx).reshape(k, oh, ow, taps)).sum(-1).permute(1, 0, 2, 3)


def _roi_align_impl(features: Tensor, rois: Tensor, batch_indices: Tensor, output_height: int, output_width: int,
                    spatial_scale: float, sampling_ratio: int) -> Tensor:
    """The op's computation in plain torch (differentiable in ``features``: the backward differentiates it)."""
    n, c, h, w = features.shape
    k = rois.shape[0]
    out = features.new_zeros((k, c, output_height, output_width))
    if k == 0 or c == 0:
        return out
    r = rois.to(torch.float32)
    scale = torch.tensor(spatial_scale, dtype=torch.float32)
    # half_pixel (mmcv aligned=True): shift by half a pixel, no minimum RoI size
    x0 = r[:, 0] * scale - 0.5
    y0 = r[:, 1] * scale - 0.5
    roi_w = r[:, 2] * scale - 0.5 - x0
    roi_h = r[:, 3] * scale - 0.5 - y0
    bin_w = roi_w / output_width
    bin_h = roi_h / output_height
    if sampling_ratio > 0:
        grid_w = torch.full((k,), sampling_ratio, dtype=torch.int64, device=rois.device)
        grid_h = grid_w.clone()
    else:  # adaptive, as ORT and mmcv: ceil(roi_size / pooled_size)
        grid_w = torch.ceil(roi_w / output_width).to(torch.int64).clamp(min=0)
        grid_h = torch.ceil(roi_h / output_height).to(torch.int64).clamp(min=0)
    # RoIs without samples (empty boxes: the detectors' RoIs of other FPN levels) pool to 0 and cost nothing
    feats = features.to(torch.float32)
    bidx = batch_indices.to(torch.int64)
    active = (grid_h > 0) & (grid_w > 0)
    # one pass per (image, sample grid): the RoIs of a group share their tensor shapes
    keys = torch.stack([bidx, grid_h, grid_w], 1)[active]
    for b, gh, gw in torch.unique(keys, dim=0).tolist():
        sel = torch.nonzero(active & (bidx == b) & (grid_h == gh) & (grid_w == gw)).flatten()
        per_roi = c * output_height * output_width * 4 * gh * gw
        step = max(1, _ROI_GATHER_ELEMS // per_roi)
        for s in range(0, sel.numel(), step):
            part = sel[s : s + step]
            pooled = _pool_group(feats[b], y0[part], bin_h[part], x0[part], bin_w[part], gh, gw, output_height,
                                 output_width)
            out[part] = pooled.to(out.dtype)
    return out


@torch.library.custom_op("carafe_deploy::roi_align", mutates_args=())
def _roi_align_op(
    features: Tensor,
    rois: Tensor,
    batch_indices: Tensor,
    output_height: int,
    output_width: int,
    spatial_scale: float,
    sampling_ratio: int,
) -> Tensor:
    return _roi_align_impl(features, rois, batch_indices, output_height, output_width, spatial_scale,
                           sampling_ratio)


def _roi_align_setup_context(ctx, inputs, output) -> None:
    features, rois, batch_indices, *settings = inputs
    ctx.save_for_backward(rois, batch_indices)
    ctx.features = (features.shape, features.dtype, features.device)
    ctx.settings = settings


def _roi_align_backward(ctx, grad: Tensor):
    # RoI Align is linear in the features, so its gradient does not depend on them: autograd through the same
    # computation on zeros gives it (the sample positions and weights are the forward's). No gradient for the RoIs
    # (mmdet's two-stage detectors detach their proposals too).
    rois, batch_indices = ctx.saved_tensors
    shape, dtype, device = ctx.features
    with torch.enable_grad():
        features = torch.zeros(shape, dtype=dtype, device=device, requires_grad=True)
        out = _roi_align_impl(features, rois, batch_indices, *ctx.settings)
        if not out.requires_grad:  # no RoI took a sample: nothing depends on the features
            return torch.zeros(shape, dtype=dtype, device=device), None, None, None, None, None, None
        (grad_features,) = torch.autograd.grad(out, features, grad)
    return grad_features, None, None, None, None, None, None


_roi_align_op.register_autograd(_roi_align_backward, setup_context=_roi_align_setup_context)


@_roi_align_op.register_fake
def _roi_align_fake(features, rois, batch_indices, output_height, output_width, spatial_scale, sampling_ratio):
    return features.new_empty((rois.shape[0], features.shape[1], output_height, output_width))


def _check_rois(rois: Tensor, batch_indices: Tensor) -> None:
    if rois.dim() != 2 or rois.shape[-1] != 4:
        raise ValueError(f"rois must be (K, 4), got {tuple(rois.shape)}")
    if batch_indices.shape != rois.shape[:1]:
        raise ValueError(f"batch_indices must be (K,) = ({rois.shape[0]},), got {tuple(batch_indices.shape)}")


def roi_align(
    features: Tensor,
    rois: Tensor,
    batch_indices: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int = 0,
) -> Tensor:
    """ONNX ``RoiAlign`` (mode "avg", coordinate_transformation_mode "half_pixel") = mmcv ``RoIAlign(aligned=True)``.

    ``features`` (N, C, H, W), ``rois`` (K, 4) as (x1, y1, x2, y2) in image pixels, ``batch_indices`` (K,) int64.
    ``sampling_ratio`` 0 takes ceil(roi_size / output_size) samples per bin along each axis (adaptive).
    """
    if features.dim() != 4:
        raise ValueError(f"features must be (N, C, H, W), got {tuple(features.shape)}")
    _check_rois(rois, batch_indices)
    oh, ow = output_size
    if min(oh, ow) < 1 or sampling_ratio < 0 or not math.isfinite(spatial_scale) or spatial_scale <= 0:
        raise ValueError(
            f"bad RoI Align settings: output_size {output_size}, sampling_ratio {sampling_ratio}, "
            f"spatial_scale {spatial_scale}"
        )
    return torch.ops.carafe_deploy.roi_align(
        features, rois, batch_indices.to(torch.int64), int(oh), int(ow), float(spatial_scale), int(sampling_ratio)
    )


# --------------------------------------------------------------------------------------------------------------
# Multi-level RoI Align (mmdet SingleRoIExtractor)

FINEST_SCALE = 56  # mmdet SingleRoIExtractor's finest_scale


def roi_levels(rois: Tensor, num_levels: int, finest_scale: float = FINEST_SCALE) -> Tensor:
    """mmdet's FPN level of each RoI (K, 4), as a float tensor: floor(log2(sqrt(area) / finest_scale + 1e-6))
    clamped to [0, num_levels - 1]; NaN for a RoI whose area is negative or NaN (it is pooled at no level)."""
    scale = torch.sqrt((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1]))
    return torch.floor(torch.log2(scale / finest_scale + 1e-6)).clamp(min=0, max=num_levels - 1)


def pool_roi_levels(feats, rois: Tensor, batch_indices: Tensor, strides, output_size: tuple[int, int],
                    sampling_ratio: int = 0, finest_scale: float = FINEST_SCALE) -> Tensor:
    """Each RoI pooled (RoI Align, aligned) from the level its scale maps to (:func:`roi_levels`), in standard ops.

    For fixed shapes every level gets every RoI, but the RoIs of other levels are replaced by the empty box
    (0, 0, 0, 0): with adaptive sampling an empty box takes no samples (it pools to exactly 0, and costs nothing in
    ORT, TensorRT or eager), so the sum over levels is each RoI pooled at its own level, bit for bit.
    """
    levels = roi_levels(rois, len(strides), finest_scale)
    out = None
    for lvl, (feat, stride) in enumerate(zip(feats, strides)):
        pick = levels == lvl
        level_rois = torch.where(pick[:, None], rois, 0.0)
        pooled = roi_align(feat, level_rois, batch_indices, output_size, 1.0 / stride, sampling_ratio)
        if sampling_ratio > 0:  # a fixed sampling ratio samples empty boxes too: mask them
            pooled = torch.where(pick[:, None, None, None], pooled, 0.0)
        out = pooled if out is None else out + pooled
    return out


@torch.library.custom_op("carafe_deploy::multi_level_roi_align", mutates_args=())
def _multi_level_roi_align_op(
    rois: Tensor,
    batch_indices: Tensor,
    features: list[Tensor],
    output_height: int,
    output_width: int,
    sampling_ratio: int,
    featmap_strides: list[float],
    finest_scale: float,
) -> Tensor:
    return pool_roi_levels(features, rois, batch_indices, featmap_strides, (output_height, output_width),
                           sampling_ratio, finest_scale)


@_multi_level_roi_align_op.register_fake
def _multi_level_roi_align_fake(rois, batch_indices, features, output_height, output_width, sampling_ratio,
                                featmap_strides, finest_scale):
    return features[0].new_empty((rois.shape[0], features[0].shape[1], output_height, output_width))


def multi_level_roi_align(rois: Tensor, batch_indices: Tensor, features, output_size: tuple[int, int], featmap_strides,
                          sampling_ratio: int = 0, finest_scale: float = FINEST_SCALE) -> Tensor:
    """(K, C, oh, ow): :func:`pool_roi_levels` as one op (ONNX node ``carafe::MultiLevelRoIAlign``, the TensorRT
    plugin ``MultiLevelRoIAlign``). ``rois`` (K, 4) x1 y1 x2 y2 in image pixels, ``batch_indices`` (K,) int,
    ``features`` one (N, C, H_l, W_l) map per stride of ``featmap_strides``."""
    features = list(features)
    strides = [float(s) for s in featmap_strides]
    if not features or len(features) != len(strides):
        raise ValueError(f"one feature map per featmap stride: {len(features)} maps, {len(strides)} strides")
    if len(strides) > 8 or min(strides) <= 0:
        raise ValueError(f"1 to 8 positive featmap strides, got {strides}")
    _check_rois(rois, batch_indices)
    oh, ow = output_size
    if min(oh, ow) < 1 or sampling_ratio < 0 or not finest_scale > 0:
        raise ValueError(f"bad RoI Align settings: output_size {output_size}, sampling_ratio {sampling_ratio}, "
                         f"finest_scale {finest_scale}")
    return torch.ops.carafe_deploy.multi_level_roi_align(rois, batch_indices, features, int(oh), int(ow),
                                                         int(sampling_ratio), strides, float(finest_scale))


# --------------------------------------------------------------------------------------------------------------
# Batched multi-class NMS with fixed-size outputs


@torch.library.custom_op("carafe_deploy::batched_nms", mutates_args=())
def _batched_nms_op(
    boxes: Tensor, scores: Tensor, score_threshold: float, iou_threshold: float, max_per_class: int,
    max_per_image: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n, m, c = scores.shape
    k = max_per_image
    out_boxes = boxes.new_zeros((n, k, 4))
    out_scores = scores.new_zeros((n, k))
    labels = torch.full((n, k), -1, dtype=torch.int32, device=scores.device)
    valid = torch.zeros(n, dtype=torch.int32, device=scores.device)
    bx = boxes.detach().to(torch.float32).cpu().numpy()
    sc = scores.detach().to(torch.float32).cpu().numpy()
    per_class = max_per_class if max_per_class > 0 else max(m, 1)
    for i in range(n):
        kept = []  # (-score, row * C + class, row, class): the image's order
        for cls in range(c):
            rows = _nms_single(bx[i, :, 0 if boxes.shape[2] == 1 else cls], sc[i, :, cls], iou_threshold,
                               score_threshold, per_class)
            kept += [(-float(sc[i, r, cls]), int(r) * c + cls, int(r), cls) for r in rows]
        kept.sort()
        kept = kept[:k]
        if not kept:
            continue
        rows = torch.tensor([t[2] for t in kept], device=boxes.device)
        classes = torch.tensor([t[3] for t in kept], device=boxes.device)
        out_boxes[i, : len(kept)] = boxes[i, rows, 0 if boxes.shape[2] == 1 else classes]
        out_scores[i, : len(kept)] = scores[i, rows, classes]
        labels[i, : len(kept)] = classes.to(torch.int32)
        valid[i] = len(kept)
    return out_boxes, out_scores, labels, valid


@_batched_nms_op.register_fake
def _batched_nms_fake(boxes, scores, score_threshold, iou_threshold, max_per_class, max_per_image):
    n = scores.shape[0]
    return (boxes.new_empty((n, max_per_image, 4)), scores.new_empty((n, max_per_image)),
            scores.new_empty((n, max_per_image), dtype=torch.int32), scores.new_empty((n,), dtype=torch.int32))


def batched_nms(boxes: Tensor, scores: Tensor, score_threshold: float, iou_threshold: float, max_per_image: int,
                max_per_class: int = -1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-class NMS of a batch of images with fixed-size outputs (ONNX node ``carafe::BatchedNMS``, the TensorRT
    plugin ``BatchedNMS``; plugins/tensorrt/batchedNMSPlugin/batchedNMSParams.h states the semantics).

    ``boxes`` (N, M, 1 or C, 4) x1 y1 x2 y2 (one box per row shared by the classes, or one per row and class),
    ``scores`` (N, M, C). Per image and class, :func:`nms_keep`'s rule (candidates score > ``score_threshold``,
    greedy by score, IoU > ``iou_threshold`` suppresses), at most ``max_per_class`` kept (-1: no limit); the kept
    boxes of all classes by descending score (ties: lower row · C + class first), at most ``max_per_image``.
    Returns (boxes (N, K, 4), scores (N, K), labels (N, K) int32, valid (N,) int32), K = ``max_per_image``; empty
    slots hold boxes 0, scores 0, labels -1.
    """
    if boxes.dim() != 4 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (N, M, 1 or C, 4), got {tuple(boxes.shape)}")
    if scores.dim() != 3 or scores.shape[:2] != boxes.shape[:2] or boxes.shape[2] not in (1, scores.shape[2]):
        raise ValueError(f"scores must be (N, M, C) with boxes (N, M, 1 or C, 4); got scores {tuple(scores.shape)} "
                         f"and boxes {tuple(boxes.shape)}")
    if isinstance(max_per_image, bool) or not isinstance(max_per_image, int) or max_per_image < 1:
        raise ValueError(f"max_per_image must be an int >= 1, got {max_per_image!r}")
    if isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or (max_per_class < 1
                                                                                 and max_per_class != -1):
        raise ValueError(f"max_per_class must be -1 (no limit) or an int >= 1, got {max_per_class!r}")
    if not 0.0 <= iou_threshold <= 1.0 or not math.isfinite(score_threshold):
        raise ValueError(f"iou_threshold must be in [0, 1] and score_threshold finite, got {iou_threshold}, "
                         f"{score_threshold}")
    return torch.ops.carafe_deploy.batched_nms(boxes, scores, float(score_threshold), float(iou_threshold),
                                               max_per_class, max_per_image)
