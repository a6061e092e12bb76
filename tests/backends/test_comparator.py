"""carafe_deploy.compare: the comparison that `check`, the task pipelines and the demo report."""

from __future__ import annotations

import json

import numpy as np
from rich.console import Console

from carafe_deploy.compare import BackendResult, compare, render_table, report_dict, run_comparison
from carafe_deploy.report import write_json


def test_errors_and_allclose():
    ref = {"a": np.array([1.0, -2.0, 0.0], np.float32)}
    (d,) = compare(ref, {"a": np.array([1.0, -2.0004, 1e-6], np.float32)}, rtol=1e-4, atol=1e-5)
    assert abs(d.max_abs - 4e-4) < 1e-6 and abs(d.max_rel - 2e-4) < 1e-6
    assert not d.allclose and not d.passed  # |0.0004| > 1e-5 + 1e-4 * 2
    (d,) = compare(ref, {"a": ref["a"] * (1 + 1e-6)}, rtol=1e-4, atol=1e-5)
    assert d.passed


def test_mismatches_are_reported_not_raised():
    ref = {"a": np.zeros((2, 3)), "b": np.ones(2)}
    diffs = {d.name: d for d in compare(ref, {"a": np.zeros((3, 2)), "c": np.ones(1)})}
    assert "shape (3, 2) != reference (2, 3)" in diffs["a"].problem
    assert diffs["b"].problem == "output missing"
    assert diffs["c"].problem == "no reference for this output"
    (nan,) = compare({"a": np.ones(3)}, {"a": np.array([1.0, np.nan, 1.0])})
    assert not nan.passed and "NaN" in nan.problem


def test_table_and_json(tmp_path):
    ok = BackendResult("onnxruntime", "passed", compare({"y": np.ones(2)}, {"y": np.ones(2)}))
    skipped = BackendResult("tensorrt", "skipped", reason="no TensorRT")
    console = Console(record=True, width=200)
    console.print(render_table([ok, skipped]))
    text = console.export_text()
    assert "onnxruntime" in text and "tensorrt skipped: no TensorRT" in text
    assert text.count("no TensorRT") == 1  # the reason once, below the table
    report = report_dict([ok, skipped], model="m.onnx")
    write_json(tmp_path / "r.json", report)
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is True and data["skipped"] == ["tensorrt"]
    assert data["backends"][1]["status"] == "skipped" and data["backends"][0]["outputs"][0]["passed"] is True
    assert report_dict([skipped])["passed"] is False  # nothing compared is not a pass


def test_runners_are_compared_and_missing_runtimes_skipped():
    """run_comparison over real runners: ONNX Runtime on a one-node Relu model, and a runner whose runtime is
    missing (TrtRunner without TensorRT here) reported as skipped, never as passed."""
    import onnx
    from onnx import TensorProto, helper

    from carafe_deploy.backends import OnnxrtRunner
    from carafe_deploy.errors import MissingDependencyError
    from carafe_deploy.backends.base import Runner

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)

    class Absent(Runner):
        name = "absent"

        def activate_impl(self):
            raise MissingDependencyError("absent runtime is not installed")

        def input_metadata(self):
            return []

        def infer_impl(self, feeds):
            raise AssertionError("never runs")

    x = np.array([[-1.0, 0.5, 2.0], [3.0, -0.25, 0.0]], np.float32)
    wrong_reference = {"y": np.abs(x)}  # |x| is not relu(x): must fail
    results = run_comparison([OnnxrtRunner(model), Absent()], {"x": x}, {"y": np.maximum(x, 0)})
    assert [r.status for r in results] == ["passed", "skipped"]
    assert results[1].reason == "absent runtime is not installed"
    assert run_comparison([OnnxrtRunner(model)], {"x": x}, wrong_reference)[0].status == "failed"
