"""The default-domain opset of a file: the lowest one that holds its graph, and moving a file to another one.

``lowest_opset``: every standard op of the graph (subgraphs included) keeps the definition it has at the file's
opset down to that op's ``since_version``; the largest of those is the lowest opset at which the file means the same,
so setting the import there changes nothing but the number (a dynamo export at opset 20 whose newest op is Reshape-19
is an opset-19 file). ``set_opset`` relabels where that holds and uses ``onnx.version_converter`` where the ops must
change (up for the CARAFE function's opset, down for ONNX Runtime 1.16's newest).
"""

from __future__ import annotations

import onnx
from onnx import defs

from ..errors import DeployError
from .validate import walk_nodes

__all__ = ["ORT_LOWEST_MAX_OPSET", "default_opset", "lowest_opset", "set_opset"]

# the newest default-domain opset ONNX Runtime 1.16 (the oldest supported) reads
ORT_LOWEST_MAX_OPSET = 19
_DEFAULT = ("", "ai.onnx")


def default_opset(model: onnx.ModelProto) -> int | None:
    return next((imp.version for imp in model.opset_import if imp.domain in _DEFAULT), None)


def lowest_opset(model: onnx.ModelProto) -> int | None:
    """The lowest default-domain opset whose op definitions are those the file uses; ``None`` when it cannot be told
    (no default import, an op this onnx does not know, or model-local functions other than CARAFE's, which import
    the model's opset themselves)."""
    opset = default_opset(model)
    if opset is None or any(not (f.domain == "carafe" and f.name == "CARAFE") for f in model.functions):
        return None
    lowest = 1
    for node, _ in walk_nodes(model, functions=False):
        if node.domain not in _DEFAULT:
            continue
        try:
            lowest = max(lowest, defs.get_schema(node.op_type, opset, "").since_version)
        except defs.SchemaError:
            return None
    return lowest


def _same_definitions(model: onnx.ModelProto, current: int, opset: int) -> bool:
    """Whether every standard op of the graph has the same definition at ``opset`` as at ``current`` (either way)."""
    if any(not (f.domain == "carafe" and f.name == "CARAFE") for f in model.functions):
        return False
    for node, _ in walk_nodes(model, functions=False):
        if node.domain not in _DEFAULT:
            continue
        try:
            if defs.get_schema(node.op_type, current, "").since_version != \
                    defs.get_schema(node.op_type, opset, "").since_version:
                return False
        except defs.SchemaError:
            return False
    return True


def _relabel(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    for imp in model.opset_import:
        if imp.domain in _DEFAULT:
            imp.version = opset
    return model


def set_opset(model: onnx.ModelProto, opset: int, notes: list[str], why: str) -> onnx.ModelProto:
    """``model`` at default-domain opset ``opset`` (in place where a relabel does; else a converted copy), with a note
    saying what changed and why; ``DeployError`` when ``onnx.version_converter`` cannot convert it."""
    current = default_opset(model)
    if current is None or current == opset:
        return model
    if _same_definitions(model, current, opset):
        notes.append(f"ONNX opset {current} -> {opset} ({why}; no op changes between them)")
        return _relabel(model, opset)
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as exc:  # noqa: BLE001 -- the converter raises several types
        raise DeployError(f"the model uses ONNX opset {current}; {why}, and onnx.version_converter could not convert "
                          f"it to {opset}: {exc}") from exc
    notes.append(f"ONNX opset {current} -> {opset} ({why}; onnx.version_converter)")
    return converted
