"""The ``carafe::CARAFE`` operator schema (DESIGN §2), registered with ``onnx.defs`` on import.

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

__all__ = ["DOMAIN", "OP_TYPE", "OPSET_VERSION", "MODES", "TENSOR_TYPES", "register_schema", "carafe_schema"]

DOMAIN = "carafe"
OP_TYPE = "CARAFE"
OPSET_VERSION = 1
MODES = ("up", "down")
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
    mode = mode_attr.s.decode() if mode_attr is not None else "up"
    if k is None or k < 1 or k % 2 == 0:
        _fail(f"kernel_size must be an odd int >= 1, got {k}")
    if group < 1 or s < 1:
        _fail(f"group and scale_factor must be >= 1, got group={group}, scale_factor={s}")
    if mode not in MODES:
        _fail(f"mode must be one of {MODES}, got {mode!r}")

    out = TypeProto()
    out.tensor_type.elem_type = features.tensor_type.elem_type
    if not features.tensor_type.HasField("shape"):
        ctx.set_output_type(0, out)
        return
    fdims = list(features.tensor_type.shape.dim)
    if len(fdims) != 4:
        _fail(f"features must be 4-D (N, C, H, W), got rank {len(fdims)}")
    kdims = None
    if kernels is not None and kernels.HasField("tensor_type") and kernels.tensor_type.HasField("shape"):
        kdims = list(kernels.tensor_type.shape.dim)
        if len(kdims) != 4:
            _fail(f"kernels must be 4-D (N, G*k*k, Ho, Wo), got rank {len(kdims)}")
        if kdims[1].HasField("dim_value") and kdims[1].dim_value != group * k * k:
            _fail(f"kernels must have group*kernel_size^2 = {group * k * k} channels, got {kdims[1].dim_value}")
    if fdims[1].HasField("dim_value") and fdims[1].dim_value % group:
        _fail(f"features channels ({fdims[1].dim_value}) must be divisible by group ({group})")

    shape = out.tensor_type.shape
    for d in fdims[:2]:
        shape.dim.add().CopyFrom(d)
    for axis in (2, 3):
        dim = shape.dim.add()
        src = fdims[axis]
        if src.HasField("dim_value"):
            dim.dim_value = src.dim_value * s if mode == "up" else -(-src.dim_value // s)
        elif kdims is not None and (kdims[axis].HasField("dim_value") or kdims[axis].HasField("dim_param")):
            dim.CopyFrom(kdims[axis])
        if kdims is not None and kdims[axis].HasField("dim_value") and dim.HasField("dim_value"):
            if kdims[axis].dim_value != dim.dim_value:
                _fail(
                    f"kernels spatial dim {axis} is {kdims[axis].dim_value}, but mode={mode!r} with "
                    f"scale_factor={s} gives {dim.dim_value} for features dim {src.dim_value}"
                )
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
