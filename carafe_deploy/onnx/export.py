"""``export``: any ``nn.Module`` that uses the CARAFE op (or its modules) to ONNX in one of three forms (DESIGN §2).

* ``plugin``: each op is one ``carafe::CARAFE`` node (for TensorRT with the plugin, or any runtime with a kernel);
* ``portable``: the same nodes plus the model-local function ``carafe::CARAFE`` in standard ops
  (:mod:`.function`), so ONNX Runtime (CPU, CUDA) runs the file with no custom library;
* ``decomposed``: the portable model with the function inlined: standard ops only.

The default (``dynamo=True``) exporter translates ``torch.ops.carafe_deploy.carafe`` through
``custom_translation_table``; the deprecated TorchScript exporter, with a ``register_custom_op_symbolic`` mapping to
the same node, is used only where the default fails (e.g. some TorchScript modules), and says so in a warning.

``fp16=True`` exports a float16 copy of the model: weights, activations and the CARAFE nodes are float16 (TensorRT
11 is strongly typed and builds what the ONNX types say). Inputs and outputs stay float32, with a Cast after each
input and before each output, so the same feeds work for the fp32 and the fp16 file.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import onnx
import onnx.inliner
import torch
from torch import nn

from ..errors import DeployError
from .function import MIN_OPSET, carafe_function
from .schema import DOMAIN, OP_TYPE, OPSET_VERSION, register_schema

__all__ = ["export", "EXPORT_MODES", "DEFAULT_OPSET", "MAX_OPSET", "to_portable", "to_decomposed", "to_plugin",
           "carafe_nodes"]

EXPORT_MODES = ("plugin", "portable", "decomposed")
DEFAULT_OPSET = 18
EXPORT_MIN_OPSET = 18  # torch 2.13's default exporter emits opset 18 and newer
MAX_OPSET = 23  # the newest opset torch 2.13's exporter emits


# --------------------------------------------------------------------------------------------------------------
# The op's translations (dynamo: onnxscript; TorchScript: symbolic function). Both emit the same node.


def _dynamo_translation(features, kernels, kernel_size: int, group: int, scale_factor: int, mode: str):
    import onnxscript

    register_schema()  # onnxscript resolves the op through onnx.defs
    carafe_opset = onnxscript.values.Opset(DOMAIN, OPSET_VERSION)
    return carafe_opset.CARAFE(
        features, kernels, kernel_size=kernel_size, group=group, scale_factor=scale_factor, mode=mode
    )


def _torchscript_symbolic(g, features, kernels, kernel_size, group, scale_factor, mode):
    from torch.onnx import symbolic_helper as sh

    k = sh._maybe_get_const(kernel_size, "i")
    grp = sh._maybe_get_const(group, "i")
    s = sh._maybe_get_const(scale_factor, "i")
    m = sh._maybe_get_const(mode, "s")
    out = g.op(f"{DOMAIN}::{OP_TYPE}", features, kernels, kernel_size_i=k, group_i=grp, scale_factor_i=s, mode_s=m)
    out.setType(features.type())
    return out


_SYMBOLIC_REGISTERED: set[int] = set()


def _register_torchscript_symbolic(opset: int) -> None:
    if opset not in _SYMBOLIC_REGISTERED:
        torch.onnx.register_custom_op_symbolic("carafe_deploy::carafe", _torchscript_symbolic, opset)
        _SYMBOLIC_REGISTERED.add(opset)


# --------------------------------------------------------------------------------------------------------------
# Post-processing between the forms.


def carafe_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE]


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
    kept = [f for f in model.functions if not (f.domain == DOMAIN and f.name == OP_TYPE)]
    del model.functions[:]
    model.functions.extend(kept)


def to_plugin(model: onnx.ModelProto) -> onnx.ModelProto:
    """The CARAFE nodes without the function (in place; returns the model)."""
    _drop_carafe_function(model)
    _set_carafe_import(model, bool(carafe_nodes(model)))
    return model


def to_portable(model: onnx.ModelProto) -> onnx.ModelProto:
    """The CARAFE nodes plus the standard-op function, in the model's default opset (in place; returns the model)."""
    _drop_carafe_function(model)
    has_nodes = bool(carafe_nodes(model))
    _set_carafe_import(model, has_nodes)
    if has_nodes:
        opset = _default_opset(model)
        if opset < MIN_OPSET:
            raise DeployError(
                f"the model uses ONNX opset {opset}; the CARAFE function needs >= {MIN_OPSET} "
                "(upgrade it with onnx.version_converter.convert_version first)"
            )
        model.functions.append(carafe_function(opset))
        # model-local functions need IR version >= 8
        model.ir_version = max(model.ir_version, 8)
    return model


def to_decomposed(model: onnx.ModelProto) -> onnx.ModelProto:
    """Standard ops only: the portable model with every CARAFE node replaced by the function's body."""
    model = to_portable(model)
    if not carafe_nodes(model):
        return model
    inlined = onnx.inliner.inline_selected_functions(model, [(DOMAIN, OP_TYPE)], exclude=False)
    _drop_carafe_function(inlined)
    _set_carafe_import(inlined, False)
    return inlined


# --------------------------------------------------------------------------------------------------------------
# fp16


class _Float16(nn.Module):
    """A float16 copy of ``model`` whose float inputs are cast to float16 and float outputs back to float32."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).half()

    def forward(self, *args):
        args = torch.utils._pytree.tree_map(_cast(torch.float16), args)
        return torch.utils._pytree.tree_map(_cast(torch.float32), self.model(*args))


def _cast(dtype):
    def fn(x):
        return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    return fn


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


# --------------------------------------------------------------------------------------------------------------


def _export_dynamo(model, args, opset, input_names, output_names, dynamic_axes) -> onnx.ModelProto:
    with warnings.catch_warnings():
        # torch converts dynamic_axes to dynamic_shapes itself (with Dim.AUTO) and keeps the user's axis names;
        # that conversion is what we want, so its "not recommended" note is noise here.
        warnings.filterwarnings("ignore", message=".*dynamic_axes.*not recommended.*")
        program = _dynamo_call(model, args, opset, input_names, output_names, dynamic_axes)
    return program.model_proto


def _extra_translations() -> dict:
    """Translations of the package's other custom ops (detection: NMS, RoI Align) to standard ONNX."""
    from ..ops.detection_onnx import TRANSLATIONS

    return dict(TRANSLATIONS)


def _dynamo_call(model, args, opset, input_names, output_names, dynamic_axes):
    return torch.onnx.export(
        model,
        args,
        dynamo=True,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
        custom_translation_table={**_extra_translations(), torch.ops.carafe_deploy.carafe.default: _dynamo_translation},
        verbose=False,
    )


def _export_torchscript(model, args, opset, input_names, output_names, dynamic_axes) -> onnx.ModelProto:
    import io

    _register_torchscript_symbolic(opset)
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
    register_schema()
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

    if fp16:
        if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
            raise DeployError("fp16=True needs an nn.Module (a float16 copy of it is exported)")
        model = _Float16(model).eval()
    if isinstance(model, nn.Module) and model.training:
        warnings.warn("exporting a model in training mode; call model.eval() first", stacklevel=2)

    with torch.no_grad():
        try:
            proto = _export_dynamo(model, args, opset, input_names, output_names, dynamic_axes)
        except Exception as dynamo_error:  # noqa: BLE001 -- any failure of the default exporter triggers the fallback
            warnings.warn(
                f"the default (dynamo) ONNX exporter failed ({type(dynamo_error).__name__}: "
                f"{str(dynamo_error).splitlines()[0] if str(dynamo_error) else ''}); trying the TorchScript exporter",
                stacklevel=2,
            )
            if isinstance(model, torch.export.ExportedProgram):
                raise DeployError(f"ONNX export of the ExportedProgram failed: {dynamo_error}") from dynamo_error
            try:
                proto = _export_torchscript(model, args, opset, input_names, output_names, dynamic_axes)
            except Exception as ts_error:
                raise DeployError(
                    f"ONNX export failed with both exporters. dynamo: {type(dynamo_error).__name__}: "
                    f"{str(dynamo_error).splitlines()[0] if str(dynamo_error) else ''}; torchscript: "
                    f"{type(ts_error).__name__}: {ts_error}"
                ) from ts_error

    if mode == "plugin":
        proto = to_plugin(proto)
    elif mode == "portable":
        proto = to_portable(proto)
    else:
        proto = to_decomposed(proto)
    onnx.checker.check_model(proto, full_check=False)
    if out_path is not None:
        try:
            onnx.save(proto, str(out_path))
        except OSError as exc:
            raise DeployError(f"cannot write {str(out_path)!r}: {exc.strerror or exc}") from exc
    return proto
