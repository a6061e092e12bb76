"""The detectors' plugin-form ops, ``batched_nms`` and ``multi_level_roi_align``, and their ONNX nodes
(``carafe::BatchedNMS``, ``carafe::MultiLevelRoIAlign``): the eager ops against references written here (plain
loops), and the nodes' model-local functions run by ONNX Runtime against the same references (the TensorRT plugins'
kernels are checked against their own C++ references by tests/native)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from carafe_deploy.onnx import detection_nodes as dn
from carafe_deploy.onnx.forms import to_portable
from carafe_deploy.ops import batched_nms, multi_level_roi_align
from support.reference import roi_align_reference

# --------------------------------------------------------------------------------------------------------------
# BatchedNMS


def _iou_suppresses(a, b, thr: float) -> bool:
    """ONNX Runtime's NonMaxSuppression test, in float32."""
    f = np.float32
    ax0, ax1, ay0, ay1 = min(a[0], a[2]), max(a[0], a[2]), min(a[1], a[3]), max(a[1], a[3])
    bx0, bx1, by0, by1 = min(b[0], b[2]), max(b[0], b[2]), min(b[1], b[3]), max(b[1], b[3])
    area_a, area_b = f(ax1 - ax0) * f(ay1 - ay0), f(bx1 - bx0) * f(by1 - by0)
    iw = max(f(min(ax1, bx1) - max(ax0, bx0)), f(0))
    ih = max(f(min(ay1, by1) - max(ay0, by0)), f(0))
    inter = f(ih * iw)
    union = f(f(area_a + area_b) - inter)
    if inter <= 0 or area_a <= 0 or area_b <= 0 or union <= 0:
        return False
    return bool(f(inter / union) > f(thr))


def nms_reference(boxes, scores, score_thr, iou_thr, max_per_class, max_per_image):
    """Per image and class: stable sort by descending score, greedy sweep; then all classes by (score desc,
    row * C + class asc), at most max_per_image. Returns (boxes, scores, labels, valid) like the op."""
    boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
    n, m, c = scores.shape
    out_boxes = np.zeros((n, max_per_image, 4), np.float32)
    out_scores = np.zeros((n, max_per_image), np.float32)
    labels = np.full((n, max_per_image), -1, np.int32)
    valid = np.zeros(n, np.int32)
    for i in range(n):
        found = []
        for cls in range(c):
            box = boxes[i, :, 0 if boxes.shape[2] == 1 else cls]
            cand = sorted((r for r in range(m) if scores[i, r, cls] > np.float32(score_thr)),
                          key=lambda r: -scores[i, r, cls])  # sorted() is stable: ties keep the lower row first
            kept = []
            for r in cand:
                if 0 < max_per_class <= len(kept):
                    break
                if not any(_iou_suppresses(box[k], box[r], iou_thr) for k in kept):
                    kept.append(r)
            found += [(-scores[i, r, cls], r * c + cls, r, cls) for r in kept]
        found.sort()
        for slot, (_, _, r, cls) in enumerate(found[:max_per_image]):
            out_boxes[i, slot] = boxes[i, r, 0 if boxes.shape[2] == 1 else cls]
            out_scores[i, slot] = scores[i, r, cls]
            labels[i, slot] = cls
        valid[i] = min(len(found), max_per_image)
    return out_boxes, out_scores, labels, valid


def _nms_case(seed, n, m, c, shared, levels=0):
    rng = np.random.default_rng(seed)
    centre = rng.integers(0, 4, (n, m, 1 if shared else c, 2)) * 50 + rng.uniform(0, 15, (n, m, 1 if shared else c, 2))
    size = rng.uniform(5, 45, (n, m, 1 if shared else c, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], -1).astype(np.float32)
    boxes[0, :3, 0, 2] = boxes[0, :3, 0, 0]  # zero width: suppresses nothing, is suppressed by nothing
    boxes[0, 3:5, 0] = boxes[0, 3:5, 0][:, [2, 3, 0, 1]]  # corners given the other way round
    scores = rng.uniform(-0.2, 1.0, (n, m, c)).astype(np.float32)
    if levels:
        scores = np.floor(scores * levels) / levels  # many ties
    return boxes, scores


NMS_CASES = {  # (n, m, c, shared boxes, score levels), score_thr, iou_thr, max_per_class, max_per_image
    "per-class boxes": ((2, 70, 4, False, 0), 0.05, 0.5, -1, 40),
    "shared boxes, RPN-like": ((1, 120, 3, True, 0), -1.0, 0.7, -1, 100),
    "ties": ((2, 60, 3, False, 6), 0.0, 0.5, -1, 50),
    "max_per_class": ((1, 80, 5, True, 0), 0.1, 0.3, 3, 12),
    "more slots than kept": ((2, 15, 2, False, 0), 0.8, 0.5, -1, 30),
}


def _nms_node_model(shape_boxes, shape_scores, elem, attrs, function=True):
    node = helper.make_node("BatchedNMS", ["boxes", "scores"], ["b", "s", "l", "v"], domain="carafe", **attrs)
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("boxes", elem, shape_boxes),
         helper.make_tensor_value_info("scores", elem, shape_scores)],
        [helper.make_tensor_value_info("b", elem, ["N", "K", 4]), helper.make_tensor_value_info("s", elem, ["N", "K"]),
         helper.make_tensor_value_info("l", TensorProto.INT32, ["N", "K"]),
         helper.make_tensor_value_info("v", TensorProto.INT32, ["N"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("carafe", 1)],
                              ir_version=9)
    return to_portable(model) if function else model


@pytest.mark.parametrize("case", list(NMS_CASES))
def test_batched_nms_op_and_function_match_the_reference(case):
    (n, m, c, shared, levels), thr, iou, per_class, per_image = NMS_CASES[case]
    boxes, scores = _nms_case(hash(case) % 1000, n, m, c, shared, levels)
    want = nms_reference(boxes, scores, thr, iou, per_class, per_image)
    assert want[3].sum() > 0
    got = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr, iou, per_image, per_class)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w)
    attrs = dict(score_threshold=thr, iou_threshold=iou, max_per_image=per_image)
    if per_class != -1:
        attrs["max_per_class"] = per_class
    model = _nms_node_model(list(boxes.shape), list(scores.shape), TensorProto.FLOAT, attrs)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim] == [n, per_image, 4]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for g, w in zip(sess.run(None, {"boxes": boxes, "scores": scores}), want):
        np.testing.assert_array_equal(g, w)


def test_batched_nms_function_float16_and_dynamic_shapes():
    boxes, scores = _nms_case(3, 2, 50, 3, False)
    b16, s16 = boxes.astype(np.float16), scores.astype(np.float16)
    model = _nms_node_model(["N", "M", "C", 4], ["N", "M", "C"], TensorProto.FLOAT16,
                            dict(score_threshold=0.05, iou_threshold=0.5, max_per_image=20))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"boxes": b16, "scores": s16})
    want = batched_nms(torch.from_numpy(b16), torch.from_numpy(s16), 0.05, 0.5, 20)
    assert got[0].dtype == np.float16 and got[2].dtype == np.int32
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w.numpy())
    # another size through the same dynamic model
    boxes, scores = _nms_case(4, 1, 9, 2, False)
    got = sess.run(None, {"boxes": boxes.astype(np.float16), "scores": scores.astype(np.float16)})
    assert got[0].shape == (1, 20, 4) and got[3].shape == (1,)


def test_batched_nms_checks_arguments():
    boxes, scores = torch.zeros(1, 5, 2, 4), torch.zeros(1, 5, 2)
    with pytest.raises(ValueError, match="boxes must be"):
        batched_nms(torch.zeros(1, 5, 4), scores, 0.0, 0.5, 10)
    with pytest.raises(ValueError, match="1 or C"):
        batched_nms(torch.zeros(1, 5, 3, 4), scores, 0.0, 0.5, 10)
    with pytest.raises(ValueError, match="max_per_image"):
        batched_nms(boxes, scores, 0.0, 0.5, 0)
    with pytest.raises(ValueError, match="max_per_class"):
        batched_nms(boxes, scores, 0.0, 0.5, 10, max_per_class=0)
    with pytest.raises(ValueError, match="iou_threshold"):
        batched_nms(boxes, scores, 0.0, 1.5, 10)


# --------------------------------------------------------------------------------------------------------------
# MultiLevelRoIAlign


def _levels_reference(rois, num_levels, finest):
    """mmdet's level mapping in float32 (its arithmetic decides the boundaries); -1 for a NaN level."""
    f = np.float32
    out = []
    for x1, y1, x2, y2 in rois.astype(np.float32):
        with np.errstate(invalid="ignore"):
            lv = np.floor(np.log2(np.sqrt(f(x2 - x1) * f(y2 - y1)) / f(finest) + f(1e-6)))
        out.append(-1 if np.isnan(lv) else int(min(max(lv, 0), num_levels - 1)))
    return out


def multi_level_reference(feats, rois, bidx, oh, ow, strides, ratio, finest, aligned=True):
    levels = _levels_reference(rois, len(feats), finest)
    out = np.zeros((len(rois), feats[0].shape[1], oh, ow))
    for k, lv in enumerate(levels):
        if lv >= 0:
            out[k] = roi_align_reference(feats[lv], rois[k:k + 1], bidx[k:k + 1], oh, ow, 1.0 / strides[lv], ratio,
                                         aligned)[0]
    return out, levels


def _roi_case(seed, n=2, c=3, size=64, k=40, strides=(4, 8, 16, 32)):
    rng = np.random.default_rng(seed)
    feats = [rng.standard_normal((n, c, math.ceil(size / s * 4), math.ceil(size / s * 4))).astype(np.float32)
             for s in strides]
    extent = size * 4.0
    side = np.exp(rng.uniform(np.log(2), np.log(extent), (k, 2)))
    xy = rng.uniform(-0.1 * extent, extent, (k, 2))
    rois = np.concatenate([xy, xy + side], -1).astype(np.float32)
    rois[0] = 0  # the detectors' empty RoI
    rois[1, 2] = rois[1, 0] - 5  # negative width: NaN level, zeros
    bidx = rng.integers(0, n, k).astype(np.int64)
    return feats, rois, bidx


def _roi_node_model(feats, attrs, index_type=TensorProto.INT64):
    names = [f"f{i}" for i in range(len(feats))]
    node = helper.make_node("MultiLevelRoIAlign", ["rois", "bidx", *names], ["y"], domain="carafe", **attrs)
    inputs = [helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["K", 4]),
              helper.make_tensor_value_info("bidx", index_type, ["K"])]
    inputs += [helper.make_tensor_value_info(nm, TensorProto.FLOAT, ["N", f.shape[1], "H", "W"])
               for nm, f in zip(names, feats)]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["K", "C", "OH", "OW"])
    graph = helper.make_graph([node], "roi", inputs, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("carafe", 1)],
                              ir_version=9)
    return to_portable(model)


@pytest.mark.parametrize("ratio,finest,out_size", [(0, 8.0, (7, 7)), (2, 10.0, (5, 3)), (0, 56.0, (14, 14))])
def test_multi_level_roi_align_op_and_function_match_the_reference(ratio, finest, out_size):
    strides = (4, 8, 16, 32)
    feats, rois, bidx = _roi_case(ratio + int(finest))
    want, levels = multi_level_reference(feats, rois, bidx, *out_size, strides, ratio, finest)
    assert len(set(levels) - {-1}) >= (2 if finest == 56.0 else 4), levels  # the RoIs span the levels
    got = multi_level_roi_align(torch.from_numpy(rois), torch.from_numpy(bidx), [torch.from_numpy(f) for f in feats],
                                out_size, strides, ratio, finest).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    model = _roi_node_model(feats, dict(output_height=out_size[0], output_width=out_size[1],
                                        featmap_strides=list(map(float, strides)), sampling_ratio=ratio,
                                        finest_scale=finest), TensorProto.INT32)
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"rois": rois, "bidx": bidx.astype(np.int32), **{f"f{i}": f for i, f in enumerate(feats)}}
    np.testing.assert_allclose(sess.run(None, feeds)[0], want, rtol=1e-5, atol=1e-5)


def test_multi_level_roi_align_function_output_half_pixel():
    strides = (8, 16)
    feats, rois, bidx = _roi_case(9, strides=strides, k=24)
    want, _ = multi_level_reference(feats, rois, bidx, 4, 4, strides, 0, 20.0, aligned=False)
    model = _roi_node_model(feats, dict(output_height=4, output_width=4, featmap_strides=[8.0, 16.0],
                                        finest_scale=20.0, coordinate_transformation_mode="output_half_pixel"))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"rois": rois, "bidx": bidx, "f0": feats[0], "f1": feats[1]})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_one_function_serves_one_level_count():
    feats, _, _ = _roi_case(1)
    model = _roi_node_model(feats, dict(output_height=7, output_width=7, featmap_strides=[4.0, 8.0, 16.0, 32.0]))
    extra = helper.make_node("MultiLevelRoIAlign", ["rois", "bidx", "f0"], ["z"], domain="carafe", output_height=2,
                             output_width=2, featmap_strides=[4.0])
    model.graph.node.append(extra)
    with pytest.raises(ValueError, match=r"\[1, 4\] feature maps"):
        dn.detection_functions(model, 18)


def test_multi_level_roi_align_checks_arguments():
    feats = [torch.zeros(1, 2, 8, 8)]
    rois, bidx = torch.zeros(3, 4), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="one feature map per featmap stride"):
        multi_level_roi_align(rois, bidx, feats, (7, 7), [4, 8])
    with pytest.raises(ValueError, match="rois must be"):
        multi_level_roi_align(torch.zeros(3, 5), bidx, feats, (7, 7), [4])
    with pytest.raises(ValueError, match="positive featmap strides"):
        multi_level_roi_align(rois, bidx, feats, (7, 7), [0])
    with pytest.raises(ValueError, match="RoI Align settings"):
        multi_level_roi_align(rois, bidx, feats, (0, 7), [4])


# --------------------------------------------------------------------------------------------------------------
# The oldest ONNX Runtime the files are for (1.16) runs both functions too

_LOWER_SCRIPT = """
import sys, numpy as np, onnxruntime as ort
data = np.load(sys.argv[1])
nms = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"]).run(
    None, {"boxes": data["boxes"], "scores": data["scores"]})
roi = ort.InferenceSession(sys.argv[3], providers=["CPUExecutionProvider"]).run(
    None, {k: data[k] for k in ("rois", "bidx", "f0", "f1", "f2", "f3")})[0]
same = all(np.array_equal(g, data[f"nms{i}"]) for i, g in enumerate(nms))
print(same, float(np.abs(roi - data["roi"]).max()), ort.__version__)
"""


@pytest.mark.skipif(not os.environ.get("CARAFE_DEPLOY_ORT_LOWER_PYTHON"),
                    reason="set CARAFE_DEPLOY_ORT_LOWER_PYTHON to a Python with onnxruntime 1.16 (.ci/run makes one)")
def test_functions_run_in_onnxruntime_1_16(tmp_path):
    boxes, scores = _nms_case(5, 2, 40, 3, False)
    nms = _nms_node_model(list(boxes.shape), list(scores.shape), TensorProto.FLOAT,
                          dict(score_threshold=0.05, iou_threshold=0.5, max_per_image=25))
    feats, rois, bidx = _roi_case(6)
    roi = _roi_node_model(feats, dict(output_height=7, output_width=7, featmap_strides=[4.0, 8.0, 16.0, 32.0],
                                      finest_scale=16.0))
    onnx.save(nms, tmp_path / "nms.onnx")
    onnx.save(roi, tmp_path / "roi.onnx")
    want_nms = nms_reference(boxes, scores, 0.05, 0.5, -1, 25)
    want_roi, _ = multi_level_reference(feats, rois, bidx, 7, 7, (4, 8, 16, 32), 0, 16.0)
    np.savez(tmp_path / "data.npz", boxes=boxes, scores=scores, rois=rois, bidx=bidx, roi=want_roi,
             **{f"f{i}": f for i, f in enumerate(feats)}, **{f"nms{i}": w for i, w in enumerate(want_nms)})
    proc = subprocess.run([os.environ["CARAFE_DEPLOY_ORT_LOWER_PYTHON"], "-c", _LOWER_SCRIPT,
                           str(tmp_path / "data.npz"), str(tmp_path / "nms.onnx"), str(tmp_path / "roi.onnx")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    same, roi_err, version = proc.stdout.split()
    assert version.startswith("1.16") and same == "True" and float(roi_err) < 5e-5, proc.stdout  # float32 sample positions


def test_schemas_are_registered_with_onnx():
    assert sys.modules["carafe_deploy.onnx"] is not None
    for name in dn.NODE_TYPES:
        assert onnx.defs.has(name, 1, "carafe")
    schema = onnx.defs.get_schema("MultiLevelRoIAlign", 1, "carafe")
    assert [i.name for i in schema.inputs] == ["rois", "batch_indices", "features"]
