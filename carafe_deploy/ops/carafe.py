"""The CARAFE / CARAFE++ reassembly operator, ``carafe_deploy::carafe``, registered once with ``torch.library``.

- Kernels: the native CPU kernels (:mod:`._cpu`, falling back to :mod:`.torch_formulation` with a warning when they
  cannot be built), the CUDA kernels (:mod:`._cuda`), the PyTorch formulation on any other device, and a fake (meta)
  kernel for ``torch.export``, ``torch.compile`` and the ONNX exporter.
- Every one of them validates the arguments first (:func:`validate`, ``torch._check`` semantics, so symbolic shapes
  work too): a direct ``torch.ops.carafe_deploy.carafe`` call is checked like :func:`carafe`.
- Autograd: the op is bilinear in (features, kernels), so every derivative is the op or its backward again: the
  backward is ``carafe_deploy::carafe_backward``, itself differentiable (double backward, ``gradgradcheck``); forward
  mode is ``carafe(dX, K) + carafe(X, dK)``; both ops have vmap rules, so ``torch.func`` (jvp, jacfwd, jacrev, vmap,
  hessian) works.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import forward_ad as _fw_ad

from . import _cpu, torch_formulation

__all__ = ["carafe", "carafe_output_size", "check_carafe_args", "validate", "validate_backward", "MODES"]

MODES = ("up", "down")

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

SCHEMA = "carafe(Tensor features, Tensor kernels, int kernel_size, int group, int scale_factor, str mode) -> Tensor"
BACKWARD_SCHEMA = (
    "carafe_backward(Tensor grad_output, Tensor features, Tensor kernels, int kernel_size, int group, "
    "int scale_factor, str mode) -> (Tensor, Tensor)"
)


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


def _require(error: type[Exception], cond, message) -> None:
    """``torch._check_with``, with a plain-bool fast path: eager calls need neither sympy nor the symbolic machinery."""
    if cond is True:
        return
    if cond is False:
        raise error(message())
    torch._check_with(error, cond, message)  # a SymBool: a guard or a runtime assertion under tracing


def _value(cond, message) -> None:
    _require(ValueError, cond, message)


def _type(cond, message) -> None:
    _require(TypeError, cond, message)


def validate(features, kernels, kernel_size: int, group: int, scale_factor: int, mode: str) -> None:
    """``TypeError``/``ValueError`` naming the problem for anything outside the contract (CONTRACT §1).

    Run by every kernel of the op, the fake one included. Symbolic values go to ``torch._check_with``: with dynamic
    shapes a check becomes a guard or a runtime assertion instead of failing on an unknown size; under
    ``torch.jit.trace`` no shape is turned into a Python bool.
    """
    for name, t in (("features", features), ("kernels", kernels)):
        _value(t.dim() == 4, lambda: f"{name} must be 4-D (N, C, H, W), got {t.dim()}-D with shape "
                                                 f"{tuple(t.shape)}")
        _type(t.dtype in _FLOAT_DTYPES,
                          lambda: f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    _type(features.dtype == kernels.dtype,
                      lambda: f"features and kernels must have the same dtype, got {features.dtype} and "
                              f"{kernels.dtype}")
    _value(features.device == kernels.device,
                       lambda: f"features and kernels must be on the same device, got {features.device} and "
                               f"{kernels.device}")
    _value(kernel_size >= 1, lambda: f"kernel_size must be >= 1, got {kernel_size}")
    _value(kernel_size % 2 == 1, lambda: f"kernel_size must be odd, got {kernel_size}")
    _value(group >= 1, lambda: f"group must be >= 1, got {group}")
    _value(scale_factor >= 1, lambda: f"scale_factor must be >= 1, got {scale_factor}")
    _value(mode in MODES, lambda: f"mode must be one of {MODES}, got {mode!r}")
    n, c, h, w = features.shape
    kn, kc, kh, kw = kernels.shape
    _value(c % group == 0, lambda: f"features channels ({c}) must be divisible by group ({group})")
    _value(kn == n, lambda: f"kernels batch ({kn}) must equal features batch ({n})")
    expected_c = group * kernel_size * kernel_size
    _value(kc == expected_c, lambda: f"kernels must have group*kernel_size**2 = {group}*{kernel_size}**2"
                                                 f" = {expected_c} channels, got {kc}")
    ho, wo = carafe_output_size(h, w, scale_factor, mode)
    for got, want in ((kh, ho), (kw, wo)):
        _value(got == want, lambda: f"kernels spatial size must be the {mode!r} output size {(ho, wo)} "
                                                f"for features {(h, w)} and scale_factor {scale_factor}, got "
                                                f"{(kh, kw)}")


def validate_backward(grad_output, features, kernels, kernel_size, group, scale_factor, mode) -> None:
    validate(features, kernels, kernel_size, group, scale_factor, mode)
    n, c, h, w = features.shape
    expected = (n, c, *carafe_output_size(h, w, scale_factor, mode))
    _value(grad_output.dim() == 4, lambda: f"grad_output must be 4-D, got {tuple(grad_output.shape)}")
    _type(grad_output.dtype in _FLOAT_DTYPES,
                      lambda: f"grad_output must be a floating tensor, got {grad_output.dtype}")
    _value(grad_output.device == features.device,
                       lambda: f"grad_output must be on {features.device}, got {grad_output.device}")
    for got, want in zip(grad_output.shape, expected):
        _value(got == want, lambda: f"grad_output must have the output shape {expected}, got "
                                                f"{tuple(grad_output.shape)}")


def check_carafe_args(features, kernels, kernel_size, group, scale_factor, mode) -> None:
    """The Python-type checks (a Tensor, an int that is not a bool, a str) then :func:`validate`."""
    _check_python_types(features, kernels, kernel_size, group, scale_factor, mode)
    validate(features, kernels, kernel_size, group, scale_factor, mode)


def _check_python_types(features, kernels, kernel_size, group, scale_factor, mode) -> None:
    for name, t in (("features", features), ("kernels", kernels)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    _check_int("kernel_size", kernel_size, 1)
    _check_int("group", group, 1)
    _check_int("scale_factor", scale_factor, 1)
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, one of {MODES}, got {type(mode).__name__} ({mode!r})")


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
    CARAFE++). ``kernels`` must already be normalized; the op applies no softmax. Works under ``torch.jit.script``.
    """
    if not torch.jit.is_scripting():
        _check_python_types(features, kernels, kernel_size, group, scale_factor, mode)
    return torch.ops.carafe_deploy.carafe(features, kernels, kernel_size, group, scale_factor, mode)


# --------------------------------------------------------------------------------------------------------------
# Registration.

# define + one impl per dispatch key (not torch.library.custom_op): the Autograd kernels below carry jvp rules
_lib = torch.library.Library("carafe_deploy", "FRAGMENT")
_lib.define(SCHEMA)
_lib.define(BACKWARD_SCHEMA)


def _cpu_forward(features, kernels, kernel_size, group, scale_factor, mode):
    validate(features, kernels, kernel_size, group, scale_factor, mode)
    native = _cpu.native_ops()
    if native is not None:
        return native.forward(features, kernels, kernel_size, group, scale_factor, mode)
    return torch_formulation.forward(features, kernels, kernel_size, group, scale_factor, mode)


def _cpu_backward(grad_output, features, kernels, kernel_size, group, scale_factor, mode):
    validate_backward(grad_output, features, kernels, kernel_size, group, scale_factor, mode)
    native = _cpu.native_ops()
    if native is not None:
        return native.backward(grad_output, features, kernels, kernel_size, group, scale_factor, mode)
    return torch_formulation.backward(grad_output, features, kernels, kernel_size, group, scale_factor, mode)


def _default_forward(features, kernels, kernel_size, group, scale_factor, mode):
    validate(features, kernels, kernel_size, group, scale_factor, mode)
    return torch_formulation.forward(features, kernels, kernel_size, group, scale_factor, mode)


def _default_backward(grad_output, features, kernels, kernel_size, group, scale_factor, mode):
    validate_backward(grad_output, features, kernels, kernel_size, group, scale_factor, mode)
    return torch_formulation.backward(grad_output, features, kernels, kernel_size, group, scale_factor, mode)


def _fake_forward(features, kernels, kernel_size, group, scale_factor, mode):
    validate(features, kernels, kernel_size, group, scale_factor, mode)
    n, c, h, w = features.shape
    return features.new_empty((n, c, *carafe_output_size(h, w, scale_factor, mode)))


def _fake_backward(grad_output, features, kernels, kernel_size, group, scale_factor, mode):
    validate_backward(grad_output, features, kernels, kernel_size, group, scale_factor, mode)
    return features.new_empty(features.shape), kernels.new_empty(kernels.shape)


_lib.impl("carafe", _cpu_forward, "CPU")
_lib.impl("carafe_backward", _cpu_backward, "CPU")
_lib.impl("carafe", _default_forward, "CompositeExplicitAutograd")
_lib.impl("carafe_backward", _default_backward, "CompositeExplicitAutograd")
torch.library.register_fake("carafe_deploy::carafe", _fake_forward, lib=_lib)
torch.library.register_fake("carafe_deploy::carafe_backward", _fake_backward, lib=_lib)


# --------------------------------------------------------------------------------------------------------------
# Autograd. Each op's Autograd kernel applies an autograd.Function (setup_context style, so torch.func transforms
# accept it) when a gradient or a tangent is wanted, and otherwise calls the kernels below autograd directly.


def _below_autograd(op, *args):
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


def _wants_autograd(*tensors: Tensor) -> bool:
    if torch._C._are_functorch_transforms_active():
        return True
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return True
    return _fw_ad._current_level >= 0 and any(_fw_ad.unpack_dual(t).tangent is not None for t in tensors)


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return b if a is None else a if b is None else a + b


class _Carafe(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(features, kernels, kernel_size, group, scale_factor, mode):
        return _below_autograd(torch.ops.carafe_deploy.carafe.default, features, kernels, kernel_size, group,
                               scale_factor, mode)

    @staticmethod
    def setup_context(ctx, inputs, output):
        features, kernels, *attrs = inputs
        ctx.save_for_backward(features, kernels)
        ctx.save_for_forward(features, kernels)
        ctx.attrs = tuple(attrs)

    @staticmethod
    def backward(ctx, grad_output):
        features, kernels = ctx.saved_tensors
        need_features, need_kernels = ctx.needs_input_grad[:2]
        grad_features = grad_kernels = None
        if need_features or need_kernels:
            grad_features, grad_kernels = torch.ops.carafe_deploy.carafe_backward(
                grad_output, features, kernels, *ctx.attrs
            )
        return (
            grad_features if need_features else None,
            grad_kernels if need_kernels else None,
            None,
            None,
            None,
            None,
        )

    @staticmethod
    def jvp(ctx, features_tangent, kernels_tangent, *_):
        features, kernels = ctx.saved_tensors
        op = torch.ops.carafe_deploy.carafe
        out = None
        if features_tangent is not None:
            out = op(features_tangent, kernels, *ctx.attrs)
        if kernels_tangent is not None:
            out = _add(out, op(features, kernels_tangent, *ctx.attrs))
        return out


class _CarafeBackward(torch.autograd.Function):
    """(grad_features, grad_kernels) = (B_X(g, K), B_K(g, X)): each is linear in each of its two inputs."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_output, features, kernels, kernel_size, group, scale_factor, mode):
        return _below_autograd(torch.ops.carafe_deploy.carafe_backward.default, grad_output, features, kernels,
                               kernel_size, group, scale_factor, mode)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, features, kernels, *attrs = inputs
        ctx.save_for_backward(grad_output, features, kernels)
        ctx.save_for_forward(grad_output, features, kernels)
        ctx.attrs = tuple(attrs)

    @staticmethod
    def backward(ctx, d_grad_features, d_grad_kernels):
        # L = <u, B_X(g, K)> + <v, B_K(g, X)> = <carafe(u, K), g> + <carafe(X, v), g>, so
        # dL/dg = carafe(u, K) + carafe(X, v), and (dL/dX, dL/dK) = (B_X(g, v), B_K(g, u)) = carafe_backward(g, u, v)
        grad_output, features, kernels = ctx.saved_tensors
        need_g, need_x, need_k = ctx.needs_input_grad[:3]
        u, v = d_grad_features, d_grad_kernels
        op = torch.ops.carafe_deploy.carafe
        dg = dx = dk = None
        if need_g:
            dg = _add(op(u, kernels, *ctx.attrs) if u is not None else None,
                      op(features, v, *ctx.attrs) if v is not None else None)
        if (need_x and v is not None) or (need_k and u is not None):
            bx, bk = torch.ops.carafe_deploy.carafe_backward(
                grad_output,
                u if u is not None else torch.zeros_like(features),
                v if v is not None else torch.zeros_like(kernels),
                *ctx.attrs,
            )
            dx = bx if need_x and v is not None else None
            dk = bk if need_k and u is not None else None
        return dg, dx, dk, None, None, None, None

    @staticmethod
    def jvp(ctx, grad_output_tangent, features_tangent, kernels_tangent, *_):
        # d(B_X(g, K), B_K(g, X)) = carafe_backward(dg, X, K) + carafe_backward(g, dX, dK)
        grad_output, features, kernels = ctx.saved_tensors
        op = torch.ops.carafe_deploy.carafe_backward
        out_x = out_k = None
        if grad_output_tangent is not None:
            out_x, out_k = op(grad_output_tangent, features, kernels, *ctx.attrs)
        if features_tangent is not None or kernels_tangent is not None:
            tx, tk = op(
                grad_output,
                features_tangent if features_tangent is not None else torch.zeros_like(features),
                kernels_tangent if kernels_tangent is not None else torch.zeros_like(kernels),
                *ctx.attrs,
            )
            out_x, out_k = _add(out_x, tx), _add(out_k, tk)
        return out_x, out_k


class _CarafeAtLevel(_Carafe):
    @staticmethod
    def forward(*args):
        # the lower transform levels reached from here must still see gradients wanted (as functorch's own
        # single-level functions do it)
        with torch.enable_grad(), _fw_ad._set_fwd_grad_enabled(True):
            return _Carafe.forward(*args)


class _CarafeBackwardAtLevel(_CarafeBackward):
    @staticmethod
    def forward(*args):
        with torch.enable_grad(), _fw_ad._set_fwd_grad_enabled(True):
            return _CarafeBackward.forward(*args)


_AT_LEVEL = {_Carafe: _CarafeAtLevel, _CarafeBackward: _CarafeBackwardAtLevel}


def _apply(function, *args):
    # Function.apply under torch.func transforms would re-enter the transform machinery from inside this Autograd
    # kernel, where functorch's front key is already excluded. The kernel is itself one transform level's autograd
    # (as a C++ autograd kernel is): it applies the function at this level, and the op calls in forward, backward and
    # jvp reach the lower levels.
    if torch._C._are_functorch_transforms_active():
        from torch._functorch.autograd_function import enable_single_level_autograd_function

        with enable_single_level_autograd_function():
            return super(torch.autograd.Function, _AT_LEVEL[function]).apply(*args)
    return function.apply(*args)


def _carafe_autograd(keyset, features, kernels, kernel_size, group, scale_factor, mode):
    if _wants_autograd(features, kernels):
        return _apply(_Carafe, features, kernels, kernel_size, group, scale_factor, mode)
    return torch.ops.carafe_deploy.carafe.default.redispatch(
        keyset & torch._C._after_autograd_keyset, features, kernels, kernel_size, group, scale_factor, mode
    )


def _carafe_backward_autograd(keyset, grad_output, features, kernels, kernel_size, group, scale_factor, mode):
    if _wants_autograd(grad_output, features, kernels):
        return _apply(_CarafeBackward, grad_output, features, kernels, kernel_size, group, scale_factor, mode)
    return torch.ops.carafe_deploy.carafe_backward.default.redispatch(
        keyset & torch._C._after_autograd_keyset, grad_output, features, kernels, kernel_size, group, scale_factor,
        mode,
    )


_lib.impl("carafe", _carafe_autograd, "Autograd", with_keyset=True)
_lib.impl("carafe_backward", _carafe_backward_autograd, "Autograd", with_keyset=True)


# --------------------------------------------------------------------------------------------------------------
# vmap: the batch dimension joins N.


def _with_batch(t: Tensor, dim: int | None, size: int) -> Tensor:
    return t.movedim(dim, 0) if dim is not None else t.expand(size, *t.shape)


def _carafe_vmap(info, in_dims, features, kernels, kernel_size, group, scale_factor, mode):
    b = info.batch_size
    x, k = _with_batch(features, in_dims[0], b), _with_batch(kernels, in_dims[1], b)
    out = torch.ops.carafe_deploy.carafe(x.flatten(0, 1), k.flatten(0, 1), kernel_size, group, scale_factor, mode)
    return out.unflatten(0, (b, x.shape[1])), 0


def _carafe_backward_vmap(info, in_dims, grad_output, features, kernels, kernel_size, group, scale_factor, mode):
    b = info.batch_size
    g = _with_batch(grad_output, in_dims[0], b)
    x, k = _with_batch(features, in_dims[1], b), _with_batch(kernels, in_dims[2], b)
    gx, gk = torch.ops.carafe_deploy.carafe_backward(
        g.flatten(0, 1), x.flatten(0, 1), k.flatten(0, 1), kernel_size, group, scale_factor, mode
    )
    n = x.shape[1]
    return (gx.unflatten(0, (b, n)), gk.unflatten(0, (b, n))), (0, 0)


torch.library.register_vmap("carafe_deploy::carafe", _carafe_vmap, lib=_lib)
torch.library.register_vmap("carafe_deploy::carafe_backward", _carafe_backward_vmap, lib=_lib)
