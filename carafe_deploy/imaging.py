"""Image pre- and post-processing of the task families, in numpy and PIL only.

The one definition used everywhere: the detection and segmentation pipelines (:mod:`carafe_deploy.tasks`), the
samples, and the Python models of a Triton repository (:mod:`carafe_deploy.serving` copies this file into them as
``carafe_imaging.py``, because Triton's Python environment has no torch and no carafe_deploy). So this module
imports nothing but numpy, PIL and the standard library.

Detectors take RGB pixels 0..255 resized as mmdet's test pipeline resizes them (the graph normalizes and pads);
segmenters take ImageNet-normalized RGB pixels at the image's own size.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DETECTION_SCALE", "decode_image", "decode_single", "resize_keep_ratio",
           "fit_to_canvas", "image_tensor", "detection_input", "to_original_pixels", "detection_output", "normalize",
           "segmentation_input", "label_map"]

# mmdet's DetDataPreprocessor and mmseg's SegDataPreprocessor for the COCO / ADE20k configs (RGB order, 0..255)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
DETECTION_SCALE = (1333, 800)  # mmdet Resize(scale=(1333, 800), keep_ratio=True)


def decode_image(data: bytes) -> Image.Image:
    """Encoded image bytes (PNG, JPEG, ...) -> PIL RGB image; ``ValueError`` naming the problem otherwise."""
    try:
        img = Image.open(io.BytesIO(bytes(data)))
        img.load()
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError ... by format
        raise ValueError(f"cannot decode image ({len(data)} bytes): {exc}") from None
    return img.convert("RGB")


def decode_single(blobs) -> Image.Image:
    """The one encoded image of a served request (an array holding one bytes object) -> PIL RGB image."""
    blobs = np.asarray(blobs, dtype=object).reshape(-1)
    if blobs.size != 1:
        raise ValueError(f"one image per request, got {blobs.size}")
    return decode_image(blobs[0])


# --------------------------------------------------------------------------------------------------------------
# detection


def resize_keep_ratio(img: Image.Image, scale=DETECTION_SCALE):
    """mmdet ``Resize(scale=(1333, 800), keep_ratio=True)``: the largest factor that fits both limits.

    ``img`` is a PIL image; returns (resized image, factor)."""
    w, h = img.size
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    size = (int(w * factor + 0.5), int(h * factor + 0.5))
    return img.resize(size, Image.BILINEAR), factor


def fit_to_canvas(img: Image.Image, height: int, width: int):
    """For a graph exported with a fixed size: resize ``img`` (PIL) to fit and pad with the mean colour, which
    normalizes to 0, exactly mmdet's padding. Returns (canvas image, factor)."""
    factor = min(width / img.width, height / img.height)
    size = (max(1, int(img.width * factor + 0.5)), max(1, int(img.height * factor + 0.5)))
    canvas = Image.new("RGB", (width, height), tuple(int(round(m)) for m in IMAGENET_MEAN))
    canvas.paste(img.resize(size, Image.BILINEAR), (0, 0))
    return canvas, factor


def image_tensor(img: Image.Image) -> np.ndarray:
    """A PIL RGB image as the detectors' (1, 3, H, W) float32 0..255 input."""
    return np.ascontiguousarray(np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[None])


def detection_input(img: Image.Image, canvas=None, scale=DETECTION_SCALE):
    """The detector input for one PIL RGB image: fitted and padded into ``canvas`` (H, W) for a graph with a fixed
    input size, else mmdet's keep-ratio resize within ``scale``. Returns ((1, 3, H, W) float32, factor)."""
    resized, factor = fit_to_canvas(img, *canvas) if canvas else resize_keep_ratio(img, scale)
    return image_tensor(resized), factor


def to_original_pixels(dets: np.ndarray, factor: float, width: int, height: int) -> np.ndarray:
    """Boxes of one image (``(K, 5)`` x1 y1 x2 y2 score) back in the original image's pixels, clipped to it (a padded
    fixed-size input can reach past it)."""
    dets = np.array(dets, dtype=np.float32, copy=True)
    dets[:, :4] /= factor
    dets[:, 0:4:2] = dets[:, 0:4:2].clip(0, width)
    dets[:, 1:4:2] = dets[:, 1:4:2].clip(0, height)
    return dets


def detection_output(outputs, factor: float, width: int, height: int) -> dict:
    """The detector's outputs for a batch of one (``dets`` (1, K, 5), ``labels`` (1, K), ``masks`` (1, K, 28, 28) or
    absent) as the image's ``{"dets", "labels", "masks"}``: boxes in the original image's pixels, masks ``None`` for
    Faster R-CNN."""
    masks = outputs.get("masks")
    return {"dets": to_original_pixels(outputs["dets"][0], factor, width, height), "labels": outputs["labels"][0],
            "masks": None if masks is None else masks[0]}


# --------------------------------------------------------------------------------------------------------------
# segmentation


def normalize(pixels: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) RGB pixels 0..255 -> the segmenters' normalized float32 input (ImageNet mean and std)."""
    mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    return (np.asarray(pixels, np.float32) - mean) / std  # keeps the input's memory layout


def segmentation_input(img: Image.Image) -> np.ndarray:
    """The segmenter input for one PIL RGB image at its own size: (1, 3, H, W) float32, normalized."""
    return normalize(image_tensor(img))


def label_map(logits: np.ndarray) -> np.ndarray:
    """Per-pixel class: the argmax over the class axis of (N, K, H, W) logits -> (N, H, W) int64."""
    return np.asarray(logits).argmax(1)
