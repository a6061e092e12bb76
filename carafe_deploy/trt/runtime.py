"""The TensorRT runtime at hand: importing it (with one line saying how to install it when it is absent), its
version, its logger, and whether an engine with the CARAFE plugin can be built and run here.

Nothing here imports torch: a machine that only builds engines needs TensorRT, onnx and this package.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependencyError

__all__ = ["INSTALL_HINT", "import_tensorrt", "tensorrt_available", "trt_major", "build_unavailable", "run_unavailable",
           "plugin_engine_unavailable", "make_logger", "dtype_name"]

# the URL last and followed by a space, never by punctuation: terminals and copy-paste take it whole
INSTALL_HINT = (
    "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU and driver); other ways: "
    "https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/installing.html"
)


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or ``MissingDependencyError`` with one line saying how to install it.

    The PyPI ``tensorrt`` packages import without libnvinfer in some layouts and fail later; a module without
    ``Builder`` is treated as absent too.
    """
    try:
        trt = importlib.import_module("tensorrt")
    except (ImportError, OSError) as exc:
        raise MissingDependencyError(f"{INSTALL_HINT} [{type(exc).__name__}: {exc}]".replace("\n", " ")) from exc
    if not hasattr(trt, "Builder") or not hasattr(trt, "Runtime"):
        raise MissingDependencyError(f"{INSTALL_HINT} [the installed `tensorrt` module has no Builder/Runtime]")
    return trt


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except MissingDependencyError:
        return False
    return True


def trt_major(trt: ModuleType) -> int:
    """Major version of a ``tensorrt`` module (``"10.13.0.35"`` -> 10)."""
    version = getattr(trt, "__version__", "0")
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def build_unavailable(use_plugin: bool = True) -> str | None:
    """``None`` when an engine can be built here, else the reason in one line: TensorRT first (the most fundamental
    piece), then the plugin library when ``use_plugin``."""
    from .plugin import plugin_library

    try:
        import_tensorrt()
        if use_plugin:
            plugin_library(required=True)
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


def plugin_engine_unavailable() -> str | None:
    """``None`` when an engine with the CARAFE plugin can be built and run here, else the reason, in one line."""
    return build_unavailable(use_plugin=True) or run_unavailable()


_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
                "INT64": "int64", "UINT8": "uint8", "BOOL": "bool", "FP8": "float8", "INT4": "int4", "FP4": "fp4"}


def dtype_name(dtype) -> str:
    """numpy-style name of a ``trt.DataType`` member (``DataType.HALF`` -> ``"float16"``)."""
    name = getattr(dtype, "name", str(dtype).rpartition(".")[2])
    return _DTYPE_NAMES.get(name, name.lower())


def make_logger(trt: ModuleType, verbose: bool):
    """A ``trt.ILogger`` that keeps errors and warnings for the error messages; prints them only when ``verbose``."""

    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg):
            name = getattr(severity, "name", str(severity))
            if name in ("INTERNAL_ERROR", "ERROR"):
                self.errors.append(msg)
            elif name == "WARNING":
                self.warnings.append(msg)
            if verbose and name not in ("VERBOSE",):
                print(f"[TensorRT {name}] {msg}", flush=True)

    return CollectingLogger()
