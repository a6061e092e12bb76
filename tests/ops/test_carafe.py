"""The carafe_deploy::carafe op against mmcv's vectors and an independent float64 loop reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carafe_deploy.ops import carafe
from support import mmcv_vectors
from support.reference import carafe_reference, output_size


def _random_inputs(n, c, h, w, k, group, s, mode, dtype=torch.float64, seed=0, normalized=False):
    gen = torch.Generator().manual_seed(seed)
    ho, wo = output_size(h, w, s, mode)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype)
    kern = torch.randn(n, group * k * k, ho, wo, generator=gen, dtype=torch.float64)
    if normalized:
        kern = kern.view(n, group, k * k, ho, wo).softmax(2).view(n, group * k * k, ho, wo)
    return x, kern.to(dtype)


# ----------------------------------------------------------------------------------------------------------------
# mmcv's own vectors: CARAFE(kernel_size=5, group_size=4, scale_factor=2), backward with a gradient of ones.


def test_mmcv_vectors_forward_and_gradients(mmcv_vectors_dir):
    errors = mmcv_vectors.op_errors(mmcv_vectors_dir)
    assert all(e <= 1e-5 for e in errors.values()), errors


def test_mmcv_vectors_match_float64_reference(mmcv_vectors_dir):
    # The vectors and the loop reference agree, so the reference itself encodes mmcv's semantics.
    d = mmcv_vectors_dir
    feat = mmcv_vectors.load_vector(d, "carafe_feat.bin", (2, 64, 3, 3))
    mask = mmcv_vectors.load_vector(d, "carafe_mask.bin", (2, 100, 6, 6))
    ref = carafe_reference(feat.numpy(), mask.numpy(), 5, 4, 2, "up")
    assert np.abs(ref - mmcv_vectors.load_vector(d, "carafe_output.bin", (2, 64, 6, 6)).numpy()).max() <= 1e-5


# ----------------------------------------------------------------------------------------------------------------
# Against the float64 loop reference.


@pytest.mark.parametrize("mode", ["up", "down"])
@pytest.mark.parametrize(
    "n,c,h,w,k,group,s",
    [
        (1, 1, 1, 1, 1, 1, 1),
        (2, 8, 5, 7, 3, 2, 2),
        (1, 4, 6, 4, 7, 4, 3),
        (1, 3, 7, 5, 5, 1, 4),
        (1, 6, 9, 11, 5, 3, 2),
    ],
)
def test_matches_reference(mode, n, c, h, w, k, group, s):
    x, kern = _random_inputs(n, c, h, w, k, group, s, mode)
    out = carafe(x, kern, k, group, s, mode)
    ref = carafe_reference(x.numpy(), kern.numpy(), k, group, s, mode)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 2),
    cg=st.integers(1, 3),
    group=st.integers(1, 3),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    k=st.sampled_from([1, 3, 5, 7]),
    s=st.integers(1, 4),
    mode=st.sampled_from(["up", "down"]),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(n, cg, group, h, w, k, s, mode, seed):
    x, kern = _random_inputs(n, cg * group, h, w, k, group, s, mode, seed=seed)
    out = carafe(x, kern, k, group, s, mode)
    ref = carafe_reference(x.numpy(), kern.numpy(), k, group, s, mode)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("mode", ["up", "down"])
def test_dtypes(dtype, tol, mode):
    x, kern = _random_inputs(2, 8, 6, 5, 5, 2, 2, mode, dtype=dtype, normalized=True)
    out = carafe(x, kern, 5, 2, 2, mode)
    assert out.dtype == dtype
    ref = carafe_reference(x.double().numpy(), kern.double().numpy(), 5, 2, 2, mode)
    # relative to the output's scale; half types also round the result itself
    err = np.abs(out.double().numpy() - ref).max() / max(1.0, np.abs(ref).max())
    assert err <= tol


def test_large_kernel_bigger_than_image():
    # k=7 on a 2×2 image: most taps fall outside and must count as zero
    x, kern = _random_inputs(1, 2, 2, 2, 7, 1, 3, "up")
    ref = carafe_reference(x.numpy(), kern.numpy(), 7, 1, 3, "up")
    np.testing.assert_allclose(carafe(x, kern, 7, 1, 3, "up").numpy(), ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Gradients.


# gradcheck, gradgradcheck, jvp and torch.func: test_autograd.py


def test_gradient_of_one_input_only():
    x, kern = _random_inputs(1, 2, 3, 3, 3, 1, 2, "up")
    x.requires_grad_()
    carafe(x, kern, 3, 1, 2).sum().backward()
    assert x.grad is not None and kern.grad is None
    # d(sum out)/d x[i] = sum of the kernel weights that read x[i]; a kernel of ones gives the tap count.
    x2 = x.detach().clone().requires_grad_()
    carafe(x2, torch.ones_like(kern), 3, 1, 2).sum().backward()
    # an interior pixel of a 3×3 image with k=3, s=2 is read by all 9 taps of each of the 4 outputs of every source
    # pixel within reach: 9 sources × 4 outputs
    assert x2.grad[0, 0, 1, 1].item() == pytest.approx(36.0)


# ----------------------------------------------------------------------------------------------------------------
# Shapes for torch.export (fake kernel) and empty batches.


@pytest.mark.parametrize("mode,hw,expected", [("up", (5, 7), (10, 14)), ("down", (5, 7), (3, 4))])
def test_fake_kernel_shapes(mode, hw, expected):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 4, *hw)
        kern = torch.empty(2, 9, *expected)
        out = torch.ops.carafe_deploy.carafe(x, kern, 3, 1, 2, mode)
    assert tuple(out.shape) == (2, 4, *expected)


def test_torch_export_sees_the_op():
    class M(torch.nn.Module):
        def forward(self, x, k):
            return carafe(x, k, 3, 1, 2, "up")

    x, kern = _random_inputs(1, 2, 4, 4, 3, 1, 2, "up", dtype=torch.float32)
    ep = torch.export.export(M(), (x, kern))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "carafe_deploy.carafe.default" in targets
    torch.testing.assert_close(ep.module()(x, kern), carafe(x, kern, 3, 1, 2, "up"))


@pytest.mark.parametrize("mode", ["up", "down"])
def test_empty_batch(mode):
    x = torch.empty(0, 4, 5, 5, requires_grad=True)
    ho, wo = output_size(5, 5, 2, mode)
    kern = torch.empty(0, 9, ho, wo, requires_grad=True)
    out = carafe(x, kern, 3, 1, 2, mode)
    assert out.shape == (0, 4, ho, wo)
    out.sum().backward()
    assert x.grad.shape == x.shape and kern.grad.shape == kern.shape


# Bad input: test_bad_input_op.py


def test_cpu_kernel_never_builds_a_k2_times_tensor():
    # FPN-like upsample, 64 channels, 100×168 -> 200×336, k=5: an unfold formulation needs 25 × 17 MB = 430 MB.
    import subprocess
    import sys

    code = (
        "import resource, torch\n"
        "from carafe_deploy.ops import carafe\n"
        "x = torch.randn(1, 64, 100, 168); k = torch.rand(1, 25, 200, 336)\n"
        "carafe(x[..., :8, :8], k[..., :16, :16], 5, 1, 2)\n"  # warm-up on a small slice: op dispatch, threads
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "y = carafe(x, k, 5, 1, 2)\n"  # its 17 MB output is counted too
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    growth_mb = float(out.stdout.strip().splitlines()[-1])
    assert growth_mb < 100, f"peak RSS grew by {growth_mb:.0f} MB"
