"""Triton Python-backend model: one encoded image (PNG, JPEG, ...) -> the detector's input, as the detection
pipeline prepares it (``carafe_imaging.detection_input``: mmdet's keep-ratio resize, or fitted and padded for a
fixed-size graph), with the resize factor and the original size that the post-processing needs.

Config parameters: ``CANVAS`` ("H,W" of a fixed-size graph, or empty), ``SCALE`` ("LONG,SHORT" resize limits).
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

import carafe_imaging


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"]).get("parameters", {}).items()}
        canvas = params.get("CANVAS", "")
        self.canvas = tuple(int(v) for v in canvas.split(",")) if canvas else None
        self.scale = tuple(int(v) for v in params.get("SCALE", "1333,800").split(","))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                img = carafe_imaging.decode_single(pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy())
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            tensor, factor = carafe_imaging.detection_input(img, self.canvas, self.scale)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("image", tensor),
                pb_utils.Tensor("factor", np.array([factor], np.float32)),
                pb_utils.Tensor("size", np.array([img.width, img.height], np.int32))]))
        return responses
