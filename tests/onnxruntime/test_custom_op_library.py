"""The ONNX Runtime custom-op library (carafe_deploy.onnxruntime): the plugin form runs in ONNX Runtime -- this
environment's (the newest) and 1.16, the oldest supported ($CARAFE_DEPLOY_ORT_LOWER_PYTHON) -- against the float64
loop reference, every mode, group, scale and float type; bad nodes are ONNX Runtime errors with the reason.

The library is compiled on first use and needs onnxruntime_c_api.h (CARAFE_DEPLOY_ORT_INCLUDE; .ci/run provides
it from Debian's libonnxruntime-dev): where there is none the tests skip with the reason, unless
CARAFE_DEPLOY_REQUIRE_ORT_LIBRARY=1 (CI) makes that a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from support.onnx_graphs import random_case, single_node_model
from support.ort_library import library_or_skip, without_library
from support.reference import carafe_reference

from carafe_deploy import onnxruntime as custom_ops
from carafe_deploy.errors import DeployError, MissingDependencyError


@pytest.fixture(scope="module")
def library() -> str:
    return library_or_skip()


CASES = [  # n, c, h, w, k, group, s, mode
    (1, 8, 7, 9, 5, 1, 2, "up"),
    (2, 8, 6, 5, 3, 2, 2, "up"),
    (1, 12, 5, 7, 5, 4, 3, "up"),
    (1, 4, 6, 6, 1, 1, 1, "up"),
    (2, 6, 7, 9, 3, 1, 2, "down"),
    (1, 8, 9, 11, 7, 2, 3, "down"),
    (1, 4, 5, 5, 5, 1, 1, "down"),
]
TYPES = {np.float32: (onnx.TensorProto.FLOAT, 1e-5), np.float64: (onnx.TensorProto.DOUBLE, 1e-12),
         np.float16: (onnx.TensorProto.FLOAT16, 2e-3)}


def _plugin_model(case, dtype=np.float32, opset=17) -> onnx.ModelProto:
    n, c, h, w, k, g, s, mode = case
    model = single_node_model(k, g, s, mode, elem_type=TYPES[dtype][0], opset=opset, function=False)
    model.ir_version = 9
    return model


def _session(model: onnx.ModelProto, library: str, threads: int = 1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.register_custom_ops_library(library)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("dtype", list(TYPES), ids=lambda t: t.__name__)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"k{c[4]}g{c[5]}s{c[6]}{c[7]}")
def test_plugin_form_against_the_reference(library, case, dtype):
    n, c, h, w, k, g, s, mode = case
    x, kern = random_case(*case, dtype=dtype)
    got = _session(_plugin_model(case, dtype), library).run(None, {"features": x, "kernels": kern})[0]
    want = carafe_reference(x, kern, k, g, s, mode)
    assert got.dtype == dtype and got.shape == want.shape
    assert np.abs(got - want).max() / np.abs(want).max() <= TYPES[dtype][1]


def test_intra_op_threads_give_the_same_bytes(library):
    case = (2, 32, 24, 40, 5, 2, 2, "up")  # big enough for the kernel to split the work
    x, kern = random_case(*case)
    one = _session(_plugin_model(case), library, 1).run(None, {"features": x, "kernels": kern})[0]
    two = _session(_plugin_model(case), library, 2).run(None, {"features": x, "kernels": kern})[0]
    assert np.array_equal(one, two)


@pytest.mark.parametrize("attrs, feeds, words", [
    ({"kernel_size": 4}, None, "kernel_size must be odd"),
    ({"mode": "sideways"}, None, 'mode must be "up" or "down"'),
    ({"group": 3}, None, "not divisible by group"),
    ({}, ((1, 4, 3, 3), (1, 9, 6, 6)), "do not fit features"),
])
def test_bad_nodes_are_onnxruntime_errors_with_the_reason(library, attrs, feeds, words):
    model = _plugin_model((1, 4, 3, 3, 5, 1, 2, "up"))
    node = model.graph.node[0]
    for attr in node.attribute:
        if attr.name in attrs:
            node.attribute.remove(attr)
            node.attribute.append(onnx.helper.make_attribute(attr.name, attrs[attr.name]))
            break
    fshape, kshape = feeds or ((1, 4, 3, 3), (1, 25, 6, 6))
    with pytest.raises(Exception, match=words):
        _session(model, library).run(None, {"features": np.zeros(fshape, np.float32),
                                            "kernels": np.zeros(kshape, np.float32)})


def test_make_session_registers_it_for_plugin_form_files(library):
    from carafe_deploy.backends.onnxrt import run_onnxruntime

    case = CASES[4]
    x, kern = random_case(*case)
    got = run_onnxruntime(_plugin_model(case), {"features": x, "kernels": kern})["output"]
    assert np.abs(got - carafe_reference(x, kern, *case[4:])).max() < 1e-5


def test_without_a_header_the_error_names_the_portable_form(monkeypatch, tmp_path):
    from carafe_deploy.backends.onnxrt import make_session

    without_library(monkeypatch, tmp_path)
    with pytest.raises(MissingDependencyError, match="has no onnxruntime_c_api.h"):
        custom_ops.library_path()
    monkeypatch.delenv(custom_ops.INCLUDE_ENV)
    with pytest.raises(DeployError, match=r"carafe-deploy convert MODEL.onnx --to portable"):
        make_session(_plugin_model(CASES[0]))


_LOWER_SCRIPT = """
import sys, numpy as np, onnxruntime as ort
data = np.load(sys.argv[2])
options = ort.SessionOptions()
options.register_custom_ops_library(sys.argv[1])
for i in range(int(data["count"])):
    sess = ort.InferenceSession(sys.argv[3 + i], options, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"features": data[f"x{i}"], "kernels": data[f"k{i}"]})[0]
    ref = data[f"ref{i}"]
    print(y.dtype, float(np.abs(y - ref).max() / np.abs(ref).max()))
print("onnxruntime", ort.__version__)
"""


@pytest.mark.skipif(not os.environ.get("CARAFE_DEPLOY_ORT_LOWER_PYTHON"),
                    reason="set CARAFE_DEPLOY_ORT_LOWER_PYTHON to a Python with onnxruntime 1.16 (.ci/run makes one)")
def test_the_same_library_runs_in_onnxruntime_1_16(library, tmp_path):
    paths, feeds = [], {}
    for dtype in TYPES:
        for case in (CASES[0], CASES[5]):
            i = len(paths)
            path = tmp_path / f"{i}.onnx"
            onnx.save(_plugin_model(case, dtype), path)
            paths.append(str(path))
            x, kern = random_case(*case, dtype=dtype)
            feeds.update({f"x{i}": x, f"k{i}": kern, f"ref{i}": carafe_reference(x, kern, *case[4:])})
    np.savez(tmp_path / "feeds.npz", count=np.array(len(paths)), **feeds)
    proc = subprocess.run([os.environ["CARAFE_DEPLOY_ORT_LOWER_PYTHON"], "-c", _LOWER_SCRIPT, library,
                           str(tmp_path / "feeds.npz"), *paths], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("onnxruntime 1.16"), lines[-1]
    rows = [line.split() for line in lines[:-1]]
    assert [r[0] for r in rows] == ["float32", "float32", "float64", "float64", "float16", "float16"]
    tolerance = {"float32": 1e-5, "float64": 1e-12, "float16": 2e-3}
    assert all(float(err) <= tolerance[t] for t, err in rows), rows
    assert Path(library).is_file()
