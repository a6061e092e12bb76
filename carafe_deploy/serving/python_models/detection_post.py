"""Triton Python-backend model: the detector's outputs for one image -> its detections in the original image's
pixels (``carafe_imaging.detection_output``): DETS (K, 5) x1 y1 x2 y2 score, LABELS (K,), MASKS (K, 28, 28) mask
probabilities for Mask R-CNN. Slots without a detection keep label -1 and score 0, as the graph gives them.
"""

import json

import triton_python_backend_utils as pb_utils

import carafe_imaging


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.with_masks = any(t["name"] == "masks" for t in config["input"])

    def execute(self, requests):
        responses = []
        for request in requests:
            get = lambda name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()  # noqa: E731
            outputs = {"dets": get("dets"), "labels": get("labels")}
            if self.with_masks:
                outputs["masks"] = get("masks")
            width, height = (int(v) for v in get("size"))
            result = carafe_imaging.detection_output(outputs, float(get("factor")[0]), width, height)
            tensors = [pb_utils.Tensor("DETS", result["dets"]), pb_utils.Tensor("LABELS", result["labels"])]
            if self.with_masks:
                tensors.append(pb_utils.Tensor("MASKS", result["masks"]))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
