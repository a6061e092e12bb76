"""The parts of mmdetection's Faster / Mask R-CNN R50-FPN-CARAFE, with mmdetection's parameter names.

Written from mmdetection's behaviour (``FPN_CARAFE``, ``RPNHead``, ``Shared2FCBBoxHead``, ``FCNMaskHead``,
``AnchorGenerator``, ``DeltaXYWHBBoxCoder``, ``SingleRoIExtractor``) so that a released checkpoint loads unchanged.
mmcv's ``ConvModule`` without norm/activation is a ``.conv`` child, hence the ``_ConvModule`` wrapper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import CARAFEUpsample
from ..ops.detection import multi_level_roi_align, pool_roi_levels

__all__ = [
    "FPNCARAFE",
    "RPNHead",
    "Shared2FCBBoxHead",
    "FCNMaskHead",
    "RoIHead",
    "grid_anchors",
    "base_anchors",
    "delta2bbox",
    "extract_roi_features",
]


class _ConvModule(nn.Module):
    """mmcv ConvModule with no norm: ``conv`` (+ ReLU when ``act``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 act: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return F.relu(x) if self.act else x


def _carafe(channels: int, cfg: dict) -> CARAFEUpsample:
    return CARAFEUpsample(channels, scale_factor=2, **cfg)


class FPNCARAFE(nn.Module):
    """mmdet ``FPN_CARAFE`` (norm_cfg=None, act_cfg=None, start_level=0, end_level=-1).

    Per backbone level a 1×1 lateral conv and a 3×3 output conv; each extra level adds a stride-2 3×3 lateral conv
    (the first on the last backbone output), its own CARAFE upsampler and output conv. The top-down path upsamples
    every lateral, the extra ones included, with CARAFE and adds it (cropped) to the level below.
    """

    def __init__(self, in_channels=(256, 512, 1024, 2048), out_channels: int = 256, num_outs: int = 5,
                 upsample_cfg: dict | None = None):
        super().__init__()
        cfg = dict(up_kernel=5, up_group=1, encoder_kernel=3, encoder_dilation=1, compressed_channels=64)
        cfg.update(upsample_cfg or {})
        self.in_channels = list(in_channels)
        self.num_ins = len(in_channels)
        if num_outs < self.num_ins:
            raise ValueError(f"num_outs ({num_outs}) must be >= the number of inputs ({self.num_ins})")
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        self.upsample_modules = nn.ModuleList()
        for i in range(self.num_ins):
            self.lateral_convs.append(_ConvModule(in_channels[i], out_channels, 1))
            self.fpn_convs.append(_ConvModule(out_channels, out_channels, 3, padding=1))
            if i != self.num_ins - 1:
                self.upsample_modules.append(_carafe(out_channels, cfg))
        for i in range(num_outs - self.num_ins):
            cin = in_channels[-1] if i == 0 else out_channels
            self.lateral_convs.append(_ConvModule(cin, out_channels, 3, stride=2, padding=1))
            self.upsample_modules.append(_carafe(out_channels, cfg))
            self.fpn_convs.append(_ConvModule(out_channels, out_channels, 3, padding=1))
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, CARAFEUpsample):
                m.init_weights()

    def forward(self, inputs) -> tuple[Tensor, ...]:
        if len(inputs) != self.num_ins:
            raise ValueError(f"FPN_CARAFE expects {self.num_ins} inputs, got {len(inputs)}")
        laterals = []
        for i, conv in enumerate(self.lateral_convs):
            # mmdet: levels up to num_ins read the backbone (the first extra one its last output), later ones chain
            src = inputs[min(i, self.num_ins - 1)] if i <= self.num_ins else laterals[-1]
            laterals.append(conv(src))
        for i in range(len(laterals) - 1, 0, -1):
            up = self.upsample_modules[i - 1](laterals[i])
            low = laterals[i - 1]
            laterals[i - 1] = low + up[:, :, : low.shape[2], : low.shape[3]]
        return tuple(conv(x) for conv, x in zip(self.fpn_convs, laterals))


# --------------------------------------------------------------------------------------------------------------
# anchors and box coding


def base_anchors(stride: int, scales=(8,), ratios=(0.5, 1.0, 2.0)) -> Tensor:
    """mmdet AnchorGenerator base anchors (center offset 0, scale-major) for one level: (A, 4)."""
    h_ratios = torch.sqrt(torch.tensor(ratios, dtype=torch.float32))
    w_ratios = 1 / h_ratios
    sc = torch.tensor(scales, dtype=torch.float32)
    ws = (stride * w_ratios[:, None] * sc[None, :]).reshape(-1)
    hs = (stride * h_ratios[:, None] * sc[None, :]).reshape(-1)
    return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)


def grid_anchors(base: Tensor, height, width, stride: int) -> Tensor:
    """All anchors of a (height, width) feature map in mmdet's order (y, x, anchor): (height·width·A, 4)."""
    sx = torch.arange(width, dtype=torch.float32, device=base.device) * stride
    sy = torch.arange(height, dtype=torch.float32, device=base.device) * stride
    yy, xx = torch.meshgrid(sy, sx, indexing="ij")
    xx, yy = xx.reshape(-1), yy.reshape(-1)
    shifts = torch.stack([xx, yy, xx, yy], dim=-1)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)


_MAX_RATIO = abs(math.log(16 / 1000))  # mmdet DeltaXYWHBBoxCoder wh_ratio_clip


def delta2bbox(rois: Tensor, deltas: Tensor, stds, max_h, max_w) -> Tensor:
    """mmdet DeltaXYWHBBoxCoder.decode (means 0, clip to the image): ``rois`` and ``deltas`` (..., 4)."""
    d = deltas * deltas.new_tensor(stds)
    pxy = (rois[..., :2] + rois[..., 2:]) * 0.5
    pwh = rois[..., 2:] - rois[..., :2]
    dwh = d[..., 2:].clamp(min=-_MAX_RATIO, max=_MAX_RATIO)
    gxy = pxy + pwh * d[..., :2]
    gwh = pwh * dwh.exp()
    x1y1 = gxy - gwh * 0.5
    x2y2 = gxy + gwh * 0.5
    x1 = x1y1[..., 0].clamp(min=0, max=max_w)
    y1 = x1y1[..., 1].clamp(min=0, max=max_h)
    x2 = x2y2[..., 0].clamp(min=0, max=max_w)
    y2 = x2y2[..., 1].clamp(min=0, max=max_h)
    return torch.stack([x1, y1, x2, y2], dim=-1)


# --------------------------------------------------------------------------------------------------------------
# heads


class RPNHead(nn.Module):
    """mmdet RPNHead (one 3×3 conv + ReLU, sigmoid classification): ``rpn_conv``, ``rpn_cls``, ``rpn_reg``."""

    def __init__(self, in_channels: int = 256, feat_channels: int = 256, num_anchors: int = 3):
        super().__init__()
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * 4, 1)
        for m in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.rpn_conv(x))
        return self.rpn_cls(x), self.rpn_reg(x)


class Shared2FCBBoxHead(nn.Module):
    """mmdet Shared2FCBBoxHead: ``shared_fcs.{0,1}`` (+ReLU), ``fc_cls`` (classes + 1), ``fc_reg`` (4·classes)."""

    def __init__(self, in_channels: int = 256, roi_feat_size: int = 7, fc_out_channels: int = 1024,
                 num_classes: int = 80):
        super().__init__()
        self.num_classes = num_classes
        self.shared_fcs = nn.ModuleList(
            [nn.Linear(in_channels * roi_feat_size**2, fc_out_channels), nn.Linear(fc_out_channels, fc_out_channels)]
        )
        self.fc_cls = nn.Linear(fc_out_channels, num_classes + 1)
        self.fc_reg = nn.Linear(fc_out_channels, 4 * num_classes)
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)


class FCNMaskHead(nn.Module):
    """mmdet FCNMaskHead with a CARAFE upsampler: ``convs.{0..3}.conv`` (3×3+ReLU), ``upsample``, ``conv_logits``."""

    def __init__(self, in_channels: int = 256, conv_out_channels: int = 256, num_convs: int = 4,
                 num_classes: int = 80, upsample_cfg: dict | None = None):
        super().__init__()
        cfg = dict(up_kernel=5, up_group=1, encoder_kernel=3, encoder_dilation=1, compressed_channels=64)
        cfg.update(upsample_cfg or {})
        self.convs = nn.ModuleList(
            [_ConvModule(in_channels if i == 0 else conv_out_channels, conv_out_channels, 3, padding=1, act=True)
             for i in range(num_convs)]
        )
        up_in = conv_out_channels if num_convs > 0 else in_channels
        self.upsample = _carafe(up_in, cfg)
        self.conv_logits = nn.Conv2d(up_in, num_classes, 1)
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.conv.bias)
        nn.init.kaiming_normal_(self.conv_logits.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv_logits.bias)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(self.upsample(x))  # mmdet applies no ReLU after a CARAFE upsampler


class RoIHead(nn.Module):
    """mmdet StandardRoIHead's parameters: ``bbox_head`` and (Mask R-CNN) ``mask_head``; the extractors have none."""

    def __init__(self, bbox_head: Shared2FCBBoxHead, mask_head: FCNMaskHead | None = None):
        super().__init__()
        self.bbox_head = bbox_head
        if mask_head is not None:
            self.mask_head = mask_head

    @property
    def with_mask(self) -> bool:
        return hasattr(self, "mask_head")


def extract_roi_features(feats, rois: Tensor, batch_indices: Tensor, strides, output_size: int,
                         sampling_ratio: int = 0, finest_scale: int = 56, plugin: bool = False) -> Tensor:
    """mmdet SingleRoIExtractor: each RoI pooled (RoIAlign, aligned) from the level its scale maps to.

    Level = floor(log2(sqrt(area) / finest_scale + 1e-6)) clamped to the levels. ``plugin``: one
    ``multi_level_roi_align`` op (the ``carafe::MultiLevelRoIAlign`` node); else standard ops, every level pooling
    every RoI with the other levels' RoIs emptied (:func:`~carafe_deploy.ops.detection.pool_roi_levels`).
    """
    size = (output_size, output_size)
    if plugin:
        return multi_level_roi_align(rois, batch_indices, feats, size, strides, sampling_ratio, finest_scale)
    return pool_roi_levels(feats, rois, batch_indices, strides, size, sampling_ratio, finest_scale)
