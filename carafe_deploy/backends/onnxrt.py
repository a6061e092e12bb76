"""ONNX Runtime: the one place an ``InferenceSession`` is made, a runner over it, and feeds that fit a model."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import onnx

from ..errors import DeployError, MissingDependencyError
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
    from ..onnx.describe import carafe_form

    return carafe_form(model) == "plugin"


def make_session(model: onnx.ModelProto | str | os.PathLike, providers: Sequence[str] | None = None,
                 threads: int | None = None, graph: onnx.ModelProto | None = None):
    """An ``onnxruntime.InferenceSession`` for ``model`` (a ModelProto or a path).

    A plugin-form model (CARAFE nodes without their function) gets the custom-op library
    (:func:`carafe_deploy.onnxruntime.library_path`); where it cannot be built, ``DeployError`` with the reason and
    the ``convert --to portable`` command. A plugin-form detector's NMS / RoI Align nodes run as their standard-op
    functions, attached here. ``DeployError`` too for a requested provider this onnxruntime does not have (a silent
    fallback to the CPU would pass for a test of the requested one). ``graph``: the model's graph where the caller
    has read it already (a path's file read without its external data).
    """
    ort = _import_ort()
    proto = graph if graph is not None else _graph(model)
    from ..onnx.detection_nodes import function_missing

    attached = function_missing(proto) is not None
    if attached:  # a plugin-form detector: its NMS / RoI Align run as their standard-op functions
        from ..onnx.files import uses_external_data
        from ..onnx.forms import attach_detection_functions

        if uses_external_data(proto):
            raise DeployError(f"a plugin-form detector with external data: ONNX Runtime runs it once its NMS / RoI "
                              f"Align functions are attached: {PORTABLE_HINT}")
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
    # a file goes to ONNX Runtime as a path: its external data (weights over protobuf's 2 GB) stay where they are,
    # and nothing is serialized again (a model over 2 GB cannot be)
    source = proto.SerializeToString() if attached or isinstance(model, onnx.ModelProto) else os.fspath(model)
    try:
        return ort.InferenceSession(source, options, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        raise DeployError(f"ONNX Runtime cannot load the model: {ort_reason(exc, proto)}") from None


def _graph(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    """The model's graph: ``model`` itself, or the file read without its external data (the weights ONNX Runtime
    reads from the file itself)."""
    if isinstance(model, onnx.ModelProto):
        from ..onnx.files import uses_external_data

        if uses_external_data(model):
            raise DeployError("this model keeps its weights in an external data file: give ONNX Runtime its path")
        return model
    from ..onnx.files import load_model

    return load_model(model, weights=False)


def ort_reason(exc: BaseException, model: onnx.ModelProto | None = None) -> str:
    """ONNX Runtime's error as the part that names the problem: its status prefix ("[ONNXRuntimeError] : 1 : FAIL :
    Load model from ... failed:") and its source locations dropped; and where the model's carafe::CARAFE function is
    not the one this package writes, that first (an edited body is the likely cause)."""
    import re

    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^(Load model from .*? failed|Exception during initialization): ?", "", text)
    text = re.sub(r"/\S+\.(cc|h|cpp):\d+ \S+ ", "", text)  # "/onnxruntime/core/graph/graph.cc:1234 Status f() "
    if len(text) > 240:  # the rest is ONNX Runtime's dump of the node's inputs and outputs
        text = text[:240].rstrip() + " ..."
    hint = _function_problem(model) if model is not None else None
    if hint:
        return f"{hint}; ONNX Runtime says: {text}"
    return f"{text}; {PORTABLE_HINT}" if "CARAFE" in text else text


def _function_problem(model: onnx.ModelProto) -> str | None:
    """Why the model's carafe::CARAFE function is not the one this package writes for the model's opset (written
    for another opset than the model imports, an opset below what it needs, or its body edited), or ``None``."""
    from ..onnx.forms import _default_opset
    from ..onnx.function import MIN_OPSET, carafe_function

    theirs = [f for f in model.functions if f.domain == "carafe" and f.name == "CARAFE"]
    if not theirs:
        return None
    fix = "`carafe-deploy convert MODEL.onnx --to portable -o NEW.onnx` writes it afresh"
    opset = _default_opset(model)
    own = next((imp.version for imp in theirs[0].opset_import if imp.domain in ("", "ai.onnx")), opset)
    if own != opset:
        return (f"the model imports ONNX opset {opset}, its carafe::CARAFE function is written for opset {own} (ONNX "
                f"Runtime runs the function at the model's opset): {fix}")
    if opset < MIN_OPSET:
        return f"the model's ONNX opset {opset} is below the {MIN_OPSET} its carafe::CARAFE function needs: {fix}"
    reference = carafe_function(opset)
    mine = onnx.FunctionProto()
    mine.CopyFrom(theirs[0])
    for fn in (mine, reference):
        fn.ClearField("doc_string")
    if mine.SerializeToString(deterministic=True) == reference.SerializeToString(deterministic=True):
        return None
    return f"the model's carafe::CARAFE function differs from the one this package writes for opset {opset} " \
           f"(edited?): {fix}"


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
        graph = _graph(self.model)
        self.session = make_session(self.model, self.providers, self.threads, graph=graph)
        self._declared = {o.name: _dims(o) for o in graph.graph.output}

    def deactivate_impl(self) -> None:
        self.session = None

    @property
    def device(self) -> str:
        return self.session.get_providers()[0].replace("ExecutionProvider", "") if self.session else "cpu"

    def input_metadata(self) -> list[TensorMeta]:
        return [TensorMeta(i.name, _ort_dtype(i.type), tuple(i.shape)) for i in self.session.get_inputs()]

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        outputs = dict(zip(names, self.session.run(names, dict(feeds))))
        for name, value in outputs.items():
            _check_declared(name, self._declared.get(name), value.shape)
        return outputs


def _dims(value: onnx.ValueInfoProto) -> list | None:
    """A graph output's declared dims (an int, or None where symbolic); None when it declares no shape."""
    t = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _check_declared(name: str, declared: list | None, shape: tuple) -> None:
    """``DeployError`` when an output's shape is not what the file declares (ONNX Runtime only warns, and a
    consumer that sizes its buffers from the declaration -- TensorRT, Triton -- would be wrong)."""
    if declared is None:
        return
    if len(declared) != len(shape) or any(d is not None and d != n for d, n in zip(declared, shape)):
        shown = "[" + ", ".join("?" if d is None else str(d) for d in declared) + "]"
        raise DeployError(f"output {name!r} has shape {list(shape)}, but the file declares {shown}: its declared "
                          "shape is wrong (re-export it, or fix the graph output's shape)")


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

    from ..onnx.files import uses_external_data

    if uses_external_data(model):  # its weights are in a file beside the model: nothing to copy and run here
        return {}
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
