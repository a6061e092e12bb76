"""The detectors' plugin nodes, ``carafe::MultiLevelRoIAlign`` and ``carafe::BatchedNMS``: their schemas (registered
with ``onnx.defs`` on import, like ``carafe::CARAFE``'s), their model-local functions of standard ops (so ONNX Runtime
runs a file that has them, as the portable CARAFE form does), and the dynamo exporter's translations of the torch ops
:func:`carafe_deploy.ops.multi_level_roi_align` / :func:`carafe_deploy.ops.batched_nms` into them.

The TensorRT plugins of the same names (plugins/tensorrt/multiLevelRoIAlignPlugin, batchedNMSPlugin; their
``*_PluginConfig.yaml`` is the contract) build them into an engine; the functions compute the same in ONNX Runtime:

* ``MultiLevelRoIAlign(rois, batch_indices, features_0, ..., features_{L-1})``: mmdet's level of each RoI
  (floor(log2(sqrt(area) / finest_scale + 1e-6)) clamped to the levels), then per level one ``RoiAlign`` of that
  level's RoIs (the others emptied, their outputs masked) with spatial scale 1 / stride, summed. A model-local
  function has a fixed number of inputs, so the file's function is written for the number of levels its nodes have
  (every node of one file must have the same).
* ``BatchedNMS(boxes, scores) -> det_boxes, det_scores, det_labels, valid``: one ``NonMaxSuppression`` over the
  (image, class) pairs as batches (so per-class boxes need no offset trick), the selection scattered into a keep
  mask over (row, class), a masked ``TopK`` of ``max_per_image`` in the node's order (score, then row · C + class:
  ONNX ``TopK`` puts the lower index first among equal values), zeros / -1 in empty slots.
"""

from __future__ import annotations

import onnx
import onnx.defs
from onnx import TensorProto, TypeProto, helper
from onnx.shape_inference import InferenceContext

from .schema import DOMAIN, OPSET_VERSION

__all__ = ["ROI_ALIGN", "NMS", "NODE_TYPES", "register_schemas", "detection_nodes", "detection_functions",
           "complete_attributes", "function_missing", "roi_align_function", "nms_function", "multi_level_roi_align_onnx",
           "batched_nms_onnx"]

ROI_ALIGN = "MultiLevelRoIAlign"
NMS = "BatchedNMS"
NODE_TYPES = (ROI_ALIGN, NMS)
_FLOATS = ["tensor(float)", "tensor(float16)"]
_ROI_DEFAULTS = {"sampling_ratio": 0, "finest_scale": 56.0, "coordinate_transformation_mode": "half_pixel"}
_NMS_DEFAULTS = {"max_per_class": -1}


# --------------------------------------------------------------------------------------------------------------
# schemas


def _set_output(ctx: InferenceContext, index: int, elem_type: int, dims) -> None:
    out = TypeProto()
    out.tensor_type.elem_type = elem_type
    shape = out.tensor_type.shape
    for d in dims:
        if d is None:
            shape.dim.add()
        elif isinstance(d, int):
            shape.dim.add().dim_value = d
        else:
            shape.dim.add().CopyFrom(d)
    ctx.set_output_type(index, out)


def _input_dims(ctx: InferenceContext, index: int):
    t = ctx.get_input_type(index)
    if t is None or not t.HasField("tensor_type"):
        return None, None
    dims = list(t.tensor_type.shape.dim) if t.tensor_type.HasField("shape") else None
    return t.tensor_type.elem_type, dims


def _infer_roi_align(ctx: InferenceContext) -> None:
    elem, rois = _input_dims(ctx, 0)
    _, features = _input_dims(ctx, 2)
    oh, ow = ctx.get_attribute("output_height"), ctx.get_attribute("output_width")
    if elem is None:
        return
    k = rois[0] if rois else None
    c = features[1] if features and len(features) == 4 else None
    _set_output(ctx, 0, elem, [k, c, oh.i if oh else None, ow.i if ow else None])


def _infer_nms(ctx: InferenceContext) -> None:
    elem, scores = _input_dims(ctx, 1)
    k_attr = ctx.get_attribute("max_per_image")
    if elem is None:
        return
    n = scores[0] if scores and len(scores) == 3 else None
    k = k_attr.i if k_attr is not None else None
    _set_output(ctx, 0, elem, [n, k, 4])
    _set_output(ctx, 1, elem, [n, k])
    _set_output(ctx, 2, TensorProto.INT32, [n, k])
    _set_output(ctx, 3, TensorProto.INT32, [n])


def roi_align_schema(levels: int | None = None) -> onnx.defs.OpSchema:
    """The registered schema (``levels`` None: ``features`` variadic), or one with ``levels`` single feature inputs
    for the exporter's translation (torch 2.13's graph builder gives a variadic input that follows other inputs all
    the node's arguments)."""
    P, A, T = onnx.defs.OpSchema.FormalParameter, onnx.defs.OpSchema.Attribute, onnx.defs.OpSchema.AttrType
    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
    if levels is None:
        features = [P("features", "T", "one (N, C, H_l, W_l) map per featmap stride", param_option=variadic)]
    else:
        features = [P(f"features_{i}", "T", f"level {i}: (N, C, H, W)") for i in range(levels)]
    schema = onnx.defs.OpSchema(
        ROI_ALIGN, DOMAIN, OPSET_VERSION,
        doc="mmdetection's SingleRoIExtractor: each RoI pooled by RoIAlign (avg) from its FPN level "
            "(plugins/tensorrt/multiLevelRoIAlignPlugin/README.md).",
        inputs=[P("rois", "T", "(K, 4) x1 y1 x2 y2 in image pixels"),
                P("batch_indices", "I", "(K,) image of each RoI"), *features],
        outputs=[P("output", "T", "(K, C, output_height, output_width)")],
        type_constraints=[("T", _FLOATS, "rois, features and output share one float type"),
                          ("I", ["tensor(int32)", "tensor(int64)"], "batch indices")],
        attributes=[
            A("output_height", T.INT, "pooled height", required=True),
            A("output_width", T.INT, "pooled width", required=True),
            A("featmap_strides", T.FLOATS, "stride of each level (1 to 8 levels)", required=True),
            A("sampling_ratio", helper.make_attribute("sampling_ratio", 0), "samples per bin and axis; 0: adaptive"),
            A("finest_scale", helper.make_attribute("finest_scale", 56.0), "mmdet's level mapping scale"),
            A("coordinate_transformation_mode", helper.make_attribute("coordinate_transformation_mode", "half_pixel"),
              '"half_pixel" (mmcv aligned=True) or "output_half_pixel"'),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer_roi_align)
    return schema


def nms_schema() -> onnx.defs.OpSchema:
    P, A, T = onnx.defs.OpSchema.FormalParameter, onnx.defs.OpSchema.Attribute, onnx.defs.OpSchema.AttrType
    schema = onnx.defs.OpSchema(
        NMS, DOMAIN, OPSET_VERSION,
        doc="Per-class NMS of a batch of images with fixed-size outputs "
            "(plugins/tensorrt/batchedNMSPlugin/README.md).",
        inputs=[P("boxes", "T", "(N, M, 1 or C, 4) x1 y1 x2 y2"), P("scores", "T", "(N, M, C)")],
        outputs=[P("det_boxes", "T", "(N, max_per_image, 4)"), P("det_scores", "T", "(N, max_per_image)"),
                 P("det_labels", "L", "(N, max_per_image) class index, -1 in empty slots"),
                 P("valid", "L", "(N,) filled slots")],
        type_constraints=[("T", _FLOATS, "boxes, scores and the box and score outputs"),
                          ("L", ["tensor(int32)"], "labels and counts")],
        attributes=[
            A("score_threshold", T.FLOAT, "candidates have score > score_threshold", required=True),
            A("iou_threshold", T.FLOAT, "a box is suppressed by IoU > iou_threshold", required=True),
            A("max_per_image", T.INT, "output slots per image", required=True),
            A("max_per_class", helper.make_attribute("max_per_class", -1), "kept boxes per class; -1: no limit"),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer_nms)
    return schema


def register_schemas() -> None:
    """Register ``carafe::MultiLevelRoIAlign`` and ``carafe::BatchedNMS`` version 1 once per process."""
    for name, make in ((ROI_ALIGN, roi_align_schema), (NMS, nms_schema)):
        if not onnx.defs.has(name, OPSET_VERSION, DOMAIN):
            onnx.defs.register_schema(make())


# --------------------------------------------------------------------------------------------------------------
# functions


def _const(name: str, values, dtype=TensorProto.INT64, dims=None) -> onnx.NodeProto:
    values = list(values)
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(
        name, dtype, [len(values)] if dims is None else dims, values))


def _attr(name: str, attr: str, kind: str) -> onnx.NodeProto:
    """Constant(value_<kind>=@attr): the calling node's attribute as a tensor."""
    node = helper.make_node("Constant", [], [name])
    ref = onnx.AttributeProto()
    ref.name = f"value_{kind}"
    ref.ref_attr_name = attr
    ref.type = {"int": onnx.AttributeProto.INT, "float": onnx.AttributeProto.FLOAT,
                "floats": onnx.AttributeProto.FLOATS}[kind]
    node.attribute.append(ref)
    return node


def _ref(name: str, kind: int, attr: str | None = None) -> onnx.AttributeProto:
    ref = onnx.AttributeProto()
    ref.name = name
    ref.ref_attr_name = attr or name
    ref.type = kind
    return ref


def roi_align_function(levels: int, opset: int) -> onnx.FunctionProto:
    """``carafe::MultiLevelRoIAlign`` for ``levels`` feature maps, in standard ops of ``opset``."""
    n = helper.make_node
    features = [f"features_{i}" for i in range(levels)]
    nodes = [
        _const("c_axis1", [1]),
        _const("c_x1", [0]), _const("c_y1", [1]), _const("c_x2", [2]), _const("c_y2", [3]),
        n("Gather", ["rois", "c_x1"], ["x1"], axis=1),
        n("Gather", ["rois", "c_y1"], ["y1"], axis=1),
        n("Gather", ["rois", "c_x2"], ["x2"], axis=1),
        n("Gather", ["rois", "c_y2"], ["y2"], axis=1),
        n("Sub", ["x2", "x1"], ["w"]),
        n("Sub", ["y2", "y1"], ["h"]),
        n("Mul", ["w", "h"], ["area"]),
        n("Sqrt", ["area"], ["size"]),
        _attr("finest_f", "finest_scale", "float"),
        n("CastLike", ["finest_f", "rois"], ["finest"]),
        _const("eps_f", [1e-6], TensorProto.FLOAT, dims=[]),
        n("CastLike", ["eps_f", "rois"], ["eps"]),
        _const("two_f", [2.0], TensorProto.FLOAT, dims=[]),
        n("Log", ["two_f"], ["log_two_f"]),
        n("CastLike", ["log_two_f", "rois"], ["log_two"]),
        n("Div", ["size", "finest"], ["ratio"]),
        n("Add", ["ratio", "eps"], ["ratio_eps"]),
        n("Log", ["ratio_eps"], ["log_ratio"]),
        n("Div", ["log_ratio", "log_two"], ["log2_ratio"]),  # as torch.log2 exports
        n("Floor", ["log2_ratio"], ["level_raw"]),
        _const("lo_f", [0.0], TensorProto.FLOAT, dims=[]),
        _const("hi_f", [float(levels - 1)], TensorProto.FLOAT, dims=[]),
        n("CastLike", ["lo_f", "rois"], ["lo"]),
        n("CastLike", ["hi_f", "rois"], ["hi"]),
        n("Clip", ["level_raw", "lo", "hi"], ["level"]),  # (K, 1)
        _attr("strides", "featmap_strides", "floats"),
        n("Reciprocal", ["strides"], ["scales"]),
        n("Cast", ["batch_indices"], ["batch64"], to=TensorProto.INT64),
        n("CastLike", ["lo_f", "features_0"], ["zero"]),
        _const("c_shape4", [-1, 1, 1, 1]),
    ]
    roi_align_attrs = [_ref("output_height", onnx.AttributeProto.INT),
                       _ref("output_width", onnx.AttributeProto.INT),
                       _ref("sampling_ratio", onnx.AttributeProto.INT),
                       _ref("coordinate_transformation_mode", onnx.AttributeProto.STRING)]
    total = None
    for lvl in range(levels):
        v = f"_{lvl}"
        nodes += [
            _const("l" + v, [float(lvl)], TensorProto.FLOAT, dims=[]),
            n("CastLike", ["l" + v, "rois"], ["lc" + v]),
            n("Equal", ["level", "lc" + v], ["pick" + v]),  # (K, 1)
            n("Where", ["pick" + v, "rois", "lo"], ["level_rois" + v]),
            _const("i" + v, [lvl], dims=[]),
            n("Gather", ["scales", "i" + v], ["scale_f" + v], axis=0),
            n("CastLike", ["scale_f" + v, "rois"], ["scale" + v]),
            n("Mul", ["level_rois" + v, "scale" + v], ["scaled" + v]),  # = RoiAlign's x * spatial_scale
            n("CastLike", ["scaled" + v, features[lvl]], ["scaled_t" + v]),
        ]
        pool = n("RoiAlign", [features[lvl], "scaled_t" + v, "batch64"], ["pooled" + v], mode="avg",
                 spatial_scale=1.0)
        pool.attribute.extend(roi_align_attrs)
        nodes += [
            pool,
            n("Reshape", ["pick" + v, "c_shape4"], ["pick_k" + v]),  # (K, 1, 1, 1)
            n("Where", ["pick_k" + v, "pooled" + v, "zero"], ["masked" + v]),  # a fixed sampling ratio samples
        ]                                                                       # empty boxes too
        if total is None:
            total = "masked" + v
        else:
            nodes.append(n("Add", [total, "masked" + v], ["sum" + v]))
            total = "sum" + v
    nodes.append(n("Identity", [total], ["output"]))
    return helper.make_function(
        DOMAIN, ROI_ALIGN, inputs=["rois", "batch_indices", *features], outputs=["output"], nodes=nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=["output_height", "output_width", "featmap_strides"],
        attribute_protos=[helper.make_attribute(k, v) for k, v in _ROI_DEFAULTS.items()],
    )


def nms_function(opset: int) -> onnx.FunctionProto:
    """``carafe::BatchedNMS`` in standard ops of ``opset``."""
    n = helper.make_node
    f32 = TensorProto.FLOAT
    nodes = [
        n("Shape", ["scores"], ["c_n"], start=0, end=1),
        n("Shape", ["scores"], ["c_m"], start=1, end=2),
        n("Shape", ["scores"], ["c_c"], start=2, end=3),
        _const("c_one", [1]), _const("c_four", [4]), _const("c_minus1", [-1]),
        n("Cast", ["boxes"], ["boxes_f"], to=f32),
        n("Cast", ["scores"], ["scores_f"], to=f32),
        # per-class boxes (N, M, C, 4), then (image, class) pairs as NonMaxSuppression's batches
        n("Concat", ["c_n", "c_m", "c_c", "c_four"], ["shape_nmc4"], axis=0),
        n("Expand", ["boxes_f", "shape_nmc4"], ["boxes_nmc"]),
        n("Transpose", ["boxes_nmc"], ["boxes_ncm"], perm=[0, 2, 1, 3]),
        n("Mul", ["c_n", "c_c"], ["c_nc"]),
        n("Concat", ["c_nc", "c_m", "c_four"], ["shape_b"], axis=0),
        n("Reshape", ["boxes_ncm", "shape_b"], ["boxes_b"]),
        n("Transpose", ["scores_f"], ["scores_ncm"], perm=[0, 2, 1]),
        n("Concat", ["c_nc", "c_one", "c_m"], ["shape_s"], axis=0),
        n("Reshape", ["scores_ncm", "shape_s"], ["scores_b"]),
        _attr("per_class_s", "max_per_class", "int"),
        n("Reshape", ["per_class_s", "c_one"], ["per_class"]),
        _const("c_zero", [0]),
        n("Less", ["per_class", "c_zero"], ["unlimited"]),
        n("Where", ["unlimited", "c_m", "per_class"], ["max_out"]),
        _attr("iou_s", "iou_threshold", "float"),
        n("Reshape", ["iou_s", "c_one"], ["iou"]),
        _attr("thr_s", "score_threshold", "float"),
        n("Reshape", ["thr_s", "c_one"], ["thr"]),
        n("NonMaxSuppression", ["boxes_b", "scores_b", "max_out", "iou", "thr"], ["selected"], center_point_box=0),
        # keep mask over (image, row, class), flattened to (N, M * C) in the node's tie order
        _const("c_pick", [0, 2]),
        n("Gather", ["selected", "c_pick"], ["where"], axis=1),
        n("Shape", ["selected"], ["n_selected"], start=0, end=1),
        _const("one_f", [1.0], f32),
        n("Expand", ["one_f", "n_selected"], ["ones"]),
        n("Concat", ["c_nc", "c_m"], ["shape_keep_b"], axis=0),
        n("ConstantOfShape", ["shape_keep_b"], ["zeros_b"], value=helper.make_tensor("v", f32, [1], [0.0])),
        n("ScatterND", ["zeros_b", "where", "ones"], ["keep_b"]),
        n("Concat", ["c_n", "c_c", "c_m"], ["shape_ncm"], axis=0),
        n("Reshape", ["keep_b", "shape_ncm"], ["keep_ncm"]),
        n("Transpose", ["keep_ncm"], ["keep_nmc"], perm=[0, 2, 1]),
        n("Concat", ["c_n", "c_minus1"], ["shape_flat"], axis=0),
        n("Reshape", ["keep_nmc", "shape_flat"], ["keep_flat_f"]),
        _const("half_f", [0.5], f32, dims=[]),
        n("Greater", ["keep_flat_f", "half_f"], ["keep_flat"]),
        n("Reshape", ["scores_f", "shape_flat"], ["scores_flat"]),
        # masked TopK over (N, M * C + K): K padding slots make any K valid
        _attr("k_s", "max_per_image", "int"),
        n("Reshape", ["k_s", "c_one"], ["k"]),
        _const("ninf_f", [float("-inf")], f32, dims=[]),
        n("Where", ["keep_flat", "scores_flat", "ninf_f"], ["ranked"]),
        n("Concat", ["c_n", "k"], ["shape_pad"], axis=0),
        n("Expand", ["ninf_f", "shape_pad"], ["pad_scores"]),
        n("Concat", ["ranked", "pad_scores"], ["ranked_p"], axis=1),
        n("ConstantOfShape", ["shape_pad"], ["zero_pad_f"], value=helper.make_tensor("v", f32, [1], [0.0])),
        n("Cast", ["zero_pad_f"], ["pad_keep"], to=TensorProto.BOOL),
        n("Concat", ["keep_flat", "pad_keep"], ["keep_p"], axis=1),
        n("TopK", ["ranked_p", "k"], ["values", "order"], axis=1, largest=1, sorted=1),
        n("GatherElements", ["keep_p", "order"], ["ok"], axis=1),
        # boxes of the chosen (row, class) slots, read from the flat per-class boxes padded with K zero boxes
        n("Concat", ["c_n", "c_minus1", "c_four"], ["shape_flat4"], axis=0),
        n("Reshape", ["boxes_nmc", "shape_flat4"], ["boxes_flat"]),
        n("Concat", ["c_n", "k", "c_four"], ["shape_pad4"], axis=0),
        n("ConstantOfShape", ["shape_pad4"], ["pad_boxes"], value=helper.make_tensor("v", f32, [1], [0.0])),
        n("Concat", ["boxes_flat", "pad_boxes"], ["boxes_p"], axis=1),
        n("Unsqueeze", ["order", "c_minus1"], ["order3"]),
        n("Concat", ["c_n", "k", "c_four"], ["shape_order4"], axis=0),
        n("Expand", ["order3", "shape_order4"], ["order4"]),
        n("GatherElements", ["boxes_p", "order4"], ["chosen_boxes"], axis=1),
        n("Unsqueeze", ["ok", "c_minus1"], ["ok3"]),
        _const("zero_s", [0.0], f32, dims=[]),
        n("Where", ["ok3", "chosen_boxes", "zero_s"], ["det_boxes_f"]),
        n("CastLike", ["det_boxes_f", "boxes"], ["det_boxes"]),
        n("Where", ["ok", "values", "zero_s"], ["det_scores_f"]),
        n("CastLike", ["det_scores_f", "scores"], ["det_scores"]),
        n("Mod", ["order", "c_c"], ["label64"]),
        n("Cast", ["label64"], ["label32"], to=TensorProto.INT32),
        _const("minus1_i", [-1], TensorProto.INT32, dims=[]),
        n("Where", ["ok", "label32", "minus1_i"], ["det_labels"]),
        n("Cast", ["ok"], ["ok_i"], to=TensorProto.INT32),
        n("ReduceSum", ["ok_i", "c_one"], ["valid"], keepdims=0),
    ]
    return helper.make_function(
        DOMAIN, NMS, inputs=["boxes", "scores"], outputs=["det_boxes", "det_scores", "det_labels", "valid"],
        nodes=nodes, opset_imports=[helper.make_opsetid("", opset)],
        attributes=["score_threshold", "iou_threshold", "max_per_image"],
        attribute_protos=[helper.make_attribute(k, v) for k, v in _NMS_DEFAULTS.items()],
    )


# --------------------------------------------------------------------------------------------------------------
# a model's detection nodes and their functions


def detection_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The model's ``carafe::MultiLevelRoIAlign`` and ``carafe::BatchedNMS`` nodes (main graph and subgraphs)."""
    from .validate import walk_nodes

    return [node for node, _ in walk_nodes(model, functions=False)
            if node.domain == DOMAIN and node.op_type in NODE_TYPES]


def complete_attributes(model: onnx.ModelProto) -> None:
    """Write the schema defaults onto nodes that leave them out, so that the plugin creators (which only see the
    node's attributes) and the ONNX reference evaluator see every field."""
    for node in detection_nodes(model):
        defaults = _ROI_DEFAULTS if node.op_type == ROI_ALIGN else _NMS_DEFAULTS
        present = {a.name for a in node.attribute}
        node.attribute.extend(helper.make_attribute(k, v) for k, v in defaults.items() if k not in present)


def detection_functions(model: onnx.ModelProto, opset: int) -> list[onnx.FunctionProto]:
    """The functions the model's detection nodes need (none when it has none). ``ValueError`` when its
    MultiLevelRoIAlign nodes have different numbers of feature maps (one model-local function cannot serve them)."""
    nodes = detection_nodes(model)
    out = []
    levels = {len(node.input) - 2 for node in nodes if node.op_type == ROI_ALIGN}
    if len(levels) > 1:
        raise ValueError(f"the {DOMAIN}::{ROI_ALIGN} nodes have {sorted(levels)} feature maps; one model-local "
                         "function serves one count")
    if levels:
        out.append(roi_align_function(levels.pop(), opset))
    if any(node.op_type == NMS for node in nodes):
        out.append(nms_function(opset))
    return out


def function_missing(model: onnx.ModelProto) -> str | None:
    """The op type of a detection node without its model-local function (ONNX Runtime cannot run it), else None."""
    have = {f.name for f in model.functions if f.domain == DOMAIN}
    for node in detection_nodes(model):
        if node.op_type not in have:
            return node.op_type
    return None


# --------------------------------------------------------------------------------------------------------------
# the dynamo exporter's translations


def multi_level_roi_align_onnx(rois, batch_indices, features, output_height: int, output_width: int,
                               sampling_ratio: int, featmap_strides, finest_scale: float):
    import onnxscript

    op = onnxscript.values.Op(onnxscript.values.Opset(DOMAIN, OPSET_VERSION), ROI_ALIGN,
                              op_schema=roi_align_schema(len(features)))
    return op(
        rois, batch_indices, *features, output_height=output_height, output_width=output_width,
        featmap_strides=[float(s) for s in featmap_strides], sampling_ratio=sampling_ratio,
        finest_scale=float(finest_scale), coordinate_transformation_mode="half_pixel")


def batched_nms_onnx(boxes, scores, score_threshold: float, iou_threshold: float, max_per_class: int,
                     max_per_image: int):
    import onnxscript

    register_schemas()
    return onnxscript.values.Opset(DOMAIN, OPSET_VERSION).BatchedNMS(
        boxes, scores, score_threshold=float(score_threshold), iou_threshold=float(iou_threshold),
        max_per_class=max_per_class, max_per_image=max_per_image)
