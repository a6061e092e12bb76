"""Prepare an ONNX model for TensorRT's ONNX parser.

The parser resolves a node by builtin importer first, then a model-local function of the same domain/name, then the
plugin registry (onnx-tensorrt ModelImporter, CONTRACT §2). So a ``portable`` export, which carries a ``carafe::CARAFE``
local function, would be parsed through the standard-op body and never reach the plugin. When the plugin is wanted,
the function is dropped here. With ``--no-plugin`` every CARAFE node is unrolled into its own standard-op subgraph
(:mod:`carafe_deploy.onnx.unrolled`): independent layers in place of the generic function's ``Loop``, which ONNX
Runtime runs; so a ``plugin`` export builds without the plugin as well as a ``portable`` one.

mmcv / mmdeploy exports (``mmcv::MMCVCARAFE``) are converted to ``carafe::CARAFE`` by ``carafe_deploy.onnx``.

The detectors' plugin nodes (``carafe::MultiLevelRoIAlign``, ``carafe::BatchedNMS``) go the same way: with the plugin
their functions are dropped (the whole detector is one engine of the plugin library's layers and TensorRT's own);
without it they are replaced by their functions' standard ops (``RoiAlign``, ``NonMaxSuppression``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from ..errors import DeployError

__all__ = ["CARAFE_DOMAIN", "CARAFE_OP", "MMCV_DOMAIN", "MMCV_OP", "PreparedGraph", "prepare_onnx", "load_onnx",
           "all_nodes", "onnx_input_dims", "onnx_io_types", "onnx_float_types", "precision_mode"]

CARAFE_DOMAIN, CARAFE_OP = "carafe", "CARAFE"
MMCV_DOMAIN, MMCV_OP = "mmcv", "MMCVCARAFE"
MMCV_OPS = (MMCV_OP, "MMCVCARAFENaive")  # mmcv exports both; they compute the same


@dataclass
class PreparedGraph:
    model: onnx.ModelProto
    carafe_nodes: list[str] = field(default_factory=list)  # names of carafe::CARAFE nodes (after conversion)
    mmcv_converted: int = 0
    function_dropped: bool = False
    carafe_form: str = "none"  # how the CARAFE nodes reach TensorRT: "plugin", "unrolled" or "none" (there are none)
    detection_nodes: list[str] = field(default_factory=list)  # carafe::MultiLevelRoIAlign / BatchedNMS nodes
    detection_form: str = "none"  # "plugin", "inlined" (their functions' standard ops) or "none" (there are none)
    notes: list[str] = field(default_factory=list)


def load_onnx(path, weights: bool = True) -> onnx.ModelProto:
    """Load an ONNX file with its external data (``weights=False``: the graph alone); ``DeployError`` naming the
    file when it is not a model."""
    from ..onnx.files import load_model

    return load_model(path, weights=weights)


def all_nodes(model: onnx.ModelProto):
    """Every node of the main graph, its subgraphs (If/Loop/Scan bodies) and the model-local functions."""
    from ..onnx.validate import walk_nodes

    return (node for node, _ in walk_nodes(model))


def _is(node, domain: str, op: str) -> bool:
    return node.op_type == op and node.domain == domain


def _is_mmcv(node) -> bool:
    return node.domain == MMCV_DOMAIN and node.op_type in MMCV_OPS


def _convert_mmcv(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        from ..onnx import convert_mmcv
    except ImportError as exc:
        raise DeployError(
            f"the model has {MMCV_DOMAIN}::{MMCV_OP} nodes and converting them needs carafe_deploy.onnx.convert_mmcv, "
            f"which could not be imported ({exc})"
        ) from exc
    return convert_mmcv(model)


def prepare_onnx(model: onnx.ModelProto, *, use_plugin: bool = True) -> PreparedGraph:
    """Return a copy of ``model`` ready for ``OnnxParser.parse`` (the input is not modified).

    - every CARAFE node is validated first (:func:`carafe_deploy.onnx.validate.validate_carafe_nodes`, with the
      plugin's limits when the plugin is wanted): a node outside the contract is a ``DeployError`` naming it;
    - ``mmcv::MMCVCARAFE`` / ``MMCVCARAFENaive`` nodes are converted to ``carafe::CARAFE``;
    - with ``use_plugin``: the ``carafe::CARAFE`` local function is removed, so the parser falls back to the plugin;
    - without: every CARAFE node is unrolled (:func:`carafe_deploy.onnx.unrolled.unroll_carafe_nodes`) and the
      function removed; the ``plugin`` and ``portable`` exports both work. A ``decomposed`` export has no CARAFE node
      left to unroll; its inlined Loop is built as it is.
    """
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"prepare_onnx expects an onnx.ModelProto, got {type(model).__name__}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    prepared = PreparedGraph(model=out)

    from ..onnx.validate import validate_carafe_nodes

    n_mmcv = sum(1 for n in all_nodes(out) if _is_mmcv(n))
    if n_mmcv:
        out = _convert_mmcv(out)  # validates the mmcv nodes first
        left = sum(1 for n in all_nodes(out) if _is_mmcv(n))
        if left:
            raise DeployError(f"{left} of {n_mmcv} {MMCV_DOMAIN}::{MMCV_OP} nodes were not converted")
        prepared.model = out
        prepared.mmcv_converted = n_mmcv
        prepared.notes.append(f"converted {n_mmcv} {MMCV_DOMAIN}::{MMCV_OP} node(s) to {CARAFE_DOMAIN}::{CARAFE_OP}")
    validate_carafe_nodes(out, plugin=use_plugin)

    prepared.carafe_nodes = [n.name or f"<unnamed #{i}>" for i, n in enumerate(all_nodes(out))
                             if _is(n, CARAFE_DOMAIN, CARAFE_OP)]
    out = prepared.model = _prepare_detection_nodes(out, prepared, use_plugin)
    fn_index = [i for i, fn in enumerate(out.functions) if fn.domain == CARAFE_DOMAIN and fn.name == CARAFE_OP]

    if use_plugin:
        if fn_index:
            for i in reversed(fn_index):
                del out.functions[i]
            prepared.function_dropped = True
            prepared.notes.append(
                f"dropped the model-local function {CARAFE_DOMAIN}::{CARAFE_OP} so the parser uses the plugin"
            )
        if prepared.carafe_nodes:
            prepared.carafe_form = "plugin"
        elif not prepared.detection_nodes:
            prepared.notes.append(f"the model has no {CARAFE_DOMAIN}::{CARAFE_OP} node; the plugin is not used")
    elif prepared.carafe_nodes:
        from ..onnx.opsets import default_opset, set_opset
        from ..onnx.unrolled import MIN_OPSET, unroll_carafe_nodes

        if (default_opset(out) or MIN_OPSET) < MIN_OPSET:  # as convert raises them
            out = set_opset(out, MIN_OPSET, prepared.notes, f"unrolling for TensorRT needs >= {MIN_OPSET}")
            prepared.model = out
        unroll_carafe_nodes(out)
        prepared.function_dropped = bool(fn_index)
        prepared.carafe_form = "unrolled"
        prepared.notes.append(f"unrolled {len(prepared.carafe_nodes)} {CARAFE_DOMAIN}::{CARAFE_OP} node(s) into "
                              "standard ops, one subgraph per node")
    return prepared


def _prepare_detection_nodes(model: onnx.ModelProto, prepared: PreparedGraph, use_plugin: bool) -> onnx.ModelProto:
    from ..onnx.detection_nodes import NODE_TYPES, detection_nodes
    from ..onnx.forms import inline_detection_nodes

    nodes = detection_nodes(model)
    prepared.detection_nodes = [n.name or n.op_type for n in nodes]
    if not nodes:
        return model
    kinds = ", ".join(f"{CARAFE_DOMAIN}::{t}" for t in NODE_TYPES if any(n.op_type == t for n in nodes))
    if use_plugin:
        kept = [f for f in model.functions if not (f.domain == CARAFE_DOMAIN and f.name in NODE_TYPES)]
        del model.functions[:]
        model.functions.extend(kept)
        prepared.detection_form = "plugin"
        prepared.notes.append(f"{len(nodes)} detection node(s) ({kinds}) built by their plugins")
        return model
    prepared.detection_form = "inlined"
    prepared.notes.append(f"replaced {len(nodes)} detection node(s) ({kinds}) by their functions' standard ops "
                          "(--no-plugin)")
    return inline_detection_nodes(model)


def onnx_input_dims(model: onnx.ModelProto) -> dict[str, list]:
    """``{input name: dims}`` for the graph inputs that are not initializers; a dim is an int or, when dynamic, its
    dim_param (or ``None``)."""
    inits = {t.name for t in model.graph.initializer}
    dims: dict[str, list] = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        shape = value.type.tensor_type.shape
        dims[value.name] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim
        ]
    return dims


def onnx_float_types(model: onnx.ModelProto, scalars: bool = True) -> tuple[list[str], list[str]]:
    """(float types of the graph inputs/outputs, float types of the initializers, rank-0 ones only with ``scalars``):
    an fp16 export may keep float32 I/O around float16 weights, so precision is judged from both."""
    floats = ("float16", "bfloat16", "float32", "float64")
    io = sorted({t for t in onnx_io_types(model).values() if t in floats})
    weights = set()
    for init in model.graph.initializer:
        if not scalars and not init.dims:
            continue
        try:
            name = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).name
        except Exception:  # bfloat16 has no numpy type in older onnx
            name = onnx.TensorProto.DataType.Name(init.data_type).lower()
        if name in floats:
            weights.add(name)
    return io, sorted(weights)


def onnx_io_types(model: onnx.ModelProto) -> dict[str, str]:
    """``{input/output name: numpy dtype name}`` of the graph's inputs and outputs."""
    types = {}
    for value in list(model.graph.input) + list(model.graph.output):
        elem = value.type.tensor_type.elem_type
        try:
            types[value.name] = onnx.helper.tensor_dtype_to_np_dtype(elem).name
        except Exception:  # undefined / exotic element types
            types[value.name] = onnx.TensorProto.DataType.Name(elem).lower()
    return types


def precision_mode(model: onnx.ModelProto) -> str:
    """What a strongly typed engine computes a file in: its quantized type where it has Q/DQ nodes ("int8", ...), else
    fp32 / fp16 / bf16 from its float weights (an fp16 export keeps float32 I/O, and float32 scalars for shape
    arithmetic: rank-0 initializers are not counted), "mixed" for several."""
    from ..onnx.quantized import quantized_precision

    quantized = quantized_precision(model)
    if quantized:
        return quantized
    io_types, weight_types = onnx_float_types(model, scalars=False)
    compute = weight_types or io_types
    return {("float32",): "fp32", ("float16",): "fp16", ("bfloat16",): "bf16"}.get(tuple(compute), "mixed")
