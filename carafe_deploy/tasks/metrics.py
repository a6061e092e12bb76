"""Task metrics on a dataset: COCO box / mask AP through the COCO evaluator (pycocotools, never a hand-written AP),
and mmseg's segmentation metrics (mIoU, aAcc, mAcc with an ignore index) from a confusion matrix.

Names and units as mmdetection and mmsegmentation report them: ``bbox_mAP``, ``bbox_mAP_50``, ``bbox_mAP_75``,
``bbox_mAP_s/m/l`` (and ``segm_*``) as fractions 0..1 (``None`` where the evaluator says -1: no object of that size);
``mIoU``, ``aAcc``, ``mAcc`` in percent.
"""

from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np

from ..errors import MissingDependencyError

__all__ = ["COCO_STATS", "coco_evaluator", "coco_metrics", "confusion_matrix", "segmentation_metrics",
           "EVAL_EXTRA"]

EVAL_EXTRA = "pip install 'carafe-deploy[eval]' (pycocotools)"
# the first six of COCOeval.stats, under mmdet's names
COCO_STATS = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")


def coco_evaluator():
    """pycocotools' ``(COCO, COCOeval, mask)``; ``MissingDependencyError`` with the install line when absent."""
    try:
        from pycocotools import mask
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise MissingDependencyError(f"detection metrics need the COCO evaluator: {EVAL_EXTRA} ({exc})") from None
    return COCO, COCOeval, mask


def _quiet():
    """pycocotools prints its progress on stdout: kept off the command's output."""
    return contextlib.redirect_stdout(io.StringIO())


def coco_metrics(ground_truth, results: Sequence[dict], iou_types: Sequence[str] = ("bbox",),
                 image_ids: Sequence[int] | None = None) -> dict[str, float | None]:
    """COCO AP of ``results`` (the COCO results format: ``image_id``, ``category_id``, ``score``, ``bbox`` as x, y,
    w, h, and ``segmentation`` as RLE for ``"segm"``) against ``ground_truth`` (a pycocotools ``COCO``), for each
    of ``iou_types``; over ``image_ids`` when given (else every image of the ground truth)."""
    COCO, COCOeval, _ = coco_evaluator()
    out: dict[str, float | None] = {}
    for iou_type in iou_types:
        with _quiet():
            if results:
                detections = ground_truth.loadRes([dict(r) for r in results])
            else:  # loadRes cannot take an empty list; no detection is a result too (AP 0)
                detections = COCO()
                detections.dataset = {"images": list(ground_truth.dataset["images"]),
                                      "categories": list(ground_truth.dataset.get("categories", [])),
                                      "annotations": []}
                detections.createIndex()
            evaluator = COCOeval(ground_truth, detections, iou_type)
            if image_ids is not None:
                evaluator.params.imgIds = list(image_ids)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        for name, value in zip(COCO_STATS, evaluator.stats):
            out[f"{iou_type}_{name}"] = None if value < 0 else float(value)
    return out


def confusion_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int | None = None
                     ) -> np.ndarray:
    """(num_classes, num_classes) pixel counts, rows = ground truth, columns = prediction; pixels whose label is
    ``ignore_index`` are left out."""
    label = np.asarray(label).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if ignore_index is not None:
        keep = label != ignore_index
        label, pred = label[keep], pred[keep]
    idx = label * num_classes + pred
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_metrics(confusion: np.ndarray) -> dict:
    """mmseg's ``IoUMetric`` from a summed confusion matrix: ``mIoU`` (mean over the classes present in the labels or
    the predictions), ``aAcc`` (correct pixels over labelled pixels), ``mAcc`` (mean per-class recall over the
    classes present in the labels), in percent; and ``IoU`` per class (``None`` for a class in neither)."""
    cm = np.asarray(confusion, dtype=np.float64)
    inter = np.diag(cm)
    label_area = cm.sum(1)
    union = label_area + cm.sum(0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
        acc = np.where(label_area > 0, inter / label_area, np.nan)
    total = label_area.sum()
    return {"mIoU": float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else None,
            "aAcc": float(inter.sum() / total * 100) if total else None,
            "mAcc": float(np.nanmean(acc) * 100) if np.isfinite(acc).any() else None,
            "IoU": [None if np.isnan(v) else float(v * 100) for v in iou]}
