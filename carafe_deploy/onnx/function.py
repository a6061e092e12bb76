"""The standard-op body of ``carafe::CARAFE``, written once as an ONNX ``FunctionProto``.

The same function is the model-local function of ``mode="portable"`` and, inlined by ``onnx.inliner``, the graph of
``mode="decomposed"``. One function serves every CARAFE node of a model whatever its attributes, so the body is
generic over them:

* the k² taps are a ``Loop`` whose trip count is ``kernel_size²`` (``Constant(value_int=@kernel_size)``); each
  iteration Slices the zero-padded features at the tap's offset (strided by s for "down"), multiplies them, as
  (N, G, C/G, hs, 1, ws, 1), with the tap's kernel plane reshaped to (N, G, 1, hs, rep, ws, rep) -- broadcasting
  does the up-sampling -- and adds the product into the loop-carried accumulator. Nothing k²-times the output is
  ever materialized: the peak is a few output-sized tensors.
* ``mode`` is a string attribute, and standard ops cannot branch on a string in TensorRT (no string tensors), so
  the body reads the mode from the shapes instead, which the contract fixes: "up" makes the kernels' Ho·Wo
  = s²·H·W > H·W; "down" makes it ceil(H/s)·ceil(W/s) <= H·W. The one tie, s = 1, is the identity geometry for
  both modes (rep = step = 1), so the rule is exact. The node's ``mode`` attribute stays the declared truth for
  the plugin and for shape inference.

Ops used: Constant, Shape, Slice, Gather, Reshape, Unsqueeze, Concat, Pad, Mul, Add, Sub, Div, Greater, Where,
CastLike, Expand, Loop, Squeeze, Identity -- all in opset 15 and in TensorRT's ONNX parser.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .schema import DOMAIN, OP_TYPE

__all__ = ["carafe_function", "MIN_OPSET"]

MIN_OPSET = 15  # Shape(start, end) and CastLike are the newest ops in the body (opset 15)


def _ints(name: str, values) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], list(values))
    )


def _attr_const(name: str, attr: str) -> list[onnx.NodeProto]:
    # A 1-element int64 tensor holding the calling node's int attribute.
    node = helper.make_node("Constant", [], [name + "_scalar"])
    ref = onnx.AttributeProto()
    ref.name = "value_int"
    ref.ref_attr_name = attr
    ref.type = onnx.AttributeProto.INT
    node.attribute.append(ref)
    return [node, helper.make_node("Reshape", [name + "_scalar", "c_one"], [name])]


def _loop_body() -> onnx.GraphProto:
    """One tap: acc += Slice(padded, tap offset) * kernel plane. Outer-scope names are read from the function."""
    n = helper.make_node
    nodes = [
        n("Unsqueeze", ["iter", "c_axis0"], ["iter1"]),
        n("Div", ["iter1", "k"], ["ky"]),
        n("Mul", ["ky", "k"], ["ky_k"]),
        n("Sub", ["iter1", "ky_k"], ["kx"]),
        n("Concat", ["ky", "kx"], ["starts"], axis=0),
        n("Add", ["starts", "span"], ["ends"]),
        # (N, C, hs, ws): the features this tap reads, a strided window for "down"
        n("Slice", ["padded", "starts", "ends", "c_axes23", "steps"], ["window"]),
        n("Reshape", ["window", "x_shape7"], ["x7"]),
        # (N, G, hs, rep, ws, rep) -> (N, G, 1, hs, rep, ws, rep): this tap's kernel plane
        n("Gather", ["kernels7", "iter"], ["plane"], axis=2),
        n("Unsqueeze", ["plane", "c_axis2"], ["plane7"]),
        n("Mul", ["x7", "plane7"], ["product"]),
        n("Add", ["acc_in", "product"], ["acc_out"]),
        n("Identity", ["cond_in"], ["cond_out"]),
    ]
    return helper.make_graph(
        nodes,
        "carafe_tap",
        [
            helper.make_tensor_value_info("iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_value_info("acc_in", onnx.TypeProto()),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_value_info("acc_out", onnx.TypeProto()),
        ],
    )


def carafe_function(opset: int = MIN_OPSET) -> onnx.FunctionProto:
    """The model-local function ``carafe::CARAFE(features, kernels)`` in standard ops of ``opset``."""
    if opset < MIN_OPSET:
        raise ValueError(f"the CARAFE function needs ONNX opset >= {MIN_OPSET}, got {opset}")
    n = helper.make_node
    nodes = [
        _ints("c_one", [1]),
        *_attr_const("k", "kernel_size"),
        *_attr_const("g", "group"),
        *_attr_const("s", "scale_factor"),
        _ints("c_two", [2]),
        _ints("c_zero", [0]),
        _ints("c_axis0", [0]),
        _ints("c_axis2", [2]),
        _ints("c_axes23", [2, 3]),
        n("Constant", [], ["c_true"], value=helper.make_tensor("c_true", TensorProto.BOOL, [], [True])),
        n("Constant", [], ["c_fzero"], value=helper.make_tensor("c_fzero", TensorProto.FLOAT, [], [0.0])),
        # geometry from the shapes
        n("Shape", ["features"], ["x_n"], start=0, end=1),
        n("Shape", ["features"], ["x_c"], start=1, end=2),
        n("Shape", ["features"], ["x_h"], start=2, end=3),
        n("Shape", ["features"], ["x_w"], start=3, end=4),
        n("Shape", ["kernels"], ["k_h"], start=2, end=3),
        n("Shape", ["kernels"], ["k_w"], start=3, end=4),
        n("Mul", ["x_h", "x_w"], ["x_area"]),
        n("Mul", ["k_h", "k_w"], ["k_area"]),
        n("Greater", ["k_area", "x_area"], ["is_up"]),
        n("Where", ["is_up", "s", "c_one"], ["rep"]),  # each source pixel feeds a rep x rep output block
        n("Where", ["is_up", "c_one", "s"], ["step"]),  # source stride between neighbouring outputs
        n("Div", ["k_h", "rep"], ["hs"]),
        n("Div", ["k_w", "rep"], ["ws"]),
        n("Div", ["x_c", "g"], ["cg"]),
        n("Mul", ["k", "k"], ["kk"]),
        n("Div", ["k", "c_two"], ["r"]),
        # zero padding by r on H and W
        n("Concat", ["c_zero", "c_zero", "r", "r", "c_zero", "c_zero", "r", "r"], ["pads"], axis=0),
        n("CastLike", ["c_fzero", "features"], ["zero"]),
        n("Pad", ["features", "pads", "zero"], ["padded"], mode="constant"),
        # Slice end offsets relative to the tap's start: step*(hs-1)+1
        n("Concat", ["hs", "ws"], ["out_small"], axis=0),
        n("Sub", ["out_small", "c_one"], ["out_small_m1"]),
        n("Concat", ["step", "step"], ["steps"], axis=0),
        n("Mul", ["out_small_m1", "steps"], ["span_m1"]),
        n("Add", ["span_m1", "c_one"], ["span"]),
        n("Concat", ["x_n", "g", "cg", "hs", "c_one", "ws", "c_one"], ["x_shape7"], axis=0),
        n("Concat", ["x_n", "g", "kk", "hs", "rep", "ws", "rep"], ["k_shape7"], axis=0),
        n("Reshape", ["kernels", "k_shape7"], ["kernels7"]),
        n("Concat", ["x_n", "g", "cg", "hs", "rep", "ws", "rep"], ["acc_shape"], axis=0),
        n("Expand", ["zero", "acc_shape"], ["acc0"]),
        n("Squeeze", ["kk", "c_axis0"], ["trips"]),
        n("Loop", ["trips", "c_true", "acc0"], ["acc"], body=_loop_body()),
        n("Concat", ["x_n", "x_c", "k_h", "k_w"], ["out_shape"], axis=0),
        n("Reshape", ["acc", "out_shape"], ["output"]),
    ]
    return helper.make_function(
        DOMAIN,
        OP_TYPE,
        inputs=["features", "kernels"],
        outputs=["output"],
        nodes=nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=["kernel_size", "group", "scale_factor", "mode"],
        doc_string="CARAFE / CARAFE++ in standard ONNX ops (carafe_deploy.onnx.function).",
    )
