"""What the builder decides before TensorRT is imported: sizes, the runtime's name, the plan."""

import onnx
import pytest
from support.trt_toys import carafe_model

from carafe_deploy.trt.builder import BuildOptions, parse_size, plan_build
from carafe_deploy.trt.runtime import RUNTIMES, check_backend


def test_sizes():
    assert parse_size("2G") == 2 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("1000") == 1000
    with pytest.raises(ValueError, match="bad size"):
        parse_size("lots")


def test_backend_names():
    assert list(RUNTIMES) == ["tensorrt", "tensorrt-rtx"]  # the order of the automatic choice: full TensorRT first
    assert check_backend(None) is None and check_backend("tensorrt-rtx") == "tensorrt-rtx"
    with pytest.raises(ValueError, match=r"unknown TensorRT backend 'tvm': use one of tensorrt, tensorrt-rtx"):
        check_backend("tvm")


def test_plan_refuses_an_unknown_backend_before_reading_the_model(tmp_path):
    with pytest.raises(ValueError, match="unknown TensorRT backend 'trt'"):
        plan_build(BuildOptions(onnx_path=tmp_path / "missing.onnx", backend="trt"))


def test_plan_of_an_fp16_model_ignores_the_constants_graph_preparation_adds(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(carafe_model(function=False, dtype=onnx.TensorProto.FLOAT16), path)
    plan = plan_build(BuildOptions(onnx_path=path, use_plugin=False))
    assert plan.prepared.carafe_form == "unrolled"
    assert any(t.data_type == onnx.TensorProto.FLOAT for t in plan.prepared.model.graph.initializer)  # Resize scales
    assert plan.precision_mode == "fp16" and plan.onnx_float_types == ["float16"]
