"""A synthetic segmentation set: coloured shapes on textured backgrounds, generated on the fly from a seed.

Classes: 0 background, 1 disc, 2 square, 3 triangle, 4 ring. Each image has a random striped/noisy background and
2-4 shapes that may overlap (the later one wins, in the image and in the label). A shape's colour is drawn around a
class colour with jitter, so colour helps but shape and context are needed at the boundaries and for overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class _Shape:
    cls: int
    r: float
    cx: float
    cy: float
    colour: tuple[int, int, int]
    angle: float = 0.0


def _random_shape(cls: int, rng: np.random.Generator, size: int) -> _Shape:
    r = rng.uniform(0.1, 0.22) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    colour = tuple(int(np.clip(c + rng.normal(0, 25), 0, 255)) for c in _CLASS_COLOURS[cls])
    angle = rng.uniform(0, np.pi / 2) if cls == 2 else rng.uniform(0, 2 * np.pi) if cls == 3 else 0.0
    return _Shape(cls, r, cx, cy, colour, angle)


def _paint(shape: _Shape, draw_img: ImageDraw.ImageDraw, draw_lbl: ImageDraw.ImageDraw, value: int) -> None:
    """``shape`` into the image in its colour and into the label image as ``value``."""
    cls, r, cx, cy, a = shape.cls, shape.r, shape.cx, shape.cy, shape.angle
    box = [cx - r, cy - r, cx + r, cy + r]
    if cls == 1:
        draw_img.ellipse(box, fill=shape.colour)
        draw_lbl.ellipse(box, fill=value)
    elif cls in (2, 3):
        corners = 4 if cls == 2 else 3
        pts = [(cx + r * np.cos(a + k * 2 * np.pi / corners), cy + r * np.sin(a + k * 2 * np.pi / corners))
               for k in range(corners)]
        draw_img.polygon(pts, fill=shape.colour)
        draw_lbl.polygon(pts, fill=value)
    else:
        width = max(2, int(r * 0.35))
        draw_img.ellipse(box, outline=shape.colour, width=width)
        draw_lbl.ellipse(box, outline=value, width=width)


def make_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 (size, size, 3), label uint8 (size, size)) pair."""
    img = Image.fromarray(_background(rng, size).astype(np.uint8))
    lbl = Image.new("L", (size, size), 0)
    di, dl = ImageDraw.Draw(img), ImageDraw.Draw(lbl)
    for _ in range(rng.integers(2, 5)):
        shape = _random_shape(int(rng.integers(1, len(CLASSES))), rng, size)
        _paint(shape, di, dl, shape.cls)
    return np.asarray(img), np.asarray(lbl)


def make_set(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` samples: images (count, size, size, 3) uint8 and labels (count, size, size) int64."""
    if count < 1 or size < 8:
        raise ValueError(f"need count >= 1 and size >= 8, got count={count}, size={size}")
    rng = np.random.default_rng(seed)
    pairs = [make_sample(rng, size) for _ in range(count)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]).astype(np.int64)


# --------------------------------------------------------------------------------------------------------------
# detection scenes: the same shapes as objects, each with its box and its visible mask

# shapes are placed so that their circumscribed circles overlap little: a box then holds one object, mostly visible
_MIN_SPACING = 0.85  # centre distance >= this x (r1 + r2)
_PLACEMENT_TRIES = 30
# an object hidden under later ones down to this share of its own area is left out (and painted over)
_MIN_VISIBLE = 0.5


@dataclass
class Scene:
    """One detection image: ``image`` uint8 (H, W, 3); per object its class (1..4, as in :data:`CLASSES`), its box
    (x1, y1, x2, y2 in pixel edges, of the visible part) and its visible mask (H, W) bool."""

    image: np.ndarray
    classes: np.ndarray  # (K,) int64
    boxes: np.ndarray  # (K, 4) float32
    masks: np.ndarray  # (K, H, W) bool


def make_scene(rng: np.random.Generator, size: int, max_objects: int = 4) -> Scene:
    """A detection image of 1..``max_objects`` shapes on the segmentation set's backgrounds."""
    img = Image.fromarray(_background(rng, size).astype(np.uint8))
    ids = Image.new("L", (size, size), 0)
    di, dl = ImageDraw.Draw(img), ImageDraw.Draw(ids)
    placed: list[_Shape] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(1, len(CLASSES)))
        for _try in range(_PLACEMENT_TRIES):
            shape = _random_shape(cls, rng, size)
            if all(np.hypot(shape.cx - p.cx, shape.cy - p.cy) >= _MIN_SPACING * (shape.r + p.r) for p in placed):
                placed.append(shape)
                _paint(shape, di, dl, len(placed))
                break
    id_map = np.asarray(ids)
    classes, boxes, masks = [], [], []
    for k, shape in enumerate(placed, start=1):
        mask = id_map == k
        own = Image.new("L", (size, size), 0)
        _paint(shape, ImageDraw.Draw(Image.new("RGB", (size, size))), ImageDraw.Draw(own), 1)
        if not mask.any() or mask.sum() < _MIN_VISIBLE * np.count_nonzero(np.asarray(own)):
            continue
        ys, xs = np.nonzero(mask)
        classes.append(shape.cls)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
        masks.append(mask)
    return Scene(np.asarray(img), np.asarray(classes, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4),
                 np.asarray(masks, bool).reshape(-1, size, size))


def make_scenes(count: int, size: int, seed: int, max_objects: int = 4) -> list[Scene]:
    """``count`` detection scenes from ``seed``."""
    if count < 1 or size < 32:
        raise ValueError(f"need count >= 1 and size >= 32, got count={count}, size={size}")
    rng = np.random.default_rng(seed)
    return [make_scene(rng, size, max_objects) for _ in range(count)]
