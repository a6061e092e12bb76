"""What an ONNX file is, read from the file alone: its precision (fp32, fp16, bf16, or int8 / fp8 / int4 when it holds
QuantizeLinear/DequantizeLinear nodes) and the form of its CARAFE nodes (CONTRACT §2). ``evaluate`` labels every file
it is given with these, whoever wrote it (``export``, ``quantize``, another tool)."""

from __future__ import annotations

import onnx

from .forms import carafe_nodes
from .quantized import quantized_precision
from .schema import DOMAIN, OP_TYPE

__all__ = ["precision", "carafe_form", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8", "int4")

_FLOATS = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.DOUBLE: "fp32", onnx.TensorProto.FLOAT16: "fp16",
           onnx.TensorProto.BFLOAT16: "bf16"}


def _quantized_type(model: onnx.ModelProto) -> str | None:
    """The type a file with Q/DQ nodes quantizes to (:func:`.quantized.quantized_precision`); the narrowest where it
    has several (a mixed int4-weights / int8-activations file is int4)."""
    label = quantized_precision(model)
    if not label:
        return None
    found = set(label.split("+"))
    return next((name for name in ("int4", "fp8", "int8", "int16") if name in found), "int8")


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
