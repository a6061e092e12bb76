"""Detection (Faster / Mask R-CNN with CARAFE): the deploy pipeline's detection family, and the image pre- and
post-processing that the sample and the serving ensemble share.

Parity is judged at the level of the task: detections matched one-to-one by label and IoU
(:func:`~.detection_parity.compare_detections`), masks of matched pairs compared element-wise.
"""

from __future__ import annotations

import contextlib
from typing import Mapping, Sequence

import numpy as np

from ..errors import DeployError
from ..imaging import (DETECTION_SCALE, detection_input, detection_output, fit_to_canvas, resize_keep_ratio, to_original_pixels)
from .base import CheckResult, Task, precision_class
from .detection_parity import compare_detections
from .source import LoadedModel

__all__ = ["DetectionTask", "detect", "detect_active", "parity_image", "resize_keep_ratio", "fit_to_canvas", "to_original_pixels",
           "RANDOM_WEIGHTS_BANNER"]

RANDOM_WEIGHTS_BANNER = "RANDOM WEIGHTS - not a trained model"
# precision class -> (IoU above which a pair matches, largest |score| and mask difference of a matched pair)
MATCHING = {"fp32": (0.99, 1e-3), "fp16": (0.9, 5e-2), "int8": (0.5, 0.1)}
# metadata_props key: the H x W of the image a random-weights export calibrated its heads on
CALIBRATION_KEY = "carafe_deploy.calibrated_on"


def parity_image(height: int, width: int, seed: int = 0):
    """A deterministic (1, 3, H, W) 0..255 test image: smooth colour blobs plus noise, so features vary."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, height // 32), max(2, width // 32), generator=gen)
    smooth = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    noise = torch.rand(1, 3, height, width, generator=gen)
    return (smooth * 0.8 + noise * 0.2) * 255


class DetectionTask(Task):
    name = "detection"

    def example_inputs(self, loaded: LoadedModel, shapes):
        from ..models.detectors import MIN_IMAGE_SIZE

        shapes = shapes or loaded.input_shapes
        if len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][1] != 3:
            raise DeployError(f"a detector takes one N,3,H,W image; got --input-shape {shapes}")
        n, _, h, w = shapes[0]
        if min(h, w) < MIN_IMAGE_SIZE:
            raise DeployError(f"export size {h}x{w}: both sides must be at least {MIN_IMAGE_SIZE}")
        if n != 1:
            raise DeployError(f"detectors export with batch 1 (got {n}); --dynamic makes the batch dynamic")
        return (parity_image(h, w),)

    def prepare(self, loaded: LoadedModel, inputs, log) -> None:
        self._calibrated_on = None
        if loaded.weights == "random" and loaded.spec is not None:
            from ..models.detectors import calibrate_random_heads

            log("no --checkpoint: RANDOM weights (classifier calibrated so that detections exist)")
            calibrate_random_heads(loaded.model, inputs[0])
            self._calibrated_on = tuple(inputs[0].shape[2:])

    @contextlib.contextmanager
    def exporting(self, loaded: LoadedModel, detection_ops: str):
        """The registered detectors export NMS and RoI Align as plugin nodes or standard ops (``detection_ops``);
        the model is back in its own mode afterwards (PyTorch's references use the standard ops)."""
        model = loaded.model
        if not hasattr(model, "detection_ops"):
            yield
            return
        before = model.detection_ops
        model.detection_ops = detection_ops
        try:
            yield
        finally:
            model.detection_ops = before

    def metadata(self, loaded: LoadedModel) -> dict[str, str]:
        props = {"carafe_deploy.input": "image: N x 3 x H x W float32 RGB 0..255 (resized, not normalized)"}
        if getattr(self, "_calibrated_on", None):  # what `check` must redo to rebuild the same random model
            props[CALIBRATION_KEY] = "x".join(map(str, self._calibrated_on))
        return props

    def rebuild(self, loaded: LoadedModel, metadata, input_shapes, log) -> None:
        """Random weights: calibrate the heads on the image the export calibrated them on (its size from the file's
        metadata, else from its static input size, else the model's default size), as :meth:`prepare` did."""
        if loaded.weights != "random" or loaded.spec is None:
            return
        size = metadata.get(CALIBRATION_KEY, "")
        if size:
            h, w = (int(v) for v in size.split("x"))
        elif input_shapes and input_shapes[0] is not None and len(input_shapes[0]) == 4:
            h, w = input_shapes[0][2:]
        else:
            h, w = loaded.input_shapes[0][2:]
        self.prepare(loaded, (parity_image(h, w),), log)

    def sample_inputs(self, shapes, seed: int):
        """Test images (:func:`parity_image`), not noise: a detector's output on noise says little."""
        return tuple(parity_image(s[2], s[3], seed=seed + i) for i, s in enumerate(shapes))

    def check_inputs(self, loaded: LoadedModel, export_inputs, shapes, dynamic: bool) -> list[tuple]:
        from ..models.detectors import MIN_IMAGE_SIZE, PAD_DIVISOR

        if shapes:
            return [(parity_image(s[2], s[3], seed=i),) for i, s in enumerate(shapes)]
        image = export_inputs[0]
        sets = [(image,)]
        if dynamic:  # a second size checks that the graph really follows the input shape
            h, w = image.shape[2:]
            sets.append((parity_image(h + PAD_DIVISOR // 2, max(MIN_IMAGE_SIZE, w - PAD_DIVISOR), 1),))
        return sets

    def compare(self, reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], precision: str | bool,
                rtol=None, atol=None) -> CheckResult:
        names = [n for n in ("dets", "labels", "masks") if n in reference]
        missing = [n for n in names if n not in actual]
        if missing:
            return CheckResult(False, f"output(s) {', '.join(missing)} missing")
        kind = precision_class(precision)
        iou_thr, tol = MATCHING[kind]
        result = compare_detections([reference[n] for n in names], [actual[n] for n in names],
                                    iou_thr=iou_thr, score_tol=tol)
        summary = result.summary()
        if result.reference == 0:
            summary += " (no detections on this image: the comparison is vacuous)"
        # half precision and INT8 flip near-tie NMS decisions: their graphs are reported, not gated
        return CheckResult(result.passed(mask_tol=tol), summary, result.as_dict(), gated=kind == "fp32")

    def engine_profile(self, input_names: Sequence[str], export_inputs, dynamic: bool):
        shape = tuple(export_inputs[0].shape)
        if not dynamic:
            return super().engine_profile(input_names, export_inputs, dynamic)
        _, c, h, w = shape
        name = input_names[0]
        return {name: (1, c, 320, 320)}, {name: shape}, {name: (1, c, max(1344, h), max(1344, w))}


# --------------------------------------------------------------------------------------------------------------
# Running a detector on an image: the pre- and post-processing are carafe_deploy.imaging's, which the Triton
# repository's Python models run too


def detect(runner, original, scale=DETECTION_SCALE) -> dict:
    """Run a detector ``runner`` (:mod:`carafe_deploy.backends`, not yet activated) on one PIL RGB image.

    A graph with a fixed input size gets the image fitted and padded (:func:`fit_to_canvas`); a dynamic one gets
    mmdet's keep-ratio resize. Returns ``{"dets", "labels", "masks"}`` for the image (masks ``None`` for Faster
    R-CNN) with boxes in the original image's pixels.
    """
    with runner:
        return detect_active(runner, original, scale)


def detect_active(runner, original, scale=DETECTION_SCALE) -> dict:
    """:func:`detect` with a runner that is already active (``evaluate`` runs one over a whole dataset)."""
    inputs = runner.input_metadata()
    if len(inputs) != 1:
        raise DeployError(f"a detector takes one input (the image); this model takes {len(inputs)}: "
                          f"{', '.join(t.name for t in inputs)}")
    (meta,) = inputs
    if meta.shape and len(meta.shape) != 4:  # a PyTorch runner knows no shape: ()
        raise DeployError(f"a detector takes one (N, 3, H, W) image; this model's input {meta.name} has shape "
                          f"{list(meta.shape)}")
    h, w = meta.shape[2:] if meta.shape else (None, None)
    canvas = (h, w) if isinstance(h, int) and isinstance(w, int) else None
    tensor, factor = detection_input(original, canvas, scale)
    out = runner.infer({meta.name: tensor})
    missing = [n for n in ("dets", "labels") if n not in out]
    if missing:
        raise DeployError(f"the model's outputs are {', '.join(out) or 'none'}; a detector export has dets and labels "
                          "(and masks): is it a detector? (carafe-deploy export --model faster_rcnn_r50_fpn_carafe)")
    return detection_output(out, factor, original.width, original.height)
