"""Reading and writing ONNX files: one place for the error messages, the 2 GB protobuf limit and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from ..errors import DeployError
from ..files import atomic_path

__all__ = ["load_model", "save_model"]

# protobuf cannot serialize 2 GB; bigger models keep their weights in a side file
_PROTOBUF_LIMIT = (1 << 31) - (1 << 26)


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file with its external data; ``DeployError`` naming the file when it is not a model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    if path.stat().st_size == 0:
        raise DeployError(f"{path} is empty (0 bytes), not an ONNX model")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ... depending on what is wrong
        raise DeployError(f"{path} is not a readable ONNX model: {type(exc).__name__}: {exc}") from None
    if not model.HasField("graph"):
        raise DeployError(f"{path} is not an ONNX model (no graph)")
    return model


def is_big(model: onnx.ModelProto) -> bool:
    return sum(len(t.raw_data) for t in model.graph.initializer) > _PROTOBUF_LIMIT


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically (weights over 2 GB go to ``<name>.data`` beside it)."""
    path = Path(path)
    big = is_big(model)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp), save_as_external_data=big, location=path.name + ".data")
    if big:
        onnx.checker.check_model(str(path))
    return path
