"""Stand-in models whose predictions are known exactly, named as such: ``evaluate`` must turn them into the metrics
the definitions give (perfect predictions -> 1.0 / 100 %), through the real pre- and post-processing, the real
runners and the real COCO evaluator. No library has models with a known answer on a chosen dataset."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from carafe_deploy.imaging import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["KnownBoxesDetector", "PixelClassSegmenter", "CLASS_STEP", "coco_scene", "label_scene"]

# the segmentation stand-in reads a pixel's class from its grey level: class c is painted c * CLASS_STEP
CLASS_STEP = 40


class KnownBoxesDetector(nn.Module):
    """Gives the detections of a table, picked by the image's top-left pixel (image i is painted ``i * 100`` there,
    a 6x6 block that survives resizing). ``boxes`` (images, K, 4) are in the pixels of the model's input (the
    resized image), ``labels`` (images, K), padding label -1; ``with_masks`` adds full-box 28x28 masks."""

    def __init__(self, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray | None = None,
                 with_masks: bool = False):
        super().__init__()
        scores = np.full(labels.shape, 0.9, np.float32) if scores is None else scores
        dets = np.concatenate([boxes.astype(np.float32), scores[..., None]], -1)
        dets[labels < 0] = 0
        self.register_buffer("dets", torch.from_numpy(dets))
        self.register_buffer("labels", torch.from_numpy(labels.astype(np.int64)))
        self.with_masks = with_masks
        self.weight = nn.Parameter(torch.zeros(()))  # a parameter, so runners find the model's dtype

    def forward(self, image):
        idx = (image[:, 0, 0, 0] / 100).round().long()
        dets, labels = self.dets[idx] + self.weight, self.labels[idx]
        if not self.with_masks:
            return dets, labels
        masks = torch.ones(labels.shape[0], labels.shape[1], 28, 28) * (labels >= 0)[..., None, None]
        return dets, labels, masks


class PixelClassSegmenter(nn.Module):
    """Logits whose argmax is the class a pixel's grey level paints (``c * CLASS_STEP``): one 1x1 convolution on the
    normalized red channel, logit_k = 2kc - k² (= -(c - k)² + c², so the argmax is the nearest class)."""

    def __init__(self, classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)
        k = torch.arange(classes, dtype=torch.float32)
        with torch.no_grad():
            self.conv.weight.zero_()
            # c = (x * std + mean) / CLASS_STEP on the red channel
            self.conv.weight[:, 0, 0, 0] = 2 * k * IMAGENET_STD[0] / CLASS_STEP
            self.conv.bias.copy_(2 * k * IMAGENET_MEAN[0] / CLASS_STEP - k * k)

    def forward(self, image):
        return self.conv(image)


def coco_scene(height: int, width: int, index: int) -> np.ndarray:
    """A grey (H, W, 3) uint8 image with image ``index``'s mark in the top-left corner."""
    img = np.full((height, width, 3), 128, np.uint8)
    img[:6, :6] = index * 100
    return img


def label_scene(label: np.ndarray, ignore_index: int = 255, ignored_class: int = 1) -> np.ndarray:
    """The image the segmentation stand-in reads ``label`` from (ignored pixels painted ``ignored_class``)."""
    classes = np.where(label == ignore_index, ignored_class, label)
    return np.repeat((classes * CLASS_STEP).astype(np.uint8)[..., None], 3, axis=2)
