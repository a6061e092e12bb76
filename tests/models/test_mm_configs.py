"""mmdetection / mmsegmentation configs and checkpoints -> the model they describe (issue 24): the config reader (with
mmengine, and the literal reader that runs nothing), the translation of every supported setting, the one-line
refusal of each setting this project cannot build, the tensor-shape reading, and the checks of a checkpoint against
the settings. The configs are OpenMMLab's own, from PyPI's wheels (tests/support/openmmlab.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from carafe_deploy import models
from carafe_deploy.errors import MissingDependencyError
from carafe_deploy.models.checkpoint import CheckpointMismatchError, read_checkpoint
from carafe_deploy.models.config_reader import ConfigSyntaxError, embedded_config, literal_config, read_config
from carafe_deploy.models.detectors import TINY
from carafe_deploy.models.from_config import describe_config
from carafe_deploy.models.from_shapes import describe_state
from carafe_deploy.models.resolve import resolve
from carafe_deploy.models.settings import UnsupportedSetting
from support import openmmlab

WHEEL_CONFIGS = {
    "mmdet3-faster": ("mmdet3", "carafe/faster-rcnn_r50_fpn-carafe_1x_coco.py", "faster_rcnn_r50_fpn_carafe"),
    "mmdet3-mask": ("mmdet3", "carafe/mask-rcnn_r50_fpn-carafe_1x_coco.py", "mask_rcnn_r50_fpn_carafe"),
    "mmdet2-faster": ("mmdet2", "carafe/faster_rcnn_r50_fpn_carafe_1x_coco.py", "faster_rcnn_r50_fpn_carafe"),
    "mmdet2-mask": ("mmdet2", "carafe/mask_rcnn_r50_fpn_carafe_1x_coco.py", "mask_rcnn_r50_fpn_carafe"),
}
MMDET_CARAFE = dict(up_kernel=5, up_group=1, encoder_kernel=3, encoder_dilation=1, compressed_channels=64)


def _wheel_config(key):
    openmmlab.require_mmengine()
    wheel, rel, _ = WHEEL_CONFIGS[key]
    return openmmlab.configs(wheel) / rel


# ---------------------------------------------------------------------------------------------------------------
# reading


@pytest.mark.parametrize("key", list(WHEEL_CONFIGS))
def test_mmdet_carafe_configs_as_shipped(key):
    """The CARAFE configs of mmdet 2.x and 3.x, _base_ chain and all, describe the registered detectors with mmdet's
    settings; the same config embedded in a checkpoint (mmengine's pretty text) reads the same without running it."""
    path = _wheel_config(key)
    cfg = read_config(path)
    described = describe_config(cfg, f"config {path.name}")
    assert described.name == WHEEL_CONFIGS[key][2]
    o = described.options
    assert o["depth"] == 50 and o["num_classes"] == 80 and o["neck_channels"] == 256 and o["fc_channels"] == 1024
    assert o["upsample_cfg"] == MMDET_CARAFE
    assert (o["rpn_nms_pre"], o["rpn_max_per_img"], o["rpn_nms_iou"], o["score_thr"], o["nms_iou"],
            o["max_per_img"]) == (1000, 1000, 0.7, 0.05, 0.5, 100)
    if "mask" in key:
        assert o["mask_channels"] == 256 and o["mask_upsample_cfg"] == MMDET_CARAFE and o["mask_thr_binary"] == 0.5
    assert o == describe_config(literal_config(openmmlab.pretty_text(path), "text"), "text").options
    # the registered model is these settings: building from the config gives the same state-dict shapes
    built = models.build_from_config(path)
    reference = models.build(described.name)
    assert {k: v.shape for k, v in built.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()}


def test_mmseg_wheel_ships_upernet_configs_but_no_carafe_one():
    """mmseg's wheels ship UperNet configs (bilinear UPerHead) and none with CARAFE: a UperNet-CARAFE config sets
    this project's head on them (docs/SEGMENTATION.md), and the plain head is refused, saying what to write."""
    openmmlab.require_mmengine()
    for wheel in ("mmseg1", "mmseg0"):
        root = openmmlab.configs(wheel)
        assert not [p for p in root.rglob("*.py") if "carafe" in p.read_text().lower()]
    path = openmmlab.configs("mmseg1") / "upernet/upernet_r50_4xb2-40k_cityscapes-512x1024.py"
    with pytest.raises(UnsupportedSetting) as info:
        describe_config(read_config(path), "config upernet.py")
    assert str(info.value) == (
        "config upernet.py: model.decode_head.type='UPerHead' cannot be built here: mmseg's UPerHead upsamples "
        "bilinearly; this project builds UperNet with CARAFE: type='UPerCarafeHead' with upsample_cfg="
        "dict(type='carafe', ...)")


def test_literal_reader_evaluates_data_and_runs_nothing(tmp_path):
    text = ("norm_cfg = dict(type='SyncBN', requires_grad=True)\n"
            "img_scale = (1333, 800)\n"
            "base = dict(a=1, b=[1, 2])\n"
            "model = dict(type='EncoderDecoder', backbone=dict(norm_cfg=norm_cfg, depth=50 * 2), x=dict(**base, c=-1),"
            " y={'k': (1,)}, z=list((3, 4)), w=img_scale[0] if False else 2 ** 3)\n")
    with pytest.raises(ConfigSyntaxError, match=r"line 4: cannot read `.*` without running it"):
        literal_config(text, "cfg")  # a conditional expression is not data
    cfg = literal_config(text.replace(", w=img_scale[0] if False else 2 ** 3", ""), "cfg")
    assert cfg["model"] == {"type": "EncoderDecoder", "backbone": {"norm_cfg": {"type": "SyncBN", "requires_grad": True},
                                                                   "depth": 100},
                            "x": {"a": 1, "b": [1, 2], "c": -1}, "y": {"k": (1,)}, "z": [3, 4]}
    marker = tmp_path / "ran"
    for code, why in [(f"import os\nos.system('touch {marker}')", "line 1 imports modules"),
                      (f"x = __import__('os').system('touch {marker}')", r"line 1: cannot read `__import__\('os'\)"),
                      ("def f():\n    pass", r"line 1: `def f\(\): pass` is not a plain assignment")]:
        with pytest.raises(ConfigSyntaxError, match=why):
            literal_config(code, "cfg")
    assert not marker.exists()
    with pytest.raises(MissingDependencyError) as info:
        literal_config("_base_ = './base.py'\nmodel = dict()", "config my.py", file_hint=True)
    assert str(info.value) == ("config my.py inherits _base_ = './base.py'; install mmengine to read it: "
                               "pip install 'carafe-deploy[mm]' (mmengine)")


def test_a_file_without_base_is_read_without_mmengine(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mmengine" else real(name, *a))
    path = tmp_path / "flat.py"
    path.write_text("model = dict(type='FasterRCNN', backbone=dict(type='ResNet', depth=101), neck=dict(type='FPN_CARAFE', "
                    "in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5, upsample_cfg=dict(type='carafe', "
                    "up_kernel=3)), rpn_head=dict(type='RPNHead', in_channels=256, feat_channels=256, anchor_generator="
                    "dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]), "
                    "bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4)), "
                    "roi_head=dict(type='StandardRoIHead', bbox_roi_extractor=dict(type='SingleRoIExtractor', "
                    "roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2), out_channels=256, "
                    "featmap_strides=[4, 8, 16, 32]), bbox_head=dict(type='Shared2FCBBoxHead', in_channels=256, "
                    "fc_out_channels=1024, num_classes=7, bbox_coder=dict(type='DeltaXYWHBBoxCoder', "
                    "target_stds=[0.1, 0.1, 0.2, 0.2]))))\n")
    r = resolve(config=path)
    assert r.name == "faster_rcnn_r50_fpn_carafe"
    assert (r.options["depth"], r.options["num_classes"], r.options["bbox_sampling_ratio"]) == (101, 7, 2)
    assert r.options["upsample_cfg"]["up_kernel"] == 3
    base = tmp_path / "child.py"
    base.write_text(f"_base_ = {str(path)!r}\n")
    with pytest.raises(MissingDependencyError, match="install mmengine to read it"):
        read_config(base)


def test_embedded_config_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    meta = {"cfg": f"import os\nos.system('touch {marker}')\nmodel = dict(type='MaskRCNN')"}
    with pytest.raises(ConfigSyntaxError):
        embedded_config(meta)
    assert not marker.exists()
    assert embedded_config({"epoch": 3}) == (None, "the checkpoint carries no config (meta['cfg'] / meta['config'])")
    # a checkpoint whose embedded config cannot be read as data: the shapes describe it, and the note says why
    torch.manual_seed(0)
    model = models.build("faster_rcnn_r50_fpn_carafe", **TINY, num_classes=4)
    r = resolve(checkpoint={"meta": meta, "state_dict": model.state_dict()})
    assert r.options["num_classes"] == 4 and r.described.source == "the checkpoint's tensor shapes"
    assert any("imports modules" in n and "read from the tensor shapes instead" in n for n in r.notes)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# what cannot be built: one line naming the key and the value

REFUSED = [
    (("backbone", "depth"), 34, "model.backbone.depth=34 cannot be built here: this project builds 50 or 101"),
    (("backbone", "style"), "caffe", "model.backbone.style='caffe' cannot be built here: this project builds "
                                     "style='pytorch' (the stride on the 3x3 conv)"),
    (("backbone", "norm_cfg"), {"type": "GN", "num_groups": 32},
     "model.backbone.norm_cfg=dict(type='GN', num_groups=32) cannot be built here: this project builds BatchNorm "
     "(type='BN' or 'SyncBN')"),
    (("backbone", "dcn"), {"type": "DCNv2"}, "model.backbone.dcn=dict(type='DCNv2') cannot be built here: this "
                                             "project builds None"),
    (("neck", "type"), "FPN", "model.neck.type='FPN' cannot be built here: this project builds the FPN_CARAFE neck"),
    (("neck", "upsample_cfg", "type"), "nearest", "model.neck.upsample_cfg.type='nearest' cannot be built here: "
                                                  "this project builds CARAFE upsampling (type='carafe')"),
    (("neck", "upsample_cfg", "up_kernel"), 4, "model.neck.upsample_cfg.up_kernel=4 cannot be built here: "
                                               "up_kernel must be odd, got 4"),
    (("neck", "upsample_cfg", "up_group"), 3, "model.neck.upsample_cfg.up_group=3 cannot be built here: channels "
                                              "(256) must be divisible by up_group (3)"),
    (("neck", "num_outs"), 6, "model.neck.num_outs=6 cannot be built here: this project builds 5"),
    (("neck", "in_channels"), [256, 512, 1024], "model.neck.in_channels=[256, 512, 1024] cannot be built here: the "
                                                "backbone gives [256, 512, 1024, 2048]"),
    (("rpn_head", "anchor_generator", "scales"), [4], "model.rpn_head.anchor_generator.scales=[4] cannot be built "
                                                      "here: this project builds [8]"),
    (("roi_head", "bbox_head", "reg_class_agnostic"), True, "model.roi_head.bbox_head.reg_class_agnostic=True "
                                                            "cannot be built here: this project builds False"),
    (("roi_head", "bbox_roi_extractor", "roi_layer", "aligned"), False,
     "model.roi_head.bbox_roi_extractor.roi_layer.aligned=False cannot be built here: this project pools with "
     "aligned=True (half-pixel), mmcv's default"),
    (("test_cfg", "rcnn", "nms", "type"), "soft_nms", "model.test_cfg.rcnn.nms.type='soft_nms' cannot be built "
                                                      "here: this project builds hard NMS (type='nms')"),
    (("data_preprocessor", "bgr_to_rgb"), False, "model.data_preprocessor.bgr_to_rgb=False cannot be built here: "
                                                 "the graphs take RGB input (an image read as BGR is flipped first)"),
    (("data_preprocessor", "pad_size_divisor"), 32, "model.data_preprocessor.pad_size_divisor=32 cannot be built "
                                                    "here: the detectors' graph pads to a multiple of 64"),
    (("backbone", "plugins"), [{"cfg": {"type": "ContextBlock"}}],
     "model.backbone.plugins=[dict(cfg=dict(type='ContextBlock'))] cannot be built here: this project builds None"),
    (("neck", "extra"), 1, "model.neck.extra=1 cannot be built here: this project does not build this setting"),
]


@pytest.mark.parametrize("path, value, message", REFUSED, ids=[".".join(p) for p, _, _ in REFUSED])
def test_settings_that_cannot_be_built_are_one_line(path, value, message):
    cfg = copy.deepcopy(read_config(_wheel_config("mmdet3-faster")))
    section = cfg["model"]
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    with pytest.raises(UnsupportedSetting) as info:
        describe_config(cfg, "config my.py")
    assert str(info.value) == f"config my.py: {message}"


def test_mask_head_without_carafe_and_a_foreign_model_type():
    cfg = read_config(_wheel_config("mmdet3-mask"))
    cfg["model"]["roi_head"]["mask_head"]["upsample_cfg"] = {"type": "deconv", "scale_factor": 2}
    with pytest.raises(UnsupportedSetting, match=r"^c: model\.roi_head\.mask_head\.upsample_cfg\.type='deconv' "
                                                 r"cannot be built here: this project builds CARAFE upsampling"):
        describe_config(cfg, "c")
    with pytest.raises(UnsupportedSetting, match=r"^c: model\.type='RetinaNet' cannot be built here: this project "
                                                 r"builds FasterRCNN, MaskRCNN, EncoderDecoder$"):
        describe_config({"model": {"type": "RetinaNet"}}, "c")
    with pytest.raises(UnsupportedSetting, match="no `model` in it"):
        describe_config({"optimizer": {}}, "c")


# ---------------------------------------------------------------------------------------------------------------
# checkpoints: shapes, conflicts, training checkpoints


def test_shapes_with_ambiguous_kernel_and_group():
    """up_kernel² · up_group can split several ways: the largest odd kernel is read, and the note says so."""
    torch.manual_seed(0)
    model = models.build("faster_rcnn_r50_fpn_carafe", **TINY, upsample_cfg=dict(up_kernel=3, up_group=4))
    d = describe_state(model.state_dict())
    assert d.options["upsample_cfg"] == dict(up_kernel=3, up_group=4, encoder_kernel=3, encoder_dilation=1,
                                             compressed_channels=16)
    model = models.build("faster_rcnn_r50_fpn_carafe", **TINY, upsample_cfg=dict(up_kernel=5, up_group=16))
    d = describe_state(model.state_dict())  # 400 = 5²·16 = 1²·400: only 5/16 divides the 32 channels; no note
    assert d.options["upsample_cfg"]["up_kernel"] == 5 and not [n for n in d.notes if "also possible" in n]
    model = models.build("faster_rcnn_r50_fpn_carafe", **{**TINY, "neck_channels": 36},
                         upsample_cfg=dict(up_kernel=3, up_group=9))
    d = describe_state(model.state_dict())  # 81 = 9²·1 = 3²·9: both fit 36 channels
    assert d.options["upsample_cfg"]["up_kernel"] == 9 and d.options["upsample_cfg"]["up_group"] == 1
    assert any("also possible: up_kernel=3, up_group=9" in n for n in d.notes), d.notes
    # the config (or an explicit option) settles it: the product fits, so no conflict
    r = resolve("faster_rcnn_r50_fpn_carafe", checkpoint=model.state_dict(),
                overrides={"upsample_cfg": dict(up_kernel=3, up_group=9)})
    assert models.build_resolved(r).neck.upsample_modules[0].up_kernel == 3


def test_config_and_checkpoint_that_disagree(tmp_path):
    torch.manual_seed(0)
    model = models.build("mask_rcnn_r50_fpn_carafe", **TINY, num_classes=3)
    ck = tmp_path / "ck.pth"
    torch.save({"state_dict": model.state_dict()}, ck)
    cfg = read_config(_wheel_config("mmdet3-mask"))
    with pytest.raises(CheckpointMismatchError) as info:
        resolve(config=cfg, checkpoint=ck)
    assert str(info.value) == ("the checkpoint holds base_channels=8 (backbone.conv1.weight (8, 3, 7, 7)), but the "
                               "config sets model.backbone.base_channels=64: set model.backbone.base_channels=8 in "
                               "the config")
    with pytest.raises(CheckpointMismatchError) as info:
        resolve(config=_shrunk(cfg), checkpoint=ck)
    assert str(info.value) == ("the checkpoint holds num_classes=3 (roi_head.bbox_head.fc_cls.weight (4, 64)), but the "
                               "config sets model.roi_head.bbox_head.num_classes=80: set "
                               "model.roi_head.bbox_head.num_classes=3 in the config")
    small = _shrunk(cfg, classes=3)
    small["model"]["neck"]["upsample_cfg"]["up_kernel"] = 3
    with pytest.raises(CheckpointMismatchError, match=r"^the checkpoint holds upsample_cfg with up_kernel²·up_group "
                                                      r"= 25 \(neck\.upsample_modules\.0\.content_encoder\.weight "
                                                      r"\(100, 16, 3, 3\)\), but the config sets model\.neck\."
                                                      r"upsample_cfg=dict\(up_kernel=3"):
        resolve(config=small, checkpoint=ck)
    assert models.build_from_config(_shrunk(cfg, classes=3), ck).num_classes == 3


def _shrunk(cfg, classes=80):
    """The mmdet config at the TINY widths."""
    cfg = copy.deepcopy(cfg)
    m = cfg["model"]
    m["backbone"]["base_channels"] = 8
    m["neck"].update(in_channels=[32, 64, 128, 256], out_channels=32)
    m["neck"]["upsample_cfg"]["compressed_channels"] = 16
    m["rpn_head"].update(in_channels=32, feat_channels=32)
    m["roi_head"]["bbox_roi_extractor"]["out_channels"] = 32
    m["roi_head"]["bbox_head"].update(in_channels=32, fc_out_channels=64, num_classes=classes)
    m["roi_head"]["mask_roi_extractor"]["out_channels"] = 32
    m["roi_head"]["mask_head"].update(in_channels=32, conv_out_channels=32, num_classes=classes)
    m["roi_head"]["mask_head"]["upsample_cfg"]["compressed_channels"] = 16
    return cfg


def test_mmengine_training_checkpoint_loads_without_running_its_objects(tmp_path):
    """An mmengine runner's epoch_N.pth holds HistoryBuffer objects and numpy arrays (message_hub), which
    torch.load(weights_only=True) refuses: they are read as inert placeholders; weights and meta come through."""
    torch.manual_seed(0)
    model = models.build("faster_rcnn_r50_fpn_carafe", **TINY, num_classes=3)
    path = openmmlab.save(model.state_dict(), tmp_path / "epoch_12.pth", "mmengine", "model = dict(type='X')",
                          ["a", "b", "c"])
    state, meta = read_checkpoint(path)
    assert meta["dataset_meta"]["classes"] == ("a", "b", "c") and meta["cfg"] == "model = dict(type='X')"
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    if openmmlab.importlib.util.find_spec("mmengine") is not None:
        raw = torch.load(path, weights_only=False)
        assert type(raw["message_hub"]["log_scalars"]["train/loss"]).__name__ == "HistoryBuffer"


def test_a_pickled_model_is_named(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Conv2d(1, 1, 1), path)  # the module, not its state dict
    with pytest.raises(Exception) as info:
        read_checkpoint(path)
    assert str(info.value) == (f"cannot read checkpoint {path}: it is a pickled torch.nn.modules.conv.Conv2d object, "
                               "not weights; save model.state_dict() instead (torch.save(model.state_dict(), path))")
