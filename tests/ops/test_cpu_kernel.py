"""The native CPU kernels (carafe_deploy/csrc/carafe_cpu*.{cpp,h}, loaded by carafe_deploy/ops/_cpu.py).

Against the independent float64 loops of tests/support/reference.py (forward and both gradients), on the shapes that
reach every path of the kernels: full vectors and partial last vectors, several bands and channel blocks, row tiles
of "up" and "down", groups, every k and s (compile-time k = 3, 5 with s = 2, run-time otherwise), odd sizes, empty
tensors, non-contiguous and channels_last inputs, all four dtypes, 1 and 2 threads; and against mmcv's vectors and
gradcheck. The tests taking the ``isa`` fixture run once per instruction-set build of the kernels (generic, AVX2,
AVX-512, AVX-512 with BF16), each forced in turn; a build this CPU cannot run is skipped with the reason, never counted as passed.
Outputs of 16 MB and more take the non-temporal store path, those of 4 MiB and more the reused-block allocator: both
are checked against the PyTorch formulation. CARAFE_DEPLOY_REQUIRE_CPU_EXT=1 (CI) turns a missing kernel into a
failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carafe_deploy.ops import _cpu, carafe, torch_formulation
from support import mmcv_vectors
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


@pytest.fixture(params=_cpu.ISAS)
def isa(request, native):
    """The test runs on the kernels of one instruction set (skipped, with the reason, where they cannot run)."""
    why = _cpu.isa_unavailable(request.param)
    if why is not None:
        pytest.skip(f"{request.param} kernels not run: {why}")
    with _cpu.use_isa(request.param):
        yield request.param


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


# (n, c, h, w, k, group, s): full and partial last vectors (of 2, 4, 8 and 16 lanes), 2+ bands, more channels per
# group than a channel block (16) and than a register tile, with remainders, row tiles and their remainders
SHAPES = [
    (2, 40, 9, 21, 5, 2, 2),
    (1, 36, 9, 13, 7, 3, 3),
    (1, 18, 11, 9, 3, 1, 4),
    (3, 5, 6, 10, 1, 1, 1),
    (1, 34, 17, 19, 5, 1, 2),
    (1, 35, 10, 23, 3, 1, 2),
    (1, 19, 13, 8, 5, 1, 2),
]


@pytest.mark.parametrize("mode", ["up", "down"])
@pytest.mark.parametrize("n,c,h,w,k,group,s", SHAPES)
def test_float64_forward_and_gradients_match_loops(isa, mode, n, c, h, w, k, group, s):
    x, kern, gout = _inputs(n, c, h, w, k, group, s, mode, seed=c + h)
    _check(x, kern, gout, k, group, s, mode, tol=1e-12)


@pytest.mark.parametrize("mode", ["up", "down"])
@pytest.mark.parametrize("n,c,h,w,k,group,s", SHAPES)
def test_float32_forward_and_gradients_match_loops(isa, mode, n, c, h, w, k, group, s):
    # float32 runs the compile-time kernels where k is 3 or 5 and s is 2 (float64 always runs the general ones)
    x, kern, gout = _inputs(n, c, h, w, k, group, s, mode, dtype=torch.float32, seed=c + w)
    _check(x, kern, gout, k, group, s, mode, tol=2e-6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 2), cg=st.integers(1, 40), group=st.integers(1, 2), h=st.integers(1, 12),
       w=st.integers(1, 40), k=st.sampled_from([1, 3, 5, 7]), s=st.sampled_from([1, 2, 2, 2, 3]),
       mode=st.sampled_from(["up", "down"]), seed=st.integers(0, 2**16))
def test_property_float32_matches_loops(isa, n, cg, group, h, w, k, s, mode, seed):
    x, kern, gout = _inputs(n, cg * group, h, w, k, group, s, mode, dtype=torch.float32, seed=seed)
    _check(x, kern, gout, k, group, s, mode, tol=2e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("mode", ["up", "down"])
def test_narrow_dtypes_accumulate_in_float32(isa, dtype, tol, mode):
    # 40 channels per group summed into each grad-kernels entry: fp16 accumulation would lose ~1e-2 here
    x, kern, gout = _inputs(1, 40, 9, 21, 5, 1, 2, mode, dtype=dtype, seed=3)
    _check(x, kern, gout, 5, 1, 2, mode, tol)


def test_mmcv_vectors(isa, mmcv_vectors_dir):
    errors = mmcv_vectors.op_errors(mmcv_vectors_dir)
    assert all(e <= 1e-5 for e in errors.values()), errors


@pytest.mark.parametrize("mode", ["up", "down"])
def test_gradcheck(isa, mode):
    x, kern, _ = _inputs(1, 4, 5, 6, 3, 2, 2, mode, seed=8)
    inputs = (x.requires_grad_(), kern.requires_grad_())
    assert torch.autograd.gradcheck(lambda a, b: carafe(a, b, 3, 2, 2, mode), inputs)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 1e-2)])
@pytest.mark.parametrize("mode,shape", [("up", (1, 64, 100, 168)), ("down", (1, 32, 400, 336))])
def test_large_outputs_stream_and_reuse(isa, dtype, tol, mode, shape):
    # outputs of 16 MB and more (up: the forward's, down: grad_features) go out with non-temporal stores, from blocks
    # the allocator hands out again; both checked against the PyTorch formulation (float32, independent code)
    n, c, h, w = shape
    if dtype == torch.float16:
        c *= 2  # the same bytes in half the width
    x, kern, gout = _inputs(n, c, h, w, 5, 1, 2, mode, dtype=torch.float32, seed=9)
    want = torch_formulation.forward(x, kern, 5, 1, 2, mode)
    want_gx, want_gk = torch_formulation.backward(gout, x, kern, 5, 1, 2, mode)
    xs, ks, gs = x.to(dtype), kern.to(dtype), gout.to(dtype)
    for _ in range(2):  # the second call reuses the blocks the first one freed
        out = torch.ops.carafe_deploy_cpu.forward(xs, ks, 5, 1, 2, mode)
        gx, gk = torch.ops.carafe_deploy_cpu.backward(gs, xs, ks, 5, 1, 2, mode)
        for name, got, ref in (("output", out, want), ("grad features", gx, want_gx), ("grad kernels", gk, want_gk)):
            err = (got.float() - ref).abs().max().item() / max(1.0, ref.abs().max().item())
            assert err <= tol, (name, err)
        del out, gx, gk


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode,shape", [
    ("up", (1, 40, 9, 21)),  # small output: the tiles write it (converted in the registers where one instruction does)
    ("up", (1, 128, 100, 168)),  # 16 MB and more: staged rows, streamed (bf16 rounded in a separate pass without BF16)
    ("down", (1, 64, 400, 336)),
])
def test_narrow_outputs_round_as_pytorch_does(isa, dtype, mode, shape):
    # a narrow output is the fp32 result rounded to nearest even, whichever build converts it and wherever: torch's own
    # conversion of the fp32 kernels' result on the same (narrow-valued) inputs is the reference, bit for bit
    x, kern, _ = _inputs(*shape, 5, 1, 2, mode, dtype=torch.float32, seed=11)
    xs, ks = x.to(dtype), kern.to(dtype)
    want = torch.ops.carafe_deploy_cpu.forward(xs.float(), ks.float(), 5, 1, 2, mode).to(dtype)
    got = torch.ops.carafe_deploy_cpu.forward(xs, ks, 5, 1, 2, mode)
    assert got.dtype == dtype
    mismatched = (got.view(torch.int16) != want.view(torch.int16)).sum().item()
    assert mismatched == 0, f"{mismatched} of {got.numel()} values rounded differently"


@pytest.mark.parametrize("mode", ["up", "down"])
def test_non_contiguous_and_channels_last(isa, mode):
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
def test_degenerate_shapes(isa, shape, k, s, mode):
    n, c, h, w = shape
    x, kern, gout = _inputs(n, c, h, w, k, 1, s, mode, seed=5)
    _check(x, kern, gout, k, 1, s, mode, 1e-12)


@pytest.mark.parametrize("mode", ["up", "down"])
def test_two_threads_give_the_same_bits_as_one(isa, mode):
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


@pytest.mark.parametrize("mode,shape", [("up", (1, 48, 13, 34)), ("down", (1, 192, 26, 68))])
def test_two_threads_share_an_odd_number_of_bands_by_channels(isa, mode, shape):
    # 7 bands for 2 threads: the forward splits each band's channel blocks between the threads instead of leaving
    # the last band to one of them; every channel must still be written once, with the bits one thread gives
    x, kern, gout = _inputs(*shape, 5, 1, 2, mode, dtype=torch.float32, seed=12)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        out = carafe(x, kern, 5, 1, 2, mode)
        torch.set_num_threads(1)
        one = carafe(x, kern, 5, 1, 2, mode)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out, one)
    ref = carafe_reference(x.double().numpy(), kern.double().numpy(), 5, 1, 2, mode)
    assert float(np.abs(out.double().numpy() - ref).max()) <= 2e-6 * max(1.0, float(np.abs(ref).max()))


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
    assert _cpu.status().startswith(f"native ({_cpu.isa()},")


def test_the_widest_instruction_set_this_cpu_runs_is_used():
    runnable = [name for name in _cpu.ISAS if _cpu.isa_supported(name)]
    assert "generic" in runnable  # every CPU runs the baseline build
    assert _cpu.isa() == runnable[-1], (_cpu.isa(), runnable)  # ISAS is ordered narrow to wide
    with pytest.raises(ValueError, match="unknown instruction set"):
        _cpu.isa_unavailable("sse9")


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})


def test_isa_environment_variable_picks_the_build_for_the_process():
    code = "from carafe_deploy.ops import _cpu; print(_cpu.status())"
    out = _python(code, **{_cpu.ISA_ENV: "generic"})
    assert out.returncode == 0 and out.stdout.strip().startswith("native (generic,"), out.stderr
    out = _python(code, **{_cpu.ISA_ENV: "sse9", _cpu.REQUIRE_ENV: "0"})
    assert "PyTorch formulation" in out.stdout and "sse9" in out.stdout, out.stdout + out.stderr


def test_reused_output_blocks():
    x, kern, _ = _inputs(1, 256, 50, 84, 5, 1, 2, "up", dtype=torch.float32, seed=10)  # 17 MB output
    _cpu.release_reused_outputs()
    assert torch.ops.carafe_deploy_cpu.reuse_stats()[0] == 0
    first = torch.ops.carafe_deploy_cpu.forward(x, kern, 5, 1, 2, "up")
    kept = first.clone()
    address = first.data_ptr()
    del first  # its block is kept, not given back
    assert torch.ops.carafe_deploy_cpu.reuse_stats()[0] >= kept.numel() * 4
    second = torch.ops.carafe_deploy_cpu.forward(x, kern, 5, 1, 2, "up")
    assert second.data_ptr() == address and torch.equal(second, kept)
    third = torch.ops.carafe_deploy_cpu.forward(x, kern, 5, 1, 2, "up")  # while `second` lives: a new block
    assert third.data_ptr() != second.data_ptr() and torch.equal(third, kept)
    third.resize_(2, *third.shape[1:])  # an output's storage grows like any tensor's
    assert torch.equal(third[:1], kept)
    del second, third
    _cpu.release_reused_outputs()
    assert torch.ops.carafe_deploy_cpu.reuse_stats()[0] == 0


def test_reuse_budget_from_the_environment():
    code = ("import torch; from carafe_deploy.ops import _cpu; assert _cpu.available()\n"
            "x = torch.randn(1, 256, 50, 84); k = torch.rand(1, 25, 100, 168)\n"
            "y = torch.ops.carafe_deploy_cpu.forward(x, k, 5, 1, 2, 'up'); del y\n"
            "print(list(torch.ops.carafe_deploy_cpu.reuse_stats()))")
    out = _python(code, CARAFE_DEPLOY_CPU_REUSE_MB="0")
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "[0, 0]", out.stdout + out.stderr


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
