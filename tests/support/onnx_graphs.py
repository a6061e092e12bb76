"""Small helpers for the ONNX tests: single-node CARAFE graphs, a CARAFE op for onnx.reference, feeds."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from onnx.reference.op_run import OpRun

from support.reference import carafe_reference, output_size


def single_node_model(k, group, s, mode, *, elem_type=onnx.TensorProto.FLOAT, opset=18, function=True, dims=None):
    """features (N, C, H, W), kernels -> carafe::CARAFE -> output; with the portable function when asked."""
    from carafe_deploy.onnx import carafe_function

    node = helper.make_node(
        "CARAFE", ["features", "kernels"], ["output"], domain="carafe",
        kernel_size=k, group=group, scale_factor=s, mode=mode,
    )
    fdims, kdims = dims or (["N", "C", "H", "W"], ["N", "KC", "Ho", "Wo"])
    graph = helper.make_graph(
        [node], "carafe",
        [helper.make_tensor_value_info("features", elem_type, fdims),
         helper.make_tensor_value_info("kernels", elem_type, kdims)],
        [helper.make_tensor_value_info("output", elem_type, [None] * 4)],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("carafe", 1)],
        functions=[carafe_function(opset)] if function else [],
        ir_version=10,
    )


def random_case(n, c, h, w, k, group, s, mode, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    ho, wo = output_size(h, w, s, mode)
    x = rng.standard_normal((n, c, h, w))
    logits = rng.standard_normal((n, group, k * k, ho, wo))
    kern = np.exp(logits) / np.exp(logits).sum(2, keepdims=True)
    return x.astype(dtype), kern.reshape(n, group * k * k, ho, wo).astype(dtype)


class CarafeReferenceOp(OpRun):
    """carafe::CARAFE for onnx.reference.ReferenceEvaluator, from the float64 loop reference (plugin-mode files)."""

    op_domain = "carafe"

    def _run(self, features, kernels, kernel_size=None, group=1, scale_factor=2, mode="up"):
        mode = mode.decode() if isinstance(mode, bytes) else mode
        out = carafe_reference(features, kernels, kernel_size, group, scale_factor, mode)
        return (out.astype(features.dtype),)


CarafeReferenceOp.__name__ = "CARAFE"


def rel_err(actual, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())
