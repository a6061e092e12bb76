"""``carafe-deploy demo``: build a small CARAFE / CARAFE++ network, run it, and say what happened."""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from ..nn import CARAFEDownsample, CARAFEUpsample


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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build a small CARAFE model, run it and report", description=__doc__)
    p.add_argument("--size", type=int, nargs=2, default=[63, 95], metavar=("H", "W"), help="input size (odd is fine)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    torch.manual_seed(args.seed)
    model = TinyCarafeNet().eval()
    h, w = args.size
    x = torch.randn(args.batch, 3, h, w)
    shapes = {}

    def record(name):
        def hook(_module, inputs, output):
            shapes[name] = (tuple(inputs[0].shape), tuple(output.shape))

        return hook

    model.down.register_forward_hook(record("CARAFEDownsample (CARAFE++)"))
    model.up.register_forward_hook(record("CARAFEUpsample (CARAFE)"))
    with torch.no_grad():
        t0 = time.perf_counter()
        y = model(x)
        elapsed = time.perf_counter() - t0

    table = Table(title="carafe-deploy demo: PyTorch forward")
    table.add_column("module")
    table.add_column("input")
    table.add_column("output")
    for name, (i, o) in shapes.items():
        table.add_row(name, str(i), str(o))
    table.add_row("network", str(tuple(x.shape)), str(tuple(y.shape)))
    console.print(table)
    params = sum(p.numel() for p in model.parameters())
    console.print(f"{params} parameters, forward on CPU in {elapsed * 1e3:.1f} ms, output finite: "
                  f"{bool(torch.isfinite(y).all())}")
    return 0
