"""CUDA kernels (plugins/common) behind ``carafe_deploy::carafe`` for CUDA tensors.

The kernels are JIT-compiled on first use with ``torch.utils.cpp_extension.load`` from the source checkout
(``carafe_deploy/csrc`` + ``plugins/common``). Registration is lazy and import-safe: nothing is compiled at import, a
CPU-only torch registers nothing, and if the extension cannot be built (no nvcc, no sources, a compiler error) the op
warns once and runs the default PyTorch formulation instead, so CUDA tensors always get a result.

``CARAFE_DEPLOY_NO_CUDA_EXT=1`` disables the extension (the PyTorch formulation runs, without a warning).
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from . import carafe as _carafe
from . import torch_formulation

__all__ = ["load_extension", "register", "cuda_forward", "cuda_backward", "SOURCES"]

DISABLE_ENV = "CARAFE_DEPLOY_NO_CUDA_EXT"
_ROOT = Path(__file__).resolve().parents[2]
_INCLUDE = _ROOT / "plugins" / "common"
SOURCES = (_ROOT / "carafe_deploy" / "csrc" / "carafe_torch.cpp", _INCLUDE / "carafe_kernels.cu")
# The kernels' dtypes; float64 also runs on them (float64 arithmetic), which is what gradcheck uses.
_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_lock = threading.Lock()
_state: dict[str, object] = {"module": None, "error": None, "warned": False}


def _why_unavailable() -> str | None:
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return f"disabled by {DISABLE_ENV}"
    if not torch.backends.cuda.is_built():
        return "this torch build has no CUDA"
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    missing = [str(p) for p in SOURCES if not p.is_file()]
    if missing:
        return f"kernel sources not found ({', '.join(missing)}); the CUDA kernels need a source checkout"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None:
        return "no CUDA toolkit (nvcc) found; set CUDA_HOME"
    return None


def load_extension() -> tuple[ModuleType | None, str | None]:
    """The compiled extension, or ``(None, reason)`` when it cannot be had. Compiles at most once per process."""
    with _lock:
        if _state["module"] is not None or _state["error"] is not None:
            return _state["module"], _state["error"]  # type: ignore[return-value]
        reason = _why_unavailable()
        if reason is None:
            try:
                from torch.utils.cpp_extension import load

                _state["module"] = load(
                    name="carafe_deploy_cuda",
                    sources=[str(p) for p in SOURCES],
                    extra_include_paths=[str(_INCLUDE)],
                    extra_cflags=["-O3", "-std=c++17"],
                    extra_cuda_cflags=["-O3", "-std=c++17"],
                    verbose=os.environ.get("CARAFE_DEPLOY_VERBOSE_BUILD", "") not in ("", "0"),
                )
            except Exception as exc:  # a failed build must never break the op: fall back instead
                first = str(exc).strip().splitlines()
                reason = f"building the CUDA extension failed: {type(exc).__name__}: {first[0] if first else ''}"
        if reason is not None and os.environ.get(DISABLE_ENV, "") in ("", "0"):
            _state["error"] = reason
        return _state["module"], reason  # type: ignore[return-value]


def _fallback_warning(reason: str | None) -> None:
    if reason is None or reason.startswith("disabled by"):
        return
    with _lock:
        if _state["warned"]:
            return
        _state["warned"] = True
    warnings.warn(
        f"carafe_deploy: CUDA kernels unavailable ({reason}); using the PyTorch formulation instead",
        RuntimeWarning,
        stacklevel=3,
    )


def _extension_for(features: Tensor) -> ModuleType | None:
    # Only called through the CUDA dispatch key, so the tensors are CUDA tensors.
    if features.dtype not in _KERNEL_DTYPES:
        return None
    module, reason = load_extension()
    if module is None:
        _fallback_warning(reason)
    return module


def cuda_forward(features: Tensor, kernels: Tensor, kernel_size: int, group: int, scale_factor: int, mode: str):
    """``carafe_deploy::carafe`` for the CUDA dispatch key."""
    _carafe.validate(features, kernels, kernel_size, group, scale_factor, mode)
    module = _extension_for(features)
    if module is not None:
        return module.forward(features, kernels, kernel_size, group, scale_factor, mode)
    return torch_formulation.forward(features, kernels, kernel_size, group, scale_factor, mode)


def cuda_backward(
    grad_output: Tensor, features: Tensor, kernels: Tensor, kernel_size: int, group: int, scale_factor: int, mode: str
):
    """``carafe_deploy::carafe_backward`` for the CUDA dispatch key."""
    _carafe.validate_backward(grad_output, features, kernels, kernel_size, group, scale_factor, mode)
    module = _extension_for(features)
    if module is not None:
        grad_features, grad_kernels = module.backward(
            grad_output, features, kernels, kernel_size, group, scale_factor, mode
        )
        return grad_features, grad_kernels
    return torch_formulation.backward(grad_output, features, kernels, kernel_size, group, scale_factor, mode)


_registered = False


def register() -> bool:
    """Route CUDA tensors of both ops to the kernels above. No-op (returns False) on a torch built without CUDA."""
    global _registered
    if _registered:
        return True
    if not torch.backends.cuda.is_built():
        return False
    torch.library.register_kernel("carafe_deploy::carafe", "cuda", cuda_forward)
    torch.library.register_kernel("carafe_deploy::carafe_backward", "cuda", cuda_backward)
    _registered = True
    return True


def _reset_for_tests() -> None:
    with _lock:
        _state.update(module=None, error=None, warned=False)
