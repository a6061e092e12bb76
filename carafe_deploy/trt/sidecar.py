"""The JSON file written next to every engine (``model.engine`` -> ``model.engine.json``).

An engine is only usable with the runtime (full TensorRT or TensorRT-RTX) and version, GPU and plugin it was built
with; the sidecar records them so a runner (or a person) can tell why an engine does not load, plus the I/O and the
profiles it accepts.

Schema version 2 records the runtime as ``runtime: {name, version}`` (version 1 had ``tensorrt_version`` only, and
could not tell TensorRT-RTX from TensorRT) and how the CARAFE nodes were built, ``graph.carafe_form``. A version 1
file is still read: it is checked against the version 1 schema and upgraded in memory (runtime "tensorrt", the
only one version 1 writers imported).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
from pathlib import Path

import jsonschema

from ..files import atomic_write_text

__all__ = ["SCHEMA", "SCHEMA_ID", "SCHEMA_V1", "sidecar_path", "validate_sidecar", "write_sidecar", "read_sidecar",
           "upgrade_v1", "sha256_file", "gpu_info"]

SCHEMA_ID = "carafe-deploy/engine-sidecar/2"
SCHEMA_V1_ID = "carafe-deploy/engine-sidecar/1"
RUNTIME_NAMES = ("tensorrt", "tensorrt-rtx")  # as carafe_deploy.trt.runtime.RUNTIMES names them

_SHAPE = {"type": "array", "items": {"type": "integer"}}
_PROFILE_ENTRY = {
    "type": "object",
    "required": ["min", "opt", "max"],
    "properties": {"min": _SHAPE, "opt": _SHAPE, "max": _SHAPE},
    "additionalProperties": False,
}
_TENSOR = {
    "type": "object",
    "required": ["name", "dtype", "shape"],
    "properties": {"name": {"type": "string"}, "dtype": {"type": "string"}, "shape": _SHAPE},
    "additionalProperties": False,
}
_SHA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "carafe-deploy engine sidecar",
    "type": "object",
    "required": ["schema", "engine", "created", "carafe_deploy_version", "runtime", "gpu", "onnx", "inputs",
                 "outputs", "profiles", "precision", "plugin", "version_compatible", "workspace_bytes", "graph"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "engine": {
            "type": "object",
            "required": ["file", "bytes", "sha256"],
            "properties": {"file": {"type": "string"}, "bytes": {"type": "integer", "minimum": 1}, "sha256": _SHA},
            "additionalProperties": False,
        },
        "created": {"type": "string", "format": "date-time"},
        "carafe_deploy_version": {"type": "string"},
        "runtime": {
            "type": "object",
            "required": ["name", "version"],
            "properties": {"name": {"enum": list(RUNTIME_NAMES)}, "version": {"type": "string", "minLength": 1}},
            "additionalProperties": False,
        },
        "gpu": {
            "type": ["object", "null"],
            "required": ["name", "compute_capability"],
            "properties": {"name": {"type": "string"}, "compute_capability": {"type": "string"}},
            "additionalProperties": False,
        },
        "onnx": {
            "type": "object",
            "required": ["file", "sha256"],
            "properties": {"file": {"type": "string"}, "sha256": _SHA},
            "additionalProperties": False,
        },
        "inputs": {"type": "array", "items": _TENSOR, "minItems": 1},
        "outputs": {"type": "array", "items": _TENSOR, "minItems": 1},
        "profiles": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "object", "additionalProperties": _PROFILE_ENTRY},
        },
        "precision": {
            "type": "object",
            "required": ["mode", "onnx_float_types", "builder_flags", "strongly_typed"],
            "properties": {
                # int8 (fp8, int4): the file's explicit Q/DQ type (trt.graph.precision_mode)
                "mode": {"type": "string",
                         "pattern": "^(fp32|fp16|bf16|mixed|(int8|int16|int4|fp8)(\\+(int8|int16|int4|fp8))*)$"},
                "onnx_float_types": {"type": "array", "items": {"type": "string"}},
                "builder_flags": {"type": "array", "items": {"type": "string"}},
                "strongly_typed": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "plugin": {
            "type": "object",
            "required": ["used", "library", "sha256", "serialized_in_engine"],
            "properties": {
                "used": {"type": "boolean"},
                "library": {"type": ["string", "null"]},
                "sha256": {"oneOf": [_SHA, {"type": "null"}]},
                "serialized_in_engine": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "version_compatible": {"type": "boolean"},
        "workspace_bytes": {"type": ["integer", "null"], "minimum": 1},
        "graph": {
            "type": "object",
            "required": ["carafe_nodes", "mmcv_converted", "carafe_form"],
            "properties": {
                "carafe_nodes": {"type": "integer", "minimum": 0},
                "mmcv_converted": {"type": "integer", "minimum": 0},
                # plugin: the CARAFE plugin; unrolled: carafe_deploy.onnx.unrolled; none: no CARAFE node;
                # function: the model-local function's Loop (only in upgraded version 1 files)
                "carafe_form": {"enum": ["plugin", "unrolled", "function", "none"]},
                # the detectors' carafe::MultiLevelRoIAlign / BatchedNMS nodes: built by their plugins, or inlined
                # into their functions' standard ops (only where the graph has them)
                "detection_nodes": {"type": "integer", "minimum": 0},
                "detection_form": {"enum": ["plugin", "inlined"]},
            },
            "additionalProperties": False,
        },
    },
}




def _schema_v1() -> dict:
    v1 = copy.deepcopy(SCHEMA)
    v1["properties"]["schema"] = {"const": SCHEMA_V1_ID}
    v1["required"] = [("tensorrt_version" if k == "runtime" else k) for k in v1["required"]]
    del v1["properties"]["runtime"]
    v1["properties"]["tensorrt_version"] = {"type": "string", "minLength": 1}
    graph = v1["properties"]["graph"]
    graph["required"] = ["carafe_nodes", "mmcv_converted", "carafe_function"]
    del graph["properties"]["carafe_form"]
    graph["properties"]["carafe_function"] = {"enum": ["dropped", "kept", "absent"]}
    return v1


SCHEMA_V1 = _schema_v1()


def upgrade_v1(data: dict) -> dict:
    """A version 1 sidecar (already validated) as version 2."""
    new = {k: v for k, v in data.items() if k != "tensorrt_version"}
    new["schema"] = SCHEMA_ID
    new["runtime"] = {"name": "tensorrt", "version": data["tensorrt_version"]}
    graph = {k: v for k, v in data["graph"].items() if k != "carafe_function"}
    graph["carafe_form"] = ("plugin" if data["plugin"]["used"] else
                            "function" if data["graph"]["carafe_function"] == "kept" else "none")
    new["graph"] = graph
    return new


def sidecar_path(engine_path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_sidecar(data: dict, schema: dict = SCHEMA) -> None:
    """``ValueError`` naming the field when ``data`` does not follow ``schema`` (plugin use needs its hash)."""
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "<root>"
        raise ValueError(f"engine sidecar field {where}: {exc.message}") from None
    plugin = data["plugin"]
    if plugin["used"] and (plugin["library"] is None or plugin["sha256"] is None):
        raise ValueError("engine sidecar field plugin: a used plugin needs its library path and sha256")
    names = [t["name"] for t in data["inputs"]]
    for i, profile in enumerate(data["profiles"]):
        if sorted(profile) != sorted(names):
            raise ValueError(f"engine sidecar field profiles/{i}: covers {sorted(profile)}, the inputs are {names}")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_sidecar(engine_path, data: dict) -> Path:
    validate_sidecar(data)
    path = sidecar_path(engine_path)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def read_sidecar(engine_path) -> dict | None:
    """The engine's sidecar, validated, as version 2 (a version 1 file is upgraded); ``None`` when there is none."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if isinstance(data, dict) and data.get("schema") == SCHEMA_V1_ID:
        validate_sidecar(data, SCHEMA_V1)
        return upgrade_v1(data)
    validate_sidecar(data)
    return data


def gpu_info(device: int = 0) -> dict | None:
    """Name and compute capability of the GPU the engine is built on, through torch or pycuda; ``None`` if neither
    can see one (or the driver sees none: TensorRT-RTX builds without a GPU, and importing torch costs seconds)."""
    from .runtime import cuda_device_count

    if cuda_device_count() == 0:
        return None
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device)
            return {"name": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}
    except Exception:  # a broken CUDA setup must not stop the sidecar from being written
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        return {"name": dev.name(), "compute_capability": f"{major}.{minor}"}
    except Exception:
        return None
