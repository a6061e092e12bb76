"""``carafe-deploy demo``: build a small CARAFE / CARAFE++ network, run it, export it to a portable ONNX file (dynamic
batch, height and width), run that on ONNX Runtime and compare with PyTorch."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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
    p.add_argument("--out", default="carafe_deploy_demo", metavar="DIR", help="where the ONNX file goes")
    p.add_argument("--no-onnx", action="store_true", help="only run PyTorch")
    p.add_argument("--sample-steps", type=int, default=600,
                   help="training steps of the segmentation sample (UperNet-CARAFE on synthetic shapes)")
    p.add_argument("--sample-size", type=int, default=64, help="image size of the segmentation sample")
    p.add_argument("--sample-images", type=int, nargs=2, default=(800, 48), metavar=("TRAIN", "TEST"),
                   help="synthetic images to train on and to evaluate on")
    p.add_argument("--no-sample", action="store_true", help="skip the segmentation sample")
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
        model(x[..., :16, :16])  # warm-up: the first call pays for lazy initialisation, not for CARAFE
        shapes.clear()
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
    if args.no_onnx:
        return 0
    out_dir = Path(args.out)
    code, onnx_path = _onnx_round_trip(console, model, x, y, out_dir)
    _engine_step(console, onnx_path, x, lambda t: model(t).numpy())
    if code or args.no_sample:
        return code
    return _segmentation_sample(console, out_dir / "segmentation", args.sample_steps, args.sample_size,
                                *args.sample_images)


def _onnx_round_trip(console: Console, model: nn.Module, x: torch.Tensor, y: torch.Tensor, out_dir: Path):
    from ..onnx import carafe_nodes, export
    from ..onnx.runtime import run_onnxruntime
    from ..parity import BackendResult, compare, render_table

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tiny_carafe_net.onnx"
    t0 = time.perf_counter()
    with console.status("exporting to ONNX (portable)"):
        proto = export(
            model,
            (x,),
            path,
            mode="portable",
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}},
        )
    console.print(
        f"exported {path} in {time.perf_counter() - t0:.1f} s: {len(carafe_nodes(proto))} carafe::CARAFE nodes "
        f"with their standard-op function (ONNX Runtime needs no custom library)"
    )
    actual = run_onnxruntime(proto, {"image": x.numpy()})
    diffs = compare({"logits": y.numpy()}, actual, rtol=1e-4, atol=1e-5)
    result = BackendResult("onnxruntime", "passed" if all(d.passed for d in diffs) else "failed", diffs)
    console.print(render_table([result], title="ONNX Runtime vs PyTorch (rtol 1e-4, atol 1e-5)"))
    return (0 if result.status == "passed" else 1), path


def _engine_step(console: Console, onnx_path: Path, x: torch.Tensor, y_of) -> None:
    """Build and check a TensorRT engine with the CARAFE plugin when TensorRT and the plugin are here."""
    from ..trt import plugin_engine_unavailable

    reason = plugin_engine_unavailable()
    if reason is not None:
        console.print(f"TensorRT engine: skipped ({reason})")
        return
    from ..trt import BuildOptions, build_engine, run_engine  # pragma: no cover -- needs TensorRT

    from ..parity import BackendResult, compare, render_table

    engine = onnx_path.with_suffix(".engine")
    shape = {"image": tuple(x.shape)}
    build_engine(BuildOptions(onnx_path, engine_path=engine, min_shapes=shape, opt_shapes=shape, max_shapes=shape))
    with torch.no_grad():
        reference = {"logits": y_of(x)}
    diffs = compare(reference, run_engine(engine, {"image": x.numpy()}), rtol=1e-4, atol=1e-4)
    result = BackendResult("tensorrt", "passed" if all(d.passed for d in diffs) else "failed", diffs)
    console.print(render_table([result], title=f"TensorRT ({engine.name}, CARAFE plugin) vs PyTorch"))


def _segmentation_sample(console: Console, out_dir: Path, steps: int, size: int, train: int, test: int) -> int:
    from ..samples.segmentation import rich_table, run

    console.rule("segmentation sample: train UperNet-CARAFE (CARAFE + CARAFE++) on synthetic shapes, then deploy")
    results = run(str(out_dir), steps=steps, size=size, train_count=train, test_count=test, progress=True,
                  log=console.print)
    console.print(rich_table(results))
    for backend, reason in results.get("skipped", {}).items():
        console.print(f"{backend}: skipped ({reason})")
    console.print(f"picture: {results['files']['figure']}")
    ref = results["miou"]["PyTorch"]
    off = {k: v for k, v in results["miou"].items() if abs(v - ref) > 0.1}
    if off:
        console.print(f"[red]mIoU differs from PyTorch by more than 0.1 point: {off}[/]")
        return 1
    return 0
