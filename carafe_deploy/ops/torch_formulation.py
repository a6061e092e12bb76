"""CARAFE written with PyTorch tensor ops: the fallback kernel on every device without a native one.

It runs when the native CPU kernels cannot be built (and on devices with no kernels of their own), and it is the
"before" of ``benchmarks/cpu_op.py``. It never materializes a k²-times tensor: it loops over the k² taps and
accumulates ``out += shifted(features) * kernels[tap]`` in place, with broadcasting doing the up-sampling (each
source pixel feeds an s×s block of output pixels) or a strided slice doing the down-sampling, channel chunk by
channel chunk so that the output chunk stays in cache across the accumulations. Arguments are not checked here
(the op checks them before any kernel runs).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["forward", "backward"]

# Output bytes per channel chunk that should stay cache-resident across the k² accumulations.
_CHUNK_BYTES = 1 << 20


def _geometry(features: Tensor, group: int, scale_factor: int, mode: str):
    n, c, h, w = features.shape
    up = mode == "up"
    rep = scale_factor if up else 1  # each source pixel feeds a rep×rep block of outputs
    step = 1 if up else scale_factor  # stride between the source pixels of neighbouring outputs
    hs, ws = (h, w) if up else ((h + scale_factor - 1) // scale_factor, (w + scale_factor - 1) // scale_factor)
    return n, c, c // group, hs, ws, rep, step


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half types accumulate in float32: k² products summed in fp16 lose too much.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _tap_window(padded: Tensor, ky: int, kx: int, hs: int, ws: int, step: int) -> Tensor:
    """The (N, C, hs, ws) view of the padded features that tap (ky, kx) reads, without a copy."""
    return padded[:, :, ky : ky + step * (hs - 1) + 1 : step, kx : kx + step * (ws - 1) + 1 : step]


def _channel_chunks(cg: int, per_channel_elems: int, itemsize: int) -> Sequence[tuple[int, int]]:
    chunk = max(1, min(cg, _CHUNK_BYTES // max(1, per_channel_elems * itemsize)))
    return [(c0, min(cg, c0 + chunk)) for c0 in range(0, cg, chunk)]


def forward(features: Tensor, kernels: Tensor, kernel_size: int, group: int, scale_factor: int, mode: str) -> Tensor:
    """The op's output (features (N, C, H, W), kernels (N, G·k², Ho, Wo), any layout)."""
    features, kernels, k, s = features.contiguous(), kernels.contiguous(), kernel_size, scale_factor
    n, c, cg, hs, ws, rep, step = _geometry(features, group, s, mode)
    ho, wo = hs * rep, ws * rep
    cdt = _compute_dtype(features.dtype)
    r = k // 2
    padded = F.pad(features.to(cdt), (r, r, r, r))
    kern = kernels.to(cdt).reshape(n, group, k * k, hs, rep, ws, rep)
    out = torch.zeros(n, group, cg, hs, rep, ws, rep, dtype=cdt, device=features.device)
    if out.numel() == 0:
        return out.reshape(n, c, ho, wo).to(features.dtype)
    for c0, c1 in _channel_chunks(cg, n * group * ho * wo, out.element_size()):
        acc = out[:, :, c0:c1]
        for ky in range(k):
            for kx in range(k):
                src = _tap_window(padded, ky, kx, hs, ws, step).unflatten(1, (group, cg))[:, :, c0:c1]
                acc.addcmul_(src[:, :, :, :, None, :, None], kern[:, :, None, ky * k + kx])
    return out.reshape(n, c, ho, wo).to(features.dtype)


def backward(
    grad_out: Tensor, features: Tensor, kernels: Tensor, kernel_size: int, group: int, scale_factor: int, mode: str
) -> tuple[Tensor, Tensor]:
    """(grad_features, grad_kernels) of the op for ``grad_out`` (N, C, Ho, Wo)."""
    grad_out, features, kernels = grad_out.contiguous(), features.contiguous(), kernels.contiguous()
    k, s = kernel_size, scale_factor
    n, c, cg, hs, ws, rep, step = _geometry(features, group, s, mode)
    cdt = _compute_dtype(features.dtype)
    r = k // 2
    h, w = features.shape[2:]
    padded = F.pad(features.to(cdt), (r, r, r, r))
    kern = kernels.to(cdt).reshape(n, group, k * k, hs, rep, ws, rep)
    gout = grad_out.to(cdt).reshape(n, group, cg, hs, rep, ws, rep)
    grad_padded = torch.zeros_like(padded)
    grad_kern = torch.zeros_like(kern)
    if gout.numel() == 0:
        return features.new_zeros(features.shape), kernels.new_zeros(kernels.shape)
    for c0, c1 in _channel_chunks(cg, n * group * hs * rep * ws * rep, gout.element_size()):
        g = gout[:, :, c0:c1]
        for ky in range(k):
            for kx in range(k):
                tap = ky * k + kx
                kt = kern[:, :, None, tap]
                src = _tap_window(padded, ky, kx, hs, ws, step).unflatten(1, (group, cg))[:, :, c0:c1]
                dst = _tap_window(grad_padded, ky, kx, hs, ws, step).unflatten(1, (group, cg))[:, :, c0:c1]
                dst.add_((g * kt).sum(dim=(4, 6)))
                grad_kern[:, :, tap].add_((g * src[:, :, :, :, None, :, None]).sum(dim=2))
    grad_features = grad_padded[:, :, r : r + h, r : r + w]
    return grad_features.to(features.dtype).contiguous(), grad_kern.reshape(kernels.shape).to(kernels.dtype)
