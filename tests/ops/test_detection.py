"""nms_keep and roi_align against ONNX Runtime's NonMaxSuppression / RoiAlign and a float64 loop reference."""

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from carafe_deploy.ops import nms_keep, roi_align
from carafe_deploy.onnx.detection import TRANSLATIONS
from support.reference import roi_align_reference


def _session(nodes, inputs, outputs, opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _ort_nms_mask(boxes, scores, iou, score_thr, max_out):
    sess = _session(
        [helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou", "thr"], ["sel"])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["b", "m", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["b", 1, "m"]),
            helper.make_tensor_value_info("max", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("thr", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("sel", TensorProto.INT64, ["k", 3])],
    )
    (sel,) = sess.run(None, {
        "boxes": boxes, "scores": scores[:, None, :], "max": np.array([max_out], np.int64),
        "iou": np.array([iou], np.float32), "thr": np.array([score_thr], np.float32),
    })
    mask = np.zeros(scores.shape, dtype=bool)
    mask[sel[:, 0], sel[:, 2]] = True
    return mask


def _random_boxes(rng, b, m, extent=200.0, size=60.0):
    xy = rng.uniform(0, extent, (b, m, 2)).astype(np.float32)
    wh = rng.uniform(0, size, (b, m, 2)).astype(np.float32)
    return np.concatenate([xy, xy + wh], -1)


@pytest.mark.parametrize("iou,score_thr,max_out,quantize", [
    (0.5, 0.05, 1000, False),
    (0.7, -1.0, 30, False),
    (0.3, 0.2, 500, True),  # many tied scores: ORT visits ties by ascending index
])
def test_nms_keep_matches_onnxruntime(iou, score_thr, max_out, quantize):
    rng = np.random.default_rng(0)
    boxes = _random_boxes(rng, 2, 600)
    boxes[0, :5, 2:] = boxes[0, :5, :2]  # empty boxes suppress nothing
    scores = rng.uniform(0, 1, (2, 600)).astype(np.float32)
    if quantize:
        scores = np.round(scores * 10) / 10
    expected = _ort_nms_mask(boxes, scores, iou, score_thr, max_out)
    got = nms_keep(torch.from_numpy(boxes), torch.from_numpy(scores), iou, score_thr, max_out).numpy()
    assert expected.sum() > 10
    np.testing.assert_array_equal(got, expected)


def test_nms_keep_checks_arguments():
    with pytest.raises(ValueError, match="boxes must be"):
        nms_keep(torch.zeros(5, 4), torch.zeros(5), 0.5, 0.0, 10)
    with pytest.raises(ValueError, match="scores must be"):
        nms_keep(torch.zeros(1, 5, 4), torch.zeros(1, 4), 0.5, 0.0, 10)
    with pytest.raises(ValueError, match="max_output"):
        nms_keep(torch.zeros(1, 5, 4), torch.zeros(1, 5), 0.5, 0.0, 0)


def _ort_roi_align(feat, rois, bidx, oh, ow, scale, ratio):
    sess = _session(
        [helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], coordinate_transformation_mode="half_pixel",
                          mode="avg", output_height=oh, output_width=ow, sampling_ratio=ratio,
                          spatial_scale=scale)],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c", "h", "w"]),
            helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["k", 4]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["k"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["k", "c", "oh", "ow"])],
    )
    return sess.run(None, {"x": feat, "rois": rois, "idx": bidx})[0]


@pytest.mark.parametrize("ratio,scale", [(0, 0.25), (2, 0.125), (0, 1.0)])
def test_roi_align_matches_onnxruntime_and_loops(ratio, scale):
    rng = np.random.default_rng(1)
    feat = rng.standard_normal((2, 3, 11, 13)).astype(np.float32)
    rois = _random_boxes(rng, 1, 24, extent=13 / scale, size=9 / scale)[0]
    rois[0] = [-8, -8, 3 / scale, 2 / scale]  # partly outside the map
    rois[1] = [2, 2, 2, 9]  # zero width
    rois[2] = [11 / scale, 10 / scale, 16 / scale, 15 / scale]  # past the bottom-right edge
    bidx = rng.integers(0, 2, 24).astype(np.int64)
    got = roi_align(torch.from_numpy(feat), torch.from_numpy(rois), torch.from_numpy(bidx), (5, 4), scale,
                    ratio).numpy()
    np.testing.assert_allclose(got, roi_align_reference(feat, rois, bidx, 5, 4, scale, ratio), atol=1e-5)
    np.testing.assert_allclose(got, _ort_roi_align(feat, rois, bidx, 5, 4, scale, ratio), atol=1e-5)


def test_roi_align_checks_arguments():
    feat = torch.zeros(1, 2, 8, 8)
    with pytest.raises(ValueError, match="rois must be"):
        roi_align(feat, torch.zeros(3, 5), torch.zeros(3, dtype=torch.int64), (7, 7), 0.25)
    with pytest.raises(ValueError, match="batch_indices"):
        roi_align(feat, torch.zeros(3, 4), torch.zeros(2, dtype=torch.int64), (7, 7), 0.25)
    with pytest.raises(ValueError, match="RoI Align settings"):
        roi_align(feat, torch.zeros(3, 4), torch.zeros(3, dtype=torch.int64), (0, 7), 0.25)


class _OpsModel(torch.nn.Module):
    def forward(self, feat, rois, boxes, scores):
        idx = torch.zeros(rois.shape[0], dtype=torch.int64)
        return roi_align(feat, rois, idx, (7, 7), 0.25, 0), nms_keep(boxes, scores, 0.5, 0.05, 40)


def test_ops_export_to_standard_onnx(tmp_path):
    rng = np.random.default_rng(2)
    feat = torch.from_numpy(rng.standard_normal((1, 4, 16, 16)).astype(np.float32))
    rois = torch.from_numpy(_random_boxes(rng, 1, 20, extent=50, size=20)[0])
    boxes = torch.from_numpy(_random_boxes(rng, 1, 300))
    scores = torch.from_numpy(rng.uniform(0, 1, (1, 300)).astype(np.float32))
    args = (feat, rois, boxes, scores)
    path = tmp_path / "ops.onnx"
    torch.onnx.export(_OpsModel().eval(), args, str(path), dynamo=True, custom_translation_table=TRANSLATIONS,
                      opset_version=18, input_names=["feat", "rois", "boxes", "scores"], verbose=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"RoiAlign", "NonMaxSuppression", "ScatterND"} <= ops
    assert all(n.domain in ("", "ai.onnx") for n in onnx.load(str(path)).graph.node)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pooled, keep = sess.run(None, {k: v.numpy() for k, v in zip(["feat", "rois", "boxes", "scores"], args)})
    ref_pooled, ref_keep = _OpsModel()(*args)
    np.testing.assert_allclose(pooled, ref_pooled.numpy(), atol=1e-5)
    np.testing.assert_array_equal(keep, ref_keep.numpy())
    assert keep.sum() == 40


def test_roi_align_gradient_is_the_adjoint_of_the_forward():
    """RoI Align is linear in the features: for any output gradient g, <roi_align(f), g> == <f, grad_f> (the
    backward is the forward's transpose). Checked in float64 features (the op computes in float32) with RoIs of
    every kind: inside, empty (pooled to 0), partly outside the map, on another image of the batch."""
    torch.manual_seed(0)
    feat = torch.randn(2, 3, 16, 20, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[1.0, 2.0, 30.0, 40.0], [0.0, 0.0, 0.0, 0.0], [10.0, 5.0, 70.0, 50.0], [-5.0, -3.0, 20.0, 90.0]])
    bidx = torch.tensor([0, 1, 1, 0])
    for ratio in (0, 2):
        out = roi_align(feat, rois, bidx, (7, 7), 0.25, ratio)
        g = torch.randn_like(out)
        (grad,) = torch.autograd.grad(out, feat, g)
        assert grad[1].abs().sum() > 0 and grad[0].abs().sum() > 0
        assert float((out * g).sum()) == pytest.approx(float((feat * grad).sum()), rel=1e-5)
    # no RoI takes a sample: a zero gradient, not an error
    out = roi_align(feat, torch.zeros(2, 4), torch.tensor([0, 1]), (7, 7), 0.25, 0)
    (grad,) = torch.autograd.grad(out.sum(), feat)
    assert not grad.any()
