"""The three forms of a model's CARAFE nodes (CONTRACT §2), and turning one into another; no torch needed.

* ``plugin``: each op is one ``carafe::CARAFE`` node (for TensorRT with the plugin, or any runtime with a kernel);
* ``portable``: the same nodes plus the model-local function ``carafe::CARAFE`` in standard ops
  (:mod:`.function`), so ONNX Runtime (CPU, CUDA) runs the file with no custom library;
* ``decomposed``: the portable model with the function inlined: standard ops only.

The detectors' plugin nodes (``carafe::MultiLevelRoIAlign``, ``carafe::BatchedNMS``, :mod:`.detection_nodes`) take
the same three forms: without their functions, with them, inlined.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.inliner
import onnx.numpy_helper

from ..errors import DeployError
from . import detection_nodes
from .function import MIN_OPSET, carafe_function
from .schema import DOMAIN, OP_TYPE, OPSET_VERSION
from .validate import walk_nodes

__all__ = ["EXPORT_MODES", "carafe_nodes", "to_plugin", "to_portable", "to_decomposed", "inline_detection_nodes",
           "attach_detection_functions"]

EXPORT_MODES = ("plugin", "portable", "decomposed")


def carafe_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The model's ``carafe::CARAFE`` nodes: the main graph's and those in its subgraphs (If/Loop/Scan bodies)."""
    return [n for n, _ in walk_nodes(model, functions=False) if n.domain == DOMAIN and n.op_type == OP_TYPE]


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise DeployError("the ONNX model imports no default-domain opset")


def _set_carafe_import(model: onnx.ModelProto, present: bool) -> None:
    kept = [imp for imp in model.opset_import if imp.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    if present:
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, OPSET_VERSION))


def _drop_carafe_function(model: onnx.ModelProto) -> None:
    """Drops the functions of this package's nodes (CARAFE and the detection nodes)."""
    ours = (OP_TYPE, *detection_nodes.NODE_TYPES)
    kept = [f for f in model.functions if not (f.domain == DOMAIN and f.name in ours)]
    del model.functions[:]
    model.functions.extend(kept)


_DEFAULTS = {"group": 1, "scale_factor": 2, "mode": "up"}


def _complete_attributes(model: onnx.ModelProto) -> None:
    """Write the schema defaults onto CARAFE nodes that leave attributes out: plugin creators and the ONNX reference
    evaluator (which ignores function attribute defaults) then see every field."""
    for node in carafe_nodes(model):
        present = {a.name for a in node.attribute}
        for name, value in _DEFAULTS.items():
            if name not in present:
                node.attribute.append(onnx.helper.make_attribute(name, value))
    detection_nodes.complete_attributes(model)


def _has_custom_nodes(model: onnx.ModelProto) -> bool:
    return bool(carafe_nodes(model) or detection_nodes.detection_nodes(model))


def to_plugin(model: onnx.ModelProto) -> onnx.ModelProto:
    """The CARAFE nodes without the function (in place; returns the model)."""
    _complete_attributes(model)
    _drop_carafe_function(model)
    _set_carafe_import(model, _has_custom_nodes(model))
    return model


def to_portable(model: onnx.ModelProto) -> onnx.ModelProto:
    """The CARAFE nodes plus the standard-op function, in the model's default opset (in place; returns the model)."""
    _complete_attributes(model)
    _drop_carafe_function(model)
    has_nodes = _has_custom_nodes(model)
    _set_carafe_import(model, has_nodes)
    if has_nodes:
        opset = _default_opset(model)
        if opset < MIN_OPSET:
            raise DeployError(
                f"the model uses ONNX opset {opset}; the CARAFE function needs >= {MIN_OPSET} "
                "(upgrade it with onnx.version_converter.convert_version first)"
            )
        if carafe_nodes(model):
            model.functions.append(carafe_function(opset))
        try:
            model.functions.extend(detection_nodes.detection_functions(model, opset))
        except ValueError as exc:
            raise DeployError(str(exc)) from None
        # model-local functions need IR version >= 8, their attribute defaults >= 9
        model.ir_version = max(model.ir_version, 9)
    return model


def attach_detection_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """The detection nodes' standard-op functions added where they are missing, CARAFE nodes left as they are (in
    place; returns the model): how ONNX Runtime runs a plugin-form detector, whose CARAFE nodes the custom-op library
    computes and whose NMS / RoI Align nodes no library does."""
    if detection_nodes.function_missing(model) is None:
        return model
    opset = _default_opset(model)
    have = {(f.domain, f.name) for f in model.functions}
    try:
        needed = detection_nodes.detection_functions(model, opset)
    except ValueError as exc:
        raise DeployError(str(exc)) from None
    model.functions.extend(f for f in needed if (f.domain, f.name) not in have)
    model.ir_version = max(model.ir_version, 9)
    return model


def to_decomposed(model: onnx.ModelProto) -> onnx.ModelProto:
    """Standard ops only: the portable model with every CARAFE node replaced by the function's body."""
    model = to_portable(model)
    if not _has_custom_nodes(model):
        return model
    ours = [(DOMAIN, OP_TYPE)] + [(DOMAIN, name) for name in detection_nodes.NODE_TYPES]
    inlined = onnx.inliner.inline_selected_functions(model, ours, exclude=False)
    _drop_carafe_function(inlined)
    _set_carafe_import(inlined, False)
    _constants_as_tensors(inlined.graph)
    return inlined


def inline_detection_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its detection nodes (``carafe::MultiLevelRoIAlign``, ``carafe::BatchedNMS``) replaced by their
    functions' standard ops (``NonMaxSuppression``, ``RoiAlign``...), CARAFE nodes left as they are (returns a new
    model; the input is not modified)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not detection_nodes.detection_nodes(out):
        return out
    detection_nodes.complete_attributes(out)
    ours = [(DOMAIN, name) for name in detection_nodes.NODE_TYPES]
    kept = [f for f in out.functions if (f.domain, f.name) not in ours]
    del out.functions[:]
    out.functions.extend(kept)
    try:
        out.functions.extend(detection_nodes.detection_functions(out, _default_opset(out)))
    except ValueError as exc:
        raise DeployError(str(exc)) from None
    out.ir_version = max(out.ir_version, 9)
    inlined = onnx.inliner.inline_selected_functions(out, ours, exclude=False)
    kept = [f for f in inlined.functions if (f.domain, f.name) not in ours]
    del inlined.functions[:]
    inlined.functions.extend(kept)
    _constants_as_tensors(inlined.graph)
    return inlined


_SCALAR_CONSTANTS = {"value_int": np.int64, "value_ints": np.int64, "value_float": np.float32,
                     "value_floats": np.float32}


def _constants_as_tensors(graph: onnx.GraphProto) -> None:
    """Inlining turns the function's ``Constant(value_int=@kernel_size)`` into ``Constant(value_int=5)``; write such
    constants as ``value`` tensors, the form every tool reads (onnxruntime's symbolic_shape_infer reads no other)."""
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
            attr = node.attribute[0]
            if attr.name in _SCALAR_CONSTANTS:
                value = np.array(onnx.helper.get_attribute_value(attr), _SCALAR_CONSTANTS[attr.name])
                del node.attribute[:]
                node.attribute.append(onnx.helper.make_attribute("value", onnx.numpy_helper.from_array(value)))
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _constants_as_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _constants_as_tensors(g)
