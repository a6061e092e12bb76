"""mmcv interop: ``mmcv::MMCVCARAFE`` / ``mmcv::MMCVCARAFENaive`` <-> ``carafe::CARAFE`` (CONTRACT §2).

mmcv's ``CARAFEFunction.symbolic`` (and mmdeploy, which reuses it) emits
``mmcv::MMCVCARAFE(features, masks; kernel_size:int, group_size:int, scale_factor:float)``, an up-sampling CARAFE
that only runs where mmcv's custom-op library is loaded. ``convert_mmcv(model)`` turns those nodes into
``carafe::CARAFE`` with the portable function, so ONNX Runtime runs the file as it is; ``convert_mmcv(model,
to="mmcv")`` goes back, for tools that expect mmcv's node (mode="down" has no mmcv equivalent and is refused).
"""

from __future__ import annotations

import copy

import onnx
from onnx import helper

from ..errors import DeployError
from .function import MIN_OPSET
from .forms import _set_carafe_import, carafe_nodes, to_plugin, to_portable
from .schema import DOMAIN, OP_TYPE, OPSET_VERSION, register_schema
from .validate import MMCV_DOMAIN, MMCV_OP_TYPES, validate_carafe_nodes, validate_mmcv_nodes, walk_nodes

__all__ = ["convert_mmcv", "rewrite_mmcv_nodes", "MMCV_DOMAIN", "MMCV_OP_TYPES"]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _where(node: onnx.NodeProto) -> str:
    return f"node {node.name or '(unnamed)'} ({node.domain}::{node.op_type})"


def _mmcv_to_carafe(node: onnx.NodeProto) -> None:
    """Rewrite one node (already held against mmcv's attributes by validate_mmcv_nodes)."""
    attrs = _attrs(node)
    node.op_type = OP_TYPE
    node.domain = DOMAIN
    del node.attribute[:]
    node.attribute.extend(
        [
            helper.make_attribute("kernel_size", int(attrs["kernel_size"])),
            helper.make_attribute("group", int(attrs.get("group_size", 1))),
            helper.make_attribute("scale_factor", int(attrs.get("scale_factor", 2))),
            helper.make_attribute("mode", "up"),
        ]
    )


def _carafe_to_mmcv(node: onnx.NodeProto) -> None:
    attrs = _attrs(node)
    mode = attrs.get("mode", b"up")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "up":
        raise DeployError(f"{_where(node)} has mode={mode!r}; mmcv's MMCVCARAFE only up-samples")
    node.op_type = "MMCVCARAFE"
    node.domain = MMCV_DOMAIN
    del node.attribute[:]
    node.attribute.extend(
        [
            helper.make_attribute("kernel_size", int(attrs["kernel_size"])),
            helper.make_attribute("group_size", int(attrs.get("group", 1))),
            helper.make_attribute("scale_factor", float(attrs.get("scale_factor", 2))),
        ]
    )


def _upgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """mmcv/mmdeploy files are often opset 11; the CARAFE function needs MIN_OPSET. Upgrade the default domain."""
    from .opsets import default_opset, set_opset

    current = default_opset(model)
    if current is None or current >= MIN_OPSET:
        return model
    return set_opset(model, MIN_OPSET, [], f"the CARAFE function needs >= {MIN_OPSET}")


def rewrite_mmcv_nodes(model: onnx.ModelProto) -> int:
    """Validate, then rewrite in place every ``mmcv::MMCVCARAFE`` / ``MMCVCARAFENaive`` node (subgraphs and
    model-local functions included) as ``carafe::CARAFE``; the mmcv import goes when nothing uses it. Returns the
    number of nodes rewritten."""
    validate_mmcv_nodes(model)  # first: the rewrite takes mmcv's attributes as ints
    nodes = [n for n, _ in walk_nodes(model) if n.domain == MMCV_DOMAIN and n.op_type in MMCV_OP_TYPES]
    for node in nodes:
        _mmcv_to_carafe(node)
    _import_carafe_in_functions(model)
    if not any(n.domain == MMCV_DOMAIN for n, _ in walk_nodes(model)):
        kept = [imp for imp in model.opset_import if imp.domain != MMCV_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    return len(nodes)


def convert_mmcv(model: onnx.ModelProto | str, to: str = "carafe") -> onnx.ModelProto:
    """Convert a model's CARAFE nodes between mmcv's and this package's form; returns a new model.

    ``to="carafe"``: every ``mmcv::MMCVCARAFE`` / ``MMCVCARAFENaive`` becomes ``carafe::CARAFE`` (mode "up") and the
    portable function is added. ``to="mmcv"``: every ``carafe::CARAFE`` becomes ``mmcv::MMCVCARAFE`` and the
    CARAFE function is removed. ``model`` may be a ``ModelProto`` or a path.
    """
    register_schema()
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from .files import load_model

        model = load_model(model)
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto or a path, got {type(model).__name__}")
    if to not in ("carafe", "mmcv"):
        raise ValueError(f"to must be 'carafe' or 'mmcv', got {to!r}")
    model = copy.deepcopy(model)
    if to == "carafe":
        converted = rewrite_mmcv_nodes(model)
        _set_carafe_import(model, bool(carafe_nodes(model)))
        return to_portable(_upgrade_opset(model)) if converted or carafe_nodes(model) else model
    validate_carafe_nodes(model)
    for node in [n for n, _ in walk_nodes(model) if n.domain == DOMAIN and n.op_type == OP_TYPE]:
        _carafe_to_mmcv(node)
    to_plugin(model)
    _set_carafe_import(model, False)
    if not any(imp.domain == MMCV_DOMAIN for imp in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MMCV_DOMAIN, 1))
    return model


def _import_carafe_in_functions(model: onnx.ModelProto) -> None:
    """A model-local function whose body now holds carafe::CARAFE nodes must import the carafe domain itself."""
    for fn in model.functions:
        if any(n.domain == DOMAIN and n.op_type == OP_TYPE for n in fn.node) and \
                not any(imp.domain == DOMAIN for imp in fn.opset_import):
            fn.opset_import.append(helper.make_opsetid(DOMAIN, OPSET_VERSION))
