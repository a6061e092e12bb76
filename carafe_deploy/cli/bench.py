"""``carafe-deploy bench``: latency (median, p90) and throughput over batch sizes on TensorRT, ONNX Runtime and
PyTorch, whichever are given and installed; a table, a JSON and a PNG plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from ..errors import DeployError
from ._source import add_source_args, load_source


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark an engine / ONNX model / PyTorch model over batch sizes",
                       description=__doc__)
    p.add_argument("engine", type=Path, nargs="?", help="TensorRT engine (skipped with the reason without TensorRT)")
    p.add_argument("--onnx", type=Path, help="the same model as ONNX, run with ONNX Runtime")
    add_source_args(p, required=False)  # the same model in PyTorch, as `export` and `check` take it
    p.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8], help="batch sizes (default 1 2 4 8)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--json", type=Path, default=Path("carafe_bench.json"), help="JSON report path")
    p.add_argument("--plot", type=Path, default=Path("carafe_bench.png"), help="PNG plot path")
    p.set_defaults(func=run)


def _input_names_and_shapes(args, source) -> tuple[list[str], list | None]:
    """Input names (in order) and their shapes as the engine sidecar (opt shapes) or the ONNX give them; the
    PyTorch source's when neither is given. A shape is ``None`` where it is not known."""
    if args.engine:
        from ..trt import read_sidecar

        side = read_sidecar(args.engine)
        if side:
            return [t["name"] for t in side["inputs"]], [tuple(side["profiles"][0][t["name"]]["opt"])
                                                         for t in side["inputs"]]
    if args.onnx:
        from ..trt import load_onnx, onnx_input_dims

        dims = onnx_input_dims(load_onnx(args.onnx))
        shapes = [None if any(not isinstance(x, int) or x < 1 for x in d[1:]) else (1, *d[1:]) for d in dims.values()]
        return list(dims), shapes
    if source is not None:
        shapes = source.input_shapes or [None]
        names = source.input_names or ([f"input{i}" for i in range(len(shapes))] if len(shapes) > 1 else ["input"])
        return names, list(shapes)
    return [], []


def _default_shapes(args, source) -> dict[str, tuple[int, ...]]:
    """Batch-1 shapes per input name: --input-shape (once per input, in order), else what the engine, the ONNX or
    the model source say."""
    names, known = _input_names_and_shapes(args, source)
    if args.input_shape:
        if names and len(args.input_shape) != len(names):
            raise ValueError(f"{len(args.input_shape)} --input-shape for {len(names)} inputs ({', '.join(names)})")
        names = names or ([f"input{i}" for i in range(len(args.input_shape))] if len(args.input_shape) > 1
                          else ["input"])
        return dict(zip(names, (tuple(s) for s in args.input_shape)))
    missing = [n for n, s in zip(names, known) if s is None]
    if not names or missing:
        raise ValueError("input shapes are not fixed in the model: give them with --input-shape N,C,H,W "
                         f"(once per input{': ' + ', '.join(missing) if missing else ''})")
    return dict(zip(names, known))


def run(args: argparse.Namespace) -> int:
    from ..trt import bench

    has_source = any([args.python, args.torchscript, args.exported_program, args.model])
    if not (args.engine or args.onnx or has_source):
        raise ValueError("nothing to benchmark: give an ENGINE, --onnx and/or a PyTorch model (--python/--model/...)")
    for path in (args.engine, args.onnx):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
    if any(b < 1 for b in args.batch):
        raise ValueError(f"batch sizes must be >= 1, got {args.batch}")
    source = load_source(args) if has_source else None
    shapes = _default_shapes(args, source)
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
    if source is not None:
        bench.bench_torch(source.model, list(shapes), **common)
    else:
        report.skipped["pytorch"] = "no PyTorch model given"
    console.print(bench.render_table(report))
    bench.write_json(report, args.json)
    if not report.rows:
        raise DeployError("no backend produced a timing (see the skipped reasons above)")
    bench.plot(report, args.plot)
    console.print(f"wrote {args.json} and {args.plot}")
    return 0
