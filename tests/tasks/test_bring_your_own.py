"""A user's own trained model (issue 24): configs as mmdetection / mmsegmentation ship them (the CARAFE and UperNet
configs in PyPI's mmdet and mmsegmentation wheels, 2.x/0.x and 3.x/1.x, with their ``_base_`` chains) and a user's
config on top (other class counts, ResNet-101, other widths, every CARAFE / CARAFE++ argument), checkpoints with
random weights saved in the layouts those projects' runners write, read three ways: ``--config``, the checkpoint's
embedded config, the checkpoint's tensor shapes alone.

Each case: builds (the config's model), loads (the checkpoint into the model the source describes, every tensor
equal), exports (portable ONNX), ONNX Runtime parity with PyTorch (the task's comparison: detections matched by IoU,
segmentation logits and argmax), and a TensorRT-RTX engine: the backbone + neck of a detector (the detector graph has
NMS, which TensorRT-RTX cannot build: docs/DETECTION.md), the whole segmenter. Widths are small (base 8) to keep CI
short; the structure (depth, blocks, CARAFE settings) is the config's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from carafe_deploy.tasks import CheckOptions, EngineOptions, ExportOptions, ModelSource, deploy
from carafe_deploy.trt import tensorrt_available
from support import openmmlab

pytestmark = pytest.mark.slow

SMALL_DET = """
model = dict(
    backbone=dict(base_channels=8{backbone}),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=32, upsample_cfg=dict({neck_up})),
    rpn_head=dict(in_channels=32, feat_channels=32{rpn}),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes={classes}){mask}){test})
"""
MASK_PART = """,
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(in_channels=32, conv_out_channels=32, num_classes={classes}, upsample_cfg=dict({mask_up}))"""

SMALL_SEG = """
model = dict(
    backbone=dict(base_channels=8, stem_channels=8{backbone}),
    decode_head=dict(type='UPerCarafeHead', in_channels=[32, 64, 128, 256], channels=16, num_classes={classes},
                     upsample_cfg=dict(type='carafe'{up})),
    auxiliary_head=dict(in_channels=128, channels=8, num_classes={classes}))
"""

# name -> how the case is written and read
CASES = {
    # the issue's case: a 3-class Faster R-CNN, mmdet 3.x
    "faster_mmdet3": dict(
        wheel="mmdet3", base="carafe/faster-rcnn_r50_fpn-carafe_1x_coco.py", layout="mmengine", read="config",
        text=SMALL_DET.format(backbone="", neck_up="compressed_channels=16", rpn="", classes=3, mask="", test=""),
        expect=dict(num_classes=3, depth=50)),
    # ResNet-101 and every CARAFE argument changed, in the neck and in the mask head; other test settings
    "mask_r101_mmdet3": dict(
        wheel="mmdet3", base="carafe/mask-rcnn_r50_fpn-carafe_1x_coco.py", layout="mmengine", read="config",
        text=SMALL_DET.format(
            backbone=", depth=101",
            neck_up="up_kernel=3, up_group=2, encoder_kernel=5, encoder_dilation=2, compressed_channels=16",
            rpn="", classes=5,
            mask=MASK_PART.format(classes=5, mask_up="up_kernel=7, up_group=4, encoder_kernel=1, "
                                                    "encoder_dilation=1, compressed_channels=8"),
            test=",\n    test_cfg=dict(rpn=dict(nms_pre=500), rcnn=dict(score_thr=0.02, max_per_img=60))"),
        expect=dict(num_classes=5, depth=101, max_per_img=60, rpn_nms_pre=500,
                    upsample_cfg=dict(up_kernel=3, up_group=2, encoder_kernel=5, encoder_dilation=2,
                                      compressed_channels=16),
                    mask_upsample_cfg=dict(up_kernel=7, up_group=4, encoder_kernel=1, encoder_dilation=1,
                                           compressed_channels=8))),
    # mmdet 2.x config and checkpoint (mmcv 1.x runner: meta['config']), read from the checkpoint alone
    "faster_mmdet2_embedded": dict(
        wheel="mmdet2", base="carafe/faster_rcnn_r50_fpn_carafe_1x_coco.py", layout="mmcv1", read="embedded",
        text=SMALL_DET.format(backbone="", neck_up="encoder_dilation=3, compressed_channels=16", rpn="", classes=3,
                              mask="", test=""),
        expect=dict(num_classes=3, upsample_cfg=dict(up_kernel=5, up_group=1, encoder_kernel=3, encoder_dilation=3,
                                                     compressed_channels=16))),
    # a Mask R-CNN checkpoint with no config at all: everything from the tensor shapes
    "mask_mmdet2_shapes": dict(
        wheel="mmdet2", base="carafe/mask_rcnn_r50_fpn_carafe_1x_coco.py", layout="bare", read="shapes",
        text=SMALL_DET.format(backbone="", neck_up="up_kernel=3, compressed_channels=16", rpn="", classes=2,
                              mask=MASK_PART.format(classes=2, mask_up="compressed_channels=16"), test=""),
        expect=dict(num_classes=2, mask_channels=32,
                    upsample_cfg=dict(up_kernel=3, up_group=1, encoder_kernel=3, encoder_dilation=1,
                                      compressed_channels=16))),
    # mmseg 1.x's UperNet config (ResNetV1c deep stem, Cityscapes' 19 classes) with the CARAFE head
    "upernet_mmseg1": dict(
        wheel="mmseg1", base="upernet/upernet_r50_4xb2-40k_cityscapes-512x1024.py", layout="mmengine", read="config",
        text=SMALL_SEG.format(backbone="", classes=19, up=", up_kernel=3, up_group=4, encoder_kernel=1, "
                                                          "encoder_dilation=2, compressed_channels=8"),
        expect=dict(num_classes=19, deep_stem=True)),
    # mmseg 0.x, a plain-stem ResNet-101 with the CARAFE++ backbone, every down argument changed; its checkpoint's
    # embedded config (meta['config'])
    "upernet_pp_r101_mmseg0_embedded": dict(
        wheel="mmseg0", base="upernet/upernet_r50_512x1024_40k_cityscapes.py", layout="mmcv1", read="embedded",
        text=SMALL_SEG.format(
            backbone=", type='ResNet', depth=101, downsample_cfg=dict(type='CARAFEDownsample', kernel_size=3, "
                     "group=2, encoder_kernel=5, compressed_channels=8, norm=False)",
            classes=7, up=", up_kernel=5, up_group=2, compressed_channels=8"),
        expect=dict(num_classes=7, depth=101, downsample_cfg=dict(kernel_size=3, group=2, encoder_kernel=5,
                                                                  compressed_channels=8, norm=False))),
}
DETECTION_SHAPE = (1, 3, 256, 256)
SEGMENTATION_SHAPE = (1, 3, 64, 64)  # exported static: TensorRT-RTX builds a static ResNet-101 about 1/3 faster


def _write_case(case: dict, tmp_path):
    """The user's config file (on the wheel's config) and a checkpoint of its model, random weights."""
    from carafe_deploy import models
    from carafe_deploy.models.detectors import calibrate_random_heads
    from carafe_deploy.models.resolve import resolve
    from carafe_deploy.tasks.detection import parity_image

    openmmlab.require_mmengine()
    base = openmmlab.configs(case["wheel"]) / case["base"]
    config = tmp_path / "my_config.py"
    config.write_text(f"_base_ = {str(base)!r}\n{case['text']}")
    resolved = resolve(config=config)
    for key, value in case["expect"].items():
        assert resolved.options[key] == value, (key, resolved.options)
    torch.manual_seed(0)
    model = models.build_resolved(resolved)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # random statistics: BatchNorm is not an identity
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                if name.endswith("bn3"):  # small residual branches, as mmdet/mmseg's zero_init_residual starts
                    m.weight.uniform_(0.05, 0.2)  # them: 33 random blocks of ResNet-101 would otherwise blow up
    if resolved.name.startswith(("faster", "mask")):
        calibrate_random_heads(model, parity_image(*DETECTION_SHAPE[2:]))  # real detections from random weights
    state = dict(model.state_dict())
    if resolved.name.startswith("upernet"):  # mmseg's training-only FCN head is in its checkpoints
        state["auxiliary_head.convs.0.conv.weight"] = torch.randn(8, 128, 3, 3)
        state["auxiliary_head.conv_seg.weight"] = torch.randn(case["expect"]["num_classes"], 8, 1, 1)
    embedded = openmmlab.pretty_text(config) if case["layout"] != "bare" else None
    classes = [f"class{i}" for i in range(case["expect"]["num_classes"])]
    checkpoint = openmmlab.save(state, tmp_path / "epoch_12.pth", case["layout"], embedded, classes)
    return resolved, model, config, checkpoint


@pytest.mark.parametrize("name", list(CASES))
def test_config_and_checkpoint_export_check_and_engine(name, tmp_path):
    case = CASES[name]
    resolved, model, config, checkpoint = _write_case(case, tmp_path)  # builds
    if case["read"] == "config":
        source = ModelSource(config=str(config), checkpoint=str(checkpoint))
    else:  # the registered name and the checkpoint alone: its embedded config, or its tensor shapes
        source = ModelSource(model=resolved.name, checkpoint=str(checkpoint))
    loaded = source.load()
    want = {"config": "from config", "embedded": "from the checkpoint's config",
            "shapes": "from the checkpoint's tensor shapes"}[case["read"]]
    assert want in loaded.description, loaded.description
    ours = loaded.model.state_dict()
    for key, value in model.state_dict().items():  # loads: every tensor
        assert torch.equal(ours[key], value), key

    detector = resolved.name.startswith(("faster", "mask"))
    shape = DETECTION_SHAPE if detector else SEGMENTATION_SHAPE
    engine = EngineOptions(path=tmp_path / "model.engine", use_plugin=False, backend="tensorrt-rtx", progress=False)
    rtx = tensorrt_available("tensorrt-rtx")
    report = deploy(loaded, ExportOptions(output=tmp_path / "model.onnx", input_shapes=[shape], dynamic=False),
                    CheckOptions(),
                    engine if rtx and not detector else EngineOptions(), log=lambda *_: None)
    check = report["checks"][0]
    assert check["backend"] == "onnxruntime" and check["status"] == "passed", (check["summary"], check["details"])
    if detector:
        assert check["details"]["reference"] >= 30 and check["details"]["match_rate"] >= 0.95, check["details"]
    assert report["onnx"]["carafe_nodes"] >= 4
    if not rtx:
        pytest.skip("TensorRT-RTX is not installed (pip install -e '.[test]'): exported and checked, no engine")
    if detector:
        side = _feature_engine(loaded.model, shape, tmp_path)
        assert side["graph"]["carafe_nodes"] == 4  # FPN_CARAFE's four upsamplers
    else:
        side = json.loads((tmp_path / "model.engine.json").read_text())
        assert side["outputs"][0]["shape"][1] == case["expect"]["num_classes"]
        assert side["graph"]["carafe_nodes"] == report["onnx"]["carafe_nodes"]
    assert side["runtime"]["name"] == "tensorrt-rtx" and side["graph"]["carafe_form"] == "unrolled"


def _feature_engine(detector, shape, tmp_path) -> dict:
    """Backbone + FPN_CARAFE of ``detector`` as a TensorRT-RTX engine (its ONNX first checked in ONNX Runtime)."""
    import onnxruntime as ort

    from carafe_deploy.models.detectors import FeatureNetwork
    from carafe_deploy.onnx import export
    from carafe_deploy.onnx.files import save_model
    from carafe_deploy.trt.builder import BuildOptions, build_engine, plan_build

    features = FeatureNetwork(detector).eval()
    image = torch.rand(*shape) * 255
    path = save_model(export(features, (image,), None, mode="plugin", input_names=["image"],
                             output_names=[f"p{i}" for i in range(2, 7)]), tmp_path / "features.onnx")
    options = BuildOptions(onnx_path=path, use_plugin=False, backend="tensorrt-rtx", progress=False)
    plan = plan_build(options)
    session = ort.InferenceSession(plan.prepared.model.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = features(image)
    for got, ref in zip(session.run(None, {"image": image.numpy()}), want):
        assert np.abs(got - ref.numpy()).max() <= 1e-4 * np.abs(ref.numpy()).max()
    return build_engine(options, plan).sidecar


def test_the_issue_command_with_a_three_class_checkpoint(tmp_path, capsys):
    """`carafe-deploy export --model faster_rcnn_r50_fpn_carafe --checkpoint ck.pth` with a 3-class mmdet 3.x
    training checkpoint just works; a class count asked for that the checkpoint does not hold is one line saying
    what it holds and how to fix it; a config setting this project cannot build is one line naming key and value."""
    from carafe_deploy.cli import main

    _, _, config, checkpoint = _write_case(CASES["faster_mmdet3"], tmp_path)
    out, report = tmp_path / "ck.onnx", tmp_path / "ck.json"
    argv = ["export", "--model", "faster_rcnn_r50_fpn_carafe", "--checkpoint", str(checkpoint), "-o", str(out),
            "--input-shape", "1,3,256,256"]
    assert main([*argv, "--save-report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["passed"] and "3 classes" in data["model"] and data["weights"] == "epoch_12.pth"

    capsys.readouterr()
    assert main([*argv, "--set", "num_classes=80"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("carafe-deploy export: error: the checkpoint holds num_classes=3 (roi_head.bbox_head.fc_cls.weight "
                   "(4, 64)), but num_classes=80 was asked for: leave it out to use the checkpoint's value, or give "
                   "num_classes=3")

    bad = tmp_path / "caffe.py"
    bad.write_text(f"_base_ = {str(config)!r}\nmodel = dict(backbone=dict(style='caffe'))\n")
    assert main(["export", "--config", str(bad), "-o", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"carafe-deploy export: error: config {bad}: model.backbone.style='caffe' cannot be built here: "
                   "this project builds style='pytorch' (the stride on the 3x3 conv)")
    assert not (tmp_path / "x.onnx").exists()
