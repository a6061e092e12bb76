"""Compare two detectors' outputs (e.g. PyTorch eager vs ONNX Runtime) detection by detection.

Detections are matched one-to-one per image: same label, highest IoU first. A pair counts as matched when
IoU > ``iou_thr`` and |Δscore| < ``score_tol``; masks of matched pairs are compared element-wise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DetectionParity", "compare_detections", "box_iou"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of x1 y1 x2 y2 boxes, in float64."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, (inter == 0) & (union == 0))  # two identical empty boxes: 1
    return iou


@dataclass
class DetectionParity:
    reference: int  # detections in the reference output
    candidate: int  # detections in the compared output
    matched: int
    min_iou: float  # over matched pairs
    max_score_diff: float
    max_box_diff: float  # largest coordinate difference, pixels
    max_mask_diff: float | None  # None when there are no masks
    iou_thr: float
    score_tol: float

    @property
    def match_rate(self) -> float:
        total = max(self.reference, self.candidate)
        return 1.0 if total == 0 else self.matched / total

    def passed(self, min_rate: float = 0.95, mask_tol: float = 1e-3) -> bool:
        mask_ok = self.max_mask_diff is None or self.max_mask_diff <= mask_tol
        return self.match_rate >= min_rate and mask_ok

    def as_dict(self) -> dict:
        return {**asdict(self), "match_rate": self.match_rate}

    def summary(self) -> str:
        mask = "" if self.max_mask_diff is None else f", max |Δmask| {self.max_mask_diff:.2e}"
        return (
            f"{self.matched}/{max(self.reference, self.candidate)} detections matched ({100 * self.match_rate:.1f}%; "
            f"reference {self.reference}, candidate {self.candidate}; IoU > {self.iou_thr}, |Δscore| < "
            f"{self.score_tol}, same label): min IoU {self.min_iou:.6f}, max |Δscore| {self.max_score_diff:.2e}, "
            f"max |Δbox| {self.max_box_diff:.2e} px{mask}"
        )


def compare_detections(ref, cand, iou_thr: float = 0.99, score_tol: float = 1e-3) -> DetectionParity:
    """``ref`` and ``cand``: sequences (dets, labels[, masks]) of arrays as the detectors output them.

    A slot is a detection when its label is >= 0 (padding has label -1 and score 0).
    """
    ref = [np.asarray(x) for x in ref]
    cand = [np.asarray(x) for x in cand]
    if len(ref) != len(cand) or len(ref) not in (2, 3):
        raise ValueError("ref and cand must both be (dets, labels) or (dets, labels, masks)")
    if ref[0].shape != cand[0].shape:
        raise ValueError(f"dets shapes differ: {ref[0].shape} vs {cand[0].shape}")
    with_masks = len(ref) == 3
    n_ref = n_cand = matched = 0
    min_iou, max_ds, max_db, max_dm = 1.0, 0.0, 0.0, 0.0
    for b in range(ref[0].shape[0]):
        ri = np.nonzero(ref[1][b] >= 0)[0]
        ci = np.nonzero(cand[1][b] >= 0)[0]
        n_ref += len(ri)
        n_cand += len(ci)
        if not len(ri) or not len(ci):
            continue
        iou = box_iou(ref[0][b, ri, :4], cand[0][b, ci, :4])
        same = ref[1][b, ri][:, None] == cand[1][b, ci][None, :]
        dscore = np.abs(ref[0][b, ri, 4][:, None].astype(np.float64) - cand[0][b, ci, 4][None, :])
        ok = same & (iou > iou_thr) & (dscore < score_tol)
        used = np.zeros(len(ci), dtype=bool)
        for i in np.argsort(-ref[0][b, ri, 4], kind="stable"):
            options = np.nonzero(ok[i] & ~used)[0]
            if not len(options):
                continue
            j = options[np.argmax(iou[i, options])]
            used[j] = True
            matched += 1
            min_iou = min(min_iou, float(iou[i, j]))
            max_ds = max(max_ds, float(dscore[i, j]))
            max_db = max(max_db, float(np.abs(ref[0][b, ri[i], :4] - cand[0][b, ci[j], :4]).max()))
            if with_masks:
                diff = np.abs(ref[2][b, ri[i]].astype(np.float64) - cand[2][b, ci[j]]).max()
                max_dm = max(max_dm, float(diff))
    return DetectionParity(
        reference=n_ref, candidate=n_cand, matched=matched, min_iou=min_iou if matched else float("nan"),
        max_score_diff=max_ds, max_box_diff=max_db, max_mask_diff=max_dm if with_masks else None,
        iou_thr=iou_thr, score_tol=score_tol,
    )
