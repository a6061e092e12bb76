"""CARAFE (upsampling) and CARAFE++ (downsampling) modules.

``CARAFEUpsample`` is mmcv's ``CARAFEPack``: same constructor, same parameter names and shapes, same forward, so an
mmcv/mmdet checkpoint loads into it unchanged. ``CARAFEDownsample`` is the CARAFE++ downsampler (TPAMI 2021, §3.2).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.carafe import _check_int, carafe

__all__ = ["CARAFEUpsample", "CARAFEDownsample", "NearestResample", "normalize_kernels", "with_nearest_resampling"]


def normalize_kernels(kernels: Tensor, kernel_size: int) -> Tensor:
    """Softmax over each group's k² taps: (N, G·k², H, W) -> same shape, each group's taps summing to 1."""
    n, kc, h, w = kernels.shape
    groups = kc // (kernel_size * kernel_size)
    kernels = kernels.view(n, groups, kernel_size * kernel_size, h, w)
    return F.softmax(kernels, dim=2).view(n, kc, h, w)


def _xavier_uniform_(conv: nn.Conv2d) -> None:
    nn.init.xavier_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _check_kernel_size(name: str, value: int) -> None:
    _check_int(name, value, 1)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd, got {value}")


class CARAFEUpsample(nn.Module):
    """Content-aware upsampling by ``scale_factor`` (mmcv ``CARAFEPack``).

    channel_compressor (1×1 conv to ``compressed_channels``) -> content_encoder (``encoder_kernel`` conv to
    ``up_group·up_kernel²·scale²`` channels) -> pixel_shuffle(scale) -> softmax over each group's ``up_kernel²`` taps
    -> ``carafe(x, kernels, up_kernel, up_group, scale, "up")``.
    """

    def __init__(
        self,
        channels: int,
        scale_factor: int = 2,
        up_kernel: int = 5,
        up_group: int = 1,
        encoder_kernel: int = 3,
        encoder_dilation: int = 1,
        compressed_channels: int = 64,
    ):
        super().__init__()
        _check_int("channels", channels, 1)
        _check_int("scale_factor", scale_factor, 1)
        _check_kernel_size("up_kernel", up_kernel)
        _check_int("up_group", up_group, 1)
        _check_kernel_size("encoder_kernel", encoder_kernel)
        _check_int("encoder_dilation", encoder_dilation, 1)
        _check_int("compressed_channels", compressed_channels, 1)
        if channels % up_group:
            raise ValueError(f"channels ({channels}) must be divisible by up_group ({up_group})")
        self.channels = channels
        self.scale_factor = scale_factor
        self.up_kernel = up_kernel
        self.up_group = up_group
        self.encoder_kernel = encoder_kernel
        self.encoder_dilation = encoder_dilation
        self.compressed_channels = compressed_channels
        self.channel_compressor = nn.Conv2d(channels, compressed_channels, 1)
        self.content_encoder = nn.Conv2d(
            compressed_channels,
            up_kernel * up_kernel * up_group * scale_factor * scale_factor,
            encoder_kernel,
            padding=(encoder_kernel - 1) * encoder_dilation // 2,
            dilation=encoder_dilation,
        )
        self.init_weights()

    def init_weights(self) -> None:
        # As mmcv's CARAFEPack: xavier-uniform everywhere, then a near-zero encoder so kernels start near uniform.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _xavier_uniform_(m)
        nn.init.normal_(self.content_encoder.weight, std=0.001)
        nn.init.zeros_(self.content_encoder.bias)

    def kernel_normalizer(self, mask: Tensor) -> Tensor:
        mask = F.pixel_shuffle(mask, self.scale_factor)
        return normalize_kernels(mask, self.up_kernel)

    def forward(self, x: Tensor) -> Tensor:
        mask = self.content_encoder(self.channel_compressor(x))
        mask = self.kernel_normalizer(mask)
        # under torch.autocast the encoder's output can be narrower or wider than x: reassemble in x's dtype
        return carafe(x, mask.to(x.dtype), self.up_kernel, self.up_group, self.scale_factor, "up")

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, scale_factor={self.scale_factor}, up_kernel={self.up_kernel}, "
            f"up_group={self.up_group}"
        )


class _ConvBNReLU(nn.Module):
    """A 1×1 conv with optional BatchNorm + ReLU; parameter names follow mmcv's ConvModule (conv, bn)."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=not norm)
        self.bn = nn.BatchNorm2d(out_channels) if norm else None
        self.activate = nn.ReLU(inplace=True) if norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.activate(self.bn(x))
        return x


class CARAFEDownsample(nn.Module):
    """Content-aware downsampling by ``scale_factor`` (CARAFE++, TPAMI 2021 §3.2, §4.1).

    channel_compressor (1×1 conv to ``compressed_channels``, with BN+ReLU when ``norm``) -> content_encoder
    (``encoder_kernel`` conv with stride ``scale_factor`` and same-padding, giving ``group·kernel_size²`` channels at
    (ceil(H/s), ceil(W/s))) -> softmax over each group's taps -> ``carafe(x, kernels, kernel_size, group, s, "down")``.
    """

    def __init__(
        self,
        channels: int,
        scale_factor: int = 2,
        kernel_size: int = 5,
        group: int = 1,
        encoder_kernel: int = 3,
        compressed_channels: int = 16,
        norm: bool = True,
    ):
        super().__init__()
        _check_int("channels", channels, 1)
        _check_int("scale_factor", scale_factor, 1)
        _check_kernel_size("kernel_size", kernel_size)
        _check_int("group", group, 1)
        _check_kernel_size("encoder_kernel", encoder_kernel)
        _check_int("compressed_channels", compressed_channels, 1)
        if channels % group:
            raise ValueError(f"channels ({channels}) must be divisible by group ({group})")
        self.channels = channels
        self.scale_factor = scale_factor
        self.kernel_size = kernel_size
        self.group = group
        self.encoder_kernel = encoder_kernel
        self.compressed_channels = compressed_channels
        self.channel_compressor = _ConvBNReLU(channels, compressed_channels, norm)
        self.content_encoder = nn.Conv2d(
            compressed_channels,
            group * kernel_size * kernel_size,
            encoder_kernel,
            stride=scale_factor,
            padding=(encoder_kernel - 1) // 2,
        )
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _xavier_uniform_(m)
        nn.init.normal_(self.content_encoder.weight, std=0.001)
        nn.init.zeros_(self.content_encoder.bias)

    def forward(self, x: Tensor) -> Tensor:
        mask = normalize_kernels(self.content_encoder(self.channel_compressor(x)), self.kernel_size)
        return carafe(x, mask.to(x.dtype), self.kernel_size, self.group, self.scale_factor, "down")

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, scale_factor={self.scale_factor}, kernel_size={self.kernel_size}, "
            f"group={self.group}"
        )


class NearestResample(nn.Module):
    """The papers' baseline in place of a CARAFE module: nearest-neighbour ×s (``"up"``) or the top-left pixel of each
    s×s cell (``"down"``, the CARAFE++ op with a one-tap kernel). Same output size as the module it replaces, no
    parameters."""

    def __init__(self, scale_factor: int, mode: str):
        super().__init__()
        _check_int("scale_factor", scale_factor, 1)
        if mode not in ("up", "down"):
            raise ValueError(f"mode must be 'up' or 'down', got {mode!r}")
        self.scale_factor = scale_factor
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        s = self.scale_factor
        if self.mode == "up":
            return F.interpolate(x, scale_factor=float(s), mode="nearest")
        return x[:, :, ::s, ::s]

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}, mode={self.mode!r}"


def with_nearest_resampling(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``CARAFEUpsample``/``CARAFEDownsample`` inside ``model`` by :class:`NearestResample`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, CARAFEUpsample):
                setattr(parent, name, NearestResample(child.scale_factor, "up"))
            elif isinstance(child, CARAFEDownsample):
                setattr(parent, name, NearestResample(child.scale_factor, "down"))
    return model
