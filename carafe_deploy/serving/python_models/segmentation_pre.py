"""Triton Python-backend model: one encoded image (PNG, JPEG, ...) -> the segmenter's input at the image's own
size, ImageNet-normalized as the segmentation pipeline does it (``carafe_imaging.segmentation_input``).

Config parameter ``SIZE``: "H,W" of a fixed-size graph (other sizes are refused: export with --dynamic), or empty.
"""

import json

import triton_python_backend_utils as pb_utils

import carafe_imaging


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"]).get("parameters", {}).items()}
        size = params.get("SIZE", "")
        self.size = tuple(int(v) for v in size.split(",")) if size else None

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                img = carafe_imaging.decode_single(pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy())
                if self.size and (img.height, img.width) != self.size:
                    raise ValueError(f"the segmenter was exported for {self.size[0]}x{self.size[1]} images, this one "
                                     f"is {img.height}x{img.width} (export with --dynamic for any size)")
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            tensor = carafe_imaging.segmentation_input(img)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("image", tensor)]))
        return responses
