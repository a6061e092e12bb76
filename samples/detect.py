#!/usr/bin/env python3
"""Run a CARAFE detector on an image and draw its boxes, labels and masks into a PNG.

    python samples/detect.py --checkpoint mask_rcnn_r50_fpn_carafe_1x_coco.pth            # bundled test image
    python samples/detect.py street.jpg --model faster_rcnn_r50_fpn_carafe --checkpoint faster.pth -o out.png
    python samples/detect.py --onnx mask.onnx                                              # ONNX Runtime instead
    python samples/detect.py                       # no checkpoint: RANDOM weights, labelled so on the picture

The image is resized as mmdet's test pipeline does (keep ratio, fit in 1333×800); the graph normalises and pads it.
Boxes are drawn in the original image; masks are pasted as mmdet pastes them (bilinear, then >= 0.5).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGE = HERE / "data" / "scene.png"
DETECTORS = ("mask_rcnn_r50_fpn_carafe", "faster_rcnn_r50_fpn_carafe")


def resize_keep_ratio(img: Image.Image, scale=(1333, 800)) -> tuple[Image.Image, float]:
    """mmdet Resize(scale=(1333, 800), keep_ratio=True): the largest factor that fits both limits."""
    w, h = img.size
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    size = (int(w * factor + 0.5), int(h * factor + 0.5))
    return img.resize(size, Image.BILINEAR), factor


def _palette(i: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(i * 7919 + 13)
    return tuple(int(v) for v in rng.integers(60, 255, 3))


def draw(img: Image.Image, dets, labels, masks, class_names, score_thr: float, banner: str | None) -> Image.Image:
    from carafe_deploy.models.detectors import paste_masks

    canvas = img.convert("RGBA")
    keep = (labels >= 0) & (dets[:, 4] >= score_thr)
    dets, labels = dets[keep], labels[keep]
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    if masks is not None and len(dets):
        pasted = paste_masks(torch.from_numpy(masks[keep]), torch.from_numpy(dets[:, :4]), img.height, img.width)
        for m, label in zip(pasted.numpy(), labels):
            layer = np.zeros((img.height, img.width, 4), dtype=np.uint8)
            layer[m] = (*_palette(int(label)), 110)
            overlay = Image.alpha_composite(overlay, Image.fromarray(layer, "RGBA"))
    canvas = Image.alpha_composite(canvas, overlay)
    d = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for (x1, y1, x2, y2, score), label in zip(dets, labels):
        colour = _palette(int(label))
        d.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        text = f"{class_names[int(label)]} {score:.2f}"
        tb = d.textbbox((x1, y1), text, font=font)
        d.rectangle([tb[0], tb[1] - 2, tb[2] + 4, tb[3] + 2], fill=colour)
        d.text((x1 + 2, y1 - 1), text, fill=(0, 0, 0), font=font)
    if banner:
        size = max(12, img.width // 24)
        big = _banner_font(size)
        while d.textbbox((0, 0), banner, font=big)[2] > img.width - 16 and size > 8:  # fit the width
            size -= 1
            big = _banner_font(size)
        tb = d.textbbox((0, 0), banner, font=big)
        d.rectangle([0, 0, img.width, tb[3] + 16], fill=(180, 0, 0, 230))
        d.text(((img.width - tb[2]) // 2, 8), banner, fill=(255, 255, 255), font=big)
    return canvas.convert("RGB")


def _banner_font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)[None]


def run_onnx(path: str, original: Image.Image, scale):
    """Run an exported detector; a graph exported with a fixed size gets the image resized to fit and padded with
    the mean colour (which normalizes to 0, exactly mmdet's padding). Returns (outputs, factor, weights)."""
    import onnxruntime as ort

    from carafe_deploy.models.detectors import MEAN

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    h, w = inp.shape[2], inp.shape[3]
    if isinstance(h, int) and isinstance(w, int):  # static graph
        factor = min(w / original.width, h / original.height)
        size = (max(1, int(original.width * factor + 0.5)), max(1, int(original.height * factor + 0.5)))
        canvas = Image.new("RGB", (w, h), tuple(int(round(m)) for m in MEAN))
        canvas.paste(original.resize(size, Image.BILINEAR), (0, 0))
        image = to_tensor(canvas)
    else:
        resized, factor = resize_keep_ratio(original, scale)
        image = to_tensor(resized)
    names = [o.name for o in session.get_outputs()]
    weights = session.get_modelmeta().custom_metadata_map.get("carafe_deploy.weights", "unknown")
    return dict(zip(names, session.run(None, {inp.name: image.numpy()}))), factor, weights


def main(argv=None) -> int:
    from carafe_deploy.errors import DeployError
    from carafe_deploy.models import build
    from carafe_deploy.models.detectors import COCO_CLASSES, calibrate_random_heads

    p = argparse.ArgumentParser(description="Detect objects with a CARAFE detector and draw them into a PNG.")
    p.add_argument("image", nargs="?", default=str(DEFAULT_IMAGE), help="input image (default: bundled scene)")
    p.add_argument("--model", default=DETECTORS[0], choices=DETECTORS)
    p.add_argument("--checkpoint", help="mmdetection checkpoint; without it the weights are random")
    p.add_argument("--onnx", help="run this exported ONNX file (ONNX Runtime) instead of PyTorch")
    p.add_argument("--output", "-o", default="detections.png")
    p.add_argument("--score-thr", type=float, default=0.3, help="draw detections scoring at least this")
    p.add_argument("--scale", type=int, nargs=2, default=(1333, 800), metavar=("LONG", "SHORT"),
                   help="resize limits (mmdet: 1333 800); smaller is faster")
    args = p.parse_args(argv)
    try:
        if not Path(args.image).is_file():
            raise FileNotFoundError(f"image not found: {args.image}")
        try:
            original = Image.open(args.image).convert("RGB")
        except OSError as exc:
            raise DeployError(f"cannot read image {args.image}: {exc}") from exc
        banner = None
        if args.onnx:
            out, factor, weights = run_onnx(args.onnx, original, tuple(args.scale))
            if weights == "random":  # export/detector.py records where the weights came from
                banner = "RANDOM WEIGHTS - not a trained model"
                print(f"note: {banner}", file=sys.stderr)
            dets, labels, masks = out["dets"][0], out["labels"][0], out.get("masks", [None])[0]
        else:
            resized, factor = resize_keep_ratio(original, tuple(args.scale))
            image = to_tensor(resized)
            model = build(args.model, checkpoint=args.checkpoint)
            if args.checkpoint is None:
                banner = "RANDOM WEIGHTS - not a trained model"
                print(f"note: {banner}", file=sys.stderr)
                calibrate_random_heads(model, image)
            with torch.no_grad():
                out = [t.numpy() for t in model(image)]
            dets, labels = out[0][0], out[1][0]
            masks = out[2][0] if len(out) > 2 else None
        dets = dets.copy()
        dets[:, :4] /= factor  # back to the original image's pixels
        dets[:, 0:4:2] = dets[:, 0:4:2].clip(0, original.width)  # a padded fixed-size input can reach past it
        dets[:, 1:4:2] = dets[:, 1:4:2].clip(0, original.height)
        picture = draw(original, dets, labels, masks, COCO_CLASSES, args.score_thr, banner)
        picture.save(args.output)
        shown = int(((labels >= 0) & (dets[:, 4] >= args.score_thr)).sum())
        print(f"wrote {args.output}: {shown} detections with score >= {args.score_thr}")
        for (x1, y1, x2, y2, s), lab in zip(dets, labels):
            if lab >= 0 and s >= args.score_thr:
                print(f"  {COCO_CLASSES[int(lab)]:>14s} {s:.3f}  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
        return 0
    except (DeployError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"detect.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
