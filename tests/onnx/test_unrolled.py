"""The per-node unrolled form (carafe_deploy.onnx.unrolled), run in ONNX Runtime against the float64 loop reference
and mmcv's vectors; its structure (no Loop, constant slices, unique names) is what TensorRT needs, and
tests/trt/test_engines_tensorrt_rtx.py builds it for real."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import carafe_deploy.onnx  # noqa: F401 -- registers the schema
from carafe_deploy.errors import DeployError
from carafe_deploy.onnx.unrolled import unroll_carafe_nodes
from support.onnx_graphs import random_case, rel_err, single_node_model
from support.reference import carafe_reference, output_size


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# every kernel size, group and scale the op is used with, both modes; C = 4 so groups 1, 2, 4 divide it
CASES = [(k, g, s, mode) for k, g, s, mode in itertools.product((1, 3, 5), (1, 2, 4), (1, 2, 3), ("up", "down"))
         if not (k == 1 and g == 4)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "k{}-g{}-s{}-{}".format(*c))
def test_unrolled_matches_the_reference_static_and_dynamic(case):
    k, g, s, mode = case
    static = unroll_carafe_nodes(single_node_model(k, g, s, mode, function=False, dims=(
        [2, 4, 5, 7], [2, g * k * k, *output_size(5, 7, s, mode)])))
    dynamic = unroll_carafe_nodes(single_node_model(k, g, s, mode, function=False))
    for model in (static, dynamic):
        onnx.checker.check_model(model, full_check=True)
    x, kern = random_case(2, 4, 5, 7, k, g, s, mode, seed=k * 100 + g * 10 + s)
    expected = carafe_reference(x, kern, k, g, s, mode)
    for model in (static, dynamic):
        (out,) = _ort(model, {"features": x, "kernels": kern})
        assert out.shape == expected.shape
        assert rel_err(out, expected) <= 1e-6
    # the same dynamic graph at other sizes: one row, a kernel bigger than the image, an odd size for "down"
    for h, w in ((1, 6), (2, 2), (9, 4)):
        x, kern = random_case(1, 4, h, w, k, g, s, mode, seed=h * w)
        (out,) = _ort(dynamic, {"features": x, "kernels": kern})
        assert rel_err(out, carafe_reference(x, kern, k, g, s, mode)) <= 1e-6, (h, w)


@pytest.mark.parametrize("mode", ["up", "down"])
def test_unrolled_float16(mode):
    x, kern = random_case(1, 8, 6, 5, 5, 2, 2, mode)
    model = unroll_carafe_nodes(single_node_model(5, 2, 2, mode, function=False, elem_type=TensorProto.FLOAT16))
    (out,) = _ort(model, {"features": x.astype(np.float16), "kernels": kern.astype(np.float16)})
    assert out.dtype == np.float16
    expected = carafe_reference(x.astype(np.float16), kern.astype(np.float16), 5, 2, 2, mode)
    assert rel_err(out, expected) <= 3e-3  # half precision: 25 products summed


def test_unrolled_matches_mmcv_vectors(mmcv_vectors_dir):
    d = mmcv_vectors_dir
    feat = np.fromfile(d / "carafe_feat.bin", np.float32).reshape(2, 64, 3, 3)
    mask = np.fromfile(d / "carafe_mask.bin", np.float32).reshape(2, 100, 6, 6)
    expected = np.fromfile(d / "carafe_output.bin", np.float32).reshape(2, 64, 6, 6)
    (out,) = _ort(unroll_carafe_nodes(single_node_model(5, 4, 2, "up", function=False)),
                  {"features": feat, "kernels": mask})
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def _two_sites(name_a: str, name_b: str) -> onnx.ModelProto:
    """features -> CARAFE up (k=3) -> CARAFE down (k=5, g=2) -> Relu, with the portable function attached."""
    from carafe_deploy.onnx import carafe_function

    up = helper.make_node("CARAFE", ["features", "k_up"], ["mid"], name=name_a, domain="carafe", kernel_size=3,
                          group=1, scale_factor=2, mode="up")
    down = helper.make_node("CARAFE", ["mid", "k_down"], ["low"], name=name_b, domain="carafe", kernel_size=5,
                            group=2, scale_factor=2, mode="down")
    relu = helper.make_node("Relu", ["low"], ["y"], name="relu")
    graph = helper.make_graph(
        [up, down, relu], "two",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4, "H", "W"]),
         helper.make_tensor_value_info("k_up", TensorProto.FLOAT, ["N", 9, "H2", "W2"]),
         helper.make_tensor_value_info("k_down", TensorProto.FLOAT, ["N", 50, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("carafe", 1)],
                             functions=[carafe_function(18)], ir_version=10)


@pytest.mark.parametrize("names", [("a", "b"), ("same", "same"), ("", "")], ids=["named", "one-name", "unnamed"])
def test_two_call_sites_get_their_own_unique_names(names):
    model = unroll_carafe_nodes(_two_sites(*names))
    nodes = model.graph.node
    node_names = [n.name for n in nodes]
    assert len(set(node_names)) == len(node_names) and all(node_names)
    outputs = [o for n in nodes for o in n.output]
    assert len(set(outputs)) == len(outputs)
    assert {n.op_type for n in nodes} <= {"Pad", "Resize", "Split", "Slice", "Mul", "Add", "Shape", "Concat",
                                          "Reshape", "Relu"}
    assert not model.functions and [o.domain for o in model.opset_import] == [""]
    prefixes = {name.split("/")[0] for name in node_names if "/" in name}
    assert len(prefixes) == 2  # each node's subgraph under its own name
    onnx.checker.check_model(model, full_check=True)

    x, k_up = random_case(1, 4, 5, 6, 3, 1, 2, "up", seed=1)
    _, k_down = random_case(1, 4, 10, 12, 5, 2, 2, "down", seed=2)
    mid = carafe_reference(x, k_up, 3, 1, 2, "up")
    expected = np.maximum(carafe_reference(mid, k_down, 5, 2, 2, "down"), 0)
    (out,) = _ort(model, {"features": x, "k_up": k_up, "k_down": k_down})
    assert rel_err(out, expected) <= 1e-6


def test_structure_is_constant_slices_linear_in_the_taps():
    model = unroll_carafe_nodes(single_node_model(5, 1, 2, "up", function=False))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Slice") == 25 and ops.count("Mul") == 25 and ops.count("Add") == 24 and "Loop" not in ops
    inits = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Slice":
            assert all(i in inits for i in node.input[1:]), node  # starts, ends, axes, steps are constants


def test_bad_attributes_and_unsupported_places_are_refused():
    model = single_node_model(4, 1, 2, "up", function=False)
    with pytest.raises(DeployError, match=r"carafe::CARAFE node '.*': kernel_size must be an odd int >= 1, got 4"):
        unroll_carafe_nodes(model)
    model = single_node_model(3, 1, 2, "sideways", function=False)
    with pytest.raises(DeployError, match=r"mode must be one of up, down, got 'sideways'"):
        unroll_carafe_nodes(model)
    model = single_node_model(3, 1, 2, "up", function=False, opset=12)
    with pytest.raises(DeployError, match=r"opset 12; unrolling carafe::CARAFE for TensorRT needs >= 13"):
        unroll_carafe_nodes(model)

    body = helper.make_graph([helper.make_node("CARAFE", ["features", "kernels"], ["o"], domain="carafe",
                                               kernel_size=3)], "then", [],
                             [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    model = single_node_model(3, 1, 2, "up", function=False)
    model.graph.node.append(helper.make_node("If", ["cond"], ["z"], name="branch", then_branch=body,
                                             else_branch=body))
    with pytest.raises(DeployError, match=r"sits in the graph > If 'branch'; only nodes of the main graph"):
        unroll_carafe_nodes(model)
