"""What a quantized (explicit Q/DQ) ONNX file holds around its CARAFE nodes, in graph terms only (no runtime).

TensorRT and TensorRT-RTX take INT8 (and FP8) through explicit ``QuantizeLinear``/``DequantizeLinear`` nodes. For a
CARAFE model the placement that keeps it accurate (docs/QUANTIZATION.md):

* the ``carafe::CARAFE`` node computes in floating point: its features may come dequantized (``DequantizeLinear`` ->
  CARAFE) and its output may be quantized again for the next INT8 layer (CARAFE -> ``QuantizeLinear``);
* its kernels input stays floating point from the ``Softmax`` that normalises it to the node: each output pixel is a
  convex combination of k² taps, and kernels rounded to INT8 steps (1/127 of the largest) no longer sum to 1.

:func:`kernel_path` finds the nodes between each CARAFE node's kernels input and its Softmax (the quantizer leaves
them out); :func:`carafe_placements` says, per CARAFE node, how the file treats it; :func:`quantized_precision` names a
file's quantized type ("int8", "fp8", ...) for labels and sidecars.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx

from .schema import DOMAIN, OP_TYPE

__all__ = ["QDQ_OPS", "LAYOUT_OPS", "CarafePlacement", "kernel_path", "carafe_placements", "quantized_precision",
           "qdq_counts", "name_unnamed_nodes"]

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# ops that move or relabel the kernels without changing a value: the pixel shuffle of CARAFEPack (DepthToSpace, or
# Reshape/Transpose), the exporters' views; the walk from a CARAFE node back to its Softmax goes through these only
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "DepthToSpace", "SpaceToDepth", "Squeeze", "Unsqueeze", "Flatten",
                        "Identity", "Cast", "Slice", "Concat", "Split", "Expand"})

_TYPE_LABELS = {
    onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "int8",
    onnx.TensorProto.INT16: "int16", onnx.TensorProto.UINT16: "int16",
    onnx.TensorProto.FLOAT8E4M3FN: "fp8", onnx.TensorProto.FLOAT8E5M2: "fp8",
    onnx.TensorProto.FLOAT8E4M3FNUZ: "fp8", onnx.TensorProto.FLOAT8E5M2FNUZ: "fp8",
}
for _name in ("INT4", "UINT4"):  # IR 10 types: absent from older onnx
    if hasattr(onnx.TensorProto, _name):
        _TYPE_LABELS[getattr(onnx.TensorProto, _name)] = "int4"


def _is_carafe(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type == OP_TYPE


def _label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index} {node.op_type}"


def name_unnamed_nodes(model: onnx.ModelProto) -> int:
    """Give every unnamed main-graph node a unique name (``<op>_<index>``), in place: the quantizer excludes nodes by
    name. Returns how many were named."""
    taken = {n.name for n in model.graph.node if n.name}
    named = 0
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            named += 1
    return named


def _producers(graph: onnx.GraphProto) -> dict[str, tuple[int, onnx.NodeProto]]:
    return {out: (i, n) for i, n in enumerate(graph.node) for out in n.output if out}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            if name:
                out.setdefault(name, []).append(n)
    return out


def kernel_path(model: onnx.ModelProto, node: onnx.NodeProto, producers=None) -> tuple[list[str], str | None]:
    """(labels of the nodes from ``node``'s kernels input back to and including its ``Softmax``, the Softmax's label);
    the Softmax is ``None`` when the walk through :data:`LAYOUT_OPS` (and Q/DQ nodes, so that a file quantized
    elsewhere is read too) meets another op first: those kernels are not normalised by a Softmax this file shows."""
    producers = producers if producers is not None else _producers(model.graph)
    path, frontier, seen = [], [node.input[1]], set()
    softmax = None
    while frontier:
        tensor = frontier.pop()
        if tensor not in producers or tensor in seen:
            continue
        seen.add(tensor)
        index, prod = producers[tensor]
        label = _label(prod, index)
        if prod.op_type == "Softmax" and prod.domain in ("", "ai.onnx"):
            path.append(label)
            softmax = label
            continue
        if prod.domain not in ("", "ai.onnx") or (prod.op_type not in LAYOUT_OPS and prod.op_type not in QDQ_OPS):
            return path, None
        path.append(label)
        # a layout op's data is its first input (shape/axes/index inputs are not kernels); Concat joins several
        frontier.extend(prod.input if prod.op_type == "Concat" else prod.input[:1])
    return path, softmax


@dataclass
class CarafePlacement:
    """How a file treats one CARAFE node (main graph)."""

    node: str
    features: str  # "dequantized" (a DequantizeLinear feeds it) or "float"
    output: str  # "quantized" (a QuantizeLinear reads it), "float" (only float consumers) or "graph output"
    kernels: str  # "float" (no Q/DQ between the Softmax and the node) or "quantized"
    softmax: str | None  # the Softmax the kernels come from; None: not found through layout ops
    kernel_path: list[str] = field(default_factory=list)  # Softmax .. the node's kernels input, nearest last
    quantized_on_kernel_path: list[str] = field(default_factory=list)  # Q/DQ nodes on that path

    @property
    def kernels_sum_kept(self) -> bool:
        """The Softmax's output reaches the node unrounded, so each pixel's k² weights still sum to 1 (to float
        rounding)."""
        return self.softmax is not None and not self.quantized_on_kernel_path

    def as_dict(self) -> dict:
        return {**asdict(self), "kernels_sum_kept": self.kernels_sum_kept}


def carafe_placements(model: onnx.ModelProto) -> list[CarafePlacement]:
    """One :class:`CarafePlacement` per ``carafe::CARAFE`` node of the main graph."""
    graph = model.graph
    producers, consumers = _producers(graph), _consumers(graph)
    outputs = {o.name for o in graph.output}
    by_label = {_label(n, i): n for i, n in enumerate(graph.node)}
    found = []
    for index, node in enumerate(graph.node):
        if not _is_carafe(node):
            continue
        feeder = producers.get(node.input[0])
        features = "dequantized" if feeder is not None and feeder[1].op_type == "DequantizeLinear" else "float"
        readers = consumers.get(node.output[0], [])
        if any(r.op_type == "QuantizeLinear" for r in readers):
            output = "quantized"
        else:
            output = "graph output" if node.output[0] in outputs and not readers else "float"
        path, softmax = kernel_path(model, node, producers)
        path.reverse()
        qdq = [label for label in path if by_label[label].op_type in QDQ_OPS]
        found.append(CarafePlacement(_label(node, index), features, output, "quantized" if qdq else "float", softmax,
                                     path, qdq))
    return found


def qdq_counts(model: onnx.ModelProto) -> dict[str, int]:
    """``{"QuantizeLinear": n, "DequantizeLinear": m}`` in the main graph."""
    counts = dict.fromkeys(QDQ_OPS, 0)
    for node in model.graph.node:
        if node.op_type in QDQ_OPS and node.domain in ("", "ai.onnx", "com.microsoft"):
            counts[node.op_type] += 1
    return counts


def quantized_precision(model: onnx.ModelProto) -> str | None:
    """The quantized type of a file's ``DequantizeLinear`` nodes ("int8", "fp8", "int4", or several joined by "+"),
    read from their zero point or quantized input where it is an initializer or a typed value; ``None`` without
    any (a float file)."""
    types = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    producers = _producers(model.graph)
    labels = set()
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        candidates = [node.input[2]] if len(node.input) > 2 and node.input[2] else []
        candidates.append(node.input[0])
        elem = next((types[c] for c in candidates if c in types), None)
        if elem is None and node.input[0] in producers:  # Q -> DQ: the Q's zero point carries the type
            q = producers[node.input[0]][1]
            if q.op_type == "QuantizeLinear" and len(q.input) > 2 and q.input[2] in types:
                elem = types[q.input[2]]
        labels.add(_TYPE_LABELS.get(elem, "int8") if elem is not None else "int8")  # no zero point: uint8 default
    return "+".join(sorted(labels)) if labels else None
