"""Where the TensorRT plugin library (``libcarafe_trt_plugin.so``) is, and loading it into a runtime once.

Search order: the ``CARAFE_DEPLOY_PLUGIN`` environment variable (a file path), then the CMake build folders of a
source checkout (``build/``, ``build/*/``), then next to the installed package.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from types import ModuleType

from ..errors import DeployError, MissingDependencyError

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
            f"&& cmake --build build`, or set {ENV_VAR} to its path, or build without the plugin (--no-plugin)"
        )
    return None


# runtime module -> libraries its registry has loaded. A second load_library of the same file returns None
# (measured with TensorRT-RTX 1.7), so a process that builds two engines, or builds and then runs one, loads it once.
_LOADED: "weakref.WeakKeyDictionary[ModuleType, set[str]]" = weakref.WeakKeyDictionary()


def load_plugin_library(trt: ModuleType, path: Path, logger) -> None:
    """Register the plugin library at ``path`` with ``trt``'s plugin registry (once per process); ``DeployError``
    with TensorRT's reason when it cannot."""
    from .runtime import runtime_label

    loaded = _LOADED.setdefault(trt, set())
    key = str(Path(path).resolve())
    if key in loaded:
        return
    try:
        handle = trt.get_plugin_registry().load_library(str(path))
    except Exception as exc:  # the bindings raise RuntimeError/TypeError on some failures instead of None
        raise DeployError(f"{runtime_label(trt)} could not load the plugin library {path}: {exc}") from exc
    if handle is None:
        errors = list(getattr(logger, "errors", []))
        raise DeployError(f"{runtime_label(trt)} could not load the plugin library {path}"
                          + (": " + "; ".join(errors) if errors else ""))
    loaded.add(key)
