"""The CUDA backend of carafe_deploy::carafe (carafe_deploy/ops/_cuda.py).

On any machine: the loader reports why it cannot provide the kernels, the dispatch falls back to the PyTorch
formulation with exactly one warning, and an available extension is used for every kernel dtype. On a CUDA machine
(marked ``cuda``): the compiled kernels against the float64 loop reference for all dtypes and both modes, gradcheck
through the CUDA backward, and the fast paths chosen for the benchmark shapes.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from carafe_deploy.ops import _cuda, carafe
from support.reference import carafe_reference, output_size

HAS_CUDA = torch.cuda.is_available()
# CARAFE_REQUIRE_CUDA=1 (set by tests/gpu/run_gpu_checks.sh) turns these skips into failures on the GPU machine.
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA and not os.environ.get("CARAFE_REQUIRE_CUDA"),
    reason="needs a CUDA device (torch.cuda.is_available() is False)",
)


def _inputs(n, c, h, w, k, group, s, mode, dtype=torch.float64, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = output_size(h, w, s, mode)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    kern = torch.rand(n, group * k * k, ho, wo, generator=gen, dtype=torch.float64) / (k * k)
    return x.to(device, dtype), kern.to(device, dtype)


@pytest.fixture
def fresh_state():
    _cuda._reset_for_tests()
    yield
    _cuda._reset_for_tests()


@pytest.mark.skipif(HAS_CUDA, reason="checks the loader's answer on a machine without CUDA")
def test_loader_reports_no_cuda_cleanly(fresh_state):
    module, reason = _cuda.load_extension()
    assert module is None
    assert "CUDA" in reason


def test_loader_can_be_disabled(fresh_state, monkeypatch):
    monkeypatch.setenv(_cuda.DISABLE_ENV, "1")
    module, reason = _cuda.load_extension()
    assert module is None and _cuda.DISABLE_ENV in reason


def test_fallback_warns_once_and_computes(fresh_state, monkeypatch):
    monkeypatch.setattr(_cuda, "load_extension", lambda: (None, "nvcc exploded"))
    x, kern = _inputs(1, 4, 5, 6, 3, 2, 2, "up")
    with pytest.warns(RuntimeWarning, match="nvcc exploded") as record:
        out = _cuda.cuda_forward(x, kern, 3, 2, 2, "up")
        _cuda.cuda_forward(x, kern, 3, 2, 2, "up")
    assert len([w for w in record if "nvcc exploded" in str(w.message)]) == 1
    np.testing.assert_allclose(out.numpy(), carafe_reference(x.numpy(), kern.numpy(), 3, 2, 2, "up"), atol=1e-12)

    gout = torch.randn_like(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # already warned: the backward falls back silently
        gx, gk = _cuda.cuda_backward(gout, x, kern, 3, 2, 2, "up")
    assert gx.shape == x.shape and gk.shape == kern.shape


def test_available_extension_is_used_for_every_kernel_dtype(fresh_state, monkeypatch):
    calls = []

    class FakeExtension:
        @staticmethod
        def forward(*args):
            calls.append(("forward", args[0].dtype))
            return "kernel result"

        @staticmethod
        def backward(*args):
            calls.append(("backward", args[1].dtype))
            return "gx", "gk"

    monkeypatch.setattr(_cuda, "load_extension", lambda: (FakeExtension, None))
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x, kern = _inputs(1, 2, 3, 3, 3, 1, 2, "down", dtype=dtype)
        assert _cuda.cuda_forward(x, kern, 3, 1, 2, "down") == "kernel result"
        gout = torch.zeros(1, 2, 2, 2, dtype=dtype)
        assert _cuda.cuda_backward(gout, x, kern, 3, 1, 2, "down") == ("gx", "gk")
    assert [c[1] for c in calls if c[0] == "forward"] == [torch.float16, torch.bfloat16, torch.float32, torch.float64]


# ----------------------------------------------------------------------------------------------------------------
# On a CUDA machine.

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float64: 1e-12}
SHAPES = [
    (2, 16, 25, 42, 5, 1, 2),
    (1, 12, 14, 14, 5, 4, 2),
    (1, 8, 9, 37, 3, 2, 2),
    (1, 8, 21, 33, 7, 2, 3),
    (1, 1, 1, 1, 5, 1, 2),
    (3, 5, 7, 3, 1, 1, 4),
]


@pytest.mark.cuda
@needs_cuda
def test_extension_compiles():
    module, reason = _cuda.load_extension()
    assert module is not None, reason


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("mode", ["up", "down"])
@pytest.mark.parametrize("n,c,h,w,k,group,s", SHAPES)
def test_cuda_op_matches_reference(dtype, mode, n, c, h, w, k, group, s):
    assert _cuda.load_extension()[0] is not None  # compile first: cpp_extension may warn while building
    x, kern = _inputs(n, c, h, w, k, group, s, mode, dtype=dtype, device="cuda", seed=n * c + h)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback warning here means the kernels were not used
        out = carafe(x, kern, k, group, s, mode)
    ref = carafe_reference(x.double().cpu().numpy(), kern.double().cpu().numpy(), k, group, s, mode)
    tol = TOL[dtype]
    np.testing.assert_allclose(out.double().cpu().numpy(), ref, rtol=tol, atol=tol)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("mode", ["up", "down"])
@pytest.mark.parametrize("k,group,s", [(5, 1, 2), (3, 2, 3), (1, 1, 2)])
def test_cuda_gradcheck(mode, k, group, s):
    x, kern = _inputs(1, 4, 5, 6, k, group, s, mode, device="cuda")
    x.requires_grad_()
    kern.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: carafe(a, b, k, group, s, mode), (x, kern), eps=1e-6, atol=1e-7)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_backward_matches_float64(dtype):
    x, kern = _inputs(2, 8, 7, 9, 5, 2, 2, "up", dtype=dtype, device="cuda")
    x.requires_grad_()
    kern.requires_grad_()
    gout = torch.randn(2, 8, 14, 18, device="cuda", dtype=torch.float64)
    carafe(x, kern, 5, 2, 2, "up").backward(gout.to(dtype))
    x64 = x.detach().double().requires_grad_()
    k64 = kern.detach().double().requires_grad_()
    carafe(x64, k64, 5, 2, 2, "up").backward(gout)
    tol = 4 * TOL[dtype]
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(kern.grad.double(), k64.grad, rtol=tol, atol=tol)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize(
    "shape,mode,variant",
    [((1, 256, 25, 42), "up", "up_s2_k5"), ((100, 256, 14, 14), "up", "up_s2_k5"),
     ((1, 256, 200, 336), "down", "down_k5")],
)
def test_benchmark_shapes_use_fast_paths(shape, mode, variant):
    module, reason = _cuda.load_extension()
    assert module is not None, reason
    n, c, h, w = shape
    x, kern = _inputs(n, c, h, w, 5, 1, 2, mode, dtype=torch.float16, device="cuda")
    assert module.variant(x, kern, 5, 1, 2, mode) == variant
