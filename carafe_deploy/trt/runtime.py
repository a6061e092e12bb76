"""The TensorRT runtime at hand: full TensorRT (module ``tensorrt``, 10/11) or TensorRT for RTX (``tensorrt_rtx``),
chosen automatically (full TensorRT first) or by name; importing it (with one line saying how to install it when it
is absent), its name and version, its logger. Whether an engine can be built and run here is :mod:`.availability`'s.

The two share the Python API of TensorRT 10 (with the differences :mod:`.rtx` deals with) but not their engines: an
engine runs only on the runtime that built it, which the sidecar records. TensorRT-RTX reports its own version
("1.7.1.116"), so the runtime is told by its module, never by its major version.

Nothing here imports torch: a machine that only builds engines needs TensorRT, onnx and this package.
"""

from __future__ import annotations

import ctypes
import importlib
from types import ModuleType

from ..errors import MissingDependencyError

__all__ = ["RUNTIMES", "RUNTIME_LABELS", "INSTALL_HINT", "NO_GPU", "cuda_device_count", "import_tensorrt", "tensorrt_available", "runtime_name",
           "runtime_label", "is_rtx", "trt_major", "check_backend", "runtime_installed", "cuda_device_count", "make_logger", "dtype_name"]

# runtime name (as --backend and the sidecar write it) -> Python module, in the order of automatic choice
RUNTIMES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}

_INSTALL = {
    "tensorrt": "pip install tensorrt (TensorRT 10/11; builds and runs on an NVIDIA GPU)",
    "tensorrt-rtx": 'pip install "tensorrt-rtx-cu13==1.7.1.116" (TensorRT for RTX; builds without a GPU; its '
                    "engines run on compute capability 7.5, 8.x and 12.0 GPUs)",
}
# the URL last and followed by a space, never by punctuation: terminals and copy-paste take it whole
_OTHER_WAYS = "other ways: https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/installing.html"
INSTALL_HINT = f"TensorRT is not installed: {_INSTALL['tensorrt']}, or {_INSTALL['tensorrt-rtx']}; {_OTHER_WAYS}"


def check_backend(backend: str | None) -> str | None:
    """``backend`` unchanged when it is ``None`` (automatic) or a runtime name, else ``ValueError``."""
    if backend is not None and backend not in RUNTIMES:
        raise ValueError(f"unknown TensorRT backend {backend!r}: use one of {', '.join(RUNTIMES)}")
    return backend


def _import(name: str) -> ModuleType:
    module = RUNTIMES[name]
    try:
        trt = importlib.import_module(module)
    except (ImportError, OSError) as exc:
        raise MissingDependencyError(f"{_label(name)} is not installed: {_INSTALL[name]} "
                                     f"[{type(exc).__name__}: {exc}]".replace("\n", " ")) from exc
    # the PyPI packages import without their libraries in some layouts and fail later
    if not hasattr(trt, "Builder") or not hasattr(trt, "Runtime"):
        raise MissingDependencyError(f"{_label(name)} is not installed: {_INSTALL[name]} "
                                     f"[the installed `{module}` module has no Builder/Runtime]")
    return trt


def import_tensorrt(backend: str | None = None) -> ModuleType:
    """The TensorRT module: ``backend`` ("tensorrt" or "tensorrt-rtx"), or when ``None`` full TensorRT if it imports,
    else TensorRT-RTX. ``MissingDependencyError`` with one line saying how to install it."""
    if check_backend(backend) is not None:
        return _import(backend)
    for name in RUNTIMES:
        try:
            return _import(name)
        except MissingDependencyError:
            continue
    raise MissingDependencyError(INSTALL_HINT)


def tensorrt_available(backend: str | None = None) -> bool:
    try:
        import_tensorrt(backend)
    except MissingDependencyError:
        return False
    return True


def runtime_installed(backend: str | None = None) -> bool:
    """Whether the runtime (``None``: either) is installed, found without importing it (a dry run never imports
    TensorRT); a module blocked in ``sys.modules`` counts as absent."""
    import importlib.util
    import sys

    def found(module: str) -> bool:
        if module in sys.modules:
            return sys.modules[module] is not None
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    return any(found(RUNTIMES[name]) for name in ([check_backend(backend)] if backend else RUNTIMES))


def runtime_name(trt: ModuleType) -> str:
    """``"tensorrt-rtx"`` for the ``tensorrt_rtx`` module, else ``"tensorrt"``."""
    return "tensorrt-rtx" if trt.__name__.split(".")[0] == RUNTIMES["tensorrt-rtx"] else "tensorrt"


def is_rtx(trt: ModuleType) -> bool:
    return runtime_name(trt) == "tensorrt-rtx"


RUNTIME_LABELS = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}  # what messages call them


def _label(name: str) -> str:
    return RUNTIME_LABELS[name]


def runtime_label(trt: ModuleType) -> str:
    """What to call the runtime in a message: ``"TensorRT 10.13.0.35"``, ``"TensorRT-RTX 1.7.1.116"``."""
    return f"{_label(runtime_name(trt))} {getattr(trt, '__version__', '?')}"


def trt_major(trt: ModuleType) -> int:
    """Major version of a TensorRT module (``"10.13.0.35"`` -> 10). Meaningful for full TensorRT only: TensorRT-RTX
    numbers its own releases (1.x)."""
    version = getattr(trt, "__version__", "0")
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


NO_GPU = ("no CUDA device here (the NVIDIA driver sees no GPU): a TensorRT engine runs only on an NVIDIA GPU, and "
          "no package installed here changes that")


def cuda_device_count() -> int:
    """CUDA devices the driver sees (0 without a driver), asked of libcuda itself: no torch or pycuda needed."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


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
