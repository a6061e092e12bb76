"""Whether an engine can be built and run on this machine, each answer one line naming the missing piece (or
``None``): the runtime at hand (:mod:`.runtime`), the plugin library (:mod:`.plugin`), what TensorRT-RTX can use
(:mod:`.rtx`), a CUDA device. Above those three so that none of them imports another's answers.
"""

from __future__ import annotations

import importlib

from ..errors import MissingDependencyError
from .plugin import plugin_library
from .rtx import plugin_unusable
from .runtime import import_tensorrt

__all__ = ["build_unavailable", "run_unavailable", "plugin_engine_unavailable"]


def build_unavailable(use_plugin: bool = True, backend: str | None = None) -> str | None:
    """``None`` when an engine can be built here, else the reason in one line: TensorRT first (the most fundamental
    piece), then the plugin library when ``use_plugin``, then whether the runtime can use it (:mod:`.rtx`)."""
    try:
        trt = import_tensorrt(backend)
        if use_plugin:
            plugin_library(required=True)
            reason = plugin_unusable(trt)
            if reason:
                return reason
    except MissingDependencyError as exc:
        return str(exc)
    return None


def run_unavailable() -> str | None:
    """``None`` when an engine can run here (a CUDA device for its buffers, through torch or pycuda), else why not."""
    try:
        import torch

        if torch.cuda.is_available():
            return None
    except ImportError:
        pass
    try:
        importlib.import_module("pycuda.driver")
    except ImportError:
        return "no CUDA device for the engine's buffers (torch has no CUDA and pycuda is not installed)"
    return None


def plugin_engine_unavailable(backend: str | None = None) -> str | None:
    """``None`` when an engine with the CARAFE plugin can be built and run here, else the reason, in one line."""
    return build_unavailable(use_plugin=True, backend=backend) or run_unavailable()
