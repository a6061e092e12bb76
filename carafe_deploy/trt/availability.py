"""Whether an engine can be built and run on this machine, each answer one line naming the missing piece (or
``None``): the runtime at hand (:mod:`.runtime`), the plugin library (:mod:`.plugin`), what TensorRT-RTX can use
(:mod:`.rtx`), a CUDA device. Above those three so that none of them imports another's answers.
"""

from __future__ import annotations

import importlib
import os

from ..errors import DeployError, MissingDependencyError
from .plugin import ENV_VAR, plugin_library
from .rtx import core_link_missing, plugin_unusable
from .runtime import NO_GPU, cuda_device_count, import_tensorrt, runtime_installed

__all__ = ["build_unavailable", "run_unavailable", "engine_unavailable", "choose_plugin", "unidentified_engine"]


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
    """``None`` when an engine can run here (a CUDA device for its buffers, through torch or pycuda), else why not:
    first whether there is a GPU at all (installing pycuda would not help a machine without one)."""
    if cuda_device_count() == 0:
        return NO_GPU
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


def unidentified_engine(path, backend: str | None = None, option: str = "--engine") -> None:
    """``DeployError`` before anything runs when ``path`` is given as an engine and nothing here can tell that it is
    one, where it would otherwise be reported "skipped" (no runtime or GPU here to try it): it has no sidecar
    (``ENGINE.json``, which every engine built by carafe-deploy has) and lacks TensorRT-RTX's magic. A sidecar that
    describes another file (its sha256 differs) is an error too. A missing file is left to the runner."""
    from ..files import require_file
    from .runner import engine_runtime
    from .sidecar import read_sidecar, sha256_file, sidecar_path

    if not os.path.lexists(path):
        return
    require_file(path, option)
    try:
        side = read_sidecar(path)
    except ValueError as exc:
        raise DeployError(f"{option} {path}: its sidecar is not valid: {exc}") from None
    if side is not None:
        if side["engine"]["sha256"] != sha256_file(path):
            raise DeployError(f"{option} {path}: its sidecar {sidecar_path(path).name} describes another file (the "
                              "sha256 differs): rebuild the engine, or remove the stale sidecar")
        return
    if engine_runtime(path)[0] is not None:
        return
    why = build_unavailable(False, backend) or run_unavailable()
    if why is None:
        return  # TensorRT is here to read it, and says what it is
    raise DeployError(f"{option} {path}: nothing here says it is a TensorRT engine (no sidecar "
                      f"{sidecar_path(path).name}, no engine magic), and none can be read here to try ({why})")
