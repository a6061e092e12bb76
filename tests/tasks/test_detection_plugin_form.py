"""The detectors' plugin form (NMS and RoI Align as ``carafe::BatchedNMS`` / ``carafe::MultiLevelRoIAlign``, the
plugin library's nodes): parity of the file against PyTorch in ONNX Runtime (which runs the nodes' functions), the
choice between it and the standard-op form, and what the engine builder makes of it with and without the plugin.
The TensorRT-RTX engines of the whole detectors are built by tests/trt/test_engines_tensorrt_rtx.py."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from carafe_deploy.errors import DeployError
from carafe_deploy.models.detectors import calibrate_random_heads
from carafe_deploy.tasks import CheckOptions, EngineOptions, ExportOptions, ModelSource, deploy
from carafe_deploy.tasks.detection import parity_image
from carafe_deploy.tasks.pipeline import detection_ops_for

FASTER, MASK = "faster_rcnn_r50_fpn_carafe", "mask_rcnn_r50_fpn_carafe"
STANDARD_OPS = {"NonMaxSuppression", "RoiAlign"}
PLUGIN_OPS = {"carafe::BatchedNMS", "carafe::MultiLevelRoIAlign"}


def _deploy_plugin_form(name, path, size=320):
    loaded = ModelSource(model=name, tiny=True).load()
    calibrate_random_heads(loaded.model, parity_image(size, size))
    loaded.weights = "given model"
    return deploy(loaded, ExportOptions(output=path, input_shapes=[(1, 3, size, size)], detection_ops="plugin"),
                  CheckOptions(), EngineOptions(), log=lambda *_: None)


@pytest.fixture(scope="module")
def faster_plugin_form(tmp_path_factory):
    path = tmp_path_factory.mktemp("faster") / "faster.onnx"
    return _deploy_plugin_form(FASTER, path), path


def _check_parity(report, mask: bool):
    (check,) = report["checks"]
    parity = check["details"]
    assert check["backend"] == "onnxruntime" and check["status"] == "passed" and check["gated"], check
    assert parity["reference"] >= 50, "too few detections for a meaningful comparison"
    assert parity["match_rate"] >= 0.95, parity
    assert parity["max_score_diff"] < 1e-3
    if mask:
        assert parity["max_mask_diff"] is not None and parity["max_mask_diff"] <= 1e-3
    ops = set(report["onnx"]["ops"])
    assert PLUGIN_OPS <= ops and not ops & STANDARD_OPS, ops
    assert report["onnx"]["detection_ops"] == "plugin"


def test_faster_rcnn_plugin_form_parity_onnxruntime(faster_plugin_form):
    report, path = faster_plugin_form
    _check_parity(report, mask=False)
    proto = onnx.load(str(path), load_external_data=False)
    # portable: the plugin nodes carry their functions, which is what ONNX Runtime ran
    assert {f.name for f in proto.functions} == {"CARAFE", "BatchedNMS", "MultiLevelRoIAlign"}
    counts = {op: sum(n.op_type == op for n in proto.graph.node) for op in ("BatchedNMS", "MultiLevelRoIAlign")}
    assert counts == {"BatchedNMS": 2, "MultiLevelRoIAlign": 1}  # RPN (levels as classes), box head; RoI features


def test_mask_rcnn_plugin_form_parity_onnxruntime(tmp_path):
    report = _deploy_plugin_form(MASK, tmp_path / "mask.onnx")
    _check_parity(report, mask=True)


def test_the_engine_builder_drops_or_inlines_the_functions(faster_plugin_form):
    from carafe_deploy.trt import tensorrt_available
    from carafe_deploy.trt.graph import prepare_onnx
    from carafe_deploy.trt.rtx import graph_unbuildable
    from carafe_deploy.trt.runtime import import_tensorrt

    _, path = faster_plugin_form
    model = onnx.load(str(path))
    with_plugin = prepare_onnx(model, use_plugin=True)
    assert with_plugin.detection_form == "plugin" and len(with_plugin.detection_nodes) == 3
    assert not with_plugin.model.functions  # CARAFE's and the detection nodes': the parser must use the plugins
    assert not {n.op_type for n in with_plugin.model.graph.node} & STANDARD_OPS

    without = prepare_onnx(model, use_plugin=False)
    assert without.detection_form == "inlined" and without.carafe_form == "unrolled"
    ops = {n.op_type for n in without.model.graph.node}
    assert STANDARD_OPS <= ops and not any(n.domain == "carafe" for n in without.model.graph.node)
    # the inlined graph computes what the file computes
    image = parity_image(320, 320, seed=3).numpy()
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": image})
            for m in (model, without.model)]
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)

    if tensorrt_available("tensorrt-rtx"):  # what TensorRT-RTX is told: the standard ops are refused, not the plugins
        rtx = import_tensorrt("tensorrt-rtx")
        reason = graph_unbuildable(without.model, rtx)
        assert reason is not None and "NonMaxSuppression (2 nodes)" in reason
        assert graph_unbuildable(with_plugin.model, rtx) is None


def test_detection_ops_choice(tmp_path, monkeypatch):
    """"auto" follows the one engine choice (trt.choose_plugin): plugin nodes where the plugin library is found or
    forced, today's standard ops where it is not or --no-plugin says so."""
    from carafe_deploy.errors import MissingDependencyError
    from carafe_deploy.trt import availability

    def choice(value="auto", mode="portable", use_plugin=None, plugin_path=None):
        return detection_ops_for(ExportOptions(output=tmp_path / "x.onnx", mode=mode, detection_ops=value),
                                 EngineOptions(use_plugin=use_plugin, plugin_path=plugin_path))

    assert choice("plugin") == "plugin" and choice("standard") == "standard"
    library = tmp_path / "libcarafe_trt_plugin.so"
    library.write_bytes(b"")
    monkeypatch.setenv("CARAFE_DEPLOY_PLUGIN", str(library))
    assert choice() == "plugin"  # the library is found: the engine choice's rule
    assert choice(use_plugin=False) == "standard" and choice(mode="decomposed") == "standard"
    monkeypatch.delenv("CARAFE_DEPLOY_PLUGIN")

    def not_built(required=True):
        raise MissingDependencyError("libcarafe_trt_plugin.so not found")

    monkeypatch.setattr(availability, "plugin_library", not_built)
    assert choice() == "standard"  # today's default where the library is not found
    assert choice(plugin_path=library) == "plugin" and choice(use_plugin=True) == "plugin"
    with pytest.raises(DeployError, match="auto, plugin or standard"):
        choice("fused")
