"""Graph preparation for TensorRT's ONNX parser: the CARAFE local function dropped for the plugin; without it, each
CARAFE node unrolled (tests/onnx/test_unrolled.py checks the numbers); mmcv nodes converted."""

import onnx
import pytest
from support.trt_toys import carafe_model

from carafe_deploy.errors import DeployError
from carafe_deploy.trt.graph import all_nodes, onnx_input_dims, onnx_io_types, prepare_onnx


def _functions(model):
    return [(f.domain, f.name) for f in model.functions]


def test_plugin_build_drops_the_carafe_function_and_leaves_the_input_alone():
    model = carafe_model(function=True)
    prepared = prepare_onnx(model, use_plugin=True)
    assert _functions(prepared.model) == []
    assert prepared.function_dropped and prepared.carafe_form == "plugin"
    assert prepared.carafe_nodes == ["carafe_up"]
    assert _functions(model) == [("carafe", "CARAFE")]  # the caller's model is not modified
    onnx.checker.check_model(prepared.model)  # still a valid model (the node is now a custom-domain op)


def test_other_local_functions_are_kept():
    model = carafe_model(function=True)
    other = onnx.helper.make_function("mine", "Helper", ["x"], ["y"], [onnx.helper.make_node("Relu", ["x"], ["y"])],
                                      [onnx.helper.make_opsetid("", 18)])
    model.functions.append(other)
    prepared = prepare_onnx(model, use_plugin=True)
    assert _functions(prepared.model) == [("mine", "Helper")]


@pytest.mark.parametrize("function", [True, False], ids=["portable", "plugin-form"])
def test_no_plugin_unrolls_every_carafe_node(function):
    model = carafe_model(function=function)
    prepared = prepare_onnx(model, use_plugin=False)
    ops = [(n.domain, n.op_type) for n in prepared.model.graph.node]
    assert ("carafe", "CARAFE") not in ops and ("", "Loop") not in ops
    assert {"Pad", "Resize", "Split", "Slice", "Mul", "Add", "Relu"} == {op for _, op in ops}
    assert _functions(prepared.model) == [] and "carafe" not in {o.domain for o in prepared.model.opset_import}
    assert prepared.carafe_form == "unrolled" and prepared.function_dropped == function
    assert prepared.carafe_nodes == ["carafe_up"]
    assert any("unrolled 1 carafe::CARAFE node(s)" in note for note in prepared.notes)
    onnx.checker.check_model(prepared.model, full_check=True)
    assert ("carafe", "CARAFE") in [(n.domain, n.op_type) for n in model.graph.node]  # the input is not modified


def test_model_without_carafe_builds_either_way():
    model = carafe_model(function=False)
    del model.graph.node[0]
    model.graph.node[0].input[0] = "features"  # Relu straight on the input
    for use_plugin in (True, False):
        prepared = prepare_onnx(model, use_plugin=use_plugin)
        assert prepared.carafe_nodes == [] and prepared.carafe_form == "none"


def test_prepare_rejects_non_models():
    with pytest.raises(TypeError, match="onnx.ModelProto"):
        prepare_onnx(b"not a model")


def test_input_dims_and_types():
    dims = onnx_input_dims(carafe_model(dynamic=True))
    assert dims == {"features": ["N", 4, "H", "W"], "kernels": ["N", 9, "H2", "W2"]}
    assert onnx_input_dims(carafe_model(hw=6))["kernels"] == [1, 9, 12, 12]
    types = onnx_io_types(carafe_model(dtype=onnx.TensorProto.FLOAT16))
    assert types == {"features": "float16", "kernels": "float16", "y": "float16"}


def _convert_mmcv_available() -> bool:
    try:
        from carafe_deploy.onnx import convert_mmcv  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _convert_mmcv_available(), reason="carafe_deploy.onnx.convert_mmcv has not landed yet")
def test_mmcv_nodes_are_converted_to_carafe():
    prepared = prepare_onnx(carafe_model(mmcv=True), use_plugin=True)
    nodes = [(n.domain, n.op_type) for n in prepared.model.graph.node]
    assert ("mmcv", "MMCVCARAFE") not in nodes and ("carafe", "CARAFE") in nodes
    assert prepared.mmcv_converted == 1
    node = next(n for n in prepared.model.graph.node if n.op_type == "CARAFE")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["kernel_size"] == 3 and attrs["group"] == 1 and attrs["scale_factor"] == 2
    assert attrs["mode"] in ("up", b"up")


def test_mmcv_conversion_failure_is_a_deploy_error(monkeypatch):
    import sys
    import types

    fake = types.ModuleType("carafe_deploy.onnx")
    fake.convert_mmcv = lambda model: model  # converts nothing
    monkeypatch.setitem(sys.modules, "carafe_deploy.onnx", fake)
    with pytest.raises(DeployError, match=r"1 of 1 mmcv::MMCVCARAFE nodes were not converted"):
        prepare_onnx(carafe_model(mmcv=True))


def test_mmcv_nodes_build_without_the_plugin_too():
    prepared = prepare_onnx(carafe_model(mmcv=True), use_plugin=False)
    assert prepared.mmcv_converted == 1 and prepared.carafe_form == "unrolled"
    assert not any(n.domain in ("mmcv", "carafe") for n in all_nodes(prepared.model))
