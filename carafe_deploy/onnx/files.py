"""Reading and writing ONNX files: one place for the error messages, the 2 GB protobuf limit and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from ..errors import DeployError
from ..files import atomic_files, atomic_path, require_file

__all__ = ["load_model", "save_model", "is_big", "uses_external_data", "tensor_nbytes"]

# protobuf cannot serialize 2 GB; bigger models keep their weights in a side file
_PROTOBUF_LIMIT = (1 << 31) - (1 << 26)


def load_model(path: str | os.PathLike, weights: bool = True) -> onnx.ModelProto:
    """Load an ONNX file with its external data (``weights=False``: without, for the graph alone); ``DeployError``
    naming the file when it is not a model."""
    path = Path(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise DeployError(f"{path} is empty (0 bytes), not an ONNX model")
    require_file(path, "ONNX model")  # a directory, a pipe or device, a symlink loop: said, never read
    try:
        model = onnx.load(str(path), load_external_data=weights)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... depending on what is wrong
        raise DeployError(f"{path} is not a readable ONNX model: {type(exc).__name__}: {exc}") from None
    if not model.HasField("graph"):
        raise DeployError(f"{path} is not an ONNX model (no graph)")
    return model


def uses_external_data(model: onnx.ModelProto) -> bool:
    """Whether the model's weights are (partly) in external data files it refers to, not in the model itself."""
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def tensor_nbytes(t: onnx.TensorProto) -> int:
    """A tensor's size in bytes from its dims and type, without touching its data (reading ``raw_data`` copies it:
    seconds for a 2 GB weight)."""
    import math

    if t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return t.ByteSize()
    bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}.get(t.data_type)
    if bits is None:
        try:
            bits = 8 * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, ValueError, TypeError):  # a type this onnx has no numpy type for
            return t.ByteSize()
    return (math.prod(t.dims) * bits + 7) // 8


def is_big(model: onnx.ModelProto) -> bool:
    """Whether the model's weights are over what protobuf can serialize (2 GB, less a margin for the graph)."""
    return sum(tensor_nbytes(t) for t in model.graph.initializer) > _PROTOBUF_LIMIT


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically. Weights over protobuf's 2 GB go to ``<name>.data`` beside it: both
    files are written in a hidden staging folder and checked there, then renamed into place (the data first), so a
    failed or killed write leaves the previous pair, and a re-run never meets a half-written data file. Such a model
    is left referring to its data file (onnx moves its tensors' bytes out while it writes)."""
    path = Path(path)
    if not is_big(model):
        with atomic_path(path) as tmp:
            onnx.save(model, str(tmp))
        return path
    data = path.with_name(path.name + ".data")
    with atomic_files(data, path) as staging:
        onnx.save(model, str(staging / path.name), save_as_external_data=True, location=data.name)
        onnx.checker.check_model(str(staging / path.name))
    return path
