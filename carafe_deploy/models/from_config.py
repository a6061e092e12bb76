"""An mmdetection / mmsegmentation config (a dict, as :mod:`.config_reader` reads it) -> the registered model and its
builder options.

Read: ``model.type`` (``FasterRCNN``, ``MaskRCNN``: the detectors; ``EncoderDecoder``: the UperNet segmenters), the
ResNet backbone (depth 50/101, widths, mmseg's ``ResNetV1c`` deep stem for segmenters), ``FPN_CARAFE`` (widths and
every ``upsample_cfg`` argument), the RPN / RoI heads (classes, widths, RoIAlign sampling, the mask head's CARAFE),
``UPerCarafeHead`` (this package's UperNet head: mmseg's ``UPerHead`` arguments plus ``upsample_cfg``), a CARAFE++
backbone (``backbone.downsample_cfg=dict(type='CARAFEDownsample', ...)``), mmdet's ``test_cfg`` (RPN/RCNN NMS and
score settings), and the input normalization (3.x ``data_preprocessor``; 2.x ``img_norm_cfg`` and the test
pipeline's ``Pad``). Every other setting that changes the network must have the value this package builds, or it is
refused in one line naming the key and the value; training-only keys (losses, samplers, ``init_cfg``...) and
``auxiliary_head`` are ignored.
"""

from __future__ import annotations

import re

from ..imaging import IMAGENET_MEAN, IMAGENET_STD
from ..nn.modules import CARAFEDownsample, CARAFEUpsample
from .settings import Description, Section, UnsupportedSetting, show

__all__ = ["describe_config", "DETECTOR_TYPES", "SEGMENTER_TYPE"]

# model.type -> registered model
DETECTOR_TYPES = {"FasterRCNN": "faster_rcnn_r50_fpn_carafe", "MaskRCNN": "mask_rcnn_r50_fpn_carafe"}
SEGMENTER_TYPE = "EncoderDecoder"
SEGMENTERS = ("upernet_r50_carafe", "upernet_r50_carafe_pp")
_UP_TYPES = ("carafe", "CARAFEPack", "CARAFEUpsample")  # mmcv registers CARAFEPack as "carafe"
_DOWN_TYPE = "CARAFEDownsample"
_PAD_DIVISOR = 64  # the detectors' graph pads to 64 (models.detectors.PAD_DIVISOR)
_STAGES = 4


def describe_config(cfg: dict, source: str) -> Description:
    """``cfg`` (with a ``model`` dict) -> :class:`Description`; ``source`` names the config in messages."""
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise UnsupportedSetting(f"{source}: no `model` in it: not an mmdetection / mmsegmentation config")
    model = Section(cfg["model"], "model", source)
    kind = model.get("type")
    out = Description(name="", options={}, origin={}, source=source)
    if kind in DETECTOR_TYPES:
        out.name = DETECTOR_TYPES[kind]
        _detector(cfg, model, out)
    elif kind == SEGMENTER_TYPE:
        _segmenter(cfg, model, out)
    else:
        known = ", ".join([*DETECTOR_TYPES, SEGMENTER_TYPE])
        raise model.refuse("type", kind, f"this project builds {known}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# shared parts


def _input(cfg: dict, model: Section, pad: int | None) -> None:
    """The normalization (ImageNet mean/std on RGB, as the graphs and the task pipelines apply) and the padding."""
    pre = model.sub("data_preprocessor", required=False)
    if pre is not None:  # 3.x
        pre.fixed("mean", IMAGENET_MEAN, why=f"the pipelines normalize with ImageNet's mean {show(IMAGENET_MEAN)}")
        pre.fixed("std", IMAGENET_STD, why=f"the pipelines normalize with ImageNet's std {show(IMAGENET_STD)}")
        pre.fixed("bgr_to_rgb", True, why="the graphs take RGB input (an image read as BGR is flipped first)")
        if pad is not None:
            pre.fixed("pad_size_divisor", pad, why=f"the detectors' graph pads to a multiple of {pad}")
        return
    norm = cfg.get("img_norm_cfg")  # 2.x: a top-level variable of the config
    if isinstance(norm, dict):
        section = Section(norm, "img_norm_cfg", model.source)
        section.fixed("mean", IMAGENET_MEAN, why=f"the pipelines normalize with ImageNet's mean {show(IMAGENET_MEAN)}")
        section.fixed("std", IMAGENET_STD, why=f"the pipelines normalize with ImageNet's std {show(IMAGENET_STD)}")
        section.fixed("to_rgb", True, why="the graphs take RGB input")
    if pad is not None:
        for where, step in _pipeline_steps(cfg):
            if step.get("type") == "Pad" and "size_divisor" in step:
                Section(step, where, model.source).fixed("size_divisor", pad,
                                                         why=f"the detectors' graph pads to a multiple of {pad}")


def _pipeline_steps(cfg: dict):
    """(key path, step) of each step of a 2.x test pipeline, MultiScaleFlipAug's transforms included."""
    pipelines = [("test_pipeline", cfg.get("test_pipeline"))]
    test = (cfg.get("data") or {}).get("test") if isinstance(cfg.get("data"), dict) else None
    if isinstance(test, dict):
        pipelines.append(("data.test.pipeline", test.get("pipeline")))
    for base, steps in pipelines:
        for i, step in enumerate(steps or ()):
            if isinstance(step, dict):
                yield f"{base}[{i}]", step
                for j, inner in enumerate(step.get("transforms") or ()):
                    if isinstance(inner, dict):
                        yield f"{base}[{i}].transforms[{j}]", inner


def _norm(section: Section, name: str = "norm_cfg") -> None:
    norm = section.get(name)
    if norm is None:
        return
    kind = norm.get("type") if isinstance(norm, dict) else norm
    if kind not in ("BN", "SyncBN", "BN2d"):
        raise section.refuse(name, norm, "this project builds BatchNorm (type='BN' or 'SyncBN')")


def _stage_channels(base: int) -> list[int]:
    return [base * 4 * 2**i for i in range(_STAGES)]


def _backbone(model: Section, out: Description, segmenter: bool) -> int:
    """The ResNet; returns base_channels."""
    bb = model.sub("backbone")
    types = ("ResNet", "ResNetV1c") if segmenter else ("ResNet",)
    kind = bb.fixed("type", *types, why=f"this project builds {' or '.join(map(repr, types))}")
    depth = bb.fixed("depth", 50, 101)
    out.put("depth", int(depth), bb.key("depth"))
    deep = bool(bb.get("deep_stem", kind == "ResNetV1c"))  # ResNetV1c is ResNet with deep_stem=True
    if deep and not segmenter:
        raise bb.refuse("deep_stem", True, "the detectors' ResNet has the 7x7 stem")
    if segmenter:
        out.put("deep_stem", deep, bb.key("deep_stem"))
    bb.fixed("avg_down", False)
    bb.fixed("in_channels", 3)
    bb.fixed("num_stages", _STAGES)
    bb.fixed("out_indices", (0, 1, 2, 3))
    bb.fixed("strides", (1, 2, 2, 2))
    bb.fixed("dilations", (1, 1, 1, 1))
    bb.fixed("style", "pytorch", why="this project builds style='pytorch' (the stride on the 3x3 conv)")
    bb.fixed("conv_cfg", None)
    bb.fixed("dcn", None)
    bb.fixed("plugins", None)
    bb.fixed("multi_grid", None)
    bb.get("stage_with_dcn")  # only read with dcn, which is refused above
    bb.get("contract_dilation")  # only matters with dilations, which are fixed above
    _norm(bb)
    base = bb.number("base_channels", 64, minimum=1)
    stem = bb.get("stem_channels")
    if stem is not None and stem != base:
        raise bb.refuse("stem_channels", stem, f"this project's ResNet has stem_channels == base_channels ({base})")
    out.put("base_channels", base, bb.key("base_channels"))
    down = bb.sub("downsample_cfg", required=False)
    if down is not None:
        if not segmenter:
            raise bb.refuse("downsample_cfg", down.data, "the detectors' ResNet has no CARAFE++ modules")
        out.put("downsample_cfg", _carafe_down(down), bb.key("downsample_cfg"))
    bb.finish()
    return base


def _check_module(section: Section, cls, kwargs: dict, channels: int) -> None:
    """Build the module once: a value its constructor refuses is refused here, naming the key."""
    try:
        cls(channels, 2, **kwargs)
    except (TypeError, ValueError) as exc:
        bad = next((k for k in kwargs if re.search(rf"\b{k}\b", str(exc))), None)
        if bad is None:
            raise UnsupportedSetting(f"{section.source}: {section.path}={show(section.data)} cannot be built "
                                     f"here: {exc}") from None
        raise section.refuse(bad, kwargs[bad], str(exc)) from None


def _carafe_up(section: Section, channels: int, scale_key: bool) -> dict:
    """mmcv ``CARAFEPack`` arguments (``upsample_cfg``), complete with mmcv's defaults."""
    section.fixed("type", *_UP_TYPES, why="this project builds CARAFE upsampling (type='carafe')")
    if scale_key:
        section.fixed("scale_factor", 2)
    cfg = {
        "up_kernel": section.number("up_kernel", 5, minimum=1),
        "up_group": section.number("up_group", 1, minimum=1),
        "encoder_kernel": section.number("encoder_kernel", 3, minimum=1),
        "encoder_dilation": section.number("encoder_dilation", 1, minimum=1),
        "compressed_channels": section.number("compressed_channels", 64, minimum=1),
    }
    section.finish()
    _check_module(section, CARAFEUpsample, cfg, channels)
    return cfg


def _carafe_down(section: Section) -> dict:
    """:class:`~carafe_deploy.nn.CARAFEDownsample` arguments of the CARAFE++ backbone, complete with its defaults."""
    section.fixed("type", _DOWN_TYPE, why=f"this project builds CARAFE++ downsampling (type={_DOWN_TYPE!r})")
    section.fixed("scale_factor", 2)
    cfg = {
        "kernel_size": section.number("kernel_size", 5, minimum=1),
        "group": section.number("group", 1, minimum=1),
        "encoder_kernel": section.number("encoder_kernel", 3, minimum=1),
        "compressed_channels": section.number("compressed_channels", 16, minimum=1),
        "norm": bool(section.fixed("norm", True, False)),
    }
    section.finish()
    _check_module(section, CARAFEDownsample, cfg, cfg["group"])
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# detectors


def _detector(cfg: dict, model: Section, out: Description) -> None:
    _input(cfg, model, pad=_PAD_DIVISOR)
    base = _backbone(model, out, segmenter=False)
    width = _neck(model, out, base)
    _rpn(model, width)
    _roi_heads(model, out, width, with_mask=out.name.startswith("mask"))
    test = model.sub("test_cfg", required=False)
    if test is None and isinstance(cfg.get("test_cfg"), dict):  # early 2.x configs kept it at the top level
        test = Section(cfg["test_cfg"], "test_cfg", model.source)
    if test is not None:
        _test_cfg(test, out, with_mask=out.name.startswith("mask"))
    model.finish("data_preprocessor")


def _neck(model: Section, out: Description, base: int) -> int:
    neck = model.sub("neck")
    neck.fixed("type", "FPN_CARAFE", why="this project builds the FPN_CARAFE neck")
    neck.fixed("in_channels", _stage_channels(base), why=f"the backbone gives {show(_stage_channels(base))}")
    width = neck.number("out_channels", 256, minimum=1)
    out.put("neck_channels", width, neck.key("out_channels"))
    neck.fixed("num_outs", 5)
    neck.fixed("start_level", 0)
    neck.fixed("end_level", -1)
    neck.fixed("norm_cfg", None)
    neck.fixed("act_cfg", None)
    neck.get("order")  # with no norm and no activation, only the conv remains
    up = neck.sub("upsample_cfg", required=False)
    if up is None:
        raise UnsupportedSetting(f"{model.source}: model.neck.upsample_cfg is missing (FPN_CARAFE's default is "
                                 f"CARAFE with mmcv's arguments: give them, e.g. dict(type='carafe', up_kernel=5))")
    out.put("upsample_cfg", _carafe_up(up, width, scale_key=False), neck.key("upsample_cfg"))
    neck.finish()
    return width


def _rpn(model: Section, width: int) -> None:
    rpn = model.sub("rpn_head")
    rpn.fixed("type", "RPNHead")
    rpn.fixed("in_channels", width, why=f"it must equal the neck's out_channels ({width})")
    rpn.fixed("feat_channels", width, why=f"this project's RPN head is as wide as the neck ({width})")
    rpn.fixed("num_convs", 1)
    anchors = rpn.sub("anchor_generator")
    anchors.fixed("type", "AnchorGenerator")
    anchors.fixed("scales", [8])
    anchors.fixed("ratios", [0.5, 1.0, 2.0])
    anchors.fixed("strides", [4, 8, 16, 32, 64])
    anchors.fixed("center_offset", 0.0)
    anchors.finish()
    _coder(rpn.sub("bbox_coder"), (1.0, 1.0, 1.0, 1.0))
    rpn.finish("test_cfg")


def _coder(coder: Section, stds) -> None:
    coder.fixed("type", "DeltaXYWHBBoxCoder")
    coder.fixed("target_means", (0.0, 0.0, 0.0, 0.0))
    coder.fixed("target_stds", stds)
    coder.fixed("clip_border", True)
    coder.get("add_ctr_clamp")
    coder.get("ctr_clamp")
    coder.finish()


def _roi_extractor(head: Section, name: str, size: int, width: int, out: Description, option: str) -> None:
    ext = head.sub(name)
    ext.fixed("type", "SingleRoIExtractor")
    ext.fixed("out_channels", width, why=f"it must equal the neck's out_channels ({width})")
    ext.fixed("featmap_strides", [4, 8, 16, 32])
    ext.fixed("finest_scale", 56)
    layer = ext.sub("roi_layer")
    layer.fixed("type", "RoIAlign")
    layer.fixed("output_size", size)
    layer.fixed("aligned", True, why="this project pools with aligned=True (half-pixel), mmcv's default")
    layer.fixed("pool_mode", "avg")
    ratio = layer.number("sampling_ratio", 0, minimum=0)
    if ratio:
        out.put(option, ratio, layer.key("sampling_ratio"))
    layer.finish()
    ext.finish()


def _roi_heads(model: Section, out: Description, width: int, with_mask: bool) -> None:
    roi = model.sub("roi_head")
    roi.fixed("type", "StandardRoIHead")
    _roi_extractor(roi, "bbox_roi_extractor", 7, width, out, "bbox_sampling_ratio")
    box = roi.sub("bbox_head")
    box.fixed("type", "Shared2FCBBoxHead")
    box.fixed("in_channels", width, why=f"it must equal the neck's out_channels ({width})")
    box.fixed("roi_feat_size", 7)
    box.fixed("reg_class_agnostic", False)
    box.fixed("with_avg_pool", False)
    box.fixed("with_cls", True)
    box.fixed("with_reg", True)
    box.fixed("num_shared_convs", 0)
    box.fixed("num_shared_fcs", 2)
    out.put("fc_channels", box.number("fc_out_channels", 1024, minimum=1), box.key("fc_out_channels"))
    classes = box.number("num_classes", 80, minimum=1)
    out.put("num_classes", classes, box.key("num_classes"))
    _coder(box.sub("bbox_coder"), (0.1, 0.1, 0.2, 0.2))
    box.get("predict_box_type")
    box.finish()
    if not with_mask:
        roi.fixed("mask_head", None, why="a Faster R-CNN has no mask head (model.type='MaskRCNN' builds one)")
        roi.fixed("mask_roi_extractor", None)
        roi.finish("train_cfg", "test_cfg")
        return
    _roi_extractor(roi, "mask_roi_extractor", 14, width, out, "mask_sampling_ratio")
    mask = roi.sub("mask_head")
    mask.fixed("type", "FCNMaskHead")
    mask.fixed("num_convs", 4)
    mask.fixed("roi_feat_size", 14)
    mask.fixed("conv_kernel_size", 3)
    mask.fixed("in_channels", width, why=f"it must equal the neck's out_channels ({width})")
    mask.fixed("num_classes", classes, why=f"it must equal the box head's num_classes ({classes})")
    mask.fixed("class_agnostic", False)
    mask.fixed("predictor_cfg", None, {"type": "Conv"})
    mask.fixed("conv_cfg", None)
    mask.fixed("norm_cfg", None)
    channels = mask.number("conv_out_channels", 256, minimum=1)
    out.put("mask_channels", channels, mask.key("conv_out_channels"))
    up = mask.sub("upsample_cfg", required=False)
    if up is None:
        raise UnsupportedSetting(f"{model.source}: model.roi_head.mask_head.upsample_cfg is missing: FCNMaskHead's "
                                 f"default is a deconv; this project builds CARAFE (type='carafe')")
    out.put("mask_upsample_cfg", _carafe_up(up, channels, scale_key=True), mask.key("upsample_cfg"))
    mask.finish()
    roi.finish("train_cfg", "test_cfg")


# mmdet test_cfg key -> TestConfig field
def _test_cfg(test: Section, out: Description, with_mask: bool) -> None:
    rpn = test.sub("rpn", required=False)
    if rpn is not None:
        out.put("rpn_nms_pre", rpn.number("nms_pre", 1000, minimum=1), rpn.key("nms_pre"))
        key = "max_num" if rpn.has("max_num") else "max_per_img"  # 2.x before 2.12 said max_num
        out.put("rpn_max_per_img", rpn.number(key, 1000, minimum=1), rpn.key(key))
        if rpn.has("nms_post") and rpn.get("nms_post") != out.options["rpn_max_per_img"]:
            raise rpn.refuse("nms_post", rpn.get("nms_post"), "this project keeps max_num after the per-level NMS")
        rpn.fixed("nms_across_levels", False)
        out.put("rpn_nms_iou", _nms(rpn), rpn.key("nms"))
        out.put("rpn_min_bbox_size", rpn.number("min_bbox_size", 0, kind=float, minimum=0), rpn.key("min_bbox_size"))
        rpn.finish()
    rcnn = test.sub("rcnn", required=False)
    if rcnn is not None:
        out.put("score_thr", rcnn.number("score_thr", 0.05, kind=float), rcnn.key("score_thr"))
        out.put("nms_iou", _nms(rcnn), rcnn.key("nms"))
        out.put("max_per_img", rcnn.number("max_per_img", 100, minimum=1), rcnn.key("max_per_img"))
        if with_mask:
            out.put("mask_thr_binary", rcnn.number("mask_thr_binary", 0.5, kind=float),
                 rcnn.key("mask_thr_binary"))
        rcnn.finish("mask_thr_binary")
    test.finish()


def _nms(section: Section) -> float:
    if section.has("nms_thr"):  # 2.x before 2.12
        return section.number("nms_thr", 0.7, kind=float)
    nms = section.sub("nms")
    nms.fixed("type", "nms", why="this project builds hard NMS (type='nms')")
    value = nms.number("iou_threshold", 0.5, kind=float)
    nms.finish()
    return value


# ---------------------------------------------------------------------------------------------------------------
# segmenters


def _segmenter(cfg: dict, model: Section, out: Description) -> None:
    _input(cfg, model, pad=None)
    base = _backbone(model, out, segmenter=True)
    out.name = SEGMENTERS[1] if "downsample_cfg" in out.options else SEGMENTERS[0]
    head = model.sub("decode_head")
    if head.get("type") == "UPerHead":
        raise head.refuse("type", "UPerHead", "mmseg's UPerHead upsamples bilinearly; this project builds UperNet "
                                              "with CARAFE: type='UPerCarafeHead' with upsample_cfg=dict(type='carafe'"
                                              ", ...)")
    head.fixed("type", "UPerCarafeHead")
    head.fixed("in_channels", _stage_channels(base), why=f"the backbone gives {show(_stage_channels(base))}")
    head.fixed("in_index", [0, 1, 2, 3])
    head.fixed("input_transform", "multiple_select")
    head.fixed("align_corners", False, why="this project resizes with align_corners=False")
    head.fixed("conv_cfg", None)
    head.fixed("act_cfg", {"type": "ReLU"})
    _norm(head)
    channels = head.number("channels", 512, minimum=1)
    out.put("channels", channels, head.key("channels"))
    classes = head.number("num_classes", 150, minimum=1)
    out.put("num_classes", classes, head.key("num_classes"))
    out_channels = head.get("out_channels")
    if out_channels is not None and out_channels != classes:
        raise head.refuse("out_channels", out_channels, f"this project outputs num_classes ({classes}) channels")
    scales = head.get("pool_scales", (1, 2, 3, 6))
    if (not isinstance(scales, (list, tuple)) or not scales
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in scales)):
        raise head.refuse("pool_scales", scales, "it must be a list of ints >= 1")
    out.put("pool_scales", tuple(scales), head.key("pool_scales"))
    up = head.sub("upsample_cfg", required=False)
    if up is None:
        raise UnsupportedSetting(f"{model.source}: model.decode_head.upsample_cfg is missing: give the CARAFE "
                                 f"arguments, e.g. dict(type='carafe', up_kernel=5, compressed_channels=64)")
    out.put("upsample_cfg", _carafe_up(up, channels, scale_key=False), head.key("upsample_cfg"))
    head.get("threshold")
    head.finish()
    test = model.sub("test_cfg", required=False)
    if test is not None:
        test.fixed("mode", "whole", "slide")  # slide inference is the caller's loop over whole-graph runs
        test.get("crop_size")
        test.get("stride")
        test.finish()
    model.finish("data_preprocessor", "auxiliary_head")
