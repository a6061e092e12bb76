"""ONNX translations of the detection ops for the dynamo exporter's ``custom_translation_table``.

Both become standard ONNX (opset 16+) that TensorRT's ONNX parser imports natively: ``RoiAlign`` (half_pixel, avg)
and ``NonMaxSuppression`` followed by ``ScatterND`` that turns the selected index list back into the fixed-shape
keep mask of :func:`carafe_deploy.ops.detection.nms_keep`. The plugin form's ops become one node each
(:mod:`.detection_nodes`).
"""

from __future__ import annotations

import torch
from onnxscript import opset18 as op

from .detection_nodes import batched_nms_onnx, multi_level_roi_align_onnx

__all__ = ["TRANSLATIONS", "nms_keep_onnx", "roi_align_onnx"]


def roi_align_onnx(features, rois, batch_indices, output_height: int, output_width: int, spatial_scale: float,
                   sampling_ratio: int):
    return op.RoiAlign(
        features,
        op.CastLike(rois, features),  # ONNX ties the RoI type to the features' (fp16 graphs: float32 boxes)
        batch_indices,
        coordinate_transformation_mode="half_pixel",
        mode="avg",
        output_height=output_height,
        output_width=output_width,
        sampling_ratio=sampling_ratio,
        spatial_scale=spatial_scale,
    )


def nms_keep_onnx(boxes, scores, iou_threshold: float, score_threshold: float, max_output: int):
    selected = op.NonMaxSuppression(
        boxes,
        op.Unsqueeze(scores, op.Constant(value_ints=[1])),
        op.Constant(value_ints=[max_output]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[score_threshold]),
        center_point_box=0,
    )  # (K, 3): batch, class (always 0), box
    where = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)
    ones = op.CastLike(op.Expand(op.Constant(value_floats=[1.0]), op.Shape(where, start=0, end=1)), scores)
    zeros = op.CastLike(op.ConstantOfShape(op.Shape(scores)), scores)
    mask = op.ScatterND(zeros, where, ones)
    return op.Cast(mask, to=9)  # BOOL


TRANSLATIONS = {
    torch.ops.carafe_deploy.nms_keep.default: nms_keep_onnx,
    torch.ops.carafe_deploy.roi_align.default: roi_align_onnx,
    torch.ops.carafe_deploy.multi_level_roi_align.default: multi_level_roi_align_onnx,
    torch.ops.carafe_deploy.batched_nms.default: batched_nms_onnx,
}
