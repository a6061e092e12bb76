"""The native CPU kernels (carafe_deploy/csrc/carafe_cpu*.{cpp,h}, loaded by carafe_deploy/ops/_cpu.py).

Against the independent float64 loops of tests/support/reference.py (forward and both gradients), on the shapes that
reach every path of the kernels: full vectors and one-lane tails, several bands and channel blocks, row pairs (mode
"up", s >= 2) and single rows, groups, every k and s, odd sizes, empty tensors, non-contiguous and channels_last
inputs, all four dtypes, 1 and 2 threads. CARAFE_DEPLOY_REQUIRE_CPU_EXT=1 (CI) turns a missing kernel into a failure.
"""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
import torch

from carafe_deploy.ops import _cpu, carafe, torch_formulation
from support.reference import carafe_reference, carafe_reference_backward, output_size


def _inputs(n, c, h, w, k, group, s, mode, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = output_size(h, w, s, mode)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    kern = torch.rand(n, group * k * k, ho, wo, generator=gen, dtype=torch.float64) / (k * k)
    gout = torch.randn(n, c, ho, wo, generator=gen, dtype=torch.float64)
    return x.to(dtype), kern.to(dtype), gout.to(dtype)


def _native_expected() -> bool:
    return os.environ.get(_cpu.REQUIRE_ENV, "") not in ("", "0") or shutil.which("c++") is not None


@pytest.fixture(scope="module", autouse=True)
def native():
    """Every test here is about the native kernels: they must be the ones running."""
    if _cpu.load() is not None and not _native_expected():
        pytest.skip(f"no C++ compiler here, the native kernels cannot be built: {_cpu.load()}")
    assert _cpu.available(), _cpu.status()


def _check(x, kern, gout, k, group, s, mode, tol):
    xg = x.detach().clone().requires_grad_()
    kg = kern.detach().clone().requires_grad_()
    out = carafe(xg, kg, k, group, s, mode)
    out.backward(gout)
    ref = carafe_reference(x.double().numpy(), kern.double().numpy(), k, group, s, mode)
    rgx, rgk = carafe_reference_backward(gout.double().numpy(), x.double().numpy(), kern.double().numpy(), k, group,
                                         s, mode)
    assert out.dtype == x.dtype and out.shape == ref.shape
    for name, got, want in (("output", out, ref), ("grad features", xg.grad, rgx), ("grad kernels", kg.grad, rgk)):
        assert tuple(got.shape) == want.shape, name
        if want.size == 0:
            continue
        scale = max(1.0, float(np.abs(want).max()))
        err = float(np.abs(got.detach().double().numpy() - want).max()) / scale
        assert err <= tol, (name, err)


# (n, c, h, w, k, group, s): vector + tail columns, 2+ bands, > 16 channels per group (two channel blocks), row pairs
SHAPES = [
    (2, 40, 9, 21, 5, 2, 2),
    (1, 36, 9, 13, 7, 3, 3),
    (1, 18, 11, 9, 3, 1, 4),
    (3, 5, 6, 10, 1, 1, 1),
    (1, 34, 17, 19, 5, 1, 2),
]


@pytest.mark.parametrize("mode", ["up", "down"])
@pytest.mark.parametrize("n,c,h,w,k,group,s", SHAPES)
def test_float64_forward_and_gradients_match_loops(mode, n, c, h, w, k, group, s):
    x, kern, gout = _inputs(n, c, h, w, k, group, s, mode, seed=c + h)
    _check(x, kern, gout, k, group, s, mode, tol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("mode", ["up", "down"])
def test_narrow_dtypes_accumulate_in_float32(dtype, tol, mode):
    # 40 channels per group summed into each grad-kernels entry: fp16 accumulation would lose ~1e-2 here
    x, kern, gout = _inputs(1, 40, 9, 21, 5, 1, 2, mode, dtype=dtype, seed=3)
    _check(x, kern, gout, 5, 1, 2, mode, tol)


@pytest.mark.parametrize("mode", ["up", "down"])
def test_non_contiguous_and_channels_last(mode):
    x, kern, gout = _inputs(1, 12, 8, 11, 3, 2, 2, mode, seed=4)
    wide = torch.randn(1, 12, 8, 22, dtype=torch.float64)
    wide[..., ::2] = x
    _check(wide[..., ::2], kern, gout, 3, 2, 2, mode, 1e-12)  # strided view of the features
    _check(x.to(memory_format=torch.channels_last), kern.to(memory_format=torch.channels_last),
           gout.to(memory_format=torch.channels_last), 3, 2, 2, mode, 1e-12)


@pytest.mark.parametrize("shape,k,s,mode", [
    ((0, 4, 5, 5), 3, 2, "up"),  # empty batch
    ((2, 0, 5, 5), 3, 2, "down"),  # no channels
    ((1, 3, 1, 1), 7, 3, "up"),  # one pixel, every tap but the centre outside
    ((1, 3, 1, 7), 5, 4, "down"),  # one row
    ((1, 2, 3, 2), 5, 4, "down"),  # s larger than the image
])
def test_degenerate_shapes(shape, k, s, mode):
    n, c, h, w = shape
    x, kern, gout = _inputs(n, c, h, w, k, 1, s, mode, seed=5)
    _check(x, kern, gout, k, 1, s, mode, 1e-12)


@pytest.mark.parametrize("mode", ["up", "down"])
def test_two_threads_give_the_same_bits_as_one(mode):
    # each output element is computed by one thread in a fixed order, so the thread count cannot change a bit
    x, kern, gout = _inputs(2, 48, 30, 34, 5, 2, 2, mode, dtype=torch.float32, seed=6)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = torch.ops.carafe_deploy_cpu.forward(x, kern, 5, 2, 2, mode)
            gx, gk = torch.ops.carafe_deploy_cpu.backward(gout, x, kern, 5, 2, 2, mode)
            results.append((out, gx, gk))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_native_matches_the_pytorch_formulation_at_an_fpn_shape():
    x, kern, gout = _inputs(1, 24, 25, 42, 5, 1, 2, "up", dtype=torch.float32, seed=7)
    torch.testing.assert_close(torch.ops.carafe_deploy_cpu.forward(x, kern, 5, 1, 2, "up"),
                               torch_formulation.forward(x, kern, 5, 1, 2, "up"), rtol=1e-5, atol=1e-5)
    for got, want in zip(torch.ops.carafe_deploy_cpu.backward(gout, x, kern, 5, 1, 2, "up"),
                         torch_formulation.backward(gout, x, kern, 5, 1, 2, "up")):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_kernel_library_checks_shapes_itself():
    # the library is callable on its own (torch.ops.carafe_deploy_cpu): it must refuse what would read out of bounds
    x, kern, _ = _inputs(1, 4, 5, 5, 3, 1, 2, "up")
    with pytest.raises(RuntimeError, match="does not match features"):
        torch.ops.carafe_deploy_cpu.forward(x, kern[..., :-1], 3, 1, 2, "up")
    with pytest.raises(RuntimeError, match="grad_output shape"):
        torch.ops.carafe_deploy_cpu.backward(x, x, kern, 3, 1, 2, "up")
    with pytest.raises(RuntimeError, match="kernel_size must be odd"):
        torch.ops.carafe_deploy_cpu.forward(x, kern, 2, 1, 2, "up")


def test_build_folder_names_the_torch_version_and_the_sources():
    folder = _cpu._build_directory().name
    assert torch.__version__.replace("+", "_") in folder and folder.startswith("carafe_deploy_cpu-")
    assert _cpu.status().startswith("native")


# ----------------------------------------------------------------------------------------------------------------
# The fallback: the PyTorch formulation with one warning, or an error when the kernels are required.


@pytest.fixture
def unavailable(monkeypatch):
    monkeypatch.setattr(_cpu, "_state", {"loaded": False, "error": "no compiler (test)", "warned": False})
    monkeypatch.delenv(_cpu.REQUIRE_ENV, raising=False)
    return monkeypatch


def test_fallback_warns_once_and_is_correct(unavailable):
    x, kern, gout = _inputs(1, 4, 5, 6, 3, 2, 2, "up")
    with pytest.warns(RuntimeWarning, match="no compiler") as record:
        _check(x, kern, gout, 3, 2, 2, "up", 1e-12)
        carafe(x, kern, 3, 2, 2, "up")
    assert len([w for w in record if "no compiler" in str(w.message)]) == 1


def test_required_kernels_fail_loudly(unavailable):
    unavailable.setenv(_cpu.REQUIRE_ENV, "1")
    x, kern, _ = _inputs(1, 4, 5, 6, 3, 2, 2, "up")
    with pytest.raises(RuntimeError, match=f"{_cpu.REQUIRE_ENV}.*no compiler"):
        carafe(x, kern, 3, 2, 2, "up")


def test_disabled_kernels_fall_back_silently(monkeypatch):
    monkeypatch.setattr(_cpu, "_state", {"loaded": False, "error": None, "warned": False})
    monkeypatch.setenv(_cpu.DISABLE_ENV, "1")
    monkeypatch.delenv(_cpu.REQUIRE_ENV, raising=False)
    x, kern, _ = _inputs(1, 4, 5, 6, 3, 2, 2, "down")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = carafe(x, kern, 3, 2, 2, "down")
    np.testing.assert_allclose(out.numpy(), carafe_reference(x.numpy(), kern.numpy(), 3, 2, 2, "down"), atol=1e-12)
    assert _cpu.DISABLE_ENV in _cpu.status()
