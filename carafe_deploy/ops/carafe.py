"""The CARAFE / CARAFE++ reassembly operator, registered once with ``torch.library``.

One op definition (``carafe_deploy::carafe``) carries everything: argument checks in the public wrapper, a fake
(meta) kernel so ``torch.export`` and the ONNX exporter see output shapes, autograd through a second op
(``carafe_deploy::carafe_backward``) so device backends can register a backward kernel too, and a default kernel
written with PyTorch tensor ops that runs on every device.

The default kernel never materializes a k²-times tensor. It loops over the k² kernel taps and accumulates
``out += shifted(features) * kernels[tap]`` in place, with broadcasting doing the up-sampling (each source pixel
feeds an s×s block of output pixels) or the strided slice doing the down-sampling. Channels are processed in
chunks so that the output chunk stays in cache across the k² accumulations.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["carafe", "carafe_output_size", "check_carafe_args", "MODES"]

MODES = ("up", "down")

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Output bytes per channel chunk that should stay cache-resident across the k² accumulations.
_CHUNK_BYTES = 1 << 20


def carafe_output_size(height, width, scale_factor: int, mode: str):
    """(Ho, Wo) of the op: (s·H, s·W) for "up", (ceil(H/s), ceil(W/s)) for "down". Works on SymInts."""
    if mode == "up":
        return height * scale_factor, width * scale_factor
    return (height + scale_factor - 1) // scale_factor, (width + scale_factor - 1) // scale_factor


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_carafe_args(features, kernels, kernel_size, group, scale_factor, mode) -> None:
    """Raise ``TypeError``/``ValueError`` naming the argument for anything outside the contract (DESIGN §1)."""
    for name, t in (("features", features), ("kernels", kernels)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (N, C, H, W), got {t.dim()}-D with shape {tuple(t.shape)}")
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if features.dtype != kernels.dtype:
        raise TypeError(f"features and kernels must have the same dtype, got {features.dtype} and {kernels.dtype}")
    if features.device != kernels.device:
        raise ValueError(
            f"features and kernels must be on the same device, got {features.device} and {kernels.device}"
        )
    _check_int("kernel_size", kernel_size, 1)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    _check_int("group", group, 1)
    _check_int("scale_factor", scale_factor, 1)
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

    n, c, h, w = features.shape
    if c % group != 0:
        raise ValueError(f"features channels ({c}) must be divisible by group ({group})")
    kn, kc, kh, kw = kernels.shape
    if kn != n:
        raise ValueError(f"kernels batch ({kn}) must equal features batch ({n})")
    expected_c = group * kernel_size * kernel_size
    if kc != expected_c:
        raise ValueError(
            f"kernels must have group*kernel_size**2 = {group}*{kernel_size}**2 = {expected_c} channels, got {kc}"
        )
    ho, wo = carafe_output_size(h, w, scale_factor, mode)
    if (kh, kw) != (ho, wo):
        raise ValueError(
            f"kernels spatial size must be the {mode!r} output size {(ho, wo)} for features {(h, w)} and "
            f"scale_factor {scale_factor}, got {(kh, kw)}"
        )


def carafe(
    features: Tensor,
    kernels: Tensor,
    kernel_size: int,
    group: int = 1,
    scale_factor: int = 2,
    mode: str = "up",
) -> Tensor:
    """Content-aware reassembly of ``features`` with per-pixel ``kernels``.

    ``out[n, c, i', j'] = sum_{dy, dx in [-r, r]} kernels[n, g*k*k + (dy+r)*k + (dx+r), i', j'] * features[n, c, i+dy, j+dx]``
    with r = k // 2, g = c // (C / group), zero outside ``features``, and (i, j) = (i'//s, j'//s) for ``mode="up"``
    (output s·H × s·W, exactly mmcv's ``carafe``) or (s·i', s·j') for ``mode="down"`` (output ceil(H/s) × ceil(W/s),
    CARAFE++). ``kernels`` must already be normalized; the op applies no softmax.
    """
    check_carafe_args(features, kernels, kernel_size, group, scale_factor, mode)
    return torch.ops.carafe_deploy.carafe(features, kernels, kernel_size, group, scale_factor, mode)


# --------------------------------------------------------------------------------------------------------------
# The reference formulation in PyTorch tensor ops (default kernel on every device).


def _geometry(features: Tensor, kernel_size: int, group: int, scale_factor: int, mode: str):
    n, c, h, w = features.shape
    up = mode == "up"
    rep = scale_factor if up else 1  # each source pixel feeds a rep×rep block of outputs
    step = 1 if up else scale_factor  # stride between the source pixels of neighbouring outputs
    hs, ws = (h, w) if up else carafe_output_size(h, w, scale_factor, mode)
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


def _forward_impl(features: Tensor, kernels: Tensor, k: int, group: int, s: int, mode: str) -> Tensor:
    n, c, cg, hs, ws, rep, step = _geometry(features, k, group, s, mode)
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


def _backward_impl(grad_out: Tensor, features: Tensor, kernels: Tensor, k: int, group: int, s: int, mode: str):
    n, c, cg, hs, ws, rep, step = _geometry(features, k, group, s, mode)
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


# --------------------------------------------------------------------------------------------------------------
# torch.library registration.


@torch.library.custom_op("carafe_deploy::carafe", mutates_args=())
def _carafe_op(features: Tensor, kernels: Tensor, kernel_size: int, group: int, scale_factor: int, mode: str) -> Tensor:
    return _forward_impl(features.contiguous(), kernels.contiguous(), kernel_size, group, scale_factor, mode)


@_carafe_op.register_fake
def _carafe_fake(features, kernels, kernel_size, group, scale_factor, mode):
    n, c, h, w = features.shape
    ho, wo = carafe_output_size(h, w, scale_factor, mode)
    return features.new_empty((n, c, ho, wo))


@torch.library.custom_op("carafe_deploy::carafe_backward", mutates_args=())
def _carafe_backward_op(
    grad_output: Tensor, features: Tensor, kernels: Tensor, kernel_size: int, group: int, scale_factor: int, mode: str
) -> tuple[Tensor, Tensor]:
    return _backward_impl(
        grad_output.contiguous(), features.contiguous(), kernels.contiguous(), kernel_size, group, scale_factor, mode
    )


@_carafe_backward_op.register_fake
def _carafe_backward_fake(grad_output, features, kernels, kernel_size, group, scale_factor, mode):
    return features.new_empty(features.shape), kernels.new_empty(kernels.shape)


def _setup_context(ctx, inputs, output):
    features, kernels, kernel_size, group, scale_factor, mode = inputs
    ctx.save_for_backward(features, kernels)
    ctx.attrs = (kernel_size, group, scale_factor, mode)


def _backward(ctx, grad_output):
    features, kernels = ctx.saved_tensors
    grad_features, grad_kernels = torch.ops.carafe_deploy.carafe_backward(grad_output, features, kernels, *ctx.attrs)
    return (
        grad_features if ctx.needs_input_grad[0] else None,
        grad_kernels if ctx.needs_input_grad[1] else None,
        None,
        None,
        None,
        None,
    )


_carafe_op.register_autograd(_backward, setup_context=_setup_context)

