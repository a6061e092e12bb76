"""A synthetic segmentation set: coloured shapes on textured backgrounds, generated on the fly from a seed.

Classes: 0 background, 1 disc, 2 square, 3 triangle, 4 ring. Each image has a random striped/noisy background and
2-4 shapes that may overlap (the later one wins, in the image and in the label). A shape's colour is drawn around a
class colour with jitter, so colour helps but shape and context are needed at the boundaries and for overlaps.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("background", "disc", "square", "triangle", "ring")
# RGB centre colour per shape class (background has none)
_CLASS_COLOURS = {1: (220, 60, 60), 2: (60, 170, 70), 3: (70, 90, 220), 4: (230, 190, 40)}
# colours to paint labels with in figures
PALETTE = np.array([(0, 0, 0), (220, 60, 60), (60, 170, 70), (70, 90, 220), (230, 190, 40)], dtype=np.uint8)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(60, 200, size=3)
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(0.15, 0.6)
    stripes = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 2 * np.pi))
    amp = rng.uniform(10, 45)
    noise = rng.normal(0, rng.uniform(4, 18), size=(size, size, 3))
    img = base[None, None, :] + amp * stripes[..., None] * rng.uniform(0.3, 1.0, size=3) + noise
    return np.clip(img, 0, 255)


def _draw_shape(draw_img: ImageDraw.ImageDraw, draw_lbl: ImageDraw.ImageDraw, cls: int, rng, size: int) -> None:
    r = rng.uniform(0.1, 0.22) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    colour = tuple(int(np.clip(c + rng.normal(0, 25), 0, 255)) for c in _CLASS_COLOURS[cls])
    if cls == 1:
        box = [cx - r, cy - r, cx + r, cy + r]
        draw_img.ellipse(box, fill=colour)
        draw_lbl.ellipse(box, fill=cls)
    elif cls == 2:
        a = rng.uniform(0, np.pi / 2)
        pts = [(cx + r * np.cos(a + k * np.pi / 2), cy + r * np.sin(a + k * np.pi / 2)) for k in range(4)]
        draw_img.polygon(pts, fill=colour)
        draw_lbl.polygon(pts, fill=cls)
    elif cls == 3:
        a = rng.uniform(0, 2 * np.pi)
        pts = [(cx + r * np.cos(a + k * 2 * np.pi / 3), cy + r * np.sin(a + k * 2 * np.pi / 3)) for k in range(3)]
        draw_img.polygon(pts, fill=colour)
        draw_lbl.polygon(pts, fill=cls)
    else:
        box = [cx - r, cy - r, cx + r, cy + r]
        width = max(2, int(r * 0.35))
        draw_img.ellipse(box, outline=colour, width=width)
        draw_lbl.ellipse(box, outline=cls, width=width)


def make_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 (size, size, 3), label uint8 (size, size)) pair."""
    img = Image.fromarray(_background(rng, size).astype(np.uint8))
    lbl = Image.new("L", (size, size), 0)
    di, dl = ImageDraw.Draw(img), ImageDraw.Draw(lbl)
    for _ in range(rng.integers(2, 5)):
        _draw_shape(di, dl, int(rng.integers(1, len(CLASSES))), rng, size)
    return np.asarray(img), np.asarray(lbl)


def make_set(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` samples: images (count, size, size, 3) uint8 and labels (count, size, size) int64."""
    if count < 1 or size < 8:
        raise ValueError(f"need count >= 1 and size >= 8, got count={count}, size={size}")
    rng = np.random.default_rng(seed)
    pairs = [make_sample(rng, size) for _ in range(count)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]).astype(np.int64)


def confusion_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = ground truth, columns = prediction."""
    idx = label.reshape(-1).astype(np.int64) * num_classes + pred.reshape(-1).astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_iou(pred: np.ndarray, label: np.ndarray, num_classes: int) -> tuple[float, np.ndarray]:
    """mIoU in percent over the classes present in ``label`` or ``pred``, and the per-class IoU (nan if absent)."""
    cm = confusion_matrix(pred, label, num_classes).astype(np.float64)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    return float(np.nanmean(iou) * 100), iou
