"""The native host reference (plugins/common, the same index math the CUDA kernels use) from Python.

Builds plugins/common/carafe_reference.cpp with a small C shim into a shared library (g++, about two seconds) and
checks it against the independent float64 loops in tests/support/reference.py and against mmcv's own vectors, so that
`python -m pytest` alone covers the native code even where CMake/CTest is not run.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from carafe_deploy.ops import carafe
from support.reference import carafe_reference, output_size

REPO = Path(__file__).resolve().parents[2]
COMMON = REPO / "plugins" / "common"


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++/c++) on PATH to build the native host reference")
    lib = tmp_path_factory.mktemp("native") / "libcarafe_reference.so"
    cmd = [cxx, "-std=c++17", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", f"-I{COMMON}",
           str(COMMON / "carafe_reference.cpp"), str(REPO / "tests" / "native" / "reference_capi.cpp"), "-o", str(lib)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(lib))


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


def _forward(native, x, kern, k, group, s, mode):
    fn = native.carafe_reference_forward_f64 if x.dtype == np.float64 else native.carafe_reference_forward_f32
    n, c, h, w = x.shape
    ho, wo = output_size(h, w, s, mode)
    out = np.full((n, c, ho, wo), np.nan, dtype=x.dtype)  # poisoned: every element must be written
    shape = np.array(x.shape, dtype=np.int64)
    fn(_ptr(shape), k, group, s, int(mode == "down"), _ptr(np.ascontiguousarray(x)), _ptr(np.ascontiguousarray(kern)),
       _ptr(out))
    return out


def _backward(native, gout, x, kern, k, group, s, mode):
    fn = native.carafe_reference_backward_f64 if x.dtype == np.float64 else native.carafe_reference_backward_f32
    gx = np.full(x.shape, np.nan, dtype=x.dtype)
    gk = np.full(kern.shape, np.nan, dtype=x.dtype)
    shape = np.array(x.shape, dtype=np.int64)
    fn(_ptr(shape), k, group, s, int(mode == "down"), _ptr(np.ascontiguousarray(gout)), _ptr(x), _ptr(kern), _ptr(gx),
       _ptr(gk))
    return gx, gk


CASES = [
    (1, 1, 1, 1, 5, 1, 2),
    (2, 8, 5, 7, 3, 2, 2),
    (1, 4, 6, 4, 7, 4, 3),
    (1, 3, 7, 5, 1, 1, 4),
    (1, 6, 9, 11, 5, 3, 2),
]


@pytest.mark.parametrize("mode", ["up", "down"])
@pytest.mark.parametrize("n,c,h,w,k,group,s", CASES)
def test_forward_matches_python_loops(native, mode, n, c, h, w, k, group, s):
    rng = np.random.default_rng(0)
    ho, wo = output_size(h, w, s, mode)
    x = rng.standard_normal((n, c, h, w))
    kern = rng.standard_normal((n, group * k * k, ho, wo))
    np.testing.assert_allclose(_forward(native, x, kern, k, group, s, mode),
                               carafe_reference(x, kern, k, group, s, mode), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["up", "down"])
@pytest.mark.parametrize("n,c,h,w,k,group,s", CASES[1:4])
def test_backward_matches_autograd(native, mode, n, c, h, w, k, group, s):
    # The C++ reference scatters; torch autograd runs the package's PyTorch formulation: two independent routes.
    gen = torch.Generator().manual_seed(1)
    ho, wo = output_size(h, w, s, mode)
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=gen, requires_grad=True)
    kern = torch.randn(n, group * k * k, ho, wo, dtype=torch.float64, generator=gen, requires_grad=True)
    gout = torch.randn(n, c, ho, wo, dtype=torch.float64, generator=gen)
    carafe(x, kern, k, group, s, mode).backward(gout)
    gx, gk = _backward(native, gout.numpy(), x.detach().numpy(), kern.detach().numpy(), k, group, s, mode)
    np.testing.assert_allclose(gx, x.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gk, kern.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_mmcv_vectors(native, mmcv_vectors_dir):
    d = mmcv_vectors_dir

    def load(name, shape):
        return np.fromfile(d / name, np.float32).reshape(shape)

    feat, mask = load("carafe_feat.bin", (2, 64, 3, 3)), load("carafe_mask.bin", (2, 100, 6, 6))
    out = _forward(native, feat, mask, 5, 4, 2, "up")
    assert np.abs(out - load("carafe_output.bin", (2, 64, 6, 6))).max() <= 1e-5
    gx, gk = _backward(native, np.ones_like(out), feat, mask, 5, 4, 2, "up")
    assert np.abs(gx - load("carafe_feat_grad.bin", (2, 64, 3, 3))).max() <= 1e-5
    assert np.abs(gk - load("carafe_mask_grad.bin", (2, 100, 6, 6))).max() <= 1e-5
