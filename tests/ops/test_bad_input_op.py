"""Hostile input to the op itself (issues 12 and 13): every entry point checks its arguments with a one-line error.

The public function, a direct ``torch.ops.carafe_deploy.carafe`` call, the fake (meta) kernel and the backward op all
raise the same error type with a message that names the problem; tracing prints no TracerWarning from the checks;
``torch.jit.script`` compiles the modules; the modules run under ``torch.autocast``; ``torch.library.opcheck`` passes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from carafe_deploy.nn import CARAFEDownsample, CARAFEUpsample
from carafe_deploy.ops import carafe
from support.reference import carafe_reference, output_size

OP = torch.ops.carafe_deploy.carafe
BACKWARD = torch.ops.carafe_deploy.carafe_backward


def _ok():
    return {"features": torch.zeros(1, 4, 3, 3), "kernels": torch.zeros(1, 9, 6, 6), "kernel_size": 3, "group": 1,
            "scale_factor": 2, "mode": "up"}


# Tensor-level problems: the op's own validation (same on every path).
OP_CASES = [
    ("even kernel_size", {"kernel_size": 2, "kernels": torch.zeros(1, 4, 6, 6)}, ValueError,
     ["kernel_size", "odd", "2"]),
    ("zero kernel_size", {"kernel_size": 0, "kernels": torch.zeros(1, 0, 6, 6)}, ValueError, ["kernel_size", ">= 1"]),
    ("unknown mode", {"mode": "sideways"}, ValueError, ["mode", "'up'", "'down'", "sideways"]),
    ("zero scale", {"scale_factor": 0}, ValueError, ["scale_factor", ">= 1"]),
    ("negative group", {"group": -1}, ValueError, ["group", ">= 1"]),
    ("group not dividing C", {"group": 3, "kernels": torch.zeros(1, 27, 6, 6)}, ValueError,
     ["channels (4)", "group (3)"]),
    ("wrong tap count", {"kernels": torch.zeros(1, 10, 6, 6)}, ValueError, ["kernels", "9", "got 10"]),
    ("wrong kernel size", {"kernels": torch.zeros(1, 9, 6, 5)}, ValueError,
     ["kernels spatial size", "(6, 6)", "(6, 5)"]),
    ("down size", {"mode": "down"}, ValueError, ["'down' output size", "(2, 2)"]),
    ("batch mismatch", {"kernels": torch.zeros(2, 9, 6, 6)}, ValueError, ["kernels batch (2)", "features batch (1)"]),
    ("3-D features", {"features": torch.zeros(4, 3, 3)}, ValueError, ["features", "4-D", "3-D"]),
    ("5-D kernels", {"kernels": torch.zeros(1, 1, 9, 6, 6)}, ValueError, ["kernels", "4-D", "5-D"]),
    ("integer features", {"features": torch.zeros(1, 4, 3, 3, dtype=torch.int64),
                          "kernels": torch.zeros(1, 9, 6, 6, dtype=torch.int64)}, TypeError, ["features", "int64"]),
    ("mixed dtypes", {"kernels": torch.zeros(1, 9, 6, 6, dtype=torch.float64)}, TypeError,
     ["same dtype", "float32", "float64"]),
]


def _call(path, args):
    if path == "function":
        return carafe(**args)
    values = [args[k] for k in ("features", "kernels", "kernel_size", "group", "scale_factor", "mode")]
    if path == "torch.ops":
        return OP(*values)
    if path == "meta":
        return OP(values[0].to("meta"), values[1].to("meta"), *values[2:])
    with FakeTensorMode() as mode:  # "fake": what torch.export and torch.compile run
        return OP(mode.from_tensor(values[0]), mode.from_tensor(values[1]), *values[2:])


@pytest.mark.parametrize("path", ["function", "torch.ops", "meta", "fake"])
@pytest.mark.parametrize("name,change,exc,words", OP_CASES, ids=[c[0] for c in OP_CASES])
def test_every_path_rejects_bad_arguments(path, name, change, exc, words):
    with pytest.raises(exc) as info:
        _call(path, {**_ok(), **change})
    msg = str(info.value)
    assert "\n" not in msg.strip()
    for word in words:
        assert word in msg, (word, msg)


def test_devices_must_match():
    args = {**_ok(), "features": torch.zeros(1, 4, 3, 3, device="meta")}
    for path in ("function", "torch.ops"):
        with pytest.raises(ValueError, match="same device.*meta.*cpu"):
            _call(path, args)


# Python-level problems: only the public function sees Python objects (the dispatcher converts or rejects them).
@pytest.mark.parametrize("change,exc,words", [
    ({"kernel_size": 3.0}, TypeError, ["kernel_size", "int", "float"]),
    ({"kernel_size": True}, TypeError, ["kernel_size", "int", "bool"]),
    ({"scale_factor": 2.0}, TypeError, ["scale_factor", "int"]),
    ({"features": [[0.0]]}, TypeError, ["features", "torch.Tensor", "list"]),
    ({"mode": 2}, TypeError, ["mode", "str", "int"]),
])
def test_public_function_rejects_python_types(change, exc, words):
    with pytest.raises(exc) as info:
        carafe(**{**_ok(), **change})
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_backward_op_checks_grad_output():
    x, k = torch.zeros(1, 4, 3, 3), torch.zeros(1, 9, 6, 6)
    with pytest.raises(ValueError, match=r"grad_output must have the output shape \(1, 4, 6, 6\), got \(1, 4, 3, 3\)"):
        BACKWARD(x, x, k, 3, 1, 2, "up")
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        BACKWARD(torch.zeros(1, 4, 6, 6), x, torch.zeros(1, 4, 6, 6), 2, 1, 2, "up")
    with FakeTensorMode() as mode:
        with pytest.raises(ValueError, match="grad_output must have the output shape"):
            BACKWARD(mode.from_tensor(x), mode.from_tensor(x), mode.from_tensor(k), 3, 1, 2, "up")


def test_symbolic_shapes_are_checked_not_refused():
    # torch._check on SymInts: export with a dynamic spatial size works and the size relation becomes a guard
    class M(torch.nn.Module):
        def forward(self, x, k):
            return carafe(x, k, 3, 1, 2, "up")

    x, k = torch.randn(1, 2, 5, 6), torch.rand(1, 9, 10, 12)
    h = torch.export.Dim("h", min=2, max=64)
    ep = torch.export.export(M(), (x, k), dynamic_shapes={"x": {2: h}, "k": {2: 2 * h}})
    x2, k2 = torch.randn(1, 2, 7, 6), torch.rand(1, 9, 14, 12)
    np.testing.assert_allclose(ep.module()(x2, k2).numpy(), carafe_reference(x2.numpy(), k2.numpy(), 3, 1, 2, "up"),
                               atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Tracing, scripting, autocast, opcheck.


def _modules():
    torch.manual_seed(0)
    return [(CARAFEUpsample(8, up_group=2).eval(), (1, 8, 5, 7)), (CARAFEDownsample(8).eval(), (1, 8, 7, 6))]


def test_tracing_prints_no_tracer_warning():
    for module, shape in _modules():
        x = torch.randn(*shape)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            traced = torch.jit.trace(module, x)
        tracer = [str(w.message) for w in record if issubclass(w.category, torch.jit.TracerWarning)]
        assert tracer == []
        assert "carafe_deploy::carafe" in str(traced.graph)
        torch.testing.assert_close(traced(torch.randn(*shape)).shape, module(x).shape)


def test_scripted_modules_match_eager_and_still_check():
    for module, shape in _modules():
        scripted = torch.jit.script(module)
        x = torch.randn(*shape)
        torch.testing.assert_close(scripted(x), module(x))
    # the op checks its arguments inside TorchScript too (the interpreter reports the kernel's error)
    with pytest.raises(Exception, match="kernel_size must be odd, got 2"):
        torch.jit.script(_even_kernel)(torch.zeros(1, 4, 3, 3), torch.zeros(1, 4, 6, 6))


def _even_kernel(features: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    return carafe(features, kernels, 2, 1, 2, "up")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_modules_run_under_autocast(dtype):
    for module, shape in _modules():
        x = torch.randn(*shape)
        with torch.autocast("cpu", dtype=dtype):
            wide = module(x)  # float32 features, encoder output in the autocast dtype
            narrow = module(x.to(dtype))
        assert wide.dtype == torch.float32 and narrow.dtype == dtype
        torch.testing.assert_close(wide, module(x), rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("mode", ["up", "down"])
def test_opcheck(mode):
    gen = torch.Generator().manual_seed(1)
    ho, wo = output_size(5, 6, 2, mode)
    x = torch.randn(1, 4, 5, 6, generator=gen, requires_grad=True)
    k = torch.rand(1, 18, ho, wo, generator=gen, requires_grad=True)
    g = torch.randn(1, 4, ho, wo, generator=gen, requires_grad=True)
    for op, args in ((OP.default, (x, k, 3, 2, 2, mode)), (BACKWARD.default, (g, x, k, 3, 2, 2, mode))):
        result = torch.library.opcheck(op, args)
        assert set(result.values()) == {"SUCCESS"}, result
