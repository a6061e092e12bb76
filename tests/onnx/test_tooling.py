"""ONNX tooling around the forms (issue 12.5): onnxruntime's symbolic_shape_infer, onnx.version_converter (which
drops model-local functions: convert writes the function afresh), and the oldest ONNX Runtime the files are for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import version_converter

from carafe_deploy.onnx import to_decomposed
from carafe_deploy.onnx.convert import convert
from support.onnx_graphs import random_case, rel_err, single_node_model
from support.reference import carafe_reference

STATIC = {  # (k, group, s, mode): features dims, kernels dims, output dims
    (5, 2, 2, "up"): ([1, 8, 7, 9], [1, 50, 14, 18], [1, 8, 14, 18]),
    (3, 1, 2, "down"): ([2, 6, 7, 9], [2, 9, 4, 5], [2, 6, 4, 5]),
}


def _symbolic_shape_infer(model: onnx.ModelProto, tmp_path) -> onnx.ModelProto:
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    # the command line, in its own process: it knows nothing of this package's schema
    proc = subprocess.run([sys.executable, "-m", "onnxruntime.tools.symbolic_shape_infer", "--input", str(src),
                           "--output", str(out), "--auto_merge"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return onnx.load(out)


def _dims(value_info):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("case", list(STATIC), ids=lambda c: "-".join(map(str, c)))
def test_symbolic_shape_infer_decomposed_gives_concrete_shapes(case, tmp_path):
    fdims, kdims, odims = STATIC[case]
    decomposed = to_decomposed(single_node_model(*case, dims=(fdims, kdims)))
    inferred = _symbolic_shape_infer(decomposed, tmp_path)
    assert _dims(inferred.graph.output[0]) == odims


def test_symbolic_shape_infer_runs_on_portable(tmp_path):
    """The tool infers through the function with plain ONNX shape inference, which does not propagate the shape
    values the body computes: the CARAFE output keeps rank 4 and symbolic dims (docs/ONNX.md says so)."""
    fdims, kdims, _ = STATIC[(5, 2, 2, "up")]
    inferred = _symbolic_shape_infer(single_node_model(5, 2, 2, "up", dims=(fdims, kdims)), tmp_path)
    assert len(_dims(inferred.graph.output[0])) == 4


def test_version_converter_drops_the_function_and_convert_restores_it():
    portable = convert(single_node_model(3, 1, 2, "up", opset=17, function=False), "portable", opset=17).model
    assert len(portable.functions) == 1
    assert not version_converter.convert_version(portable, 19).functions  # what onnx does on its own
    raised = convert(portable, "portable", opset=19)
    assert [(f.name, f.opset_import[0].version) for f in raised.model.functions] == [("CARAFE", 19)]
    assert any("opset 17 -> 19" in note for note in raised.notes)
    x, kern = random_case(1, 4, 5, 6, 3, 1, 2, "up")
    import onnxruntime as ort

    y = ort.InferenceSession(raised.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"features": x, "kernels": kern})[0]
    assert rel_err(y, carafe_reference(x, kern, 3, 1, 2, "up")) < 1e-6


# -------------------------------------------------------------------------------------------------------------
# The oldest ONNX Runtime the files are for: 1.16 (IR version 9). Its Python lives in another environment
# (onnxruntime 1.16.3 has no wheel for numpy 2); $CARAFE_DEPLOY_ORT_LOWER_PYTHON names it (.ci/run makes one).

_LOWER_SCRIPT = """
import sys, numpy as np, onnxruntime as ort
data = np.load(sys.argv[1])
for i in range(int(data["count"])):
    sess = ort.InferenceSession(sys.argv[2 + i], providers=["CPUExecutionProvider"])
    y = sess.run(None, {"features": data[f"x{i}"], "kernels": data[f"k{i}"]})[0]
    ref = data[f"ref{i}"]
    print(sys.argv[2 + i], float(np.abs(y - ref).max() / np.abs(ref).max()))
print("onnxruntime", ort.__version__)
"""


def _lower_python() -> str | None:
    return os.environ.get("CARAFE_DEPLOY_ORT_LOWER_PYTHON")


@pytest.mark.skipif(not _lower_python(), reason="set CARAFE_DEPLOY_ORT_LOWER_PYTHON to a Python with onnxruntime "
                    "1.16 (.ci/run makes one)")
def test_portable_and_decomposed_files_run_in_onnxruntime_1_16(tmp_path):
    cases = [(1, 8, 7, 9, 5, 2, 2, "up"), (2, 6, 7, 9, 3, 1, 2, "down")]
    paths, feeds = [], {"count": np.array(2 * len(cases))}
    for form in ("portable", "decomposed"):
        for case in cases:
            i = len(paths)
            n, c, h, w, k, g, s, mode = case
            # as convert writes it from a plain opset-17 TorchScript-style plugin file
            model = convert(single_node_model(k, g, s, mode, opset=17, function=False), form).model
            assert model.ir_version == 9
            path = tmp_path / f"{form}_{mode}.onnx"
            onnx.save(model, path)
            paths.append(str(path))
            x, kern = random_case(*case)
            feeds.update({f"x{i}": x, f"k{i}": kern, f"ref{i}": carafe_reference(x, kern, k, g, s, mode)})
    np.savez(tmp_path / "feeds.npz", **feeds)
    proc = subprocess.run([_lower_python(), "-c", _LOWER_SCRIPT, str(tmp_path / "feeds.npz"), *paths],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("onnxruntime 1.16"), lines[-1]
    errors = {Path(line.split()[0]).name: float(line.split()[1]) for line in lines[:-1]}
    assert len(errors) == 4 and max(errors.values()) < 1e-5, errors
