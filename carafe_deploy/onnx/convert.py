"""``convert``: any file with CARAFE nodes to any form (CONTRACT §2), whoever wrote it and at whatever opset.

Forms: ``plugin``, ``portable``, ``decomposed`` (:mod:`.forms`) and ``mmcv`` (``mmcv::MMCVCARAFE``, as mmcv and
mmdeploy export it). Inputs: files of :func:`carafe_deploy.onnx.export`, of a user's plain ``torch.onnx.export``
(either exporter, opset 11 and up), of mmcv/mmdeploy, and of this command. Every input is first brought to the
plugin form (mmcv nodes renamed, the function dropped), its nodes checked, and then put into the asked form:

* the lowest ONNX opset that holds the graph (:mod:`.opsets`): a file whose ops are all defined alike at a lower
  opset is written at that one (a dynamo export at opset 20 whose newest op is Reshape-19 becomes opset 19), one
  that needs more than ONNX Runtime 1.16 reads (19) is converted down with ``onnx.version_converter`` where it can;
  the standard-op function needs ONNX opset >= ``function.MIN_OPSET``: older files are raised (the function is not
  there while it runs, so it cannot be lost on the way; it is written afresh at the new opset). Notes say what
  changed; ``opset=`` chooses the opset instead;
* IR version 9 (what ONNX Runtime 1.16 and 1.17 read) unless the file's opsets or types need a newer one;
* a file with no CARAFE node comes back unchanged, with a note -- a decomposed file included: its nodes were
  inlined into standard ops and cannot be found again.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import onnx
from onnx import helper

from ..errors import DeployError
from .forms import _default_opset, _set_carafe_import, carafe_nodes, to_decomposed, to_plugin, to_portable
from .function import MIN_OPSET
from .opsets import ORT_LOWEST_MAX_OPSET, lowest_opset, set_opset
from .mmcv import MMCV_DOMAIN, MMCV_OP_TYPES, _carafe_to_mmcv, rewrite_mmcv_nodes
from .schema import DOMAIN, OP_TYPE, register_schema
from .validate import validate_carafe_nodes, walk_nodes

__all__ = ["FORMS", "ConvertResult", "convert", "IR_VERSION", "ir_version_needed"]

FORMS = ("plugin", "portable", "decomposed", "mmcv")
IR_VERSION = 9  # ONNX Runtime 1.16/1.17 refuse 10 ("max supported IR version: 9")
# element types that IR version 9 does not have (INT4, UINT4: IR 10; FLOAT4E2M1: IR 11)
_NEWER_TYPES = {21: 10, 22: 10, 23: 11}


@dataclass
class ConvertResult:
    model: onnx.ModelProto
    form: str
    carafe_nodes: int = 0  # CARAFE nodes converted (carafe:: and mmcv:: together)
    opset: int | None = None  # the default-domain opset written
    notes: list[str] = field(default_factory=list)


def _mmcv_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Every mmcv CARAFE node, in subgraphs and model-local functions too."""
    return [n for n, _ in walk_nodes(model) if n.domain == MMCV_DOMAIN and n.op_type in MMCV_OP_TYPES]


def _element_types(model: onnx.ModelProto):
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if vi.type.HasField("tensor_type"):
            yield vi.type.tensor_type.elem_type
    for t in model.graph.initializer:
        yield t.data_type


def ir_version_needed(model: onnx.ModelProto) -> int:
    need = IR_VERSION
    try:
        need = max(need, helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True))
    except (ValueError, KeyError):  # an opset newer than this onnx knows: keep what the file had
        need = max(need, model.ir_version)
    if any(f.overload for f in model.functions):  # function overloads: IR 10
        need = max(need, 10)
    for t in _element_types(model):
        need = max(need, _NEWER_TYPES.get(t, 0))
    return need


def convert(model: onnx.ModelProto | str | os.PathLike, to: str, *, opset: int | None = None) -> ConvertResult:
    """Convert ``model`` (a ``ModelProto``, not changed, or a path) to the form ``to``; see the module docstring.

    ``opset``: also convert the default domain to this opset (for portable/decomposed at least ``MIN_OPSET``).
    """
    register_schema()
    if to not in FORMS:
        raise ValueError(f"unknown form {to!r}; use one of {', '.join(FORMS)}")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 1):
        raise ValueError(f"opset must be a positive int, got {opset!r}")
    mine = isinstance(model, (str, os.PathLike))  # read here: changed in place, not copied (a 2 GB model twice)
    if mine:
        from .files import load_model

        model = load_model(model)
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto or a path, got {type(model).__name__}")

    notes: list[str] = []
    n_mmcv, n_carafe = len(_mmcv_nodes(model)), len(carafe_nodes(model))
    if not n_mmcv and not n_carafe:
        inlined = " (a decomposed file's nodes are standard ops and cannot be found again)" if any(
            n.op_type == "Loop" for n in model.graph.node) else ""
        notes.append(f"no {DOMAIN}::{OP_TYPE} or {MMCV_DOMAIN}::MMCVCARAFE node: the model is unchanged{inlined}")
        return ConvertResult(model, to, 0, _default_opset_or_none(model), notes)

    out = model if mine else copy.deepcopy(model)
    if n_mmcv:
        rewrite_mmcv_nodes(out)
        notes.append(f"{n_mmcv} {MMCV_DOMAIN}::MMCVCARAFE node(s) -> {DOMAIN}::{OP_TYPE}")
    to_plugin(out)  # the function comes off before any opset change, and is written afresh for the new opset
    validate_carafe_nodes(out)

    need = MIN_OPSET if to in ("portable", "decomposed") else 1
    if opset is not None:
        if opset < need:
            raise DeployError(f"the {to} form needs ONNX opset >= {MIN_OPSET}, got --opset {opset}")
        out = set_opset(out, opset, notes, "asked for")
    elif _default_opset(out) < need:
        out = set_opset(out, need, notes, f"the standard-op CARAFE function needs opset >= {need}")
    else:
        out = _lowest_that_holds(out, need, notes)
    if to == "portable":
        out = to_portable(out)
    elif to == "decomposed":
        out = to_decomposed(out)
    elif to == "mmcv":
        for node in carafe_nodes(out):
            _carafe_to_mmcv(node)
        _set_carafe_import(out, False)
        if not any(imp.domain == MMCV_DOMAIN for imp in out.opset_import):
            out.opset_import.append(helper.make_opsetid(MMCV_DOMAIN, 1))
    out.ir_version = ir_version_needed(out)
    return ConvertResult(out, to, n_mmcv + n_carafe, _default_opset(out), notes)


def _lowest_that_holds(model: onnx.ModelProto, need: int, notes: list[str]) -> onnx.ModelProto:
    """The lowest opset that holds the graph (and the function's ``need``); a graph that needs more than ONNX
    Runtime 1.16 reads is first converted down to its newest, where onnx.version_converter can."""
    low = lowest_opset(model)
    if low is not None and low > ORT_LOWEST_MAX_OPSET >= need:
        try:
            model = set_opset(model, ORT_LOWEST_MAX_OPSET, notes,
                              f"ONNX Runtime 1.16 reads opsets up to {ORT_LOWEST_MAX_OPSET}")
        except DeployError as exc:
            notes.append(f"kept ONNX opset {_default_opset(model)}, which ONNX Runtime 1.16 does not read: {exc}")
        low = lowest_opset(model)
    if low is not None and max(low, need) < _default_opset(model):
        model = set_opset(model, max(low, need), notes, "the lowest opset that holds the graph")
    return model


def _default_opset_or_none(model: onnx.ModelProto) -> int | None:
    return next((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), None)
