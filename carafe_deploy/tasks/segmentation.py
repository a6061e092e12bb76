"""Segmentation (UperNet with CARAFE / CARAFE++): the deploy pipeline's segmentation family.

Parity is judged on the logits (max |diff| / max |reference|) and on what a user sees, the per-pixel argmax.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .base import CheckResult, Task, precision_class
from .source import LoadedModel

__all__ = ["SegmentationTask", "THRESHOLDS", "logits_parity"]

# precision class -> (max relative error of the logits, min argmax agreement); INT8's relative error is reported,
# not gated (None): a quantized model's logits move by a few percent where the argmax does not
THRESHOLDS = {"fp32": (1e-4, 0.999), "fp16": (2e-2, 0.99), "int8": (None, 0.95)}


def logits_parity(reference: np.ndarray, actual: np.ndarray) -> dict:
    """max |diff|, max |diff| / max |reference| and the share of pixels whose argmax agrees."""
    ref = np.asarray(reference, np.float64)
    out = np.asarray(actual, np.float64)
    diff = float(np.abs(out - ref).max())
    return {
        "shape": list(ref.shape),
        "max_abs": diff,
        "max_rel": diff / max(float(np.abs(ref).max()), 1e-12),
        "argmax_agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
    }


class SegmentationTask(Task):
    name = "segmentation"

    def check_inputs(self, loaded: LoadedModel, export_inputs, shapes, dynamic: bool) -> list[tuple]:
        # one image of the export size (a normalized image is standard-normal-like); batch 1 also checks that a
        # dynamic batch really is dynamic (the export traces batch 2)
        if not shapes:
            n, c, h, w = export_inputs[0].shape
            shapes = [(1 if dynamic else n, c, h, w)]
        return super().check_inputs(loaded, export_inputs, shapes, dynamic)

    def compare(self, reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], precision: str | bool,
                rtol=None, atol=None) -> CheckResult:
        (name,) = list(reference)[:1]
        if name not in actual:
            return CheckResult(False, f"output {name!r} missing")
        if actual[name].shape != reference[name].shape:
            return CheckResult(False, f"{name} shape {actual[name].shape} != reference {reference[name].shape}")
        max_rel, min_agree = THRESHOLDS[precision_class(precision)]
        p = logits_parity(reference[name], actual[name])
        passed = (max_rel is None or p["max_rel"] <= max_rel) and p["argmax_agreement"] >= min_agree
        limit = "not gated" if max_rel is None else f"≤ {max_rel:g}"
        summary = (f"{name}: max |diff| {p['max_abs']:.3e}, max rel {p['max_rel']:.3e} ({limit}), argmax "
                   f"agreement {p['argmax_agreement'] * 100:.3f}% (≥ {min_agree * 100:g}%)")
        return CheckResult(passed, summary, {**p, "max_rel_limit": max_rel, "min_argmax_agreement": min_agree})

    def engine_profile(self, input_names: Sequence[str], export_inputs, dynamic: bool):
        if not dynamic:
            return super().engine_profile(input_names, export_inputs, dynamic)
        n, c, h, w = export_inputs[0].shape
        name = input_names[0]
        return {name: (1, c, 32, 32)}, {name: (1, c, h, w)}, {name: (n, c, 2 * h, 2 * w)}
