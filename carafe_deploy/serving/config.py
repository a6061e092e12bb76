"""Triton model configurations (``config.pbtxt``), built as Triton's own ``inference.ModelConfig`` protobuf (the
schema tritonclient ships) and written in its text format: a misspelt field or enum fails here, not in the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import DeployError, MissingDependencyError
from ..files import atomic_write_text

__all__ = ["TensorSpec", "TRITON_TYPES", "model_config_module", "model_config", "ensemble_config", "write_config",
           "read_config", "onnx_tensor_specs"]

# numpy dtype name (as onnx and the engine sidecar name them) -> Triton data type
TRITON_TYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16", "object": "TYPE_STRING", "bytes": "TYPE_STRING",
}

INSTALL_HINT = 'pip install "carafe-deploy[serve]"'


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, numpy dtype name and full shape (-1 for a dynamic dimension)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def triton_type(self) -> str:
        try:
            return TRITON_TYPES[self.dtype]
        except KeyError:
            raise DeployError(f"tensor {self.name!r}: Triton has no data type for {self.dtype}") from None


def model_config_module():
    """``model_config_pb2`` from tritonclient (the ``serve`` extra)."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise MissingDependencyError(f"writing Triton configurations needs tritonclient ({exc}): {INSTALL_HINT}") \
            from None
    return model_config_pb2


def onnx_tensor_specs(model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs of an ``onnx.ModelProto`` (initializers listed as inputs excluded)."""
    import onnx

    initializers = {t.name for t in model.graph.initializer}

    def spec(value) -> TensorSpec:
        t = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not t.HasField("shape"):
            raise DeployError(f"ONNX tensor {value.name!r} has no tensor type with a shape")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TensorSpec(value.name, dtype, dims)

    return ([spec(v) for v in model.graph.input if v.name not in initializers],
            [spec(v) for v in model.graph.output])


def _add_tensors(repeated, specs: Sequence[TensorSpec], batched: bool) -> None:
    for s in specs:
        t = repeated.add()
        t.name = s.name
        t.data_type = getattr(model_config_module(), s.triton_type())
        dims = s.shape[1:] if batched else s.shape
        if dims:
            t.dims.extend(dims)
        else:  # Triton wants at least one dimension: a per-sample scalar is [1], reshaped to [] for the model
            t.dims.append(1)
            t.reshape.SetInParent()


def model_config(name: str, *, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], max_batch_size: int,
                 backend: str | None = None, platform: str | None = None, instance_kind: str | None = None,
                 instance_count: int = 1, queue_delay_us: int | None = None,
                 parameters: Mapping[str, str] | None = None):
    """One model's configuration. ``inputs``/``outputs`` have their full shapes; with ``max_batch_size > 0`` the
    first dimension is the batch Triton adds. ``queue_delay_us`` turns dynamic batching on (batching models only).
    ``instance_kind``: ``KIND_CPU``, ``KIND_GPU`` or ``KIND_AUTO`` (one group of ``instance_count``)."""
    mc = model_config_module()
    config = mc.ModelConfig(name=name, max_batch_size=max_batch_size)
    if backend:
        config.backend = backend
    if platform:
        config.platform = platform
    batched = max_batch_size > 0
    _add_tensors(config.input, inputs, batched)
    _add_tensors(config.output, outputs, batched)
    if queue_delay_us is not None and batched:
        config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    if instance_kind:
        group = config.instance_group.add()
        group.kind = getattr(mc.ModelInstanceGroup, instance_kind)
        group.count = instance_count
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = str(value)
    return config


def ensemble_config(name: str, *, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                    steps: Sequence[tuple[str, Mapping[str, str], Mapping[str, str]]]):
    """An ensemble without batching (one request = one image). ``steps``: (model, {its input: ensemble tensor},
    {its output: ensemble tensor}), in order."""
    config = model_config(name, inputs=inputs, outputs=outputs, max_batch_size=0, platform="ensemble")
    for model, input_map, output_map in steps:
        step = config.ensemble_scheduling.step.add()
        step.model_name = model
        step.model_version = -1
        step.input_map.update(input_map)
        step.output_map.update(output_map)
    return config


def write_config(model_dir: Path, config) -> Path:
    from google.protobuf import text_format

    return atomic_write_text(Path(model_dir) / "config.pbtxt", text_format.MessageToString(config))


def read_config(model_dir: Path):
    """Parse a ``config.pbtxt`` back into a ``ModelConfig`` (``DeployError`` naming the file and the problem)."""
    from google.protobuf import text_format

    path = Path(model_dir) / "config.pbtxt"
    try:
        return text_format.Parse(path.read_text(), model_config_module().ModelConfig())
    except text_format.ParseError as exc:
        raise DeployError(f"{path}: {exc}") from None
