"""``tiny_carafe_net``: a small network with both modes of the op, the demo's model and the tests' workhorse."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import CARAFEDownsample, CARAFEUpsample
from . import ModelSpec, register

__all__ = ["TinyCarafeNet"]


class TinyCarafeNet(nn.Module):
    """conv -> CARAFE++ down ×2 -> conv -> CARAFE up ×2 -> conv: both modes of the op in one small network."""

    def __init__(self, channels: int = 32, classes: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.down = CARAFEDownsample(channels, scale_factor=2, kernel_size=5, compressed_channels=16)
        self.mid = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.up = CARAFEUpsample(channels, scale_factor=2, up_kernel=5, compressed_channels=16)
        self.head = nn.Conv2d(channels, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.mid(self.down(x))
        return self.head(self.up(y)[..., : x.shape[-2], : x.shape[-1]] + x)


register(ModelSpec(
    name="tiny_carafe_net",
    builder=TinyCarafeNet,
    task="generic",
    input_names=("image",),
    output_names=("logits",),
    default_input_shape=(2, 3, 63, 95),  # odd sizes: "down" pads, "up" is cropped back
    dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}},
    tiny={"channels": 8},
    description="conv -> CARAFE++ down -> conv -> CARAFE up -> conv (the demo's network)",
))
