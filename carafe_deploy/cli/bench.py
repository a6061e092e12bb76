"""``carafe-deploy bench``: latency (median, p90) and throughput over batch sizes on TensorRT, ONNX Runtime and
PyTorch, whichever are given and installed; a table, a JSON and a PNG plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from ..errors import DeployError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark an engine / ONNX model / PyTorch model over batch sizes",
                       description=__doc__)
    p.add_argument("engine", type=Path, nargs="?", help="TensorRT engine (skipped with the reason without TensorRT)")
    p.add_argument("--onnx", type=Path, help="the same model as ONNX, run with ONNX Runtime")
    p.add_argument("--torch-model", metavar="SPEC",
                   help="the same model in PyTorch: file.pt2 (torch.export), package.module:factory, or a zoo name")
    p.add_argument("--shape", action="append", metavar="NAME:DxDxD",
                   help="input shape (batch dim is replaced); default: the engine's opt shape or the ONNX's shape")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8], help="batch sizes (default 1 2 4 8)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--json", type=Path, default=Path("carafe_bench.json"), help="JSON report path")
    p.add_argument("--plot", type=Path, default=Path("carafe_bench.png"), help="PNG plot path")
    p.set_defaults(func=run)


def _default_shapes(args) -> dict[str, tuple[int, ...]]:
    """Batch-1 shapes: --shape, else the engine sidecar's opt shapes, else the ONNX's static input shapes."""
    from ..trt import parse_shape_specs

    shapes = parse_shape_specs(args.shape, "--shape")
    if shapes:
        return shapes
    if args.engine:
        from ..trt import read_sidecar

        side = read_sidecar(args.engine)
        if side:
            return {n: tuple(p["opt"]) for n, p in side["profiles"][0].items()}
    if args.onnx:
        from ..trt import load_onnx, onnx_input_dims

        dims = onnx_input_dims(load_onnx(args.onnx))
        dynamic = {n: d for n, d in dims.items() if any(not isinstance(x, int) or x < 1 for x in d[1:])}
        if dynamic:
            raise ValueError("input shapes are dynamic in the ONNX: give them with --shape "
                             + " ".join(f"{n}:1x..." for n in dynamic))
        return {n: (1, *d[1:]) for n, d in dims.items()}
    raise ValueError("give the input shapes with --shape NAME:DxDxD")


def run(args: argparse.Namespace) -> int:
    from ..trt import bench

    if not (args.engine or args.onnx or args.torch_model):
        raise ValueError("nothing to benchmark: give an ENGINE, --onnx and/or --torch-model")
    for path in (args.engine, args.onnx):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
    if any(b < 1 for b in args.batch):
        raise ValueError(f"batch sizes must be >= 1, got {args.batch}")
    shapes = _default_shapes(args)
    report = bench.BenchReport(shapes={n: list(s) for n, s in shapes.items()})
    common = dict(shapes=shapes, batches=args.batch, warmup=args.warmup, iters=args.iters, report=report)
    console = Console()
    if args.engine:
        bench.bench_tensorrt(args.engine, **common)
    else:
        report.skipped["tensorrt"] = "no engine given"
    if args.onnx:
        bench.bench_onnxruntime(args.onnx, **common)
    else:
        report.skipped["onnxruntime"] = "no --onnx given"
    if args.torch_model:
        model = bench.load_torch_model(args.torch_model)
        bench.bench_torch(model, list(shapes), **common)
    else:
        report.skipped["pytorch"] = "no --torch-model given"
    console.print(bench.render_table(report))
    bench.write_json(report, args.json)
    if not report.rows:
        raise DeployError("no backend produced a timing (see the skipped reasons above)")
    bench.plot(report, args.plot)
    console.print(f"wrote {args.json} and {args.plot}")
    return 0
