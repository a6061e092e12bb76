"""Issue 13, the comparator and the ONNX Runtime session factory: NaN/Inf on both sides, empty outputs and a runner
with no outputs are failures (nothing compared is not a pass); a requested provider that is missing is refused, and a
comparison through it is an error row, never a pass on the CPU."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from carafe_deploy.backends import OnnxrtRunner
from carafe_deploy.backends.base import Runner
from carafe_deploy.backends.onnxrt import check_providers, make_session
from carafe_deploy.compare import compare, compare_runner, report_dict
from carafe_deploy.errors import DeployError


@pytest.mark.parametrize("ref, act, problem", [
    (np.full((2, 3), np.nan), np.full((2, 3), np.nan), "the reference has 6 NaN/Inf of 6 values: nothing to compare them with"),
    (np.full((2, 3), np.inf), np.full((2, 3), np.inf), "the reference has 6 NaN/Inf of 6 values: nothing to compare them with"),
    (np.array([1.0, np.nan, 3.0]), np.array([1.0, np.nan, 3.0]), "the reference has 1 NaN/Inf of 3 values: nothing to compare them with"),
    (np.array([1.0, 2.0]), np.array([1.0, np.inf]), "output has 1 NaN/Inf where the reference is finite"),
    (np.zeros((0, 3)), np.zeros((0, 3)), "empty output (0 elements): nothing was compared"),
])
def test_non_finite_and_empty_outputs_fail(ref, act, problem):
    (d,) = compare({"y": ref.astype(np.float32)}, {"y": act.astype(np.float32)})
    assert not d.passed and not d.allclose and d.problem == problem


def test_finite_values_are_still_compared_beside_non_finite_ones():
    (d,) = compare({"y": np.array([1.0, 2.0, 3.0])}, {"y": np.array([1.0, np.nan, 3.5])})
    assert d.max_abs == pytest.approx(0.5) and d.max_rel == pytest.approx(0.5 / 3) and not d.passed
    (ok,) = compare({"y": np.array([1.0, 2.0])}, {"y": np.array([1.0, 2.0 + 1e-7])})
    assert ok.passed


class _NoOutputs(Runner):
    name = "nothing"

    def activate_impl(self):
        pass

    def input_metadata(self):
        return []

    def infer_impl(self, feeds):
        return {}


def test_a_runner_with_nothing_to_compare_fails():
    result = compare_runner(_NoOutputs(), {}, {}, 1e-4, 1e-5)
    assert result.status == "failed" and result.reason == "no outputs to compare"
    assert report_dict([result])["passed"] is False


def _identity():
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_a_missing_provider_is_refused_not_replaced_by_the_cpu():
    with pytest.raises(DeployError, match=r"provider\(s\) CUDAExecutionProvider not available .*it has .*CPUExecution"):
        check_providers(["CUDAExecutionProvider"])
    with pytest.raises(DeployError, match="NoSuchExecutionProvider not available"):
        make_session(_identity(), ["CPUExecutionProvider", "NoSuchExecutionProvider"])
    x = np.ones(2, np.float32)
    result = compare_runner(OnnxrtRunner(_identity(), ["CUDAExecutionProvider"]), {"x": x}, {"y": x}, 1e-4, 1e-5)
    assert result.status == "error" and "CUDAExecutionProvider not available" in result.reason
    assert report_dict([result])["passed"] is False
    assert compare_runner(OnnxrtRunner(_identity()), {"x": x}, {"y": x}, 1e-4, 1e-5).status == "passed"
