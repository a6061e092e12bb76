"""``export``: any ``nn.Module`` that uses the CARAFE op (or its modules) to ONNX in one of the three forms of
:mod:`.forms` (``plugin``, ``portable``, ``decomposed``; CONTRACT §2).

Both of torch's exporters translate ``torch.ops.carafe_deploy.carafe`` through the registrations of
:mod:`.symbolic` (the same ones a user's plain ``torch.onnx.export`` gets); the default (``dynamo=True``) one is
used, the deprecated TorchScript exporter only where the default reports a failure of its own (e.g. some TorchScript
modules), with a warning that says so -- never after a Ctrl-C (which ends the export), nor for a ``dynamic_axes``
entry on an axis the model fixes (an error: the TorchScript exporter would write it as dynamic regardless). The exported nodes are then put into the requested form.

``fp16=True`` exports a float16 copy of the model: weights, activations and the CARAFE nodes are float16 (TensorRT
11 is strongly typed and builds what the ONNX types say). Float inputs and outputs stay float32, with a Cast after
each input and before each output, so the same feeds work for the fp32 and the fp16 file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import onnx
import torch
from torch import nn

from ..errors import DeployError, interrupts_noticed, raise_if_interrupted
from .files import is_big, save_model
from .forms import EXPORT_MODES, to_decomposed, to_plugin, to_portable
from .schema import DOMAIN, OPSET_VERSION
from .symbolic import register as register_translations

__all__ = ["export", "DEFAULT_OPSET", "MAX_OPSET"]
DEFAULT_OPSET = 18
EXPORT_MIN_OPSET = 18  # torch 2.13's default exporter emits opset 18 and newer
MAX_OPSET = 23  # the newest opset torch 2.13's exporter emits


# --------------------------------------------------------------------------------------------------------------
# fp16


def _to_half(model: nn.Module, args: tuple):
    """A float16 copy of the model and its float example inputs (the model's own forward signature is kept, so
    dynamic_axes map onto its arguments as usual)."""

    def cast(x):
        return x.half() if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    return copy.deepcopy(model).half(), torch.utils._pytree.tree_map(cast, args)


def _float32_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make float16 graph inputs/outputs float32 with a Cast after each input and before each output (in place).

    Runs on the plugin form (no subgraphs yet), so renaming top-level uses is complete."""
    from onnx import TensorProto, helper

    f16, f32 = TensorProto.FLOAT16, TensorProto.FLOAT
    graph = model.graph
    casts_in = []
    for vi in graph.input:
        if vi.type.tensor_type.elem_type != f16:
            continue
        inner = f"{vi.name}_float16"
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == vi.name:
                    node.input[i] = inner
        casts_in.append(helper.make_node("Cast", [vi.name], [inner], to=f16, name=f"{vi.name}_to_float16"))
        vi.type.tensor_type.elem_type = f32
    casts_out = []
    for vi in graph.output:
        if vi.type.tensor_type.elem_type != f16:
            continue
        inner = f"{vi.name}_float16"
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name == vi.name:
                    node.output[i] = inner
            for i, name in enumerate(node.input):
                if name == vi.name:
                    node.input[i] = inner
        for info in graph.value_info:
            if info.name == vi.name:
                info.name = inner
        casts_out.append(helper.make_node("Cast", [inner], [vi.name], to=f32, name=f"{vi.name}_to_float32"))
        vi.type.tensor_type.elem_type = f32
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    return model


# --------------------------------------------------------------------------------------------------------------
# Argument checks


def _check_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if p.is_dir():
        raise DeployError(f"output path {str(p)!r} is a directory; give a file name such as {str(p / 'model.onnx')!r}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise DeployError(f"cannot write {str(p)!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise DeployError(f"cannot write {str(p)!r}: permission denied")
    return p


def _check_opset(opset) -> int:
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"opset must be an int, got {type(opset).__name__} ({opset!r})")
    if not EXPORT_MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset {opset} is not supported: use {EXPORT_MIN_OPSET} to {MAX_OPSET} (torch's ONNX exporter)")
    return opset


def _forward_arg_names(model) -> list[str] | None:
    """The names the exporter gives the inputs when ``input_names`` is not given: ``forward``'s arguments."""
    import inspect

    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return None
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return None
    return [p.name for p in params]


def _check_dynamic_axes(dynamic_axes, proto: onnx.ModelProto | None = None, names: Sequence[str] = ()) -> None:
    """Every key of ``dynamic_axes`` must name an input or output (of ``proto`` once exported): torch ignores one
    that does not and writes a static model without a word."""
    if proto is not None:
        names = [v.name for v in proto.graph.input] + [v.name for v in proto.graph.output]
    unknown = [k for k in dynamic_axes if k not in names]
    if unknown:
        raise DeployError(f"dynamic_axes names {unknown[0]!r}, which is not an input or output of the model (they "
                          f"are {', '.join(names) or 'none'}): pass input_names/output_names or use those names")


def _check_names(proto: onnx.ModelProto, input_names, output_names) -> None:
    """More names than the exported graph has inputs or outputs is a mistake (both exporters drop the extra ones
    without a word, and a caller would look for an output that is not there)."""
    initializers = {t.name for t in proto.graph.initializer}
    counts = {"input_names": len([v for v in proto.graph.input if v.name not in initializers]),
              "output_names": len(proto.graph.output)}
    for what, names in (("input_names", input_names), ("output_names", output_names)):
        if names is not None and len(names) > counts[what]:
            kind = what.split("_")[0]
            raise DeployError(f"{len(names)} {what} ({', '.join(names)}) for a model with {counts[what]} {kind}(s): "
                              f"give at most {counts[what]}")


# --------------------------------------------------------------------------------------------------------------


def _first_line(exc: Exception) -> str:
    """The root cause's type and first line: torch's exporter wraps it in a page of generic next steps."""
    import re

    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _refuse_fixed_dynamic_axis(error: Exception) -> None:
    """``DeployError`` when the default exporter failed because a ``dynamic_axes`` entry names an axis the model
    fixes (a channel count, say): the TorchScript exporter would write that axis as dynamic all the same, a file
    that fails at any other size, so there is no fallback for this."""
    import re

    text = "\n".join(str(e) for e in _chain(error))
    if "conflicts between user-specified ranges and inferred ranges" not in text:
        return
    fixed = re.findall(r"inferred a static shape of (\d+) for dimension inputs\[['\"]?([^\]'\"]+)['\"]?\]\.shape\[(\d+)\]",
                       text)
    if fixed:
        size, name, axis = fixed[0]
        raise DeployError(f"dynamic_axes makes axis {axis} of input {name!r} dynamic, but the model fixes it to {size} "
                          f"(torch.export); leave that axis out of dynamic_axes") from None
    raise DeployError(f"dynamic_axes names an axis the model fixes (torch.export: {_first_line(error)})") from None


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _export_dynamo(model, args, opset, input_names, output_names, dynamic_axes) -> onnx.ModelProto:
    with warnings.catch_warnings():
        # torch converts dynamic_axes to dynamic_shapes itself (with Dim.AUTO) and keeps the user's axis names;
        # that conversion is what we want, so its "not recommended" note is noise here.
        warnings.filterwarnings("ignore", message=".*dynamic_axes.*not recommended.*")
        # the exporter prints its progress ("[torch.onnx] Obtain model graph ...") to stdout; failures raise anyway
        with contextlib.redirect_stdout(io.StringIO()):
            program = _dynamo_call(model, args, opset, input_names, output_names, dynamic_axes)
    return program.model_proto


def _extra_translations() -> dict:
    """Translations of the package's other custom ops (detection: NMS, RoI Align) to standard ONNX."""
    from .detection import TRANSLATIONS

    return dict(TRANSLATIONS)


def _dynamo_call(model, args, opset, input_names, output_names, dynamic_axes):
    # The exporter's registry logs one warning per torchvision op it cannot find (torchvision plays no part here),
    # and torch's own pytree code raises a FutureWarning at every export: noise for the user, hidden here.
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            return torch.onnx.export(
                model,
                args,
                dynamo=True,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                custom_translation_table=_extra_translations(),
                verbose=False,
            )
    finally:
        registry_log.setLevel(level)


def _export_torchscript(model, args, opset, input_names, output_names, dynamic_axes) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            args,
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            custom_opsets={DOMAIN: OPSET_VERSION},
        )
    return onnx.load_from_string(buf.getvalue())


def export(
    model: nn.Module | torch.jit.ScriptModule | torch.export.ExportedProgram,
    args: Any,
    path: str | os.PathLike | None,
    *,
    mode: str = "portable",
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    opset: int | None = None,
    fp16: bool = False,
) -> onnx.ModelProto:
    """Export ``model(*args)`` to ONNX at ``path`` (None: do not write) and return the model.

    ``mode``: "plugin", "portable" (default) or "decomposed" (module docstring). ``dynamic_axes`` as
    ``torch.onnx.export`` takes it, e.g. ``{"image": {0: "N", 2: "H", 3: "W"}}``. ``opset``: the default ONNX
    domain's version, 18 to 23 (default 18). ``fp16``: float16 weights and compute, float32 inputs and outputs.
    """
    register_translations()
    if mode not in EXPORT_MODES:
        raise ValueError(f"unknown export mode {mode!r}; use one of {', '.join(EXPORT_MODES)}")
    opset = _check_opset(opset)
    out_path = _check_path(path) if path is not None else None
    if not isinstance(model, (nn.Module, torch.export.ExportedProgram, torch.jit.ScriptFunction)):
        raise TypeError(f"model must be a torch.nn.Module or ExportedProgram, got {type(model).__name__}")
    if isinstance(args, torch.Tensor):
        args = (args,)
    if not isinstance(args, tuple):
        raise TypeError(f"args must be a tensor or a tuple of example inputs, got {type(args).__name__}")
    input_names = list(input_names) if input_names is not None else None
    output_names = list(output_names) if output_names is not None else None
    if dynamic_axes and output_names is not None:  # the names are known before exporting
        inputs = input_names if input_names is not None else _forward_arg_names(model)
        if inputs is not None:
            _check_dynamic_axes(dynamic_axes, names=inputs + output_names)

    if fp16:
        if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
            raise DeployError("fp16=True needs an nn.Module (a float16 copy of it is exported)")
        model, args = _to_half(model, args)
    if isinstance(model, nn.Module) and model.training:
        warnings.warn("exporting a model in training mode; call model.eval() first", stacklevel=2)

    with torch.no_grad(), interrupts_noticed() as interrupted:
        try:
            proto = _export_dynamo(model, args, opset, input_names, output_names, dynamic_axes)
            if interrupted():  # swallowed somewhere inside, yet the export went on: the user still asked to stop
                raise KeyboardInterrupt
        except torch.onnx.errors.OnnxExporterError as dynamo_error:  # the exporter's own failures, nothing else
            # a Ctrl-C that the exporter turned into an error of its own ends the command, as any Ctrl-C does
            raise_if_interrupted(dynamo_error, interrupted)
            _refuse_fixed_dynamic_axis(dynamo_error)
            if isinstance(model, torch.export.ExportedProgram):
                raise DeployError(f"ONNX export of the ExportedProgram failed: {_first_line(dynamo_error)}") \
                    from dynamo_error
            warnings.warn(
                f"the default (dynamo) ONNX exporter failed ({_first_line(dynamo_error)}); "
                "trying the TorchScript exporter",
                stacklevel=2,
            )
            try:
                proto = _export_torchscript(model, args, opset, input_names, output_names, dynamic_axes)
            except Exception as ts_error:
                raise_if_interrupted(ts_error, interrupted)
                raise DeployError(
                    f"ONNX export failed with both exporters. dynamo: {_first_line(dynamo_error)}; "
                    f"torchscript: {_first_line(ts_error)}"
                ) from ts_error
            raise_if_interrupted(dynamo_error, interrupted)

    _check_names(proto, input_names, output_names)
    if dynamic_axes:
        _check_dynamic_axes(dynamic_axes, proto)
    if fp16:
        proto = _float32_io(proto)
    if mode == "plugin":
        proto = to_plugin(proto)
    elif mode == "portable":
        proto = to_portable(proto)
    else:
        proto = to_decomposed(proto)
    if not is_big(proto):  # a model over protobuf's limit is checked from disk once written
        onnx.checker.check_model(proto, full_check=False)
    if out_path is not None:
        save_model(proto, out_path)
    return proto
