"""The ``carafe::CARAFE`` contract (CONTRACT §1-2) as pure functions: the modes, the output size, what is outside the
contract in a node's attributes and input shapes, and the TensorRT plugin's limits. The schema's shape inference
(:mod:`.schema`) and the node validation (:mod:`.validate`) both hold nodes against these; this module imports
neither.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Sequence

__all__ = ["MODES", "PLUGIN_LIMITS", "output_extent", "attribute_problem", "shape_problem", "lenient",
           "lenient_inference"]

MODES = ("up", "down")

# The TensorRT plugin's upper limits (plugins/common/carafe_params.cpp kMaxKernelSize, kMaxGroup, kMaxScale; the
# YAML contract says the same, tests/trt/test_plugin_config.py holds the three together).
PLUGIN_LIMITS = {"kernel_size": 63, "group": 1 << 16, "scale_factor": 64}

# While validate_carafe_nodes runs shape inference, the schema's inference computes what it can and leaves the
# contract to the per-node check here, which names the node (onnx's inference errors do not).
_LENIENT_INFERENCE = contextvars.ContextVar("carafe_lenient_inference", default=False)


def lenient_inference() -> bool:
    return _LENIENT_INFERENCE.get()


@contextlib.contextmanager
def lenient() -> Iterator[None]:
    token = _LENIENT_INFERENCE.set(True)
    try:
        yield
    finally:
        _LENIENT_INFERENCE.reset(token)


def output_extent(extent: int, scale_factor: int, mode: str) -> int:
    """The output size along one axis: ``s * H`` for "up", ``ceil(H / s)`` for "down"."""
    return extent * scale_factor if mode == "up" else -(-extent // scale_factor)


def attribute_problem(kernel_size: int, group: int, scale_factor: int, mode: str, plugin: bool = False,
                      group_name: str = "group") -> str | None:
    """What is outside the contract in these attribute values (``None``: nothing)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        return f"kernel_size must be an odd int >= 1, got {kernel_size}"
    if group < 1:
        return f"{group_name} must be >= 1, got {group}"
    if scale_factor < 1:
        return f"scale_factor must be >= 1, got {scale_factor}"
    if mode not in MODES:
        return f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}"
    if plugin:
        for name, value in (("kernel_size", kernel_size), ("group", group), ("scale_factor", scale_factor)):
            if value > PLUGIN_LIMITS[name]:
                return f"{name} {value} is above the TensorRT plugin's limit of {PLUGIN_LIMITS[name]}"
    return None


def shape_problem(kernel_size: int, group: int, scale_factor: int, mode: str, features: Sequence | None,
                  kernels: Sequence | None) -> str | None:
    """What is inconsistent between the input shapes and the attributes; a dim is an int or ``None`` (unknown),
    a shape ``None`` when its rank is unknown."""
    def known(d):
        return isinstance(d, int) and d >= 0

    for name, dims in (("features", features), ("kernels", kernels)):
        if dims is not None and len(dims) != 4:
            return f"{name} must be 4-D (N, C, H, W), got rank {len(dims)}"
    if features is not None and known(features[1]) and features[1] % group:
        return f"features channels ({features[1]}) must be divisible by group ({group})"
    if kernels is None:
        return None
    want = group * kernel_size * kernel_size
    if known(kernels[1]) and kernels[1] != want:
        return f"kernels must have group*kernel_size^2 = {want} channels, got {kernels[1]}"
    if features is None:
        return None
    if known(features[0]) and known(kernels[0]) and features[0] != kernels[0]:
        return f"kernels batch ({kernels[0]}) must equal features batch ({features[0]})"
    for axis, label in ((2, "height"), (3, "width")):
        if known(features[axis]) and known(kernels[axis]):
            expected = output_extent(features[axis], scale_factor, mode)
            if kernels[axis] != expected:
                return (f"kernels {label} is {kernels[axis]}, but mode={mode!r} with scale_factor={scale_factor} "
                        f"gives {expected} for features {label} {features[axis]}")
    return None
