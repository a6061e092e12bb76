"""The plugin library registers its creators when it is loaded (plugins/tensorrt/carafePluginRegistration.cpp), with
the real TensorRT-RTX, each way in a fresh process (registration is process-wide):

* ``ctypes.CDLL(lib)`` after ``import tensorrt_rtx`` and before it (polygraphy loads plugins before it imports
  TensorRT), twice, and mixed with ``IPluginRegistry.load_library`` in both orders;
* ``LD_PRELOAD`` (the library before any TensorRT, as for a program started with it);
* ``polygraphy convert --plugins`` (POLYGRAPHY_USE_TENSORRT_RTX=1) and polygraphy under ``LD_PRELOAD`` build an
  engine from a plugin-form file.

Needs the library (TensorRT headers, which CI lacks: skipped there with the reason) and TensorRT-RTX. The parser
needs its libtensorrt_rtx.so link for plugin nodes, on LD_LIBRARY_PATH from the start (plugins/tensorrt/README.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from carafe_deploy.trt import tensorrt_available
from support import tools

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(not tensorrt_available("tensorrt-rtx"),
                       reason="TensorRT-RTX is not installed (pip install -e '.[test]' installs it)"),
]
NAMES = ["CARAFE", "MMCVCARAFE"]


@pytest.fixture(scope="module")
def lib():
    from carafe_deploy.trt.plugin import plugin_library

    path = plugin_library(required=False)
    if path is None:
        pytest.skip("libcarafe_trt_plugin.so is not built here (it needs the TensorRT headers, which CI does not "
                    "have): cmake -S . -B build/trt -DTensorRT_INCLUDE_DIR=<TensorRT 11 include>")
    return str(path)


@pytest.fixture(scope="module")
def link_folder(tmp_path_factory):
    from carafe_deploy.trt import rtx
    from carafe_deploy.trt.runtime import import_tensorrt

    shim = tmp_path_factory.mktemp("shim")
    (shim / rtx.CORE_LIBRARY).symlink_to(rtx._parser_folder(import_tensorrt("tensorrt-rtx")) / f"{rtx.CORE_LIBRARY}.1")
    return shim


_PRELUDE = """
import ctypes, json, sys
LIB = sys.argv[1]
steps = []
def creators(trt):
    names = [c.name for c in trt.get_plugin_registry().all_creators]
    return {n: names.count(n) for n in ("CARAFE", "MMCVCARAFE")}
def step(what, trt, **extra):
    steps.append({"step": what, "creators": creators(trt), **extra})
"""


def _child(code: str, lib: str, env: dict | None = None) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_PRELUDE) + textwrap.dedent(code), lib],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _once_each(counts: dict) -> bool:
    return counts == {name: 1 for name in NAMES}


def test_cdll_after_import_registers_once_and_load_library_still_works(lib):
    steps = _child("""
        import tensorrt_rtx as trt
        step("start", trt)
        ctypes.CDLL(LIB); step("CDLL", trt)
        ctypes.CDLL(LIB); step("CDLL again", trt)
        handle = trt.get_plugin_registry().load_library(LIB); step("load_library", trt, ok=handle is not None)
        trt.get_plugin_registry().deregister_library(handle); step("deregister_library", trt)
        print(json.dumps(steps))
        """, lib)
    by = {s["step"]: s for s in steps}
    assert by["start"]["creators"] == {"CARAFE": 0, "MMCVCARAFE": 0}
    assert _once_each(by["CDLL"]["creators"]) and _once_each(by["CDLL again"]["creators"])
    # loadLibrary fails on a creator registered already: the library hands its creators over instead
    assert by["load_library"]["ok"] and _once_each(by["load_library"]["creators"])
    assert by["deregister_library"]["creators"] == {"CARAFE": 0, "MMCVCARAFE": 0}


def test_load_library_first_then_cdll(lib):
    steps = _child("""
        import tensorrt_rtx as trt
        handle = trt.get_plugin_registry().load_library(LIB); step("load_library", trt, ok=handle is not None)
        ctypes.CDLL(LIB); step("CDLL", trt)
        again = trt.get_plugin_registry().load_library(LIB); step("load_library again", trt, ok=again is not None)
        print(json.dumps(steps))
        """, lib)
    assert steps[0]["ok"] and _once_each(steps[0]["creators"])
    assert _once_each(steps[1]["creators"])
    # TensorRT's own rule for a library loaded twice (no change from before registration on load)
    assert not steps[2]["ok"] and _once_each(steps[2]["creators"])


def test_cdll_before_import(lib):
    steps = _child("""
        ctypes.CDLL(LIB)
        import tensorrt_rtx as trt
        step("import after CDLL", trt)
        print(json.dumps(steps))
        """, lib)
    assert _once_each(steps[0]["creators"])


def test_ld_preload(lib):
    steps = _child("""
        import tensorrt_rtx as trt
        step("LD_PRELOAD", trt)
        handle = trt.get_plugin_registry().load_library(LIB); step("load_library", trt, ok=handle is not None)
        print(json.dumps(steps))
        """, lib, {"LD_PRELOAD": lib})
    assert _once_each(steps[0]["creators"])
    assert steps[1]["ok"] and _once_each(steps[1]["creators"])


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory):
    from support.onnx_graphs import single_node_model

    from carafe_deploy.onnx.files import save_model

    path = tmp_path_factory.mktemp("polygraphy") / "carafe_plugin.onnx"
    model = single_node_model(5, 2, 2, "up", function=False, dims=([1, 8, 12, 16], [1, 50, 24, 32]))
    return save_model(model, path)


def _polygraphy(args: list[str], env: dict) -> subprocess.CompletedProcess:
    exe = tools.polygraphy()
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "POLYGRAPHY_USE_TENSORRT_RTX": "1", **env})


@pytest.mark.parametrize("how", ["--plugins", "LD_PRELOAD"])
def test_polygraphy_builds_a_plugin_engine(lib, link_folder, plugin_file, tmp_path, how):
    engine = tmp_path / "carafe.engine"
    env = {"LD_LIBRARY_PATH": str(link_folder)}
    args = ["convert", str(plugin_file), "-o", str(engine)]
    if how == "--plugins":
        args += ["--plugins", lib]
    else:
        env["LD_PRELOAD"] = lib
    proc = _polygraphy(args, env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    data = engine.read_bytes()
    assert data[:4] == b"vtrt" and b"CARAFE" in data  # the plugin's creator name is serialized with the engine


def test_polygraphy_without_the_plugin_does_not_find_it(link_folder, plugin_file, tmp_path):
    """The control: the same command without the library fails on the node, so the tests above test the library."""
    proc = _polygraphy(["convert", str(plugin_file), "-o", str(tmp_path / "x.engine")],
                       {"LD_LIBRARY_PATH": str(link_folder)})
    assert proc.returncode != 0 and "Plugin not found" in proc.stdout + proc.stderr
