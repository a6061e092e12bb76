"""Run an ONNX file with ONNX Runtime, and make feeds that match its inputs."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import onnx

from ..errors import DeployError
from .export import carafe_nodes

__all__ = ["run_onnxruntime", "input_specs", "random_feeds"]

_NP_TYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.BOOL: np.bool_,
}


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
        feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def run_onnxruntime(
    model: onnx.ModelProto | str, feeds: Mapping[str, np.ndarray], providers: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    proto = onnx.load(model) if isinstance(model, str) else model
    if carafe_nodes(proto) and not any(f.domain == "carafe" and f.name == "CARAFE" for f in proto.functions):
        raise DeployError(
            "the model has carafe::CARAFE nodes without their function (a plugin-mode export); ONNX Runtime cannot "
            "run it -- export with --mode portable or decomposed"
        )
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(
        proto.SerializeToString(), so, providers=list(providers) if providers else ["CPUExecutionProvider"]
    )
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds))))
