"""The engine sidecar's JSON schema (version 2), and reading version 1 files. Sidecars written by real builds are
checked in tests/trt/test_tensorrt_rtx.py."""

import copy
import json

import pytest

from carafe_deploy.trt.sidecar import read_sidecar, sidecar_path, validate_sidecar, write_sidecar

GOOD = {
    "schema": "carafe-deploy/engine-sidecar/2",
    "engine": {"file": "m.engine", "bytes": 123, "sha256": "a" * 64},
    "created": "2026-01-01T00:00:00+00:00",
    "carafe_deploy_version": "0.1.0",
    "runtime": {"name": "tensorrt", "version": "10.13.0.35"},
    "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"},
    "onnx": {"file": "m.onnx", "sha256": "b" * 64},
    "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3, -1, -1]}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 3, -1, -1]}],
    "profiles": [{"x": {"min": [1, 3, 8, 8], "opt": [1, 3, 16, 16], "max": [2, 3, 32, 32]}}],
    "precision": {"mode": "fp32", "onnx_float_types": ["float32"], "builder_flags": [], "strongly_typed": True},
    "plugin": {"used": True, "library": "/x/libcarafe_trt_plugin.so", "sha256": "c" * 64,
               "serialized_in_engine": False},
    "version_compatible": False,
    "workspace_bytes": None,
    "graph": {"carafe_nodes": 1, "mmcv_converted": 0, "carafe_form": "plugin"},
}


def test_good_sidecar_round_trips(tmp_path):
    engine = tmp_path / "m.engine"
    path = write_sidecar(engine, GOOD)
    assert path == sidecar_path(engine) == tmp_path / "m.engine.json"
    assert read_sidecar(engine) == GOOD
    assert read_sidecar(tmp_path / "other.engine") is None


def _broken(path, value):
    data = copy.deepcopy(GOOD)
    *parents, last = path
    node = data
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize("path, value, match", [
    (["runtime"], KeyError, r"<root>: 'runtime' is a required property"),
    (["runtime", "name"], "tensorrt_llm", r"runtime/name"),
    (["runtime", "version"], "", r"runtime/version"),
    (["precision", "mode"], "fp64", r"precision/mode"),
    (["engine", "sha256"], "xyz", r"engine/sha256"),
    (["profiles", 0, "x", "min"], [1, "3"], r"profiles/0/x/min/1"),
    (["graph", "carafe_form"], "inlined", r"graph/carafe_form"),
    (["extra"], 1, r"Additional properties"),
    (["plugin", "sha256"], None, r"plugin: a used plugin needs its library path and sha256"),
    (["profiles"], [{"z": {"min": [1], "opt": [1], "max": [1]}}], r"profiles/0: covers \['z'\], the inputs are"),
])
def test_bad_sidecars_name_the_field(path, value, match):
    with pytest.raises(ValueError, match=match):
        validate_sidecar(_broken(path, value))


def test_unreadable_sidecar(tmp_path):
    (tmp_path / "m.engine.json").write_text("{nope")
    with pytest.raises(ValueError, match="not JSON"):
        read_sidecar(tmp_path / "m.engine")
    (tmp_path / "m.engine.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="engine sidecar field"):
        read_sidecar(tmp_path / "m.engine")


def _v1(**graph):
    """GOOD as a version 1 writer wrote it: ``tensorrt_version``, ``graph.carafe_function``."""
    data = copy.deepcopy(GOOD)
    data["schema"] = "carafe-deploy/engine-sidecar/1"
    data["tensorrt_version"] = data.pop("runtime")["version"]
    data["graph"] = {"carafe_nodes": 1, "mmcv_converted": 0, **graph}
    return data


@pytest.mark.parametrize("function, used, form", [("dropped", True, "plugin"), ("absent", True, "plugin"),
                                                  ("kept", False, "function"), ("absent", False, "none")])
def test_version_1_sidecars_are_read_as_version_2(tmp_path, function, used, form):
    data = _v1(carafe_function=function)
    data["plugin"] = GOOD["plugin"] if used else {"used": False, "library": None, "sha256": None,
                                                  "serialized_in_engine": False}
    (tmp_path / "m.engine.json").write_text(json.dumps(data))
    side = read_sidecar(tmp_path / "m.engine")
    validate_sidecar(side)  # a valid version 2 sidecar
    assert side["schema"] == "carafe-deploy/engine-sidecar/2"
    assert side["runtime"] == {"name": "tensorrt", "version": "10.13.0.35"}  # version 1 writers imported tensorrt only
    assert side["graph"] == {"carafe_nodes": 1, "mmcv_converted": 0, "carafe_form": form}
    assert "tensorrt_version" not in side


def test_version_1_sidecars_are_checked_against_their_own_schema(tmp_path):
    data = _v1(carafe_function="unrolled")  # not a version 1 value
    (tmp_path / "m.engine.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"graph/carafe_function"):
        read_sidecar(tmp_path / "m.engine")
    data = _v1(carafe_function="kept")
    data["runtime"] = GOOD["runtime"]  # a version 2 field in a version 1 file
    (tmp_path / "m.engine.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"Additional properties"):
        read_sidecar(tmp_path / "m.engine")
