"""How ``torch.ops.carafe_deploy.carafe`` becomes a ``carafe::CARAFE`` node in a plain ``torch.onnx.export``, with
either exporter, at every opset, whatever the order of imports and calls (see ``register``).

* TorchScript exporter (``dynamo=False``): one symbolic, registered at opset 9 -- torch's lookup takes the newest
  registration at or below the export's opset, so it serves every opset from 9 to the newest. The standard-op
  function goes in the file too where the export's opset allows it (>= ``function.MIN_OPSET``): ``carafe::CARAFE``
  is registered as an ONNX-function op, the exporter's own mechanism for custom nodes with a body
  (``GraphContext.onnxscript_op`` registers the same way), so the file runs in ONNX Runtime as written.
* dynamo exporter (the default): a translation in onnxscript's torchlib registry, which torch reads into every
  export's registry. The translation writes the node alone: the exporter's optimizer (``optimize=True``, torch's
  default) inlines every model-local function, which would replace the node by its standard-op body. So the
  function is attached to the ``torch.onnx.ONNXProgram`` afterwards, at the program's final opset: ``optimize``,
  ``save`` and ``model_proto`` are wrapped (``_hook_onnx_program``) to take it off before the optimizer runs and to
  attach it after, and before the model is saved or handed out. A plain dynamo export then runs in ONNX Runtime as
  written, at every opset from ``MIN_OPSET`` (torch's dynamo exporter writes 18 and newer unless told otherwise).
* Below ``MIN_OPSET`` (either exporter) the function's ops do not exist (Shape with start/end, CastLike; Constant
  with value_int before 12), so the file is the plugin form and the export warns, naming what runs it: ONNX Runtime
  with ``carafe_deploy.onnxruntime.library_path()`` registered, or ``carafe-deploy convert --to portable``.

Everything here needs torch; ``carafe_deploy/__init__`` calls ``register_torchscript`` once ``torch.onnx`` is
imported and ``register_dynamo`` once onnxscript's torchlib registry is, so importing the package costs nothing
until an export is under way.
"""

from __future__ import annotations

import types

from .function import MIN_OPSET, carafe_function
from .schema import DOMAIN, OP_TYPE, OPSET_VERSION, register_schema

__all__ = ["TORCH_OP", "register", "register_torchscript", "register_dynamo", "dynamo_translation", "attach_function",
           "warn_without_function"]

TORCH_OP = "carafe_deploy::carafe"
_TORCHSCRIPT_BASE_OPSET = 9  # torch.onnx._constants.ONNX_BASE_OPSET: registrations here serve every opset above
_registered: set[str] = set()


# --------------------------------------------------------------------------------------------------------------
# TorchScript exporter


class _FunctionForTorchScript:
    """What the TorchScript exporter looks up for a ``carafe::CARAFE`` node once the graph is built: an object with
    ``to_function_proto()``, whose function it adds to the file. The opset is the one the symbolic last saw (all
    CARAFE nodes of one export share it); below ``MIN_OPSET`` there is no function (``hasattr`` is false), and the
    file is the plugin form, which ``carafe-deploy convert --to portable`` completes."""

    opset: int | None = None

    def __call__(self, *args, **kwargs):  # never called: no torch op is named carafe::CARAFE
        raise RuntimeError("carafe::CARAFE is an ONNX node, not a torch op")

    def __getattr__(self, name):
        if name == "to_function_proto" and self.opset is not None and self.opset >= MIN_OPSET:
            opset = self.opset
            return lambda: carafe_function(opset)
        raise AttributeError(name)


_FUNCTION_FOR_TORCHSCRIPT = _FunctionForTorchScript()


_warned_opsets: set[int] = set()


def warn_without_function(opset: int | None) -> None:
    """Once per opset: this export's CARAFE nodes cannot carry their function, and what runs the file instead."""
    if opset in _warned_opsets:
        return
    _warned_opsets.add(opset)
    import warnings

    warnings.warn(
        f"carafe_deploy: ONNX opset {opset} cannot hold the standard-op function of {DOMAIN}::{OP_TYPE} (it needs "
        f">= {MIN_OPSET}), so this file has the node alone (the plugin form): ONNX Runtime runs it with the custom-op "
        "library registered (SessionOptions.register_custom_ops_library(carafe_deploy.onnxruntime.library_path())) "
        "or after `carafe-deploy convert FILE.onnx --to portable -o OUT.onnx`; export at opset "
        f">= {MIN_OPSET} for a file that runs as written", stacklevel=2)


def torchscript_symbolic(g, features, kernels, kernel_size, group, scale_factor, mode):
    from torch.onnx import symbolic_helper as sh

    _FUNCTION_FOR_TORCHSCRIPT.opset = g.opset
    if g.opset < MIN_OPSET:
        warn_without_function(g.opset)
    out = g.op(
        f"{DOMAIN}::{OP_TYPE}",
        features,
        kernels,
        kernel_size_i=sh._maybe_get_const(kernel_size, "i"),
        group_i=sh._maybe_get_const(group, "i"),
        scale_factor_i=sh._maybe_get_const(scale_factor, "i"),
        mode_s=sh._maybe_get_const(mode, "s"),
    )
    # (N, C) of the features, (Ho, Wo) of the kernels: the exporter folds shapes downstream with this type
    fs = sh._get_tensor_sizes(features) or [None] * 4
    ks = sh._get_tensor_sizes(kernels) or [None] * 4
    out.setType(features.type().with_sizes([fs[0], fs[1], ks[2], ks[3]]))
    return out


def register_torchscript() -> None:
    """Register the TorchScript symbolic (every opset >= 9) and the function lookup; safe to call again."""
    if "torchscript" in _registered:
        return
    import torch.onnx

    torch.onnx.register_custom_op_symbolic(TORCH_OP, torchscript_symbolic, _TORCHSCRIPT_BASE_OPSET)
    # the exporter asks for version custom_opsets.get("carafe", 1) of this name when it collects functions
    torch.onnx.register_custom_op_symbolic(f"{DOMAIN}::{OP_TYPE}", _FUNCTION_FOR_TORCHSCRIPT, OPSET_VERSION)
    _registered.add("torchscript")


# --------------------------------------------------------------------------------------------------------------
# dynamo exporter


def dynamo_translation(features, kernels, kernel_size: int, group: int, scale_factor: int, mode: str):
    """``torch.ops.carafe_deploy.carafe`` -> ``carafe::CARAFE`` for the dynamo exporter."""
    import onnxscript

    register_schema()  # onnxscript resolves the op through onnx.defs
    return onnxscript.values.Opset(DOMAIN, OPSET_VERSION).CARAFE(
        features, kernels, kernel_size=kernel_size, group=group, scale_factor=scale_factor, mode=mode
    )


_FUNCTION_KEY = (DOMAIN, OP_TYPE, "")


def attach_function(program) -> None:
    """Attach the CARAFE function to a ``torch.onnx.ONNXProgram`` whose model has CARAFE nodes and lacks it, at the
    model's opset (a warning instead where the opset is below ``MIN_OPSET``)."""
    import onnx_ir as ir

    model = program.model
    if _FUNCTION_KEY in model.functions:
        return
    if not any(n.domain == DOMAIN and n.op_type == OP_TYPE for n in ir.traversal.RecursiveGraphIterator(model.graph)):
        return
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
    if opset is None or opset < MIN_OPSET:
        warn_without_function(opset)
        return
    model.functions[_FUNCTION_KEY] = ir.serde.deserialize_function(carafe_function(opset))
    model.opset_imports.setdefault(DOMAIN, OPSET_VERSION)


def _hook_onnx_program() -> None:
    """Wrap ``torch.onnx.ONNXProgram``'s ``optimize`` (the function off while the optimizer runs, which would inline
    it, and on again after), ``save`` and ``model_proto`` (on before the model leaves), once."""
    import functools

    import torch.onnx

    cls = getattr(torch.onnx, "ONNXProgram", None)
    if cls is None or getattr(cls, "_carafe_deploy_hooked", False):
        return
    optimize, save, model_proto = cls.optimize, cls.save, cls.model_proto

    @functools.wraps(optimize)
    def optimize_keeping_the_node(self, *args, **kwargs):
        self.model.functions.pop(_FUNCTION_KEY, None)
        result = optimize(self, *args, **kwargs)
        attach_function(self)
        return result

    @functools.wraps(save)
    def save_with_function(self, *args, **kwargs):
        attach_function(self)
        return save(self, *args, **kwargs)

    def proto_with_function(self):
        attach_function(self)
        return model_proto.fget(self)

    cls.optimize = optimize_keeping_the_node
    cls.save = save_with_function
    cls.model_proto = property(proto_with_function, doc=model_proto.__doc__)
    cls._carafe_deploy_hooked = True


def register_dynamo() -> None:
    """Put the translation in onnxscript's torchlib registry (which torch's exporter reads at every export), and hook
    ``torch.onnx.ONNXProgram`` so that its files carry the function."""
    if "dynamo" in _registered:
        return
    _hook_onnx_program()
    from onnxscript.function_libs.torch_lib import registration

    if TORCH_OP not in registration.default_registry:
        # torch reads .function_ir.domain and .name of each entry; a plain function is traced like a torchlib
        # trace_only function (dispatch takes the first entry for the op)
        dynamo_translation.function_ir = types.SimpleNamespace(domain=DOMAIN)
        dynamo_translation.name = OP_TYPE
        registration.default_registry.register(dynamo_translation, TORCH_OP)
    _registered.add("dynamo")


def register() -> None:
    """Both exporters, now (imports torch.onnx and onnxscript's registry)."""
    from .. import ops  # noqa: F401  (the torch op itself)

    register_schema()
    register_torchscript()
    register_dynamo()

