"""Issue 13, ONNX: one validation of a CARAFE node (carafe_deploy/onnx/validate.py) refuses, naming the node and the
attribute, every node outside the schema or the contract, wherever it sits (main graph, If bodies, functions); the mmcv
converter refuses what mmcv does not write (kernel_size=5.7 is not truncated to 5) and converts nodes in subgraphs;
an empty file and a dynamic_axes entry that names no input are errors, not a model."""

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from carafe_deploy.errors import DeployError
from carafe_deploy.onnx import carafe_function, convert_mmcv, load_model
from carafe_deploy.onnx.validate import PLUGIN_LIMITS, validate_carafe_nodes, validate_mmcv_nodes
from support.onnx_graphs import random_case, single_node_model
from support.reference import carafe_reference

UP_STATIC = ([1, 4, 5, 5], [1, 25, 10, 10])  # features, kernels of k=5, s=2, mode "up"


def _with_attr(model, name, value):
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + ([helper.make_attribute(name, value)] if value is not None else []))
    return model


def _append(field, value, model):
    field.append(value)
    return model


def _then_branch(model):
    return next(a.g for a in model.graph.node[0].attribute if a.name == "then_branch")


def _named(model, name="up1"):
    model.graph.node[0].name = name
    return model


@pytest.mark.parametrize("change, words", [
    (lambda m: _with_attr(m, "mode", "sideways"), "mode must be one of 'up', 'down', got 'sideways'"),
    (lambda m: _with_attr(m, "mode", 1), "attribute 'mode' must be a string, got int (1)"),
    (lambda m: _with_attr(m, "mode", b"up\0garbage"), "attribute 'mode' holds a NUL byte"),
    (lambda m: _with_attr(m, "mode", b"\xff\xfe"), "attribute 'mode' is not UTF-8 text"),
    (lambda m: _with_attr(m, "colour", 3), "unknown attribute 'colour' (it has kernel_size, group, scale_factor, mode)"),
    (lambda m: _with_attr(m, "kernel_size", None), "the required attribute 'kernel_size' is missing"),
    (lambda m: _with_attr(m, "kernel_size", 5.0), "attribute 'kernel_size' must be an int, got float (5)"),
    (lambda m: _append(m.graph.node[0].attribute, helper.make_attribute("group", 1), m),
     "attribute 'group' is given twice"),
    (lambda m: _append(m.graph.node[0].input, "extra", m), "needs 2 inputs (features, kernels)"),
])
def test_nodes_outside_the_schema(change, words):
    model = change(_named(single_node_model(5, 1, 2, "up", dims=UP_STATIC)))
    with pytest.raises(DeployError) as info:
        validate_carafe_nodes(model)
    assert str(info.value).startswith("node 'up1' (carafe::CARAFE): ") and words in str(info.value)


@pytest.mark.parametrize("k, group, s, mode, dims, words", [
    (4, 1, 2, "up", ([1, 4, 5, 5], [1, 16, 10, 10]), "kernel_size must be an odd int >= 1, got 4"),
    (5, 0, 2, "up", UP_STATIC, "group must be >= 1, got 0"),
    (5, 1, 0, "up", UP_STATIC, "scale_factor must be >= 1, got 0"),
    # ONNX Runtime ignores mode: this file ran as "up" and `check` passed it
    (5, 1, 2, "down", UP_STATIC, "kernels height is 10, but mode='down' with scale_factor=2 gives 3"),
    (5, 3, 2, "up", ([1, 4, 5, 5], [1, 75, 10, 10]), "features channels (4) must be divisible by group (3)"),
    (3, 1, 2, "up", UP_STATIC, "kernels must have group*kernel_size^2 = 9 channels, got 25"),
    (5, 1, 2, "up", ([2, 4, 5, 5], [1, 25, 10, 10]), "kernels batch (1) must equal features batch (2)"),
    (5, 1, 2, "up", ([1, 4, 5], [1, 25, 10, 10]), "features must be 4-D"),
])
def test_nodes_outside_the_contract(k, group, s, mode, dims, words):
    model = _named(single_node_model(k, group, s, mode, dims=dims), "n7")
    with pytest.raises(DeployError, match=r"^node 'n7' \(carafe::CARAFE\): ") as info:
        validate_carafe_nodes(model)
    assert words in str(info.value)


def test_shapes_known_only_through_inference_are_checked():
    # the kernels come out of a Resize whose output shape only shape inference knows
    model = single_node_model(5, 1, 2, "down", dims=([1, 4, 5, 5], [1, 25, 5, 5]))
    graph = model.graph
    graph.input[1].name = "k_small"
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    graph.initializer.append(scales)
    graph.node.insert(0, helper.make_node("Resize", ["k_small", "", "scales"], ["kernels"], mode="nearest"))
    with pytest.raises(DeployError, match="kernels height is 10, but mode='down'"):
        validate_carafe_nodes(model)


def test_valid_nodes_pass_and_dynamic_shapes_are_not_guessed():
    validate_carafe_nodes(single_node_model(5, 1, 2, "up", dims=UP_STATIC))
    validate_carafe_nodes(single_node_model(5, 2, 2, "down"))  # symbolic dims: only the attributes are checked
    big = single_node_model(PLUGIN_LIMITS["kernel_size"] + 2, 1, 2, "up")
    validate_carafe_nodes(big)  # ONNX Runtime runs it
    with pytest.raises(DeployError, match="kernel_size 65 is above the TensorRT plugin's limit of 63"):
        validate_carafe_nodes(big, plugin=True)


def _in_if(node, graph_inputs, outputs_info):
    then = helper.make_graph([node], "then", [], outputs_info)
    other = helper.make_graph([helper.make_node("Identity", ["features"], ["alt"])], "else", [],
                              [helper.make_tensor_value_info("alt", TensorProto.FLOAT, None)])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    if_node = helper.make_node("If", ["cond"], ["result"], name="branch", then_branch=then, else_branch=other)
    graph = helper.make_graph([if_node], "g", graph_inputs + [cond],
                              [helper.make_tensor_value_info("result", TensorProto.FLOAT, None)])
    return graph


def test_nodes_in_subgraphs_and_functions_are_validated():
    fi = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4, 5, 5])
    ki = helper.make_tensor_value_info("kernels", TensorProto.FLOAT, [1, 25, 10, 10])
    node = helper.make_node("CARAFE", ["features", "kernels"], ["out"], domain="carafe", name="deep", kernel_size=5,
                            mode="sideways")
    graph = _in_if(node, [fi, ki], [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("carafe", 1)],
                              functions=[carafe_function(18)])
    with pytest.raises(DeployError, match=r"node 'deep' \(carafe::CARAFE\) in graph > If 'branch' then_branch: mode"):
        validate_carafe_nodes(model)

    # in a model-local function: attributes that refer to the function's own are checked at the call site
    inner = helper.make_node("CARAFE", ["x", "k"], ["y"], domain="carafe", name="in_fn")
    inner.attribute.append(helper.make_attribute_ref("kernel_size", onnx.AttributeProto.INT))
    fn = helper.make_function("user", "Block", ["x", "k"], ["y"], [inner],
                              [helper.make_opsetid("", 18), helper.make_opsetid("carafe", 1)], attributes=["kernel_size"])
    bad = helper.make_function("user", "Bad", ["x", "k"], ["y"],
                               [helper.make_node("CARAFE", ["x", "k"], ["y"], domain="carafe", name="bad_fn",
                                                 kernel_size=2)],
                               [helper.make_opsetid("", 18), helper.make_opsetid("carafe", 1)])
    ok = single_node_model(5, 1, 2, "up", dims=UP_STATIC)
    ok.functions.append(fn)
    validate_carafe_nodes(ok)
    ok.functions.append(bad)
    with pytest.raises(DeployError, match=r"node 'bad_fn' \(carafe::CARAFE\) in function user::Bad: kernel_size must "
                                          r"be an odd int >= 1, got 2"):
        validate_carafe_nodes(ok)


# ---- mmcv ----------------------------------------------------------------------------------------------------


def _mmcv(attrs, op="MMCVCARAFE", in_if=False):
    node = helper.make_node(op, ["features", "masks"], ["out"], domain="mmcv", name="m0", **attrs)
    fi = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4, 5, 5])
    ki = helper.make_tensor_value_info("masks", TensorProto.FLOAT, [1, 25, 10, 10])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 10, 10])
    if in_if:
        graph = _in_if(node, [fi, ki], [out])
    else:
        graph = helper.make_graph([node], "g", [fi, ki], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("mmcv", 1)],
                             ir_version=10)


@pytest.mark.parametrize("attrs, op, words", [
    ({"kernel_size": 5.7, "group_size": 1, "scale_factor": 2.0}, "MMCVCARAFE",
     "attribute 'kernel_size' must be an int, got float (5.7)"),
    ({"kernel_size": 4, "group_size": 1, "scale_factor": 2.0}, "MMCVCARAFE", "kernel_size must be an odd int >= 1, got 4"),
    ({"kernel_size": 5, "group_size": 0, "scale_factor": 2.0}, "MMCVCARAFE", "group_size must be >= 1, got 0"),
    ({"kernel_size": 4, "group_size": 1, "scale_factor": 2.0}, "MMCVCARAFENaive", "kernel_size must be an odd int"),
    ({"kernel_size": 5, "scale_factor": 2.5}, "MMCVCARAFE", "scale_factor 2.5 is not a positive integer"),
    ({"group_size": 1, "scale_factor": 2.0}, "MMCVCARAFE", "the required attribute 'kernel_size' is missing"),
    ({"kernel_size": 5, "group": 1}, "MMCVCARAFE", "unknown attribute 'group' (it has kernel_size, group_size"),
    ({"kernel_size": 3, "group_size": 1, "scale_factor": 2.0}, "MMCVCARAFE",
     "kernels must have group*kernel_size^2 = 9 channels, got 25"),
])
def test_mmcv_nodes_are_validated_before_conversion(attrs, op, words):
    model = _mmcv(attrs, op)
    for check in (validate_mmcv_nodes, convert_mmcv):
        with pytest.raises(DeployError) as info:
            check(model)
        assert str(info.value).startswith(f"node 'm0' (mmcv::{op}): ") and words in str(info.value)


@pytest.mark.parametrize("op", ["MMCVCARAFE", "MMCVCARAFENaive"])
def test_mmcv_nodes_in_subgraphs_are_converted_and_run(op):
    model = _mmcv({"kernel_size": 5, "group_size": 1, "scale_factor": 2.0}, op, in_if=True)
    converted = convert_mmcv(model)
    nodes = list(_then_branch(converted).node)
    assert [(n.domain, n.op_type) for n in nodes] == [("carafe", "CARAFE")]
    x, kern = random_case(1, 4, 5, 5, 5, 1, 2, "up")
    sess = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"features": x, "masks": kern, "cond": np.array(True)})
    np.testing.assert_allclose(y, carafe_reference(x, kern, 5, 1, 2, "up"), rtol=1e-5, atol=1e-6)
    # and back: every carafe::CARAFE node, subgraphs included, is validated first
    bad = copy.deepcopy(converted)
    for a in _then_branch(bad).node[0].attribute:
        if a.name == "mode":
            a.s = b"down"
    with pytest.raises(DeployError, match=r"node 'm0' \(carafe::CARAFE\) in graph > If 'branch' then_branch: kernels "
                                          r"height is 10, but mode='down'"):
        convert_mmcv(bad, to="mmcv")


# ---- files and export -------------------------------------------------------------------------------------------


def test_an_empty_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(DeployError, match=r"empty.onnx is empty \(0 bytes\), not an ONNX model"):
        load_model(tmp_path / "empty.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07not a model at all" * 10)
    with pytest.raises(DeployError, match="junk.onnx is not"):
        load_model(tmp_path / "junk.onnx")
    with pytest.raises(DeployError, match="is empty"):
        convert_mmcv(tmp_path / "empty.onnx")


class _Double(torch.nn.Module):
    def forward(self, image):
        return image * 2


def test_dynamic_axes_naming_no_input_is_an_error_not_a_static_model(tmp_path):
    from carafe_deploy.onnx import export
    from carafe_deploy.onnx.exporter import _check_dynamic_axes

    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(DeployError, match=r"dynamic_axes names 'image', which is not an input or output .*\(they are "
                                          r"input, output\)"):
        export(_Double(), (x,), None, input_names=["input"], output_names=["output"], dynamic_axes={"image": {0: "N"}})
    with pytest.raises(DeployError, match=r"dynamic_axes names 'imag'.*\(they are image, out\)"):  # forward's names
        export(_Double(), (x,), tmp_path / "m.onnx", output_names=["out"], dynamic_axes={"imag": {0: "N"}})
    assert not (tmp_path / "m.onnx").exists()
    proto = export(_Double(), (x,), None, dynamic_axes={"image": {0: "N"}})  # the forward's own argument name
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    # without output_names the names are known only once exported: the same check runs on the exported graph
    with pytest.raises(DeployError, match="dynamic_axes names 'imag'"):
        _check_dynamic_axes({"imag": {0: "N"}}, proto)
