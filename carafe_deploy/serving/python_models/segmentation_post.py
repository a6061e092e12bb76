"""Triton Python-backend model: the segmenter's logits for one image -> its label map (``carafe_imaging.label_map``:
the per-pixel argmax), LABEL_MAP (H, W) int64."""

import triton_python_backend_utils as pb_utils

import carafe_imaging


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
            labels = carafe_imaging.label_map(logits)[0]
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("LABEL_MAP", labels)]))
        return responses
