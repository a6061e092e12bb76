"""One check of every ``carafe::CARAFE`` node against the contract (DESIGN §2), wherever it sits in the graph.

Minimal version written for ``convert``; the hostile-input work owns the full one (same name and signature).
"""

from __future__ import annotations

from typing import Iterator

import onnx
from onnx import helper

from ..errors import DeployError
from .schema import DOMAIN, MODES, OP_TYPE

__all__ = ["validate_carafe_nodes", "iter_all_nodes"]

_ATTRIBUTES = {
    "kernel_size": onnx.AttributeProto.INT,
    "group": onnx.AttributeProto.INT,
    "scale_factor": onnx.AttributeProto.INT,
    "mode": onnx.AttributeProto.STRING,
}


def iter_all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of the subgraphs (If/Loop/Scan bodies) inside it."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_all_nodes(g)


def _where(node: onnx.NodeProto) -> str:
    return f"node {node.name or '(unnamed)'} ({node.domain}::{node.op_type})"


def validate_carafe_nodes(model: onnx.ModelProto) -> int:
    """``DeployError`` naming the node and the problem for a ``carafe::CARAFE`` node outside the contract; returns
    the number of such nodes (subgraphs included)."""
    count = 0
    for node in iter_all_nodes(model.graph):
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            continue
        count += 1
        if len(node.input) != 2 or len(node.output) != 1:
            raise DeployError(f"{_where(node)}: expected 2 inputs and 1 output, got {len(node.input)} and "
                              f"{len(node.output)}")
        attrs = {}
        for a in node.attribute:
            if a.name not in _ATTRIBUTES:
                raise DeployError(f"{_where(node)} has an attribute the contract does not define: {a.name!r}")
            if a.type != _ATTRIBUTES[a.name]:
                raise DeployError(f"{_where(node)}: attribute {a.name!r} must be "
                                  f"{onnx.AttributeProto.AttributeType.Name(_ATTRIBUTES[a.name]).lower()}")
            attrs[a.name] = helper.get_attribute_value(a)
        k = attrs.get("kernel_size")
        if k is None:
            raise DeployError(f"{_where(node)} has no kernel_size attribute")
        if k < 1 or k % 2 == 0:
            raise DeployError(f"{_where(node)}: kernel_size must be odd and >= 1, got {k}")
        for name in ("group", "scale_factor"):
            if attrs.get(name, 1) < 1:
                raise DeployError(f"{_where(node)}: {name} must be >= 1, got {attrs[name]}")
        mode = attrs.get("mode", b"up")
        mode = mode.decode(errors="replace") if isinstance(mode, bytes) else mode
        if mode not in MODES:
            raise DeployError(f"{_where(node)}: mode must be one of {MODES}, got {mode!r}")
    return count
