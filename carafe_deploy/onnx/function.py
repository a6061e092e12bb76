"""The standard-op body of ``carafe::CARAFE``, written once as an ONNX ``FunctionProto``.

The same function is the model-local function of the portable form and, inlined by ``onnx.inliner``, the graph of the
decomposed form. One function serves every CARAFE node of a model whatever its attributes, so the body is generic
over them. It reassembles one source row at a time, as a matrix product per source pixel:

* every output pixel of the rep x rep block of source pixel p (rep = s for "up", 1 for "down") is the same k² source
  taps weighted by its own kernel, so per source pixel the block is (rep², k²) kernels times (k², C/G) taps: one
  ``MatMul`` per source row, batched over the row's pixels, (N, G, rep, Wo/rep, rep, k²) x (N, G, 1, Wo/rep, k², C/G);
* the taps come from one ``Gather`` of the features, transposed once to channels-last (N, G, H·W, C/G), with a
  precomputed flat index per (source row, pixel, tap); taps outside the image are clamped onto it and their kernel
  weight is zeroed beforehand (a clamped tap lies inside the same window, so only weights of exactly zero are
  added for it; the one difference to zero padding is an inf feature there giving NaN instead of inf);
* "down" reads source pixel (s·i', s·j') and "up" (i'//s, j'//s): both are the index's row/column step (s or 1);
* a ``Loop`` over the source rows yields each row as (N·G, C/G, rep·Wo/rep·rep), transposed while it is in cache;
  the stacked rows are moved into (N, C, Ho, Wo) by one transpose that keeps whole rows together.

So every tensor the size of the output is written a few times in all (the per-row products, their transpose, the
final layout), not a few times per tap, and the k²-times unfolded features exist one source row at a time. (The
previous body, a Loop over the k² taps with Slice, Mul and Add each over the output, was 4-10x slower in ONNX
Runtime: docs/ONNX.md has the measurements.)

``mode`` is a string attribute, and standard ops cannot branch on a string in TensorRT (no string tensors), so the
body reads the mode from the shapes instead, which the contract fixes: "up" makes the kernels' Ho·Wo = s²·H·W > H·W;
"down" makes it ceil(H/s)·ceil(W/s) <= H·W. The one tie, s = 1, is the identity geometry for both modes (rep =
step = 1), so the rule is exact. The node's ``mode`` attribute stays the declared truth for the plugin and for shape
inference.

Ops used: Constant (with attribute references), Shape, Range, Squeeze, Flatten, Reshape, Mul, Add, Sub, Div, Min, Max,
Equal, Greater, And, Where, CastLike, Transpose, Gather, MatMul, Loop, Identity -- all in opset 15.
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


def _dim(tensor: str, axis: int, name: str) -> onnx.NodeProto:
    return helper.make_node("Shape", [tensor], [name], start=axis, end=axis + 1)


def _row_body() -> onnx.GraphProto:
    """Source row ``iter``: gather its taps, one MatMul with its kernels, transpose to channel-major. Outer-scope
    names are read from the function."""
    n = helper.make_node
    nodes = [
        n("Gather", ["index", "iter"], ["row_index"], axis=0),  # (Wo/rep * k²,)
        n("Gather", ["source", "row_index"], ["row_taps_flat"], axis=2),  # (N, G, Wo/rep * k², C/G)
        n("Reshape", ["row_taps_flat", "taps_shape"], ["row_taps"]),  # (N, G, 1, Wo/rep, k², C/G)
        n("Gather", ["kernels_rows", "iter"], ["row_kernels"], axis=0),  # (N, G, rep, Wo/rep, rep, k²)
        n("MatMul", ["row_kernels", "row_taps"], ["row_product"]),  # (N, G, rep, Wo/rep, rep, C/G)
        n("Reshape", ["row_product", "row_shape"], ["row_pixels"]),  # (N*G, rep*Wo/rep*rep, C/G)
        n("Transpose", ["row_pixels"], ["row"], perm=[0, 2, 1]),  # (N*G, C/G, rep*Wo/rep*rep)
        n("Identity", ["cond_in"], ["cond_out"]),
    ]
    return helper.make_graph(
        nodes,
        "carafe_row",
        [
            helper.make_tensor_value_info("iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_value_info("row", onnx.TypeProto()),
        ],
    )


def carafe_function(opset: int = MIN_OPSET) -> onnx.FunctionProto:
    """The model-local function ``carafe::CARAFE(features, kernels)`` in standard ops of ``opset``."""
    if opset < MIN_OPSET:
        raise ValueError(f"the CARAFE function needs ONNX opset >= {MIN_OPSET}, got {opset}")
    n = helper.make_node
    nodes = [
        _ints("c_one", [1]),
        _ints("c_axis0", [0]),
        *_attr_const("k", "kernel_size"),
        *_attr_const("g", "group"),
        *_attr_const("s", "scale_factor"),
        _ints("c_two", [2]),
        _ints("c_col", [-1, 1, 1, 1]),
        _ints("c_row", [1, -1, 1, 1]),
        _ints("c_tap_y", [1, 1, -1, 1]),
        _ints("c_tap_x", [1, 1, 1, -1]),
        n("Constant", [], ["c_zero_s"], value=helper.make_tensor("c_zero_s", TensorProto.INT64, [], [0])),
        n("Constant", [], ["c_one_s"], value=helper.make_tensor("c_one_s", TensorProto.INT64, [], [1])),
        n("Constant", [], ["c_true"], value=helper.make_tensor("c_true", TensorProto.BOOL, [], [True])),
        n("Constant", [], ["c_fzero"], value=helper.make_tensor("c_fzero", TensorProto.FLOAT, [], [0.0])),
        # geometry from the shapes
        _dim("features", 0, "x_n"),
        _dim("features", 1, "x_c"),
        _dim("features", 2, "x_h"),
        _dim("features", 3, "x_w"),
        _dim("kernels", 2, "k_h"),
        _dim("kernels", 3, "k_w"),
        n("Mul", ["x_h", "x_w"], ["x_area"]),
        n("Mul", ["k_h", "k_w"], ["k_area"]),
        n("Greater", ["k_area", "x_area"], ["is_up"]),
        n("Where", ["is_up", "s", "c_one"], ["rep"]),  # each source pixel feeds a rep x rep output block
        n("Where", ["is_up", "c_one", "s"], ["step"]),  # source stride between neighbouring outputs
        n("Div", ["k_h", "rep"], ["rows"]),  # source rows read (= output rows / rep)
        n("Div", ["k_w", "rep"], ["cols"]),
        n("Div", ["x_c", "g"], ["cg"]),
        n("Mul", ["k", "k"], ["kk"]),
        n("Div", ["k", "c_two"], ["r"]),
        n("Mul", ["x_n", "g"], ["ng"]),
        # channels-last features: (N, G, H*W, C/G). Flatten first: ONNX Runtime (1.24, 1.32; not 1.16) moves a
        # DequantizeLinear forward through Reshape/Transpose and aborts the process when the tensor it reaches is
        # read inside the Loop body (an INT8 file's DQ -> CARAFE); Flatten is not one of the ops it moves through
        n("Flatten", ["features"], ["features_flat"], axis=2),
        n("Concat", ["x_n", "g", "cg", "x_area"], ["x_shape4"], axis=0),
        n("Reshape", ["features_flat", "x_shape4"], ["features4"]),
        n("Transpose", ["features4"], ["source"], perm=[0, 1, 3, 2]),
        # flat source index per (row, col, ky, kx), clamped onto the image; valid marks the taps inside it
        n("Squeeze", ["k", "c_axis0"], ["k_s"]),
        n("Squeeze", ["r", "c_axis0"], ["r_s"]),
        n("Squeeze", ["rows", "c_axis0"], ["rows_s"]),
        n("Squeeze", ["cols", "c_axis0"], ["cols_s"]),
        n("Range", ["c_zero_s", "k_s", "c_one_s"], ["tap_range"]),
        n("Sub", ["tap_range", "r_s"], ["taps"]),  # -r .. r
        n("Range", ["c_zero_s", "rows_s", "c_one_s"], ["row_range"]),
        n("Range", ["c_zero_s", "cols_s", "c_one_s"], ["col_range"]),
        n("Mul", ["row_range", "step"], ["row_centres"]),
        n("Mul", ["col_range", "step"], ["col_centres"]),
        n("Reshape", ["row_centres", "c_col"], ["row_centres4"]),
        n("Reshape", ["col_centres", "c_row"], ["col_centres4"]),
        n("Reshape", ["taps", "c_tap_y"], ["taps_y"]),
        n("Reshape", ["taps", "c_tap_x"], ["taps_x"]),
        n("Add", ["row_centres4", "taps_y"], ["tap_rows"]),  # (rows, 1, k, 1)
        n("Add", ["col_centres4", "taps_x"], ["tap_cols"]),  # (1, cols, 1, k)
        n("Sub", ["x_h", "c_one"], ["x_h_m1"]),
        n("Sub", ["x_w", "c_one"], ["x_w_m1"]),
        n("Max", ["tap_rows", "c_zero_s"], ["tap_rows_lo"]),
        n("Min", ["tap_rows_lo", "x_h_m1"], ["tap_rows_in"]),
        n("Max", ["tap_cols", "c_zero_s"], ["tap_cols_lo"]),
        n("Min", ["tap_cols_lo", "x_w_m1"], ["tap_cols_in"]),
        n("Equal", ["tap_rows", "tap_rows_in"], ["row_inside"]),
        n("Equal", ["tap_cols", "tap_cols_in"], ["col_inside"]),
        n("And", ["row_inside", "col_inside"], ["inside"]),  # (rows, cols, k, k)
        n("Mul", ["tap_rows_in", "x_w"], ["tap_row_offsets"]),
        n("Add", ["tap_row_offsets", "tap_cols_in"], ["flat_index"]),
        n("Mul", ["cols", "kk"], ["row_tap_count"]),
        n("Concat", ["rows", "row_tap_count"], ["index_shape"], axis=0),
        n("Reshape", ["flat_index", "index_shape"], ["index"]),  # (rows, cols*k²)
        # kernels by source row: (rows, N, G, rep, cols, rep, k²), zero for taps outside the image
        n("Concat", ["x_n", "g", "kk", "rows", "rep", "cols", "rep"], ["k_shape7"], axis=0),
        n("Reshape", ["kernels", "k_shape7"], ["kernels7"]),
        n("Transpose", ["kernels7"], ["kernels_by_row"], perm=[3, 0, 1, 4, 5, 6, 2]),
        n("Concat", ["rows", "c_one", "c_one", "c_one", "cols", "c_one", "kk"], ["inside_shape"], axis=0),
        n("Reshape", ["inside", "inside_shape"], ["inside7"]),
        n("CastLike", ["c_fzero", "kernels"], ["zero"]),
        n("Where", ["inside7", "kernels_by_row", "zero"], ["kernels_rows"]),
        # shapes the rows use
        n("Concat", ["x_n", "g", "c_one", "cols", "kk", "cg"], ["taps_shape"], axis=0),
        n("Div", ["k_area", "rows"], ["row_outputs"]),  # rep * cols * rep
        n("Concat", ["ng", "row_outputs", "cg"], ["row_shape"], axis=0),
        n("Loop", ["rows_s", "c_true"], ["stacked"], body=_row_body()),  # (rows, N*G, C/G, rep*cols*rep)
        # (rows, N*C, rep*cols*rep); also what onnx.reference's Loop gives, which concatenates the rows' first axis
        n("Mul", ["x_n", "x_c"], ["nc"]),
        n("Concat", ["rows", "nc", "row_outputs"], ["stacked_shape"], axis=0),
        n("Reshape", ["stacked", "stacked_shape"], ["stacked3"]),
        n("Transpose", ["stacked3"], ["channel_major"], perm=[1, 0, 2]),  # (N*C, rows, rep*cols*rep)
        n("Concat", ["x_n", "x_c", "k_h", "k_w"], ["out_shape"], axis=0),
        n("Reshape", ["channel_major", "out_shape"], ["output"]),
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
