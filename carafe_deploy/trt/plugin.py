"""Where the TensorRT plugin library (``libcarafe_trt_plugin.so``) is.

Search order: the ``CARAFE_DEPLOY_PLUGIN`` environment variable (a file path), then the CMake build folders of a
source checkout (``build/``, ``build/*/``), then next to the installed package.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MissingDependencyError

LIBRARY_NAME = "libcarafe_trt_plugin.so"
ENV_VAR = "CARAFE_DEPLOY_PLUGIN"

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_SOURCE_ROOT = _PACKAGE_DIR.parent


def _candidates() -> list[Path]:
    found = [_SOURCE_ROOT / "build" / LIBRARY_NAME]
    found += sorted((_SOURCE_ROOT / "build").glob(f"*/{LIBRARY_NAME}"))
    found.append(_PACKAGE_DIR / "lib" / LIBRARY_NAME)
    return found


def plugin_library(required: bool = True) -> Path | None:
    """Path of the plugin library; ``None`` (or ``MissingDependencyError`` when ``required``) if it is not built."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if path.is_file():
            return path
        raise MissingDependencyError(f"{ENV_VAR}={env} does not name an existing file")
    for path in _candidates():
        if path.is_file():
            return path
    if required:
        raise MissingDependencyError(
            f"{LIBRARY_NAME} not found: build it with `cmake -S . -B build -DTensorRT_INCLUDE_DIR=<dir with NvInfer.h> "
            f"&& cmake --build build`, or set {ENV_VAR} to its path"
        )
    return None
