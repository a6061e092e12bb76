"""What an ONNX file is, read from the file alone: its precision (fp32, fp16, bf16, or int8 / fp8 / int4 when it holds
QuantizeLinear/DequantizeLinear nodes) and the form of its CARAFE nodes (CONTRACT §2). ``evaluate`` labels every file
it is given with these, whoever wrote it (``export``, ``quantize``, another tool)."""

from __future__ import annotations

import onnx

from .forms import carafe_nodes
from .schema import DOMAIN, OP_TYPE
from .validate import walk_nodes

__all__ = ["precision", "carafe_form", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8", "int4")

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_QUANTIZED = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "int8", onnx.TensorProto.INT16: "int16",
              onnx.TensorProto.UINT16: "int16", onnx.TensorProto.FLOAT8E4M3FN: "fp8",
              onnx.TensorProto.FLOAT8E4M3FNUZ: "fp8", onnx.TensorProto.FLOAT8E5M2: "fp8",
              onnx.TensorProto.FLOAT8E5M2FNUZ: "fp8"}
for _name in ("INT4", "UINT4"):  # onnx >= 1.16
    if hasattr(onnx.TensorProto, _name):
        _QUANTIZED[getattr(onnx.TensorProto, _name)] = "int4"
_FLOATS = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.DOUBLE: "fp32", onnx.TensorProto.FLOAT16: "fp16",
           onnx.TensorProto.BFLOAT16: "bf16"}


def _quantized_type(model: onnx.ModelProto) -> str | None:
    """The integer/fp8 type of the Q/DQ nodes' zero points (int8 when a node has none: ONNX's default is uint8)."""
    qdq = [n for n, _ in walk_nodes(model) if n.op_type in _QDQ and n.domain in ("", "ai.onnx", "com.microsoft")]
    if not qdq:
        return None
    inits = {t.name: t for t in model.graph.initializer}
    constants = {n.output[0]: a.t for n, _ in walk_nodes(model) if n.op_type == "Constant"
                 for a in n.attribute if a.name == "value"}
    found = set()
    for node in qdq:
        zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
        tensor = inits.get(zero_point) or constants.get(zero_point)
        found.add(_QUANTIZED.get(tensor.data_type, "int8") if tensor is not None else "int8")
    # the narrowest type the file quantizes to names it (a mixed int4-weights / int8-activations file is int4)
    for name in ("int4", "fp8", "int8", "int16"):
        if name in found:
            return name
    return "int8"


def precision(model: onnx.ModelProto) -> str:
    """``int8`` (``fp8``, ``int4``) for a file with Q/DQ nodes; else the float type most of the weights have
    (``fp16`` for an fp16 export, whose inputs and outputs stay float32), the inputs' when it has no float weights."""
    quantized = _quantized_type(model)
    if quantized:
        return quantized
    counts: dict[str, int] = {}
    for init in model.graph.initializer:
        name = _FLOATS.get(init.data_type)
        if name:
            size = 1
            for d in init.dims:
                size *= d
            counts[name] = counts.get(name, 0) + size
    if counts:
        return max(counts, key=counts.get)
    for value in model.graph.input:
        name = _FLOATS.get(value.type.tensor_type.elem_type)
        if name:
            return name
    return "fp32"


def carafe_form(model: onnx.ModelProto) -> str:
    """``plugin`` (CARAFE nodes without their function: TensorRT's plugin, or ONNX Runtime's custom-op library),
    ``portable`` (with it), or ``decomposed`` (no CARAFE node: a decomposed export, or a model without CARAFE)."""
    if not carafe_nodes(model):
        return "decomposed"
    has_function = any(f.domain == DOMAIN and f.name == OP_TYPE for f in model.functions)
    return "portable" if has_function else "plugin"
