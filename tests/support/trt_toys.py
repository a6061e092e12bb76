"""Tiny hand-made ONNX models for the TensorRT-side tests (graph preparation, profiles, CLI, bench).

``carafe_model`` holds one ``carafe::CARAFE`` node (features (N,4,H,W), kernels (N,9,2H,2W), k=3, s=2). With
``function=True`` the model also carries a model-local ``carafe::CARAFE`` function whose body is a stand-in built from
standard ops (nearest ×2 resize of the features times the per-pixel sum of the kernels): not the CARAFE maths, only a
body that ONNX Runtime can run, which is all these tests need from it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 18


def _function() -> onnx.FunctionProto:
    nodes = [
        helper.make_node("Constant", [], ["scales"], value=helper.make_tensor("s", TensorProto.FLOAT, [4],
                                                                                 [1, 1, 2, 2])),
        helper.make_node("Resize", ["features", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("a", TensorProto.INT64, [1], [1])),
        helper.make_node("ReduceSum", ["kernels", "axes"], ["ksum"], keepdims=1),
        helper.make_node("Mul", ["up", "ksum"], ["out"]),
    ]
    return helper.make_function(
        "carafe", "CARAFE", ["features", "kernels"], ["out"], nodes,
        [helper.make_opsetid("", OPSET)], attributes=["kernel_size", "group", "scale_factor", "mode"],
    )


def reference_output(features: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """What the stand-in function body computes, written with numpy."""
    up = features.repeat(2, axis=2).repeat(2, axis=3)
    return up * kernels.sum(axis=1, keepdims=True)


def carafe_model(function: bool = True, dynamic: bool = False, mmcv: bool = False, hw: int = 8,
                 dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    n, h = ("N", "H") if dynamic else (1, hw)
    n2 = "N" if dynamic else 1
    h2, w2 = ("H2", "W2") if dynamic else (2 * hw, 2 * hw)
    w = "W" if dynamic else hw
    if mmcv:
        node = helper.make_node("MMCVCARAFE", ["features", "kernels"], ["out"], name="carafe_up",
                                domain="mmcv", kernel_size=3, group_size=1, scale_factor=2.0)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("mmcv", 1)]
    else:
        node = helper.make_node("CARAFE", ["features", "kernels"], ["out"], name="carafe_up", domain="carafe",
                                kernel_size=3, group=1, scale_factor=2, mode="up")
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("carafe", 1)]
    relu = helper.make_node("Relu", ["out"], ["y"], name="relu")
    graph = helper.make_graph(
        [node, relu], "toy",
        [helper.make_tensor_value_info("features", dtype, [n, 4, h, w]),
         helper.make_tensor_value_info("kernels", dtype, [n2, 9, h2, w2])],
        [helper.make_tensor_value_info("y", dtype, [n, 4, h2, w2])],
    )
    model = helper.make_model(graph, opset_imports=opsets, functions=[_function()] if function and not mmcv else [])
    model.ir_version = 10
    return model


def random_feeds(batch: int = 1, hw: int = 8, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"features": rng.standard_normal((batch, 4, hw, hw)).astype(dtype),
            "kernels": rng.random((batch, 9, 2 * hw, 2 * hw)).astype(dtype)}


class TorchToy:
    """The stand-in body in PyTorch (for ``bench --torch-model trt_toys:TorchToy``), followed by the Relu."""

    def __new__(cls):
        import torch

        class _Toy(torch.nn.Module):
            def forward(self, features, kernels):
                up = features.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
                return torch.relu(up * kernels.sum(dim=1, keepdim=True))

        return _Toy().eval()
