"""Whether an engine can be built and run on this machine, each answer one line naming the missing piece (or
``None``): the runtime at hand (:mod:`.runtime`), the plugin library (:mod:`.plugin`), what TensorRT-RTX can use
(:mod:`.rtx`), a CUDA device. Above those three so that none of them imports another's answers.
"""

from __future__ import annotations

import importlib
import os

from ..errors import MissingDependencyError
from .plugin import ENV_VAR, plugin_library
from .rtx import core_link_missing, plugin_unusable
from .runtime import import_tensorrt, runtime_installed

__all__ = ["build_unavailable", "run_unavailable", "engine_unavailable", "choose_plugin"]


def choose_plugin(use_plugin: bool | None, plugin_path=None, backend: str | None = None) -> tuple[bool, str | None]:
    """The one engine choice of every command (build, export --save-engine, demo, samples): ``(use the plugin?,
    one line saying so when it falls back)``. ``True``/``False`` (--plugin/--no-plugin) force it; ``None`` takes the
    plugin where its library is found (``plugin_path``, $CARAFE_DEPLOY_PLUGIN or the CMake build folder) and the
    runtime can use it, else builds CARAFE from the unrolled standard ops."""
    if use_plugin is not None:
        return use_plugin, None
    if plugin_path is not None or os.environ.get(ENV_VAR):  # a library named by the user is meant to be used
        return True, None
    try:
        plugin_library(required=True)
    except MissingDependencyError:
        return False, ("CARAFE built from standard ops (unrolled): the plugin library libcarafe_trt_plugin.so is not "
                       "built here (--plugin LIB.so uses one)")
    # TensorRT-RTX's parser cannot take plugin nodes without its libtensorrt_rtx.so link (rtx.plugin_unusable);
    # told without importing TensorRT (a dry run never does)
    if _rtx_at_hand(backend) and core_link_missing():
        return False, ("CARAFE built from standard ops (unrolled): TensorRT-RTX's ONNX parser cannot open "
                       "libtensorrt_rtx.so to import plugin nodes (with --plugin the build stops on it and prints the link that fixes it)")
    return True, None


def _rtx_at_hand(backend: str | None) -> bool:
    if backend is not None:
        return backend == "tensorrt-rtx"
    return not runtime_installed("tensorrt") and runtime_installed("tensorrt-rtx")


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


def engine_unavailable(use_plugin: bool | None = None, backend: str | None = None) -> str | None:
    """``None`` when an engine in the form ``choose_plugin`` picks can be built and run here, else the reason."""
    return build_unavailable(choose_plugin(use_plugin, backend=backend)[0], backend) or run_unavailable()
