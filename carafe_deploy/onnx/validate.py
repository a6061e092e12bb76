"""One validation of a model's CARAFE nodes, before anything runs: ``check``, ``build`` (its dry run too),
``convert`` and the mmcv converter call it, so a node outside the contract is an error naming the node and the
attribute, never a silent result (ONNX Runtime ignores ``mode``; TensorRT would only fail deep in its build).

``carafe::CARAFE`` is held against its schema (:mod:`.schema`: the attribute names and types, ``kernel_size``
required, each attribute once, two inputs and one output) and its contract (CONTRACT §1-2: odd ``kernel_size`` >= 1,
``group`` and ``scale_factor`` >= 1, ``mode`` exactly ``"up"`` or ``"down"``; where the shapes are known, features
channels divisible by ``group``, kernels with ``group * kernel_size**2`` channels and the spatial size that ``mode``
and ``scale_factor`` give). ``plugin=True`` adds the TensorRT plugin's limits (plugins/common/carafe_params.cpp).
``mmcv::MMCVCARAFE`` / ``MMCVCARAFENaive`` are held against mmcv's attributes (``kernel_size:int``,
``group_size:int``, ``scale_factor:float``, a whole number) and the same contract with mode "up".

Every node is checked: the main graph, the bodies of If/Loop/Scan, and the model-local functions (where an
attribute may refer to the function's own, ``ref_attr_name``, and is checked at the call site instead).
"""

from __future__ import annotations

import math
from typing import Iterator

import onnx
from onnx import AttributeProto

from ..errors import DeployError
from .contract import PLUGIN_LIMITS, attribute_problem, lenient, output_extent, shape_problem
from .files import tensor_nbytes
from .schema import DOMAIN, OP_TYPE, OPSET_VERSION, carafe_schema, register_schema

__all__ = ["validate_carafe_nodes", "validate_mmcv_nodes", "walk_nodes", "attribute_problem", "shape_problem",
           "output_extent", "PLUGIN_LIMITS", "MMCV_DOMAIN", "MMCV_OP_TYPES"]

MMCV_DOMAIN = "mmcv"
MMCV_OP_TYPES = ("MMCVCARAFE", "MMCVCARAFENaive")

_ATTR_TYPE_NAMES = {AttributeProto.INT: "int", AttributeProto.FLOAT: "float", AttributeProto.STRING: "string",
                    AttributeProto.INTS: "ints", AttributeProto.FLOATS: "floats", AttributeProto.STRINGS: "strings",
                    AttributeProto.TENSOR: "tensor", AttributeProto.GRAPH: "graph"}

# ----------------------------------------------------------------------------------------------------------------
# Walking a model


def walk_nodes(model: onnx.ModelProto, functions: bool = True) -> Iterator[tuple[onnx.NodeProto, str]]:
    """(node, where) for every node of the main graph, its subgraphs (If/Loop/Scan bodies) and, with ``functions``,
    the model-local functions; ``where`` says which ("graph", "graph > If 'cond' then_branch", "function f")."""

    def walk(nodes, where):
        for node in nodes:
            yield node, where
            for attr in node.attribute:
                label = f"{where} > {node.op_type} {node.name!r} {attr.name}"
                if attr.type == AttributeProto.GRAPH:
                    yield from walk(attr.g.node, label)
                elif attr.type == AttributeProto.GRAPHS:
                    for i, g in enumerate(attr.graphs):
                        yield from walk(g.node, f"{label}[{i}]")

    yield from walk(model.graph.node, "graph")
    if functions:
        for fn in model.functions:
            yield from walk(fn.node, f"function {fn.domain}::{fn.name}")


def _name(node: onnx.NodeProto, where: str) -> str:
    place = "" if where == "graph" else f" in {where}"
    return f"node {node.name or '(unnamed)'!r} ({node.domain}::{node.op_type}){place}"


def _attributes(node: onnx.NodeProto, what: str, allowed: dict[str, tuple[int, ...]], in_function: bool) -> dict:
    """``{name: AttributeProto}``; an error for a duplicate, an unknown name or a wrong type (``allowed``: name ->
    the attribute types it may have)."""
    out: dict[str, AttributeProto] = {}
    for attr in node.attribute:
        if attr.name in out:
            raise DeployError(f"{what}: attribute {attr.name!r} is given twice")
        if attr.name not in allowed:
            raise DeployError(f"{what}: unknown attribute {attr.name!r} (it has {', '.join(allowed)})")
        if attr.ref_attr_name:
            if not in_function:
                raise DeployError(f"{what}: attribute {attr.name!r} refers to {attr.ref_attr_name!r} outside a "
                                  "function")
        elif attr.type not in allowed[attr.name]:
            raise DeployError(f"{what}: attribute {attr.name!r} must be "
                              f"{_type_names(allowed[attr.name])}, got {_ATTR_TYPE_NAMES.get(attr.type, attr.type)}"
                              f"{_value_hint(attr)}")
        out[attr.name] = attr
    return out


def _type_names(types: tuple[int, ...]) -> str:
    return " or ".join(f"an {_ATTR_TYPE_NAMES[t]}" if _ATTR_TYPE_NAMES[t][0] == "i" else f"a {_ATTR_TYPE_NAMES[t]}"
                       for t in types)


def _value_hint(attr: AttributeProto) -> str:
    try:
        value = onnx.helper.get_attribute_value(attr)
    except Exception:  # noqa: BLE001 -- an undefined attribute type has no value to show
        return ""
    if isinstance(value, float):
        return f" ({value:g})"
    return f" ({value!r})" if not isinstance(value, (onnx.GraphProto, onnx.TensorProto)) else ""


def _string(attr: AttributeProto, what: str) -> str:
    """The string value, exactly: bytes that are not plain UTF-8 text, or a NUL inside, are an error."""
    raw = attr.s
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DeployError(f"{what}: attribute {attr.name!r} is not UTF-8 text ({raw!r})") from None
    if "\0" in text:
        raise DeployError(f"{what}: attribute {attr.name!r} holds a NUL byte ({raw!r})")
    return text


def _io(node: onnx.NodeProto, what: str) -> None:
    if len(node.input) != 2 or not all(node.input):
        raise DeployError(f"{what}: needs 2 inputs (features, kernels), got {list(node.input)}")
    if len(node.output) != 1 or not node.output[0]:
        raise DeployError(f"{what}: needs 1 output, got {list(node.output)}")


# ----------------------------------------------------------------------------------------------------------------
# Shapes of the CARAFE nodes' inputs


def _dims(value: onnx.ValueInfoProto) -> list | None:
    t = value.type.tensor_type if value.type.HasField("tensor_type") else None
    if t is None or not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


_SMALL_TENSOR = 4096  # bytes: shape constants (Reshape targets...) stay, weights go


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its large initializers' values left out (names, types and dims kept): what shape inference
    needs, without serializing the weights (most of a big model's bytes)."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph, src = light.graph, model.graph
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(graph, field).extend(getattr(src, field))
    for t in src.initializer:
        if tensor_nbytes(t) <= _SMALL_TENSOR:  # never ByteSize(): it walks a 2 GB weight
            graph.initializer.append(t)
        else:
            graph.initializer.append(onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims))
    return light


def _pin_inputs(model: onnx.ModelProto, input_shapes: dict) -> None:
    """Give the graph inputs named in ``input_shapes`` those concrete dims (in place; the rank must match)."""
    for vi in model.graph.input:
        shape = input_shapes.get(vi.name)
        if shape is None or not vi.type.HasField("tensor_type"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue  # the runtime reports a rank mismatch better
        for d, n in zip(dims, shape):
            d.Clear()
            d.dim_value = int(n)


def _known_shapes(model: onnx.ModelProto, inferred: bool, input_shapes: dict | None = None) -> dict[str, list | None]:
    """Tensor name -> dims, from shape inference where it runs (else from what the file declares); with
    ``input_shapes`` (name -> dims) inference starts from those concrete input shapes."""
    source = model
    if inferred:
        try:
            light = _without_weights(model)
            if input_shapes:
                _pin_inputs(light, input_shapes)
                # the file's own (symbolic) intermediate shapes would win over the ones the pinned inputs give
                del light.graph.value_info[:]
            with lenient():
                source = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
        except Exception:  # noqa: BLE001 -- ops without schema, odd files...: the declared shapes still count
            source = model
    shapes: dict[str, list | None] = {}

    def collect(graph: onnx.GraphProto):
        for t in graph.initializer:
            shapes[t.name] = list(t.dims)
        for v in list(graph.input) + list(graph.value_info) + list(graph.output):
            dims = _dims(v)
            if dims is not None:
                shapes.setdefault(v.name, dims)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    collect(attr.g)
                elif attr.type == AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        collect(g)

    collect(source.graph)
    return shapes


# ----------------------------------------------------------------------------------------------------------------
# The validators


_KNOWN_OPS = {(DOMAIN, OP_TYPE)} | {(MMCV_DOMAIN, op) for op in MMCV_OP_TYPES}


def _check_domain(model: onnx.ModelProto) -> None:
    """The ``carafe`` domain exists at version 1 only (CONTRACT §2), and a node that is CARAFE but for the case of
    its domain or type (``Carafe::CARAFE``) is no CARAFE node at all: no runtime, parser or plugin takes it, and
    everything else here would pass it by as a foreign op."""
    imports = [*model.opset_import, *(imp for fn in model.functions for imp in fn.opset_import)]
    for imp in imports:
        if imp.domain == DOMAIN and imp.version != OPSET_VERSION:
            raise DeployError(f"the model imports domain {DOMAIN!r} at version {imp.version}; {DOMAIN}::{OP_TYPE} is "
                              f"defined at version {OPSET_VERSION} only (CONTRACT §2): import it at version "
                              f"{OPSET_VERSION}")
    near = {(d.lower(), o.lower()): (d, o) for d, o in _KNOWN_OPS}
    for node, where in walk_nodes(model):
        known = near.get((node.domain.lower(), node.op_type.lower()))
        if known is not None and known != (node.domain, node.op_type):
            raise DeployError(f"{_name(node, where)}: ONNX domains and op types are case-sensitive, so this is not "
                              f"{known[0]}::{known[1]}, and no runtime, TensorRT parser or plugin takes it: write it "
                              f"as {known[0]}::{known[1]}")


def _carafe_attribute_types() -> dict[str, tuple[int, ...]]:
    """The schema's attributes and their types, in the order people know them (for messages)."""
    attributes = carafe_schema().attributes
    order = [n for n in ("kernel_size", "group", "scale_factor", "mode") if n in attributes]
    return {name: (attributes[name].type,) for name in order + sorted(set(attributes) - set(order))}


def validate_carafe_nodes(model: onnx.ModelProto, *, plugin: bool = False, shapes: bool = True,
                          input_shapes: dict | None = None, measure=None) -> None:
    """``DeployError`` naming the node and the attribute for the first ``carafe::CARAFE`` node outside the schema or
    the contract (module docstring); ``plugin``: also the TensorRT plugin's limits; ``shapes``: check the input
    shapes that shape inference knows; ``input_shapes`` (graph input name -> dims): infer them from these concrete
    inputs, so a dynamic-shape model is checked at the shapes it will run with (a symbolic H proves nothing);
    ``measure(names) -> {name: dims}`` (e.g. one run of the model) is asked for the main graph's CARAFE inputs whose
    dims inference still cannot tell (``Reshape``s of run-time shapes hide them)."""
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"validate_carafe_nodes expects an onnx.ModelProto, got {type(model).__name__}")
    register_schema()
    _check_domain(model)
    types = _carafe_attribute_types()
    defaults = {"group": 1, "scale_factor": 2, "mode": "up"}
    found = []
    for node, where in walk_nodes(model):
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            continue
        what = _name(node, where)
        in_function = where.startswith("function")
        _io(node, what)
        attrs = _attributes(node, what, types, in_function)
        if "kernel_size" not in attrs:
            raise DeployError(f"{what}: the required attribute 'kernel_size' is missing")
        if any(a.ref_attr_name for a in attrs.values()):
            continue  # values come from the function's call site
        values = dict(defaults)
        for name, attr in attrs.items():
            values[name] = _string(attr, what) if name == "mode" else attr.i
        problem = attribute_problem(values["kernel_size"], values["group"], values["scale_factor"], values["mode"],
                                    plugin=plugin)
        if problem:
            raise DeployError(f"{what}: {problem}")
        if not in_function:
            found.append((node, what, values))
    if shapes and found:
        _check_shapes(model, found, input_shapes, measure)


def validate_mmcv_nodes(model: onnx.ModelProto, *, shapes: bool = True) -> None:
    """``DeployError`` naming the node and the attribute for the first ``mmcv::MMCVCARAFE`` / ``MMCVCARAFENaive``
    node that is not what mmcv's ``CARAFEFunction.symbolic`` writes or that is outside the contract."""
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"validate_mmcv_nodes expects an onnx.ModelProto, got {type(model).__name__}")
    types = {"kernel_size": (AttributeProto.INT,), "group_size": (AttributeProto.INT,),
             "scale_factor": (AttributeProto.FLOAT, AttributeProto.INT)}
    found = []
    for node, where in walk_nodes(model):
        if node.domain != MMCV_DOMAIN or node.op_type not in MMCV_OP_TYPES:
            continue
        what = _name(node, where)
        _io(node, what)
        attrs = _attributes(node, what, types, where.startswith("function"))
        if "kernel_size" not in attrs:
            raise DeployError(f"{what}: the required attribute 'kernel_size' is missing")
        if any(a.ref_attr_name for a in attrs.values()):
            continue
        k = attrs["kernel_size"].i
        group = attrs["group_size"].i if "group_size" in attrs else 1
        s_attr = attrs.get("scale_factor")
        s_value = (s_attr.f if s_attr.type == AttributeProto.FLOAT else s_attr.i) if s_attr is not None else 2
        if not math.isfinite(s_value) or s_value != int(s_value) or s_value < 1:
            raise DeployError(f"{what}: scale_factor {s_value:g} is not a positive integer, which CARAFE needs")
        problem = attribute_problem(k, group, int(s_value), "up", group_name="group_size")
        if problem:
            raise DeployError(f"{what}: {problem}")
        if not where.startswith("function"):
            found.append((node, what, {"kernel_size": k, "group": group, "scale_factor": int(s_value), "mode": "up"}))
    if shapes and found:
        _check_shapes(model, found)


def _check_shapes(model: onnx.ModelProto, found, input_shapes: dict | None = None, measure=None) -> None:
    shapes = _known_shapes(model, inferred=True, input_shapes=input_shapes)
    if measure is not None:
        graph = model.graph
        main = {v.name for v in graph.input} | {o for n in graph.node for o in n.output}  # a run can output these
        unknown = [name for node, _, _ in found for name in node.input[:2]
                   if name in main and (shapes.get(name) is None or None in shapes[name])]
        if unknown:
            shapes.update({name: [int(d) for d in dims] for name, dims in measure(list(dict.fromkeys(unknown))).items()})
    for node, what, v in found:
        problem = shape_problem(v["kernel_size"], v["group"], v["scale_factor"], v["mode"],
                                shapes.get(node.input[0]), shapes.get(node.input[1]))
        if problem:
            raise DeployError(f"{what}: {problem}")
