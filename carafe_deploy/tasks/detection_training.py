"""Training a two-stage detector (:class:`~carafe_deploy.models.detectors.TwoStageDetector`) on the CPU: the losses of
mmdetection's Faster R-CNN R50-FPN config, written for the detector sample (:mod:`.detection_sample`).

The model's own parts run in training (backbone, FPN-CARAFE, RPN head, RoI Align, box head); what mmdet adds for
training is here, with its settings (``faster-rcnn_r50_fpn.py``'s ``train_cfg``):

- RPN: anchors assigned by IoU (``MaxIoUAssigner``: positive ≥ 0.7, negative < 0.3, and each object's best anchors
  when ≥ 0.3), 256 sampled per image with up to half positive, binary cross-entropy on the objectness and L1 on the
  box deltas (stds 1), both averaged over the sampled anchors;
- proposals: the model's own RPN post-processing (:meth:`TwoStageDetector.proposals`, fewer boxes than at test time),
  without gradients, plus the ground-truth boxes;
- box head: proposals assigned at IoU 0.5, 128 sampled per image (mmdet: 512; these images hold 1-4 objects) with
  up to a quarter positive, softmax cross-entropy over the classes and background, L1 on the class's box deltas
  (stds 0.1, 0.1, 0.2, 0.2) averaged over the sampled RoIs.

The mask head is not trained (the sample is a Faster R-CNN).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.detection_parts import extract_roi_features, grid_anchors
from ..models.detectors import STRIDES, TwoStageDetector
from .training import fit

__all__ = ["TrainSettings", "box_iou", "encode_deltas", "detector_losses", "train_detector"]

RPN_STDS = (1.0, 1.0, 1.0, 1.0)
RCNN_STDS = (0.1, 0.1, 0.2, 0.2)


@dataclass(frozen=True)
class TrainSettings:
    """mmdet's train_cfg of the R50-FPN configs, with the proposal and RoI counts cut for small images."""

    rpn_pos_iou: float = 0.7
    rpn_neg_iou: float = 0.3
    rpn_min_pos_iou: float = 0.3
    rpn_samples: int = 256
    rpn_pos_fraction: float = 0.5
    # proposals kept per level before NMS and per image after (mmdet: 2000 and 1000 for 1333x800 images)
    proposals_pre_nms: int = 256
    proposals: int = 256
    rcnn_iou: float = 0.5
    rcnn_samples: int = 128
    rcnn_pos_fraction: float = 0.25


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """(N, 4) x (M, 4) boxes (x1, y1, x2, y2) -> (N, M) IoU."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-6)


def encode_deltas(rois: Tensor, gt: Tensor, stds) -> Tensor:
    """mmdet ``DeltaXYWHBBoxCoder.encode`` (means 0): the deltas that
    :func:`~carafe_deploy.models.detection_parts.delta2bbox` turns ``rois`` back into ``gt`` with."""
    pwh = (rois[:, 2:] - rois[:, :2]).clamp(min=1e-3)
    gwh = (gt[:, 2:] - gt[:, :2]).clamp(min=1e-3)
    pxy = (rois[:, :2] + rois[:, 2:]) * 0.5
    gxy = (gt[:, :2] + gt[:, 2:]) * 0.5
    deltas = torch.cat([(gxy - pxy) / pwh, torch.log(gwh / pwh)], dim=1)
    return deltas / deltas.new_tensor(stds)


def _assign(iou: Tensor, pos_iou: float, neg_iou: float, min_pos_iou: float | None) -> tuple[Tensor, Tensor]:
    """mmdet ``MaxIoUAssigner`` on ``iou`` (candidates x objects): (label per candidate: 1 positive, 0 negative, -1
    ignored; the object each positive is assigned). ``min_pos_iou``: also give each object the candidates that
    overlap it best (mmdet's low-quality matches, all ties), when that overlap reaches it."""
    n = iou.shape[0]
    labels = torch.full((n,), -1, dtype=torch.int64)
    if iou.shape[1] == 0:
        labels.zero_()
        return labels, torch.zeros(n, dtype=torch.int64)
    best, assigned = iou.max(dim=1)
    labels[best < neg_iou] = 0
    labels[best >= pos_iou] = 1
    if min_pos_iou is not None:
        per_object = iou.max(dim=0).values
        for j in range(iou.shape[1]):
            if per_object[j] >= min_pos_iou:
                hit = iou[:, j] == per_object[j]
                labels[hit] = 1
                assigned[hit] = j
    return labels, assigned


def _sample(labels: Tensor, count: int, pos_fraction: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """mmdet ``RandomSampler``: up to ``count · pos_fraction`` positives, the rest negatives, at random."""
    pos = torch.nonzero(labels == 1).flatten()
    neg = torch.nonzero(labels == 0).flatten()
    pos = pos[torch.randperm(pos.numel(), generator=gen)[: int(count * pos_fraction)]]
    neg = neg[torch.randperm(neg.numel(), generator=gen)[: count - pos.numel()]]
    return pos, neg


def _all_anchors(model: TwoStageDetector, feats) -> Tensor:
    return torch.cat([grid_anchors(getattr(model, f"base_anchors_{lvl}"), f.shape[2], f.shape[3], STRIDES[lvl])
                      for lvl, f in enumerate(feats)])


def _rpn_loss(model: TwoStageDetector, feats, gt_boxes: list[Tensor], s: TrainSettings, gen) -> dict[str, Tensor]:
    n = feats[0].shape[0]
    cls, reg = [], []
    for feat in feats:
        c, r = model.rpn_head(feat)
        cls.append(c.permute(0, 2, 3, 1).reshape(n, -1))
        reg.append(r.permute(0, 2, 3, 1).reshape(n, -1, 4))
    cls, reg = torch.cat(cls, 1), torch.cat(reg, 1)
    anchors = _all_anchors(model, feats)
    cls_terms, reg_terms, sampled = [], [], 0
    for i, gt in enumerate(gt_boxes):
        labels, assigned = _assign(box_iou(anchors, gt), s.rpn_pos_iou, s.rpn_neg_iou, s.rpn_min_pos_iou)
        pos, neg = _sample(labels, s.rpn_samples, s.rpn_pos_fraction, gen)
        picked = torch.cat([pos, neg])
        target = torch.cat([torch.ones(pos.numel()), torch.zeros(neg.numel())])
        cls_terms.append(F.binary_cross_entropy_with_logits(cls[i, picked], target, reduction="sum"))
        if pos.numel():
            deltas = encode_deltas(anchors[pos], gt[assigned[pos]], RPN_STDS)
            reg_terms.append(F.l1_loss(reg[i, pos], deltas, reduction="sum"))
        sampled += picked.numel()
    sampled = max(sampled, 1)
    return {"rpn_cls": sum(cls_terms) / sampled, "rpn_box": sum(reg_terms, torch.zeros(())) / sampled}


@contextlib.contextmanager
def _training_proposals(model: TwoStageDetector, s: TrainSettings):
    """The model's RPN post-processing with the training proposal counts."""
    kept = model.test_cfg
    model.test_cfg = replace(kept, rpn_nms_pre=s.proposals_pre_nms, rpn_max_per_img=s.proposals)
    try:
        yield
    finally:
        model.test_cfg = kept


def _rcnn_loss(model: TwoStageDetector, feats, image_hw, gt_boxes: list[Tensor], gt_labels: list[Tensor],
               s: TrainSettings, gen) -> dict[str, Tensor]:
    with torch.no_grad(), _training_proposals(model, s):
        proposals, valid = model.proposals(tuple(f.detach() for f in feats), *image_hw)
    rois, batch_idx, labels, targets, pos_mask = [], [], [], [], []
    c = model.num_classes
    for i, (gt, gl) in enumerate(zip(gt_boxes, gt_labels)):
        cand = torch.cat([proposals[i][valid[i]], gt])  # mmdet adds the objects as proposals
        assign, assigned = _assign(box_iou(cand, gt), s.rcnn_iou, s.rcnn_iou, None)
        pos, neg = _sample(assign, s.rcnn_samples, s.rcnn_pos_fraction, gen)
        picked = torch.cat([pos, neg])
        rois.append(cand[picked])
        batch_idx.append(torch.full((picked.numel(),), i, dtype=torch.int64))
        labels.append(torch.cat([gl[assigned[pos]], torch.full((neg.numel(),), c, dtype=torch.int64)]))
        t = torch.zeros(picked.numel(), 4)
        if pos.numel():
            t[: pos.numel()] = encode_deltas(cand[pos], gt[assigned[pos]], RCNN_STDS)
        targets.append(t)
        pos_mask.append(torch.arange(picked.numel()) < pos.numel())
    rois, batch_idx, labels = torch.cat(rois), torch.cat(batch_idx), torch.cat(labels)
    targets, pos_mask = torch.cat(targets), torch.cat(pos_mask)
    roi_feats = extract_roi_features(feats[:4], rois, batch_idx, STRIDES[:4], 7, model.test_cfg.bbox_sampling_ratio)
    cls, reg = model.roi_head.bbox_head(roi_feats)
    loss_cls = F.cross_entropy(cls, labels)
    if pos_mask.any():
        reg = reg.reshape(-1, c, 4)[pos_mask, labels[pos_mask]]
        loss_box = F.l1_loss(reg, targets[pos_mask], reduction="sum") / max(labels.numel(), 1)
    else:
        loss_box = cls.sum() * 0
    return {"rcnn_cls": loss_cls, "rcnn_box": loss_box}


def detector_losses(model: TwoStageDetector, images: Tensor, gt_boxes: list[Tensor], gt_labels: list[Tensor],
                    settings: TrainSettings = TrainSettings(), gen: torch.Generator | None = None) -> dict[str, Tensor]:
    """The four losses of one batch: ``images`` (N, 3, H, W) 0..255, per image its objects' boxes (K, 4) in pixels
    and labels (K,) 0..num_classes-1."""
    gen = gen or torch.Generator().manual_seed(0)
    feats = model.features(images)
    losses = _rpn_loss(model, feats, gt_boxes, settings, gen)
    losses.update(_rcnn_loss(model, feats, images.shape[2:], gt_boxes, gt_labels, settings, gen))
    return losses


def train_detector(model: TwoStageDetector, images: np.ndarray, boxes: list[np.ndarray], labels: list[np.ndarray],
                   steps: int, batch: int, lr: float, seed: int = 0, settings: TrainSettings = TrainSettings(),
                   progress: bool = True, threads: int | None = None, log=print) -> list[float]:
    """AdamW with a one-cycle schedule and random horizontal flips over ``images`` (N, H, W, 3) uint8 with their
    objects; returns the total loss per step. ``threads`` as the segmentation sample's training takes it."""
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    width = x_all.shape[3]

    def batch_loss() -> Tensor:
        idx = torch.randint(0, len(x_all), (batch,), generator=gen)
        x = x_all[idx]
        b = [torch.from_numpy(boxes[i]).float() for i in idx.tolist()]
        y = [torch.from_numpy(labels[i]).long() for i in idx.tolist()]
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(-1)
            b = [torch.stack([width - t[:, 2], t[:, 1], width - t[:, 0], t[:, 3]], 1) for t in b]
        return sum(detector_losses(model, x, b, y, settings, gen).values())

    return fit(model, batch_loss, steps, lr, threads, progress, log)
