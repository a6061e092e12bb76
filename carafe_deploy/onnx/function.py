"""The standard-op body of ``carafe::CARAFE``, written once as an ONNX ``FunctionProto``.

The same function is the model-local function of ``mode="portable"`` and, inlined by ``onnx.inliner``, the graph of
``mode="decomposed"``. One function serves every CARAFE node of a model whatever its attributes, so the body is
generic over them:

* for "up" the zero-padded features are first repeated rep x rep = s x s times per pixel, once (one tensor the
  size of the output plus its border), so that tap (ky, kx) reads the plain (N, C, Ho, Wo) window starting at
  (ky·s, kx·s): U[i' + ky·s] = P[i'//s + ky]. For "down" (rep = 1) the window is a Slice with stride s instead.
* the k² taps are a ``Loop`` whose trip count is ``kernel_size²`` (``Constant(value_int=@kernel_size)``); each
  iteration Slices the tap's window, multiplies it, as (N, G, C/G, Ho, Wo), with the tap's kernel plane as
  (N, G, 1, Ho, Wo) and adds the product into the loop-carried accumulator. Nothing k²-times the output is ever
  materialized: the peak is a few output-sized tensors. (Broadcasting the kernel plane against a source-resolution
  window instead saves the repeated copy but makes ONNX Runtime's Mul about 8x slower: 2.3x slower overall.)
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
    """One tap: acc += Slice(source, tap offset) * kernel plane. Outer-scope names are read from the function."""
    n = helper.make_node
    nodes = [
        n("Unsqueeze", ["iter", "c_axis0"], ["iter1"]),
        n("Div", ["iter1", "k"], ["ky"]),
        n("Mul", ["ky", "k"], ["ky_k"]),
        n("Sub", ["iter1", "ky_k"], ["kx"]),
        n("Concat", ["ky", "kx"], ["tap"], axis=0),
        n("Mul", ["tap", "rep"], ["starts"]),
        n("Add", ["starts", "span"], ["ends"]),
        # (N, C, Ho, Wo): the (up-sampled) features this tap reads at every output pixel
        n("Slice", ["source", "starts", "ends", "c_axes23", "steps"], ["window"]),
        n("Reshape", ["window", "x_shape5"], ["x5"]),
        # (N, G, Ho, Wo) -> (N, G, 1, Ho, Wo): this tap's kernel plane
        n("Gather", ["kernels5", "iter"], ["plane"], axis=2),
        n("Unsqueeze", ["plane", "c_axis2"], ["plane5"]),
        n("Mul", ["x5", "plane5"], ["product"]),
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
        n("Div", ["x_c", "g"], ["cg"]),
        n("Mul", ["k", "k"], ["kk"]),
        n("Div", ["k", "c_two"], ["r"]),
        # zero padding by r on H and W
        n("Concat", ["c_zero", "c_zero", "r", "r", "c_zero", "c_zero", "r", "r"], ["pads"], axis=0),
        n("CastLike", ["c_fzero", "features"], ["zero"]),
        n("Pad", ["features", "pads", "zero"], ["padded"], mode="constant"),
        # "up": repeat every padded pixel rep x rep times, once, so that every tap reads a plain (N, C, Ho, Wo)
        # window: U[i' + ky*rep] = P[i'//rep + ky]. "down" (rep = 1) leaves it alone and strides the Slice.
        n("Shape", ["padded"], ["p_h"], start=2, end=3),
        n("Shape", ["padded"], ["p_w"], start=3, end=4),
        n("Concat", ["x_n", "x_c", "p_h", "c_one", "p_w", "c_one"], ["p_shape6"], axis=0),
        n("Concat", ["x_n", "x_c", "p_h", "rep", "p_w", "rep"], ["u_shape6"], axis=0),
        n("Mul", ["p_h", "rep"], ["u_h"]),
        n("Mul", ["p_w", "rep"], ["u_w"]),
        n("Concat", ["x_n", "x_c", "u_h", "u_w"], ["u_shape"], axis=0),
        n("Reshape", ["padded", "p_shape6"], ["padded6"]),
        n("Expand", ["padded6", "u_shape6"], ["source6"]),
        n("Reshape", ["source6", "u_shape"], ["source"]),
        # Slice end offsets relative to the tap's start: step*(Ho-1)+1
        n("Concat", ["k_h", "k_w"], ["out_hw"], axis=0),
        n("Sub", ["out_hw", "c_one"], ["out_hw_m1"]),
        n("Concat", ["step", "step"], ["steps"], axis=0),
        n("Mul", ["out_hw_m1", "steps"], ["span_m1"]),
        n("Add", ["span_m1", "c_one"], ["span"]),
        n("Concat", ["x_n", "g", "cg", "k_h", "k_w"], ["x_shape5"], axis=0),
        n("Concat", ["x_n", "g", "kk", "k_h", "k_w"], ["k_shape5"], axis=0),
        n("Reshape", ["kernels", "k_shape5"], ["kernels5"]),
        n("Expand", ["zero", "x_shape5"], ["acc0"]),
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
        attributes=["kernel_size"],
        # defaults, as in the schema, for nodes that leave them out (function attribute defaults: IR version 9)
        attribute_protos=[
            helper.make_attribute("group", 1),
            helper.make_attribute("scale_factor", 2),
            helper.make_attribute("mode", "up"),
        ],
        doc_string="CARAFE / CARAFE++ in standard ONNX ops (carafe_deploy.onnx.function).",
    )
