"""A checkpoint's tensors -> the registered model and the builder options their shapes show.

What the shapes tell: the family (``roi_head.*`` detectors, ``roi_head.mask_head.*`` Mask R-CNN,
``decode_head.*`` UperNet, ``backbone.maxpool.content_encoder`` the CARAFE++ backbone), the ResNet's depth (blocks
per stage), stem and width, the class count, every width of the neck and heads, and of each CARAFE module the
compressed channels, the encoder kernel and ``up_kernel² · up_group`` (the encoder's output channels over
``scale²``). What they do not tell, and what is then assumed (said in :attr:`Description.notes`): ``encoder_dilation``
(1), how ``up_kernel² · up_group`` splits when it can split several ways (the largest odd kernel), the PPM's pool
scales (mmseg's (1, 2, 3, 6) for 4 branches), and the test settings (mmdet's). A config settles all of them.
"""

from __future__ import annotations

import re

from .settings import Description

__all__ = ["describe_state"]

_ARCH = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101}
_SOURCE = "the checkpoint's tensor shapes"


def _shape(state, key) -> tuple[int, ...] | None:
    value = state.get(key)
    return tuple(value.shape) if value is not None else None


def _evidence(state, key) -> str:
    return f"{key} {_shape(state, key)}"


def describe_state(state: dict) -> Description | None:
    """The description of a detector's or segmenter's state dict; ``None`` when it is neither."""
    if "roi_head.bbox_head.fc_cls.weight" in state:
        with_mask = any(k.startswith("roi_head.mask_head.") for k in state)
        out = Description("mask_rcnn_r50_fpn_carafe" if with_mask else "faster_rcnn_r50_fpn_carafe", {}, {}, _SOURCE)
        _detector(state, out, with_mask)
        return out
    if "decode_head.conv_seg.weight" in state:
        out = Description("upernet_r50_carafe", {}, {}, _SOURCE)
        _segmenter(state, out)
        return out
    return None


def _put(out: Description, state, option: str, value, key: str) -> None:
    out.put(option, value, _evidence(state, key))


def _blocks(state, layer: int) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(rf"backbone\.layer{layer}\.(\d+)\.conv1\.weight$", k))}
    return max(found) + 1 if found else 0


def _backbone(state, out: Description, segmenter: bool) -> None:
    deep = "backbone.stem.0.weight" in state
    stem = "backbone.stem.6.weight" if deep else "backbone.conv1.weight"
    if stem in state:
        if segmenter:
            _put(out, state, "deep_stem", deep, stem)
        _put(out, state, "base_channels", _shape(state, stem)[0], stem)
    blocks = tuple(_blocks(state, i) for i in range(1, 5))
    if all(blocks):
        where = f"backbone.layer1-4 ({'/'.join(map(str, blocks))} blocks)"
        if blocks in _ARCH:
            out.put("depth", _ARCH[blocks], where)
        elif segmenter:
            out.put("stage_blocks", blocks, where)
    down = "backbone.maxpool.content_encoder.weight"
    if down in state:
        out.name = "upernet_r50_carafe_pp"
        compressor = "backbone.maxpool.channel_compressor.conv.weight"
        taps, compressed, ek, _ = _shape(state, down)
        kernel, group = _split(taps, _shape(state, compressor)[1], out, "downsample_cfg", "kernel_size", "group",
                               _evidence(state, down))
        cfg = dict(kernel_size=kernel, group=group, encoder_kernel=ek, compressed_channels=compressed,
                   norm="backbone.maxpool.channel_compressor.bn.weight" in state)
        _put(out, state, "downsample_cfg", cfg, down)


def _split(taps: int, channels: int, out: Description, option: str, k_name: str, g_name: str, evidence: str):
    """``taps = k² · g`` -> (k, g): the largest odd k whose g divides ``channels``; the other readings are noted."""
    readings = [(k, taps // (k * k)) for k in range(1, int(taps ** 0.5) + 1, 2)
                if taps % (k * k) == 0 and channels % (taps // (k * k)) == 0]
    if not readings:
        return int(taps ** 0.5), 1  # not a CARAFE module of this shape; loading will list the mismatch
    kernel, group = readings[-1]
    others = [f"{k_name}={k}, {g_name}={g}" for k, g in readings[:-1] if k > 1]
    if others:
        out.ambiguous[option] = taps
        out.notes.append(f"{option}: {k_name}={kernel}, {g_name}={group} read from {evidence} ({taps} = "
                         f"{k_name}² · {g_name}; also possible: {'; '.join(others)})")
    return kernel, group


def _upsampler(state, prefix: str, out: Description, option: str) -> None:
    encoder, compressor = f"{prefix}content_encoder.weight", f"{prefix}channel_compressor.weight"
    if encoder not in state or compressor not in state:
        return  # the nearest-resampling twin, or not this package's layout: loading lists what is missing
    outputs, compressed, ek, _ = _shape(state, encoder)
    kernel, group = _split(outputs // 4, _shape(state, compressor)[1], out, option, "up_kernel", "up_group",
                           _evidence(state, encoder))  # scale 2: k²·g·4 encoder outputs
    cfg = dict(up_kernel=kernel, up_group=group, encoder_kernel=ek, encoder_dilation=1,
               compressed_channels=compressed)
    _put(out, state, option, cfg, encoder)
    note = "encoder_dilation is not in the shapes: 1 assumed"
    if note not in out.notes:
        out.notes.append(note)


def _detector(state, out: Description, with_mask: bool) -> None:
    _backbone(state, out, segmenter=False)
    cls = "roi_head.bbox_head.fc_cls.weight"
    _put(out, state, "num_classes", _shape(state, cls)[0] - 1, cls)
    fc = "roi_head.bbox_head.shared_fcs.0.weight"
    if fc in state:
        _put(out, state, "fc_channels", _shape(state, fc)[0], fc)
    lateral = "neck.lateral_convs.0.conv.weight"
    if lateral in state:
        _put(out, state, "neck_channels", _shape(state, lateral)[0], lateral)
    _upsampler(state, "neck.upsample_modules.0.", out, "upsample_cfg")
    if with_mask:
        conv = "roi_head.mask_head.convs.0.conv.weight"
        if conv in state:
            _put(out, state, "mask_channels", _shape(state, conv)[0], conv)
        _upsampler(state, "roi_head.mask_head.upsample.", out, "mask_upsample_cfg")


def _segmenter(state, out: Description) -> None:
    _backbone(state, out, segmenter=True)
    seg = "decode_head.conv_seg.weight"
    classes, channels = _shape(state, seg)[:2]
    _put(out, state, "num_classes", classes, seg)
    _put(out, state, "channels", channels, seg)
    branches = len({k.split(".")[2] for k in state if k.startswith("decode_head.psp_modules.")})
    if branches and branches != 4:  # mmseg's default (1, 2, 3, 6) has 4
        out.unknown["pool_scales"] = (f"the PPM has {branches} branches (decode_head.psp_modules.*) and their pool "
                                      f"scales are not in the shapes")
    _upsampler(state, "decode_head.psp_upsamplers.0.", out, "upsample_cfg")
