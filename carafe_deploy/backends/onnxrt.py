"""ONNX Runtime: the one place an ``InferenceSession`` is made, a runner over it, and feeds that fit a model."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import onnx

from ..errors import DeployError, MissingDependencyError
from ..onnx.forms import carafe_nodes
from .base import Runner, TensorMeta

__all__ = ["OnnxrtRunner", "make_session", "needs_custom_op_library", "PORTABLE_HINT", "check_providers", "input_specs",
           "random_feeds", "run_onnxruntime", "tensor_shapes", "tensor_values"]

_NP_TYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError(f"onnxruntime is not installed: pip install onnxruntime ({exc})") from exc
    return ort


def check_providers(providers: Sequence[str] | None) -> list[str]:
    """The providers to use (default: the CPU's); ``DeployError`` for one this onnxruntime does not have, so that a
    check of the requested provider never passes on a silent fallback to the CPU."""
    ort = _import_ort()
    providers = list(providers) if providers else list(DEFAULT_PROVIDERS)
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise DeployError(f"ONNX Runtime provider(s) {', '.join(missing)} not available in this onnxruntime "
                          f"{ort.__version__} (it has {', '.join(available)})")
    return providers


PORTABLE_HINT = "`carafe-deploy convert MODEL.onnx --to portable -o OUT.onnx` writes a form any ONNX Runtime runs"


def needs_custom_op_library(model: onnx.ModelProto) -> bool:
    """Whether ``model`` has ``carafe::CARAFE`` nodes without their function (the plugin form, or a plain
    ``torch.onnx.export`` that could not attach it): ONNX Runtime runs it with the custom-op library only."""
    return bool(carafe_nodes(model)) and not any(f.domain == "carafe" and f.name == "CARAFE" for f in model.functions)


def make_session(model: onnx.ModelProto | str | os.PathLike, providers: Sequence[str] | None = None,
                 threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` for ``model`` (a ModelProto or a path).

    A plugin-form model (CARAFE nodes without their function) gets the custom-op library
    (:func:`carafe_deploy.onnxruntime.library_path`); where it cannot be built, ``DeployError`` with the reason and
    the ``convert --to portable`` command. ``DeployError`` too for a requested provider this onnxruntime does not
    have (a silent fallback to the CPU would pass for a test of the requested one).
    """
    ort = _import_ort()
    proto = model if isinstance(model, onnx.ModelProto) else None
    if proto is None:
        from ..onnx.files import load_model

        proto = load_model(model)
    from ..onnx.detection_nodes import function_missing

    if function_missing(proto):  # a plugin-form detector: its NMS / RoI Align run as their standard-op functions
        from ..onnx.forms import attach_detection_functions

        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        proto = attach_detection_functions(copy)
    providers = check_providers(providers)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    if needs_custom_op_library(proto):
        from ..onnxruntime import register_library

        try:
            register_library(options)
        except MissingDependencyError as exc:
            raise DeployError(f"the model has carafe::CARAFE nodes without their function (the plugin form), which "
                              f"ONNX Runtime runs with carafe-deploy's custom-op library, and {exc}; "
                              f"{PORTABLE_HINT}") from None
    try:
        return ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        text = " ".join(str(exc).split())
        hint = f"; {PORTABLE_HINT}" if "CARAFE" in text else ""
        raise DeployError(f"ONNX Runtime cannot load the model: {text}{hint}") from None


def input_specs(model: onnx.ModelProto) -> list[tuple[str, list[int | str], np.dtype]]:
    """(name, dims -- ints, or the dim's name when dynamic --, numpy dtype) per graph input (initializers excluded)."""
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        specs.append((vi.name, dims, np.dtype(_NP_TYPES.get(tt.elem_type, np.float32))))
    return specs


def random_feeds(
    model: onnx.ModelProto, shapes: Sequence[Sequence[int]] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Standard-normal feeds for every input; ``shapes`` (one per input) is needed where a dim is dynamic."""
    rng = np.random.default_rng(seed)
    specs = input_specs(model)
    if shapes is not None and len(shapes) != len(specs):
        raise DeployError(f"{len(shapes)} input shapes given, the model has {len(specs)} inputs ({[s[0] for s in specs]})")
    feeds = {}
    for i, (name, dims, dtype) in enumerate(specs):
        shape = list(shapes[i]) if shapes is not None else dims
        if shapes is not None and len(shape) != len(dims):
            raise DeployError(f"input {name!r} has rank {len(dims)}, the given shape {tuple(shape)} has rank {len(shape)}")
        if any(not isinstance(d, int) for d in shape):
            raise DeployError(f"input {name!r} has dynamic dims {dims}; give its shape with --input-shape")
        for axis, (want, got) in enumerate(zip(dims, shape)):
            if isinstance(want, int) and want != got:
                raise DeployError(f"input {name!r} dimension {axis} is fixed to {want} in the model, the given shape "
                                  f"{tuple(shape)} has {got}")
        feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


class OnnxrtRunner(Runner):
    """ONNX Runtime on a model of any form (a ModelProto or a path): portable / decomposed as they are, the plugin
    form with the custom-op library."""

    name = "onnxruntime"

    def __init__(self, model: onnx.ModelProto | str | os.PathLike, providers: Sequence[str] | None = None,
                 threads: int | None = None, name: str | None = None):
        super().__init__()
        self.model = model
        self.providers = providers
        self.threads = threads
        if name:
            self.name = name
        self.session = None

    def activate_impl(self) -> None:
        self.session = make_session(self.model, self.providers, self.threads)

    def deactivate_impl(self) -> None:
        self.session = None

    @property
    def device(self) -> str:
        return self.session.get_providers()[0].replace("ExecutionProvider", "") if self.session else "cpu"

    def input_metadata(self) -> list[TensorMeta]:
        return [TensorMeta(i.name, _ort_dtype(i.type), tuple(i.shape)) for i in self.session.get_inputs()]

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, dict(feeds))))


def _ort_dtype(type_str: str) -> str:
    inner = type_str.removeprefix("tensor(").removesuffix(")")
    return {"float": "float32", "double": "float64"}.get(inner, inner)


def run_onnxruntime(model: onnx.ModelProto | str, feeds: Mapping[str, np.ndarray],
                    providers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Run ``model`` once on ``feeds``."""
    with OnnxrtRunner(model, providers) as runner:
        return runner.infer(feeds)


def tensor_values(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], names: Sequence[str],
                  providers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The values the tensors ``names`` of ``model``'s main graph take when it runs on ``feeds`` (a copy of the model
    with them as extra outputs, run once)."""
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    session = make_session(probe, providers)
    return dict(zip(names, session.run(list(names), dict(feeds))))


def tensor_shapes(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], names: Sequence[str],
                  providers: Sequence[str] | None = None) -> dict[str, tuple[int, ...]]:
    """The shapes the tensors ``names`` take on ``feeds`` (:func:`tensor_values`): for checks that shape inference
    cannot make."""
    return {name: tuple(v.shape) for name, v in tensor_values(model, feeds, names, providers).items()}
