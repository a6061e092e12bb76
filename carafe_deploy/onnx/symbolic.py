"""How ``torch.ops.carafe_deploy.carafe`` becomes a ``carafe::CARAFE`` node in a plain ``torch.onnx.export``, with
either exporter, at every opset, whatever the order of imports and calls (see ``register``).

* TorchScript exporter (``dynamo=False``): one symbolic, registered at opset 9 -- torch's lookup takes the newest
  registration at or below the export's opset, so it serves every opset from 9 to the newest. The standard-op
  function goes in the file too where the export's opset allows it (>= ``function.MIN_OPSET``): ``carafe::CARAFE``
  is registered as an ONNX-function op, the exporter's own mechanism for custom nodes with a body
  (``GraphContext.onnxscript_op`` registers the same way), so the file runs in ONNX Runtime as written.
* dynamo exporter (the default): a translation in onnxscript's torchlib registry, which torch reads into every
  export's registry. The file holds the node without the function (the plugin form): the exporter's optimizer
  (``optimize=True``, torch's default) inlines every model-local function, which would replace the node by its
  standard-op body, and at opsets above 18 fails on the function's opset (it inlines before the model's opset is
  raised). ``carafe-deploy convert --to portable`` adds the function afterwards; ``carafe_deploy.onnx.export``
  does it in one step.

Everything here needs torch; ``carafe_deploy/__init__`` calls ``register_torchscript`` once ``torch.onnx`` is
imported and ``register_dynamo`` once onnxscript's torchlib registry is, so importing the package costs nothing
until an export is under way.
"""

from __future__ import annotations

import types

from .function import MIN_OPSET, carafe_function
from .schema import DOMAIN, OP_TYPE, OPSET_VERSION, register_schema

__all__ = ["TORCH_OP", "register", "register_torchscript", "register_dynamo", "dynamo_translation"]

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


def torchscript_symbolic(g, features, kernels, kernel_size, group, scale_factor, mode):
    from torch.onnx import symbolic_helper as sh

    _FUNCTION_FOR_TORCHSCRIPT.opset = g.opset
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


def register_dynamo() -> None:
    """Put the translation in onnxscript's torchlib registry (which torch's exporter reads at every export)."""
    if "dynamo" in _registered:
        return
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

