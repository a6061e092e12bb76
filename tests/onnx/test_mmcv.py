"""convert_mmcv: mmcv::MMCVCARAFE / MMCVCARAFENaive files (as mmcv's symbolic exports them, opset 11) run on ONNX
Runtime after conversion; the reverse gives mmcv's node and attributes."""

from __future__ import annotations

import io

import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper
from torch.onnx import symbolic_helper as sh

from carafe_deploy.errors import DeployError
from carafe_deploy.nn import CARAFEUpsample
from carafe_deploy.onnx import carafe_nodes, convert_mmcv
from support.onnx_graphs import random_case, rel_err, single_node_model
from support.reference import carafe_reference


def _mmcv_symbolic(g, features, masks, kernel_size, group, scale_factor, mode):
    # What mmcv's CARAFEFunction.symbolic emits (mmcv/ops/carafe.py): scale_factor as a float attribute.
    return g.op(
        "mmcv::MMCVCARAFE", features, masks,
        kernel_size_i=sh._maybe_get_const(kernel_size, "i"),
        group_size_i=sh._maybe_get_const(group, "i"),
        scale_factor_f=float(sh._maybe_get_const(scale_factor, "i")),
    )


@pytest.fixture(scope="module")
def mmcv_file():
    torch.manual_seed(0)
    model = CARAFEUpsample(8, scale_factor=2, up_kernel=5, up_group=2, compressed_channels=4).eval()
    torch.nn.init.normal_(model.content_encoder.weight, std=0.3)
    x = torch.randn(1, 8, 6, 7)
    torch.onnx.register_custom_op_symbolic("carafe_deploy::carafe", _mmcv_symbolic, 11)
    try:
        buf = io.BytesIO()
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=11, input_names=["x"], output_names=["y"],
                          custom_opsets={"mmcv": 1}, dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
    finally:
        torch.onnx.unregister_custom_op_symbolic("carafe_deploy::carafe", 11)
    return model, onnx.load_from_string(buf.getvalue())


def test_mmcv_file_runs_on_onnxruntime_after_conversion(mmcv_file):
    model, mmcv_proto = mmcv_file
    (node,) = [n for n in mmcv_proto.graph.node if n.domain == "mmcv"]
    assert node.op_type == "MMCVCARAFE"
    with pytest.raises(Exception):  # as exported, ONNX Runtime has no kernel for it
        ort.InferenceSession(mmcv_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    converted = convert_mmcv(mmcv_proto)
    (carafe,) = carafe_nodes(converted)
    attrs = {a.name: helper.get_attribute_value(a) for a in carafe.attribute}
    assert attrs == {"kernel_size": 5, "group": 2, "scale_factor": 2, "mode": b"up"}
    assert "mmcv" not in {i.domain for i in converted.opset_import}
    assert [f.name for f in converted.functions] == ["CARAFE"]
    onnx.checker.check_model(converted, full_check=True)
    sess = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in [(1, 8, 6, 7), (2, 8, 5, 9)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x).numpy()
        assert rel_err(sess.run(None, {"x": x.numpy()})[0], expected) <= 1e-5


def test_naive_node_and_reverse_conversion():
    x, kern = random_case(1, 6, 5, 4, 3, 3, 2, "up")
    carafe = single_node_model(3, 3, 2, "up", function=False)
    mmcv = convert_mmcv(carafe, to="mmcv")
    (node,) = mmcv.graph.node
    assert (node.domain, node.op_type) == ("mmcv", "MMCVCARAFE")
    attrs = {a.name: a for a in node.attribute}
    assert attrs["kernel_size"].type == onnx.AttributeProto.INT and attrs["kernel_size"].i == 3
    assert attrs["group_size"].type == onnx.AttributeProto.INT and attrs["group_size"].i == 3
    assert attrs["scale_factor"].type == onnx.AttributeProto.FLOAT and attrs["scale_factor"].f == 2.0
    assert {i.domain for i in mmcv.opset_import} == {"", "mmcv"} and not mmcv.functions
    node.op_type = "MMCVCARAFENaive"
    back = convert_mmcv(mmcv)
    out = ort.InferenceSession(back.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"features": x, "kernels": kern})[0]
    assert rel_err(out, carafe_reference(x, kern, 3, 3, 2, "up")) <= 1e-6


def test_conversion_refuses_what_the_other_side_cannot_express():
    with pytest.raises(DeployError, match="only up-samples"):
        convert_mmcv(single_node_model(3, 1, 2, "down"), to="mmcv")
    mmcv = convert_mmcv(single_node_model(3, 1, 2, "up"), to="mmcv")
    for a in mmcv.graph.node[0].attribute:
        if a.name == "scale_factor":
            a.f = 1.5
    with pytest.raises(DeployError, match="scale_factor 1.5 is not a positive integer"):
        convert_mmcv(mmcv)
    with pytest.raises(ValueError, match="to must be"):
        convert_mmcv(mmcv, to="tensorrt")
