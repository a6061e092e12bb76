"""Stand-ins for the serving tests, named as such: a detector-shaped ONNX graph (the detectors' interface, not their
network: exporting a real detector takes minutes here) and a TensorRT engine file with a valid sidecar (no TensorRT
runtime can be installed on these machines, and the PyPI Triton has no TensorRT backend)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

K = 6  # detection slots
MASK = 28
# x1 y1 x2 y2 as fractions of the input's width and height; the last slot is padding (label -1, score 0)
BOX_FRACTIONS = np.array([[0.1, 0.2, 0.5, 0.6], [0.3, 0.1, 0.9, 0.4], [0.0, 0.0, 1.0, 1.0],
                          [0.6, 0.6, 1.2, 1.3], [0.2, 0.5, 0.4, 0.9], [0.0, 0.0, 0.0, 0.0]], np.float32)
SCORE_SCALE = np.array([1.0, 0.8, 0.6, 0.4, 0.2, 0.0], np.float32)
LABELS = np.array([[3, 0, 17, 56, 2, -1]], np.int64)


def standin_detector(canvas: tuple[int, int] | None = None, masks: bool = True, name: str = "standin_det"):
    """image (N, 3, H, W) 0..255 -> dets (N, K, 5): fixed fractions of the input's W and H as boxes, scores from
    the image's mean pixel; labels (N, K); masks (N, K, 28, 28) from the scores. ``canvas``: a fixed H, W (batch 1),
    else dynamic batch, height and width. Carries the metadata of a carafe-deploy detection export."""
    dims = [1, 3, *canvas] if canvas else ["N", 3, "H", "W"]
    c = lambda n, a: numpy_helper.from_array(np.asarray(a), n)  # noqa: E731
    inits = [c("frac", BOX_FRACTIONS), c("score_scale", SCORE_SCALE[None]), c("labels_c", LABELS),
             c("i2", np.array([2], np.int64)), c("i4", np.array([4], np.int64)), c("i0", np.array([0], np.int64)),
             c("i1", np.array([1], np.int64)), c("order", np.array([1, 0], np.int64)),
             c("k4", np.array([K, 4], np.int64)), c("k", np.array([K], np.int64)), c("inv255", np.float32(1 / 255)),
             c("ax123", np.array([1, 2, 3], np.int64))]
    if masks:
        inits += [c("mask_c", np.linspace(0.05, 0.95, K * MASK * MASK, dtype=np.float32).reshape(1, K, MASK, MASK)),
                  c("ax23", np.array([2, 3], np.int64))]
    n = helper.make_node
    nodes = [
        n("Shape", ["image"], ["shape"]),
        n("Slice", ["shape", "i2", "i4"], ["hw_i"]), n("Cast", ["hw_i"], ["hw"], to=TensorProto.FLOAT),
        n("Gather", ["hw", "order"], ["wh"], axis=0), n("Concat", ["wh", "wh"], ["whwh"], axis=0),
        n("Mul", ["frac", "whwh"], ["boxes"]),  # (K, 4)
        n("Slice", ["shape", "i0", "i1"], ["batch"]),
        n("Concat", ["batch", "k4"], ["box_shape"], axis=0), n("Expand", ["boxes", "box_shape"], ["boxes_n"]),
        n("ReduceMean", ["image", "ax123"], ["mean"], keepdims=0),  # (N,)
        n("Mul", ["mean", "inv255"], ["mean01"]), n("Unsqueeze", ["mean01", "i1"], ["mean_col"]),
        n("Mul", ["mean_col", "score_scale"], ["scores"]),  # (N, K)
        n("Unsqueeze", ["scores", "i2"], ["scores3"]), n("Concat", ["boxes_n", "scores3"], ["dets"], axis=2),
        n("Concat", ["batch", "k"], ["label_shape"], axis=0), n("Expand", ["labels_c", "label_shape"], ["labels"]),
    ]
    outputs = [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [dims[0], K, 5]),
               helper.make_tensor_value_info("labels", TensorProto.INT64, [dims[0], K])]
    if masks:
        nodes += [n("Unsqueeze", ["scores", "ax23"], ["scores4"]), n("Mul", ["mask_c", "scores4"], ["masks"])]
        outputs.append(helper.make_tensor_value_info("masks", TensorProto.FLOAT, [dims[0], K, MASK, MASK]))
    graph = helper.make_graph(nodes, "standin_detector",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    helper.set_model_props(model, {"carafe_deploy.model": name, "carafe_deploy.task": "detection",
                                   "carafe_deploy.weights": "stand-in graph"})
    onnx.checker.check_model(model, full_check=True)
    return model


def standin_engine(folder, onnx_path, inputs, outputs, profile, plugin: bool = True, version_compatible=False,
                   runtime: str = "tensorrt"):
    """A file named like an engine (bytes that are no engine) with a sidecar valid under the real schema, and a
    stand-in plugin library file when ``plugin``. Returns (engine path, plugin path or None)."""
    from carafe_deploy import __version__
    from carafe_deploy.trt.sidecar import SCHEMA_ID, now_iso, sha256_file, write_sidecar

    engine = folder / "standin.engine"
    engine.write_bytes(b"stand-in engine: not a TensorRT plan\n" * 8)
    lib = None
    if plugin:
        lib = folder / "libstandin_plugin.so"
        lib.write_bytes(b"stand-in plugin library\n")
    write_sidecar(engine, {
        "schema": SCHEMA_ID,
        "engine": {"file": engine.name, "bytes": engine.stat().st_size, "sha256": sha256_file(engine)},
        "created": now_iso(), "carafe_deploy_version": __version__, "gpu": None,
        "runtime": {"name": runtime, "version": "11.1.0.0" if runtime == "tensorrt" else "1.7.1.116"},
        "onnx": {"file": str(onnx_path), "sha256": sha256_file(onnx_path)},
        "inputs": inputs, "outputs": outputs, "profiles": [profile],
        "precision": {"mode": "fp32", "onnx_float_types": ["float32"], "builder_flags": [], "strongly_typed": True},
        "plugin": {"used": plugin, "library": str(lib) if lib else None, "sha256": sha256_file(lib) if lib else None,
                   "serialized_in_engine": False},
        "version_compatible": version_compatible, "workspace_bytes": None,
        "graph": {"carafe_nodes": 2, "mmcv_converted": 0, "carafe_form": "plugin" if plugin else "unrolled"},
    })
    return engine, lib
