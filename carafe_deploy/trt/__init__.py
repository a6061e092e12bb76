"""TensorRT: engine building (``build``), running (``EngineRunner``, ``run_engine``) and graph preparation.

``tensorrt`` is imported lazily, inside the functions that need it, so everything that does not need the runtime
(graph preparation, profile parsing, sidecar handling, the CLI's error paths) works on a machine without it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependencyError

__all__ = [
    "import_tensorrt",
    "tensorrt_available",
    "plugin_engine_unavailable",
    "trt_major",
    "run_engine",
    "EngineRunner",
    "build_engine",
    "BuildOptions",
    "MissingDependencyError",
]

INSTALL_HINT = (
    "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU and driver; "
    "see https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/installing.html)"
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


def plugin_engine_unavailable() -> str | None:
    """``None`` when an engine with the CARAFE plugin can be built and run here, else the reason, in one line.

    Needs the TensorRT runtime, the plugin library and a CUDA device (the runner's buffers).
    """
    from ..plugin import plugin_library

    try:
        import_tensorrt()
        plugin_library(required=True)
    except MissingDependencyError as exc:
        return str(exc)
    import torch

    if not torch.cuda.is_available():
        try:
            importlib.import_module("pycuda.driver")
        except ImportError:
            return "no CUDA device for the engine's buffers (torch has no CUDA and pycuda is not installed)"
    return None


def trt_major(trt: ModuleType) -> int:
    """Major version of a ``tensorrt`` module (``"10.13.0.35"`` -> 10)."""
    version = getattr(trt, "__version__", "0")
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def run_engine(engine_path, feeds, *, plugin: bool | str = True) -> dict:
    """Run a serialized engine once on numpy inputs; returns ``{output name: numpy array}``.

    ``MissingDependencyError`` when TensorRT (or a CUDA buffer backend) is not installed.
    """
    import_tensorrt()  # first: without TensorRT the backend is unavailable, whatever the engine path says
    from .runner import EngineRunner

    with EngineRunner(engine_path, plugin=plugin) as runner:
        return runner.infer(feeds)


# name -> submodule, for lazy re-exports: `import carafe_deploy.trt` stays free of onnx/jsonschema/rich imports
_LAZY = {
    "EngineRunner": "runner",
    "build_engine": "builder",
    "BuildOptions": "builder",
    "plan_build": "builder",
    "parse_size": "builder",
    "parse_shape_specs": "profiles",
    "make_profile": "profiles",
    "read_sidecar": "sidecar",
    "load_onnx": "graph",
    "onnx_input_dims": "graph",
    "prepare_onnx": "graph",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
