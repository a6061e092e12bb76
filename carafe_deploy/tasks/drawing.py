"""Pictures of results that a person looks at: detections (boxes, labels, masks) drawn into the image."""

from __future__ import annotations

import numpy as np

__all__ = ["draw_detections", "class_colour"]


def class_colour(i: int) -> tuple[int, int, int]:
    """A stable colour per class index."""
    rng = np.random.default_rng(i * 7919 + 13)
    return tuple(int(v) for v in rng.integers(60, 255, 3))


def _font(size: int | None = None):
    from PIL import ImageFont

    if size is None:
        return ImageFont.load_default()
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_detections(img, dets: np.ndarray, labels: np.ndarray, masks: np.ndarray | None, class_names,
                    score_thr: float, banner: str | None = None, scores: bool = True):
    """``img`` (PIL RGB) with the detections scoring at least ``score_thr``: masks (pasted as mmdet pastes them)
    as translucent overlays, boxes, "class score" labels (the class alone without ``scores``: ground truth), and an
    optional red ``banner`` across the top."""
    import torch
    from PIL import Image, ImageDraw

    from ..models.detectors import paste_masks

    canvas = img.convert("RGBA")
    keep = (labels >= 0) & (dets[:, 4] >= score_thr)
    dets, labels = dets[keep], labels[keep]
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    if masks is not None and len(dets):
        pasted = paste_masks(torch.from_numpy(masks[keep]), torch.from_numpy(dets[:, :4]), img.height, img.width)
        for m, label in zip(pasted.numpy(), labels):
            layer = np.zeros((img.height, img.width, 4), dtype=np.uint8)
            layer[m] = (*class_colour(int(label)), 110)
            overlay = Image.alpha_composite(overlay, Image.fromarray(layer, "RGBA"))
    canvas = Image.alpha_composite(canvas, overlay)
    d = ImageDraw.Draw(canvas)
    font = _font()
    for (x1, y1, x2, y2, score), label in zip(dets, labels):
        colour = class_colour(int(label))
        d.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        text = f"{class_names[int(label)]} {score:.2f}" if scores else class_names[int(label)]
        tb = d.textbbox((x1, y1), text, font=font)
        d.rectangle([tb[0], tb[1] - 2, tb[2] + 4, tb[3] + 2], fill=colour)
        d.text((x1 + 2, y1 - 1), text, fill=(0, 0, 0), font=font)
    if banner:
        size = max(12, img.width // 24)
        big = _font(size)
        while d.textbbox((0, 0), banner, font=big)[2] > img.width - 16 and size > 8:  # fit the width
            size -= 1
            big = _font(size)
        tb = d.textbbox((0, 0), banner, font=big)
        d.rectangle([0, 0, img.width, tb[3] + 16], fill=(180, 0, 0, 230))
        d.text(((img.width - tb[2]) // 2, 8), banner, fill=(255, 255, 255), font=big)
    return canvas.convert("RGB")
