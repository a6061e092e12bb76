"""Every ``carafe::CARAFE`` node of a graph as its own unrolled standard-op subgraph: the form TensorRT builds when
the plugin is not used.

The generic function (:mod:`.function`) serves every node of a model with one body, so it cannot know a node's
``kernel_size``, ``scale_factor`` or ``mode`` before run time: it loops (a ``Loop`` over the source rows; the first
body looped over the k² taps with slices at offsets computed from the iteration number, which TensorRT-RTX 1.7 could
not build: ``graphScope.cpp::makeScopeNodesContiguous``). The current body builds, but a TensorRT ``Loop`` runs its
iterations one after another; when a graph is prepared for an engine each node's attributes are known, so each node
is unrolled here into independent layers with constant slices only (docs/TENSORRT.md):

* ``P = Pad(features)`` by r = k // 2 on H and W (zeros: no pad-value input, so it works for every float type);
* "up" (s > 1): ``U = Resize(P, nearest, s x s)`` repeats each padded pixel s x s times (U[i' + ky·s] =
  P[i'//s + ky]), so that tap (ky, kx) reads the plain (N, C, s·H, s·W) window
  ``U[:, :, ky·s : ky·s + s·H, kx·s : kx·s + s·W]``;
  "down": the window is ``P[:, :, ky : ky + H : s, kx : kx + W : s]``, ceil(H/s) x ceil(W/s);
* the kernels are ``Split`` into their k² planes (per group: (N, G, k², Ho, Wo) split on axis 2);
* ``out = window_0 · plane_0 + window_1 · plane_1 + ...``, a chain of ``Add``s; with groups the source is viewed as
  (N, G, C/G, ·, ·) once and the sum reshaped back to (N, C, Ho, Wo).

Slice bounds that depend on H or W are counted from the end of the padded tensor (``-(2r - ky)·s``, or INT64_MAX
for the last tap), so the same constants serve static and dynamic shapes. Nothing k²-times the output is made when
the nodes run in the order written (one window and one product at a time, plus the running sum); ONNX Runtime's
default execution order runs every window's Slice first and holds them all (its PRIORITY_BASED order does not;
measured in docs/TENSORRT.md). TensorRT fuses the whole subgraph.

Every new node and tensor is named after its CARAFE node (``<node>/tap3/window``), and node names are made unique
first: the generic function's expansions repeat the body's names at every call site, which TensorRT's parser warns
about ("A node named ... already exists").
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from ..errors import DeployError
from .schema import DOMAIN, MODES, OP_TYPE

__all__ = ["unroll_carafe_nodes", "MIN_OPSET"]

MIN_OPSET = 13  # Split with its sizes as an input, Resize with an empty roi
_INT64_MAX = 2**63 - 1
_DEFAULTS = {"group": 1, "scale_factor": 2, "mode": "up"}  # the schema's


def _is_carafe(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type == OP_TYPE


def _attributes(node: onnx.NodeProto) -> tuple[int, int, int, str]:
    values = dict(_DEFAULTS)
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        values[attr.name] = value.decode() if isinstance(value, bytes) else value
    k, group, s, mode = (values.get("kernel_size"), values["group"], values["scale_factor"], values["mode"])
    where = f"{DOMAIN}::{OP_TYPE} node {node.name!r}"
    if not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise DeployError(f"{where}: kernel_size must be an odd int >= 1, got {k!r}")
    if not isinstance(group, int) or group < 1 or not isinstance(s, int) or s < 1:
        raise DeployError(f"{where}: group and scale_factor must be ints >= 1, got {group!r} and {s!r}")
    if mode not in MODES:
        raise DeployError(f"{where}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    return k, group, s, mode


class _Subgraph:
    """The nodes and initializers that replace one CARAFE node; every name starts with ``prefix/``."""

    def __init__(self, prefix: str, taken: set[str]):
        self.prefix, self.taken = prefix, taken
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._ints: dict[tuple[int, ...], str] = {}

    def fresh(self, name: str) -> str:
        full, i = f"{self.prefix}/{name}", 1
        while full in self.taken:
            full, i = f"{self.prefix}/{name}_{i}", i + 1
        self.taken.add(full)
        return full

    def ints(self, values) -> str:
        """An int64 initializer; one per distinct value list (the Slice axes and steps repeat k² times)."""
        key = tuple(values)
        if key not in self._ints:
            name = self.fresh(f"const{len(self._ints)}")
            self.initializers.append(helper.make_tensor(name, TensorProto.INT64, [len(key)], list(key)))
            self._ints[key] = name
        return self._ints[key]

    def floats(self, name: str, values) -> str:
        name = self.fresh(name)
        self.initializers.append(helper.make_tensor(name, TensorProto.FLOAT, [len(values)], list(values)))
        return name

    def op(self, op_type: str, inputs, name: str, outputs: int = 1, names: list[str] | None = None,
           **attrs) -> list[str]:
        """One node; its outputs are ``names`` or, by default, ``outputs`` fresh names made from ``name``."""
        if names is None:
            names = [self.fresh(name)] if outputs == 1 else [self.fresh(f"{name}{i}") for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.fresh(f"{name}/{op_type}"),
                                           **attrs))
        return names

    def one(self, op_type: str, inputs, name: str, **attrs) -> str:
        return self.op(op_type, inputs, name, **attrs)[0]


def _unroll(node: onnx.NodeProto, taken: set[str]) -> _Subgraph:
    k, group, s, mode = _attributes(node)
    r, taps = k // 2, k * k
    features, kernels = node.input[0], node.input[1]
    g = _Subgraph(node.name, taken)

    source = features
    if r:
        source = g.one("Pad", [features, g.ints([0, 0, r, r, 0, 0, r, r])], "padded", mode="constant")
    rep, step = (s, 1) if mode == "up" else (1, s)
    if rep > 1:
        source = g.one("Resize", [source, "", g.floats("scales", [1.0, 1.0, rep, rep])], "source", mode="nearest",
                       coordinate_transformation_mode="asymmetric", nearest_mode="floor")

    if group > 1:
        # (N, C, h, w) -> (N, G, C/G, h, w) once; the output size (Ho, Wo) comes from the kernels
        k_shape = g.one("Shape", [kernels], "kernels_shape")
        n = g.one("Slice", [k_shape, g.ints([0]), g.ints([1])], "n")
        out_hw = g.one("Slice", [k_shape, g.ints([2]), g.ints([4])], "out_hw")
        s_shape = g.one("Shape", [source], "source_shape")
        src_hw = g.one("Slice", [s_shape, g.ints([2]), g.ints([4])], "source_hw")
        source = g.one("Reshape", [source, g.one("Concat", [n, g.ints([group, -1]), src_hw], "source_shape5",
                                                  axis=0)], "source5")
        kernels = g.one("Reshape", [kernels, g.one("Concat", [n, g.ints([group, taps]), out_hw], "kernels_shape5",
                                                    axis=0)], "kernels5")
        axes, plane_axis = [3, 4], 2
    else:
        axes, plane_axis = [2, 3], 1
    planes = [kernels] if taps == 1 else g.op("Split", [kernels, g.ints([1] * taps)], "plane", outputs=taps,
                                              axis=plane_axis)

    out = node.output[0]
    total = None
    for t in range(taps):
        ky, kx = divmod(t, k)
        starts = [ky * rep, kx * rep]
        ends = [-(2 * r - ky) * rep or _INT64_MAX, -(2 * r - kx) * rep or _INT64_MAX]
        window = g.one("Slice", [source, g.ints(starts), g.ints(ends), g.ints(axes), g.ints([step, step])],
                       f"tap{t}/window")
        product = g.one("Mul", [window, planes[t]], f"tap{t}/product")
        # a chain of Adds, not one Sum (whose k² inputs must all exist at once); TensorRT parses a Sum into the same
        # chain of adds anyway
        total = product if total is None else g.one("Add", [total, product], f"tap{t}/sum")
    if group > 1:
        g.op("Reshape", [total, g.one("Concat", [n, g.ints([-1]), out_hw], "out_shape", axis=0)], "output",
             names=[out])
    else:
        g.nodes[-1].output[0] = out  # the last Add (or the one product) is the output
    return g


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise DeployError("the ONNX model imports no default-domain opset")


def _nested_carafe(model: onnx.ModelProto) -> str | None:
    """Where a CARAFE node sits outside the main graph (an If/Loop/Scan body), if anywhere."""

    def walk(nodes, where):
        for node in nodes:
            for attr in node.attribute:
                bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
                for body in bodies:
                    inner = f"{where} > {node.op_type} {node.name!r}"
                    if any(_is_carafe(n) for n in body.node):
                        return inner
                    found = walk(body.node, inner)
                    if found:
                        return found
        return None

    found = walk(model.graph.node, "the graph")
    if found:
        return found
    for fn in model.functions:
        if (fn.domain, fn.name) == (DOMAIN, OP_TYPE):
            continue
        if any(_is_carafe(n) for n in fn.node):
            return f"the local function {fn.domain}::{fn.name}"
    return None


def unroll_carafe_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every ``carafe::CARAFE`` node of ``model``'s graph by its unrolled standard-op subgraph, drop the
    ``carafe::CARAFE`` function and opset import (in place; returns ``model``). CARAFE nodes without a name, or
    sharing one, are renamed first.

    ``DeployError`` for a node with invalid attributes, for CARAFE nodes inside a subgraph or another function (which
    this does not rewrite), and for a default opset below :data:`MIN_OPSET`.
    """
    nested = _nested_carafe(model)
    if nested:
        raise DeployError(f"a {DOMAIN}::{OP_TYPE} node sits in {nested}; only nodes of the main graph can be unrolled "
                          "for TensorRT (build with the plugin instead)")
    graph = model.graph
    if any(_is_carafe(n) for n in graph.node):
        opset = _default_opset(model)
        if opset < MIN_OPSET:
            raise DeployError(f"the model uses ONNX opset {opset}; unrolling {DOMAIN}::{OP_TYPE} for TensorRT needs "
                              f">= {MIN_OPSET} (upgrade it with onnx.version_converter.convert_version first)")

    # a CARAFE node's name prefixes everything it becomes, so it must be unique among the node names
    taken = {v for n in graph.node for v in (*n.input, *n.output)}
    taken |= {t.name for t in graph.initializer} | {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    node_names = [n.name for n in graph.node]
    used = set(node_names)
    for i, node in enumerate(graph.node):
        if not _is_carafe(node) or (node.name and node_names.count(node.name) == 1):
            continue
        base = node.name or f"carafe_{i}"
        name, j = base, 1
        while name in used:
            name, j = f"{base}_{j}", j + 1
        node.name = name
        used.add(name)
    taken |= used

    rewritten: list[onnx.NodeProto] = []
    for node in graph.node:
        if not _is_carafe(node):
            rewritten.append(node)
            continue
        sub = _unroll(node, taken)
        rewritten.extend(sub.nodes)
        graph.initializer.extend(sub.initializers)
    del graph.node[:]
    graph.node.extend(rewritten)

    kept = [f for f in model.functions if (f.domain, f.name) != (DOMAIN, OP_TYPE)]
    del model.functions[:]
    model.functions.extend(kept)
    imports = [imp for imp in model.opset_import if imp.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(imports)
    return model
