"""UperNet segmenters with CARAFE (and CARAFE++ in the backbone).

Registered models:

- ``upernet_r50_carafe``: ResNet-50 + UperNet head with CARAFE ×2 wherever the head upsamples (CARAFE paper,
  arXiv 1905.02188, §4.2): the PPM branches (bilinear to half the 1/32 size, then CARAFE ×2), every FPN top-down step,
  and FUSE done as sequential upsample-concat (CARAFE ×2 from 1/32 to 1/4, concatenating each level on the way).
  10 ``CARAFEUpsample`` modules.
- ``upernet_r50_carafe_pp``: the same head on the CARAFE++ ResNet-50 (:mod:`.resnet`, 7 ``CARAFEDownsample``).

Input: ``image`` (N, 3, H, W) float32, **already normalized** (RGB, ImageNet mean/std on 0-255 pixels, as mmseg's
data preprocessor does; :func:`normalize_image` does it). Any H, W ≥ 1 works; sizes that are not multiples of 32 are
handled by cropping each ×2 upsample to the finer level's size. Output: ``logits`` (N, num_classes, H, W), the head's
1/4-resolution logits resized bilinearly (align_corners=False) to the input size, as mmseg's ``EncoderDecoder`` does.

Parameter names follow mmseg's ``EncoderDecoder`` + ``UPerHead`` (``backbone.*``, ``decode_head.psp_modules``,
``bottleneck``, ``lateral_convs``, ``fpn_convs``, ``fpn_bottleneck``, ``conv_seg``; ``ConvModule`` children ``conv``,
``bn``); the CARAFE modules are ``decode_head.psp_upsamplers.{i}`` (one per pool scale), ``decode_head.fpn_upsamplers.{i}``
(level i+1 → level i) and ``decode_head.fuse_upsamplers.{i}`` (the FUSE step into level 2-i; its channels grow by
``channels`` per step because FUSE concatenates as it goes).

Overrides for :func:`carafe_deploy.models.build`: ``num_classes`` (150, ADE20k), ``channels`` (512),
``base_channels`` (64), ``depth`` (50 or 101), ``deep_stem`` (mmseg's ResNetV1c stem), ``stage_blocks`` (the depth's,
ResNet-50: (3, 4, 6, 3)), ``pool_scales`` ((1, 2, 3, 6)), ``compressed_channels`` (64, CARAFE's channel compressor),
``upsample_cfg`` (every CARAFE argument of the head's upsamplers: up_kernel, up_group, encoder_kernel,
encoder_dilation, compressed_channels), ``downsample_cfg`` (the CARAFE++ backbone's: kernel_size, group,
encoder_kernel, compressed_channels, norm), ``pretrained_backbone`` (a torchvision/mmcv ResNet-50 checkpoint path or
state dict loaded into ``backbone``). A checkpoint's ``auxiliary_head.*`` (mmseg's training-only FCN head) is
ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..imaging import IMAGENET_MEAN, IMAGENET_STD
from ..nn import CARAFEDownsample, CARAFEUpsample
from . import ModelSpec, register
from .resnet import ResNet, load_backbone_weights

__all__ = ["ConvModule", "UPerCarafeHead", "UperNetCarafe", "normalize_image", "count_carafe_modules",
           "IMAGENET_MEAN", "IMAGENET_STD"]


def normalize_image(pixels: Tensor) -> Tensor:
    """(N, 3, H, W) RGB pixels in 0..255 -> the normalized input the segmenters expect."""
    mean = pixels.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = pixels.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


class ConvModule(nn.Module):
    """conv (no bias) -> BatchNorm -> ReLU, with mmcv ``ConvModule``'s parameter names (``conv``, ``bn``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


def _crop_to(x: Tensor, like: Tensor) -> Tensor:
    # A ×2 upsample of a ceil(h/2) level is at least h tall: cropping (an ONNX Slice) restores the finer size exactly.
    return x[:, :, : like.shape[-2], : like.shape[-1]]


def _adaptive_avg_pool(x: Tensor, bins: int) -> Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` for any H, W, written so that ONNX export keeps H and W dynamic.

    Bin i covers rows [floor(i·H/b), ceil((i+1)·H/b)), as PyTorch defines it; the sums come from an integral image
    (cumulative sums), so only CumSum/Gather/arithmetic appear in the graph whatever the input size.
    """
    if bins == 1:
        return x.mean(dim=(2, 3), keepdim=True)
    h, w = x.shape[-2], x.shape[-1]
    integral = F.pad(x.cumsum(2).cumsum(3), (1, 0, 1, 0))  # (N, C, H+1, W+1), integral[..., i, j] = sum x[:i, :j]
    idx = torch.arange(bins, device=x.device)
    y0 = torch.div(idx * h, bins, rounding_mode="floor")
    y1 = torch.div((idx + 1) * h + bins - 1, bins, rounding_mode="floor")
    x0 = torch.div(idx * w, bins, rounding_mode="floor")
    x1 = torch.div((idx + 1) * w + bins - 1, bins, rounding_mode="floor")
    rows = lambda t, r: t.index_select(2, r)  # noqa: E731
    cols = lambda t, c: t.index_select(3, c)  # noqa: E731
    total = (cols(rows(integral, y1), x1) - cols(rows(integral, y0), x1)
             - cols(rows(integral, y1), x0) + cols(rows(integral, y0), x0))
    area = ((y1 - y0).view(bins, 1) * (x1 - x0).view(1, bins)).to(x.dtype)
    return total / area


class _PoolBranch(nn.Module):
    """One PPM branch; children ``0`` (the pool) and ``1`` (the ConvModule) as mmseg's ``Sequential`` names them."""

    def __init__(self, bins: int, in_channels: int, channels: int):
        super().__init__()
        self.bins = bins
        self.add_module("0", nn.Identity())  # keeps mmseg's index of the ConvModule; the pool has no parameters
        self.add_module("1", ConvModule(in_channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return getattr(self, "1")(_adaptive_avg_pool(x, self.bins))


class UPerCarafeHead(nn.Module):
    """UperNet decode head (mmseg ``UPerHead``) with CARAFE ×2 for every upsampling inside the head."""

    def __init__(
        self,
        in_channels=(256, 512, 1024, 2048),
        channels: int = 512,
        num_classes: int = 150,
        pool_scales=(1, 2, 3, 6),
        compressed_channels: int = 64,
        dropout_ratio: float = 0.1,
        upsample_cfg: dict | None = None,
    ):
        super().__init__()
        if len(in_channels) < 2:
            raise ValueError(f"in_channels needs at least 2 levels, got {in_channels}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        levels = len(in_channels)
        self.in_channels = tuple(in_channels)
        self.channels = channels
        self.num_classes = num_classes
        self.pool_scales = tuple(pool_scales)

        up_cfg = {"compressed_channels": compressed_channels, **(upsample_cfg or {})}

        def up(c: int) -> CARAFEUpsample:
            return CARAFEUpsample(c, scale_factor=2, **up_cfg)

        # PPM on the coarsest level
        self.psp_modules = nn.ModuleList(_PoolBranch(s, in_channels[-1], channels) for s in self.pool_scales)
        self.psp_upsamplers = nn.ModuleList(up(channels) for _ in self.pool_scales)
        self.bottleneck = ConvModule(in_channels[-1] + len(self.pool_scales) * channels, channels, 3)
        # FPN
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_upsamplers = nn.ModuleList(up(channels) for _ in range(levels - 1))
        # FUSE: sequential upsample-concat; the k-th step upsamples k·channels
        self.fuse_upsamplers = nn.ModuleList(up(channels * (k + 1)) for k in range(levels - 1))
        self.fpn_bottleneck = ConvModule(levels * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def psp_forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        half = ((h + 1) // 2, (w + 1) // 2)
        outs = [x]
        for branch, carafe in zip(self.psp_modules, self.psp_upsamplers):
            pooled = branch(x)
            # CARAFE §4.2: bilinear to half the target size, then CARAFE ×2 (cropped back for odd sizes)
            y = F.interpolate(pooled, size=half, mode="bilinear", align_corners=False)
            outs.append(_crop_to(carafe(y), x))
        return self.bottleneck(torch.cat(outs, dim=1))

    def forward(self, feats) -> Tensor:
        levels = len(self.in_channels)
        if len(feats) != levels:
            raise ValueError(f"the head takes {levels} feature levels, got {len(feats)}")
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        laterals.append(self.psp_forward(feats[-1]))
        for i in range(levels - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _crop_to(self.fpn_upsamplers[i - 1](laterals[i]), laterals[i - 1])
        outs = [self.fpn_convs[i](laterals[i]) for i in range(levels - 1)] + [laterals[-1]]
        fused = outs[-1]
        for k, i in enumerate(range(levels - 2, -1, -1)):
            fused = torch.cat([outs[i], _crop_to(self.fuse_upsamplers[k](fused), outs[i])], dim=1)
        return self.conv_seg(self.dropout(self.fpn_bottleneck(fused)))


class UperNetCarafe(nn.Module):
    """Backbone + UperNet-CARAFE head; ``forward(image) -> logits`` at the input resolution."""

    def __init__(
        self,
        num_classes: int = 150,
        channels: int = 512,
        base_channels: int = 64,
        stage_blocks=None,
        carafe_pp: bool = False,
        pool_scales=(1, 2, 3, 6),
        compressed_channels: int = 64,
        depth: int = 50,
        deep_stem: bool = False,
        upsample_cfg: dict | None = None,
        downsample_cfg: dict | None = None,
    ):
        super().__init__()
        self.backbone = ResNet(depth, base_channels=base_channels, carafe_pp=carafe_pp, stage_blocks=stage_blocks,
                               deep_stem=deep_stem, downsample_cfg=downsample_cfg)
        self.decode_head = UPerCarafeHead(
            self.backbone.out_channels, channels, num_classes, pool_scales, compressed_channels,
            upsample_cfg=upsample_cfg,
        )
        self.num_classes = num_classes

    def forward(self, image: Tensor) -> Tensor:
        logits = self.decode_head(self.backbone(image))
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)


def count_carafe_modules(model: nn.Module) -> dict[str, int]:
    """``{"up": number of CARAFEUpsample, "down": number of CARAFEDownsample}`` inside ``model``."""
    mods = list(model.modules())
    return {
        "up": sum(isinstance(m, CARAFEUpsample) for m in mods),
        "down": sum(isinstance(m, CARAFEDownsample) for m in mods),
    }


def _builder(carafe_pp: bool):
    def build(pretrained_backbone=None, **overrides) -> UperNetCarafe:
        model = UperNetCarafe(carafe_pp=carafe_pp, **overrides)
        if pretrained_backbone is not None:
            load_backbone_weights(model.backbone, pretrained_backbone)
        return model

    return build


_DYNAMIC = {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}}
# narrow widths, one block per stage, same structure and names: quick checks of the graph (tests, --tiny)
TINY = dict(channels=16, base_channels=8, stage_blocks=(1, 1, 1, 1), compressed_channels=8)

register(ModelSpec(
    task="segmentation",
    name="upernet_r50_carafe",
    builder=_builder(carafe_pp=False),
    input_names=("image",),
    output_names=("logits",),
    default_input_shape=(2, 3, 512, 512),  # batch 2: torch.export specialises a size-1 dynamic dim
    dynamic_axes=_DYNAMIC,
    tiny=TINY,
    checkpoint_ignores=("auxiliary_head.",),
    description="UperNet + ResNet-50 with CARAFE in PPM, FPN and FUSE (ADE20k: 150 classes); normalized RGB input",
))
register(ModelSpec(
    task="segmentation",
    name="upernet_r50_carafe_pp",
    builder=_builder(carafe_pp=True),
    input_names=("image",),
    output_names=("logits",),
    default_input_shape=(2, 3, 512, 512),  # batch 2: torch.export specialises a size-1 dynamic dim
    dynamic_axes=_DYNAMIC,
    tiny=TINY,
    checkpoint_ignores=("auxiliary_head.",),
    description="upernet_r50_carafe on a CARAFE++ ResNet-50 (7 CARAFE++ downsamplers); normalized RGB input",
))
