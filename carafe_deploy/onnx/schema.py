"""The ``carafe::CARAFE`` operator schema (CONTRACT §2), registered with ``onnx.defs`` on import.

With the schema registered, ``onnx.checker.check_model(full_check=True)`` accepts the node and
``onnx.shape_inference.infer_shapes(strict_mode=True)`` gives its output a type and a shape: (N, C) from the
features, (Ho, Wo) from the kernels (which carry the output size by contract), or computed from the features'
(H, W), ``scale_factor`` and ``mode`` when the kernels' spatial dims are unknown.
"""

from __future__ import annotations

import onnx
import onnx.defs
from onnx import TypeProto, helper
from onnx.shape_inference import InferenceContext

from .contract import MODES, attribute_problem, lenient_inference, output_extent, shape_problem

__all__ = ["DOMAIN", "OP_TYPE", "OPSET_VERSION", "MODES", "TENSOR_TYPES", "register_schema", "carafe_schema"]

DOMAIN = "carafe"
OP_TYPE = "CARAFE"
OPSET_VERSION = 1
TENSOR_TYPES = ("tensor(float16)", "tensor(bfloat16)", "tensor(float)", "tensor(double)")

_DOC = """Content-aware reassembly of features (CARAFE, mode="up"; CARAFE++, mode="down").

out[n, c, i', j'] = sum over dy, dx in [-r, r] of kernels[n, g*k*k + (dy+r)*k + (dx+r), i', j'] * features[n, c, i+dy, j+dx]
with r = k // 2, g = c // (C / group), zero outside the features, (i, j) = (i' // s, j' // s) for "up" (output s*H x s*W)
and (s*i', s*j') for "down" (output ceil(H/s) x ceil(W/s)). kernels must already be normalized."""


def _attr_int(ctx: InferenceContext, name: str, default: int | None) -> int | None:
    a = ctx.get_attribute(name)
    return default if a is None else a.i


def _fail(msg: str):
    raise onnx.shape_inference.InferenceError(f"[ShapeInferenceError] (op_type:{OP_TYPE}): {msg}")


def _infer(ctx: InferenceContext) -> None:
    features = ctx.get_input_type(0)
    kernels = ctx.get_input_type(1)
    if features is None or not features.HasField("tensor_type"):
        return
    k = _attr_int(ctx, "kernel_size", None)
    group = _attr_int(ctx, "group", 1)
    s = _attr_int(ctx, "scale_factor", 2)
    mode_attr = ctx.get_attribute("mode")
    mode = mode_attr.s.decode(errors="replace") if mode_attr is not None else "up"
    # validate_carafe_nodes runs inference leniently and checks each node itself, naming it
    lenient = lenient_inference()
    problem = "the required attribute kernel_size is missing" if k is None else attribute_problem(k, group, s, mode)
    if problem:
        if lenient:
            return
        _fail(problem)

    out = TypeProto()
    out.tensor_type.elem_type = features.tensor_type.elem_type
    if not features.tensor_type.HasField("shape"):
        ctx.set_output_type(0, out)
        return
    fdims = list(features.tensor_type.shape.dim)
    kdims = None
    if kernels is not None and kernels.HasField("tensor_type") and kernels.tensor_type.HasField("shape"):
        kdims = list(kernels.tensor_type.shape.dim)

    def ints(dims):
        return None if dims is None else [d.dim_value if d.HasField("dim_value") else None for d in dims]

    problem = shape_problem(k, group, s, mode, ints(fdims), ints(kdims))
    if problem:
        if lenient:
            return
        _fail(problem)

    shape = out.tensor_type.shape
    for d in fdims[:2]:
        shape.dim.add().CopyFrom(d)
    for axis in (2, 3):
        dim = shape.dim.add()
        src = fdims[axis]
        if src.HasField("dim_value"):
            dim.dim_value = output_extent(src.dim_value, s, mode)
        elif kdims is not None and (kdims[axis].HasField("dim_value") or kdims[axis].HasField("dim_param")):
            dim.CopyFrom(kdims[axis])
    ctx.set_output_type(0, out)


def carafe_schema() -> onnx.defs.OpSchema:
    P = onnx.defs.OpSchema.FormalParameter
    A = onnx.defs.OpSchema.Attribute
    T = onnx.defs.OpSchema.AttrType
    schema = onnx.defs.OpSchema(
        OP_TYPE,
        DOMAIN,
        OPSET_VERSION,
        doc=_DOC,
        inputs=[P("features", "T", "(N, C, H, W)"), P("kernels", "T", "(N, group*kernel_size^2, Ho, Wo), normalized")],
        outputs=[P("output", "T", "(N, C, Ho, Wo)")],
        type_constraints=[("T", list(TENSOR_TYPES), "features, kernels and output share one float type")],
        attributes=[
            A("kernel_size", T.INT, "odd reassembly kernel size k", required=True),
            A("group", helper.make_attribute("group", 1), "channel groups sharing one kernel"),
            A("scale_factor", helper.make_attribute("scale_factor", 2), "integer scale s"),
            A("mode", helper.make_attribute("mode", "up"), '"up" (CARAFE) or "down" (CARAFE++)'),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer)
    return schema


def register_schema() -> None:
    """Register ``carafe::CARAFE`` version 1 once per process (safe to call again)."""
    if onnx.defs.has(OP_TYPE, OPSET_VERSION, DOMAIN):
        return
    onnx.defs.register_schema(carafe_schema())
