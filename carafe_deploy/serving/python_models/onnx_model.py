"""Triton Python-backend model: an ONNX graph (a portable CARAFE export, or the plugin form with carafe-deploy's
custom-op library) in ONNX Runtime on the CPU.

Config parameters: ``ONNX_FILE`` (in the version folder), ``CUSTOM_OP_LIBRARY`` (a custom-op library in the version
folder, registered with the session), ``ORT_THREADS`` (intra-op threads per instance; Triton runs
``instance_group.count`` instances side by side). With dynamic batching Triton hands ``execute`` every request of a
batch; requests whose per-sample shapes agree run as one ONNX Runtime call and are split back.
"""

import ctypes
import ctypes.util
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0
        path = os.path.join(args["model_repository"], args["model_version"], params.get("ONNX_FILE", "model.onnx"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("ORT_THREADS", "1"))
        # no CPU memory arena: the arena keeps the peak of the largest request for the life of the instance (a
        # 2048x2048 image left 3 GB in the stub, a failed 5 GB output 11 GB); without it each request's tensors go
        # back to the system when it ends, failed or not
        options.enable_cpu_mem_arena = False
        if params.get("CUSTOM_OP_LIBRARY"):
            folder = os.path.join(args["model_repository"], args["model_version"])
            options.register_custom_ops_library(os.path.join(folder, params["CUSTOM_OP_LIBRARY"]))
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._trim = _malloc_trim()

    def execute(self, requests):
        feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
        groups = {}
        for i, feed in enumerate(feeds):  # only batched models can stack requests, and only of equal sample shapes
            key = tuple(feed[n].shape[1:] for n in self.inputs) if self.batched else i
            groups.setdefault(key, []).append(i)
        responses = [None] * len(requests)
        for members in groups.values():
            try:
                if len(members) == 1:
                    stacked = feeds[members[0]]
                else:
                    stacked = {n: np.concatenate([feeds[i][n] for i in members]) for n in self.inputs}
                results = self.session.run(self.outputs, stacked)
            except Exception as exc:  # this batch fails with the runtime's message; the model keeps serving
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=error)
                continue
            sizes = [len(feeds[i][self.inputs[0]]) for i in members]
            splits = np.cumsum(sizes)[:-1]
            parts = [np.split(r, splits) if len(members) > 1 else [r] for r in results]
            for j, i in enumerate(members):
                tensors = [pb_utils.Tensor(name, np.ascontiguousarray(part[j]))
                           for name, part in zip(self.outputs, parts)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        self._trim()  # what this batch freed goes back to the system, not kept in the C heap for the next one
        return responses


def _malloc_trim():
    """glibc's ``malloc_trim(0)`` (a large request's freed blocks otherwise stay in the process's heaps); a no-op
    where the C library has none."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)
