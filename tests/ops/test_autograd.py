"""Derivatives of carafe_deploy::carafe in float64: reverse, forward and second order, plain autograd and torch.func.

The op is bilinear, so a central difference of the independent loop reference is exact up to rounding: the jvp is
checked against (ref(X + e dX, K + e dK) - ref(X - e dX, K - e dK)) / 2e. gradcheck/gradgradcheck compare the
analytical (first and second) derivatives with finite differences of the forward, which test_carafe.py and
test_cpu_kernel.py check against the loops. Direct ``torch.ops`` calls get the same derivatives as the function.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd import forward_ad as fwAD

from carafe_deploy.ops import carafe
from support.reference import carafe_reference, carafe_reference_backward, output_size

CASES = [(1, 4, 3, 4, 3, 2, 2, "up"), (2, 3, 3, 2, 5, 1, 3, "up"), (1, 4, 5, 5, 3, 2, 2, "down"),
         (1, 2, 4, 3, 1, 1, 1, "down")]


def _inputs(n, c, h, w, k, group, s, mode, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = output_size(h, w, s, mode)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    kern = torch.randn(n, group * k * k, ho, wo, generator=gen, dtype=torch.float64)
    return x, kern


def _ops(k, group, s, mode):
    return {
        "function": lambda a, b: carafe(a, b, k, group, s, mode),
        "torch.ops": lambda a, b: torch.ops.carafe_deploy.carafe(a, b, k, group, s, mode),
    }


@pytest.mark.parametrize("n,c,h,w,k,group,s,mode", CASES)
def test_gradcheck(n, c, h, w, k, group, s, mode):
    x, kern = _inputs(n, c, h, w, k, group, s, mode)
    f = _ops(k, group, s, mode)["function"]
    assert torch.autograd.gradcheck(f, (x.requires_grad_(), kern.requires_grad_()), check_forward_ad=True)


@pytest.mark.parametrize("n,c,h,w,k,group,s,mode", [(1, 2, 2, 3, 3, 2, 2, "up"), (1, 2, 4, 3, 3, 1, 2, "down")])
def test_gradgradcheck(n, c, h, w, k, group, s, mode):
    x, kern = _inputs(n, c, h, w, k, group, s, mode)
    inputs = (x.requires_grad_(), kern.requires_grad_())
    f = _ops(k, group, s, mode)["function"]
    assert torch.autograd.gradcheck(f, inputs, check_batched_grad=True, check_batched_forward_grad=True,
                                    check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, inputs, check_fwd_over_rev=True, check_batched_grad=True)


@pytest.mark.parametrize("path", ["function", "torch.ops"])
@pytest.mark.parametrize("n,c,h,w,k,group,s,mode", CASES)
def test_jvp_matches_central_difference_of_the_reference(path, n, c, h, w, k, group, s, mode):
    x, kern = _inputs(n, c, h, w, k, group, s, mode, seed=1)
    dx, dk = _inputs(n, c, h, w, k, group, s, mode, seed=2)
    e = 1e-3
    plus = carafe_reference((x + e * dx).numpy(), (kern + e * dk).numpy(), k, group, s, mode)
    minus = carafe_reference((x - e * dx).numpy(), (kern - e * dk).numpy(), k, group, s, mode)
    expected = (plus - minus) / (2 * e)
    f = _ops(k, group, s, mode)[path]
    _, tangent = torch.func.jvp(f, (x, kern), (dx, dk))
    np.testing.assert_allclose(tangent.numpy(), expected, rtol=1e-8, atol=1e-8)
    with fwAD.dual_level():  # plain forward-mode autograd too
        out = f(fwAD.make_dual(x, dx), fwAD.make_dual(kern, dk))
        np.testing.assert_allclose(fwAD.unpack_dual(out).tangent.numpy(), expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("path", ["function", "torch.ops"])
def test_func_transforms_agree_with_each_other_and_the_reference(path):
    k, group, s, mode = 3, 2, 2, "up"
    x, kern = _inputs(1, 4, 3, 4, k, group, s, mode, seed=3)
    f = _ops(k, group, s, mode)[path]
    gout = torch.randn(1, 4, 6, 8, dtype=torch.float64)
    ref_gx, ref_gk = carafe_reference_backward(gout.numpy(), x.numpy(), kern.numpy(), k, group, s, mode)
    gx, gk = torch.func.grad(lambda a, b: (f(a, b) * gout).sum(), argnums=(0, 1))(x, kern)
    np.testing.assert_allclose(gx.numpy(), ref_gx, atol=1e-10)
    np.testing.assert_allclose(gk.numpy(), ref_gk, atol=1e-10)
    rev = torch.func.jacrev(f, argnums=(0, 1))(x, kern)
    fwd = torch.func.jacfwd(f, argnums=(0, 1))(x, kern)
    for a, b in zip(rev, fwd):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # d out / d kernels[0, t, i, j] is carafe(x, one-hot(t, i, j)): a column of the Jacobian is the op itself
    onehot = torch.zeros_like(kern)
    onehot[0, 7, 3, 5] = 1
    np.testing.assert_allclose(rev[1][..., 0, 7, 3, 5].numpy(), carafe_reference(x.numpy(), onehot.numpy(), k, group,
                                                                                  s, mode), atol=1e-12)
    batch_x, batch_k = torch.stack([x, 2 * x, -x]), torch.stack([kern, kern.flip(-1), 0.5 * kern])
    mapped = torch.func.vmap(f)(batch_x, batch_k)
    for i in range(3):
        torch.testing.assert_close(mapped[i], f(batch_x[i], batch_k[i]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["up", "down"])
def test_hessian_matches_double_backward(mode):
    k, group, s = 3, 1, 2
    x, kern = _inputs(1, 2, 4, 3, k, group, s, mode, seed=4)
    loss = lambda a, b: (carafe(a, b, k, group, s, mode) ** 2).sum()  # noqa: E731
    hessian = torch.func.hessian(loss, argnums=(0, 1))(x, kern)
    xg, kg = x.clone().requires_grad_(), kern.clone().requires_grad_()
    grad_x = torch.autograd.grad(loss(xg, kg), xg, create_graph=True)[0]
    for idx in [(0, 0, 1, 1), (0, 1, 3, 2), (0, 1, 0, 0)]:
        row_x, row_k = torch.autograd.grad(grad_x[idx], (xg, kg), retain_graph=True)
        torch.testing.assert_close(hessian[0][0][idx], row_x, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(hessian[0][1][idx], row_k, rtol=1e-10, atol=1e-10)
        assert row_k.abs().max() > 0  # the mixed block is not trivially zero


def test_double_backward_through_the_backward_op():
    # create_graph=True used to fail inside torch; now the second derivative is the op's own bilinear rule
    x, kern = _inputs(1, 3, 3, 3, 3, 1, 2, "up", seed=5)
    x.requires_grad_()
    kern.requires_grad_()
    out = carafe(x, kern, 3, 1, 2, "up")
    (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    (gk_of_gx,) = torch.autograd.grad(gx.sum(), kern)
    # sum(d(sum out)/dX) = <carafe(1, K), 1>, so its derivative by K is the kernels gradient for ones everywhere
    _, ref_gk = carafe_reference_backward(np.ones((1, 3, 6, 6)), np.ones((1, 3, 3, 3)), kern.detach().numpy(), 3, 1, 2,
                                          "up")
    np.testing.assert_allclose(gk_of_gx.numpy(), ref_gk, atol=1e-12)
