"""The rest of what ``mmcv.ops.carafe`` exposes, for code that reaches past the op: its registry (``UPSAMPLE_LAYERS``
in mmcv 1.x, ``MODELS`` in 2.x), the compiled extension's CARAFE entry points (``ext_module``, ``ext_loader``), and
what the stand-in ``mmcv.utils`` carries (the device flags mmcv's own tests import).

``ext_module``'s four functions take mmcv's arguments and fill the output tensors they are given, computed by
``carafe_deploy::carafe``; the scratch tensors (``rfeatures``, ``routput``, ``rmasks``, ...) hold what this module's
backward reads, not the NHWC copies mmcv's CUDA kernels keep there.
"""

from __future__ import annotations

import types

import torch
from torch import Tensor

from ..ops import carafe as _carafe

__all__ = ["Registry", "ext_module", "ext_loader", "device_flags"]


class Registry:
    """A stand-in for mmcv 1.x's ``Registry`` (used where mmengine is not installed): names -> classes."""

    def __init__(self, name: str):
        self.name = name
        self._module_dict: dict[str, type] = {}

    @property
    def module_dict(self) -> dict[str, type]:
        return self._module_dict

    def __len__(self) -> int:
        return len(self._module_dict)

    def __contains__(self, key: str) -> bool:
        return key in self._module_dict

    def get(self, key: str):
        return self._module_dict.get(key)

    def register_module(self, name=None, force: bool = False, module=None):
        def register(cls):
            for key in ([name] if isinstance(name, str) else list(name or [cls.__name__])):
                if key in self._module_dict and not force:
                    raise KeyError(f"{key} is already registered in {self.name}")
                self._module_dict[key] = cls
            return cls

        return register(module) if module is not None else register

    def build(self, cfg: dict, **default_args):
        args = dict(cfg)
        kind = args.pop("type")
        cls = self.get(kind) if isinstance(kind, str) else kind
        if cls is None:
            raise KeyError(f"{kind} is not in the {self.name} registry (carafe_deploy's stand-in registers only "
                           f"'carafe')")
        for key, value in default_args.items():
            args.setdefault(key, value)
        return cls(**args)

    def __repr__(self) -> str:
        return f"Registry(name={self.name}, items={sorted(self._module_dict)})"


# ---------------------------------------------------------------------------------------------------------------
# mmcv._ext's CARAFE functions


def _grads(grad_output: Tensor, features: Tensor, masks: Tensor, kernel_size: int, group_size: int,
           scale_factor: int) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        f = features.detach().requires_grad_(True)
        m = masks.detach().requires_grad_(True)
        out = _carafe(f, m, kernel_size, group_size, scale_factor, "up")
        return torch.autograd.grad(out, (f, m), grad_output)


def carafe_naive_forward(features, masks, output, kernel_size, group_size, scale_factor) -> None:
    output.copy_(_carafe(features, masks, kernel_size, group_size, scale_factor, "up"))


def carafe_naive_backward(grad_output, features, masks, grad_input, grad_masks, kernel_size, group_size,
                          scale_factor) -> None:
    gf, gm = _grads(grad_output, features, masks, kernel_size, group_size, scale_factor)
    grad_input.copy_(gf)
    grad_masks.copy_(gm)


def carafe_forward(features, masks, rfeatures, routput, rmasks, output, kernel_size, group_size,
                   scale_factor) -> None:
    rfeatures.copy_(features)  # what carafe_backward reads
    output.copy_(_carafe(features, masks, kernel_size, group_size, scale_factor, "up"))


def carafe_backward(grad_output, rfeatures, masks, rgrad_output, rgrad_input_hs, rgrad_input, rgrad_masks,
                    grad_input, grad_masks, kernel_size, group_size, scale_factor) -> None:
    gf, gm = _grads(grad_output, rfeatures, masks, kernel_size, group_size, scale_factor)
    grad_input.copy_(gf)
    grad_masks.copy_(gm)


_EXT_FUNCTIONS = {f.__name__: f for f in (carafe_naive_forward, carafe_naive_backward, carafe_forward,
                                          carafe_backward)}
ext_module = types.SimpleNamespace(**_EXT_FUNCTIONS)


def _load_ext(name: str, funcs) -> types.SimpleNamespace:
    missing = [f for f in funcs if f not in _EXT_FUNCTIONS]
    if missing:
        raise AttributeError(f"mmcv.{name} is not available here: carafe_deploy.compat.mmcv provides only the CARAFE "
                             f"functions of mmcv's compiled ops, not {', '.join(missing)}")
    return types.SimpleNamespace(**{f: _EXT_FUNCTIONS[f] for f in funcs})


ext_loader = types.SimpleNamespace(load_ext=_load_ext, check_ops_exist=lambda: False)


def device_flags() -> dict[str, bool]:
    """mmcv.utils' ``IS_*_AVAILABLE`` flags."""
    mps = getattr(torch.backends, "mps", None)
    return {
        "IS_CUDA_AVAILABLE": torch.cuda.is_available(),
        "IS_IPU_AVAILABLE": False,  # mmcv 1.7 (Graphcore IPUs)
        "IS_MLU_AVAILABLE": bool(getattr(torch, "is_mlu_available", lambda: False)()),
        "IS_MPS_AVAILABLE": bool(mps is not None and mps.is_available()),
        "IS_NPU_AVAILABLE": bool(getattr(torch, "npu", None) is not None and torch.npu.is_available()),
    }
