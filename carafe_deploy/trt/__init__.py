"""TensorRT: graph preparation (``graph``), optimization profiles (``profiles``), engine building (``builder``),
running (``runner``), the engine's JSON sidecar (``sidecar``), the plugin library lookup (``plugin``), the runtime
at hand (``runtime``: full TensorRT or TensorRT-RTX), what TensorRT-RTX cannot do (``rtx``) and whether an engine
can be built and run here (``availability``).

Importing this package imports neither TensorRT nor torch: TensorRT is imported inside the functions that need it, so
graph preparation, profile parsing, sidecar handling and every error path work on a machine without it, and a machine
that only builds engines never needs torch. The names below are loaded from their submodules on first use.
"""

from __future__ import annotations

import importlib

from ..errors import MissingDependencyError

# name -> submodule that defines it
_EXPORTS = {
    "INSTALL_HINT": "runtime",
    "RUNTIMES": "runtime",
    "runtime_name": "runtime",
    "import_tensorrt": "runtime",
    "tensorrt_available": "runtime",
    "trt_major": "runtime",
    "engine_unavailable": "availability",
    "choose_plugin": "availability",
    "build_unavailable": "availability",
    "run_unavailable": "availability",
    "plugin_library": "plugin",
    "EngineRunner": "runner",
    "run_engine": "runner",
    "engine_runtime": "runner",
    "build_engine": "builder",
    "BuildOptions": "builder",
    "plan_build": "builder",
    "parse_size": "builder",
    "parse_shape_specs": "profiles",
    "make_profile": "profiles",
    "read_sidecar": "sidecar",
    "sidecar_path": "sidecar",
    "load_onnx": "graph",
    "onnx_input_dims": "graph",
    "prepare_onnx": "graph",
}

__all__ = [*_EXPORTS, "MissingDependencyError"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
