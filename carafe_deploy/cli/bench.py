"""carafe-deploy bench [MODEL.onnx]: latency (median, p90) and throughput over batch sizes on ONNX Runtime,
TensorRT (--engine) and PyTorch (a model source), whichever are given and installed; a table, a JSON report and a
PNG plot. A backend that cannot run here is reported as skipped with the reason."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import HelpFormatter, ModelSourceArgs, add_backend, parse_shape

SOURCE = ModelSourceArgs(required=False, title="the same model in PyTorch (one of)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark an ONNX model / engine / PyTorch model over batch sizes",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("onnx", type=Path, nargs="?", metavar="MODEL.onnx",
                   help="run with ONNX Runtime (default: ONNX Runtime not benchmarked)")
    p.add_argument("--engine", type=Path, metavar="ENGINE",
                   help="a TensorRT engine of the same model (default: TensorRT not benchmarked)")
    add_backend(p, building=False)
    SOURCE.add(p)
    p.add_argument("--input-shape", type=parse_shape, action="append", metavar="N,C,H,W",
                   help="batch-1 input shape, once per input (default: the engine's opt shapes, the ONNX's or the "
                        "model's own)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8], metavar="N", help="batch sizes")
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="untimed runs before timing, per batch size")
    p.add_argument("--iters", type=int, default=50, metavar="N", help="timed runs per batch size")
    p.add_argument("-o", "--output", type=Path, default=Path("carafe_bench.json"), metavar="REPORT.json",
                   help="the JSON report")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG", help="the plot (default: REPORT.png)")
    p.set_defaults(func=run)


def _input_names_and_shapes(args, loaded) -> tuple[list[str], list | None]:
    """Input names (in order) and their shapes as the engine sidecar (opt shapes) or the ONNX give them; the
    PyTorch source's when neither is given. A shape is ``None`` where it is not known."""
    if args.engine:
        from ..trt import read_sidecar

        side = read_sidecar(args.engine)
        if side:
            return [t["name"] for t in side["inputs"]], [tuple(side["profiles"][0][t["name"]]["opt"])
                                                         for t in side["inputs"]]
    if args.onnx:
        from ..trt.graph import load_onnx, onnx_input_dims

        dims = onnx_input_dims(load_onnx(args.onnx, weights=False))
        shapes = [None if any(not isinstance(x, int) or x < 1 for x in d[1:]) else (1, *d[1:]) for d in dims.values()]
        return list(dims), shapes
    if loaded is not None:
        shapes = loaded.input_shapes or [None]
        names = loaded.input_names or ([f"input{i}" for i in range(len(shapes))] if len(shapes) > 1 else ["input"])
        return names, list(shapes)
    return [], []


def _refuse_fixed_batch(args, dims: dict) -> None:
    """``ValueError`` before any timing when the ONNX fixes an input's batch and ``--batch`` asks for another."""
    for name, d in dims.items():
        fixed = d[0] if d and isinstance(d[0], int) and d[0] > 0 else None
        other = [b for b in args.batch if fixed is not None and b != fixed]
        if other:
            raise ValueError(f"{args.onnx} fixes the batch of input {name!r} to {fixed}, so --batch "
                             f"{' '.join(map(str, other))} cannot run on it: give --batch {fixed}, or export with a "
                             "dynamic batch (`carafe-deploy export ... --dynamic`)")


def _default_shapes(args, loaded) -> dict[str, tuple[int, ...]]:
    """Batch-1 shapes per input name: --input-shape (once per input, in order), else what the engine, the ONNX or
    the model source say."""
    names, known = _input_names_and_shapes(args, loaded)
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
    from .. import bench
    from ..backends import OnnxrtRunner, TorchRunner, TrtRunner
    from ..errors import DeployError
    from ..files import refuse_overwriting_inputs
    from ..report import console

    source = SOURCE.parse(args)
    if not (args.engine or args.onnx or source.given()):
        raise ValueError("nothing to benchmark: give MODEL.onnx, --engine and/or a PyTorch model (--python/--model/...)")
    for path in (args.engine, args.onnx):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
    if any(b < 1 for b in args.batch):
        raise ValueError(f"batch sizes must be >= 1, got {args.batch}")
    plot_path = args.plot or args.output.with_suffix(".png")
    bench.check_plot_path(plot_path, "--plot")
    refuse_overwriting_inputs({"-o/--output": args.output, "--plot": plot_path},
                              [args.onnx, args.engine, *source.inputs()])
    if args.onnx:
        from ..trt.graph import load_onnx, onnx_input_dims

        _refuse_fixed_batch(args, onnx_input_dims(load_onnx(args.onnx, weights=False)))
    if args.engine:
        from ..trt.availability import unidentified_engine

        unidentified_engine(args.engine, args.backend, "--engine")
    loaded = source.load() if source.given() else None
    shapes = _default_shapes(args, loaded)
    report = bench.BenchReport(shapes={n: list(s) for n, s in shapes.items()})
    common = dict(shapes=shapes, batches=args.batch, warmup=args.warmup, iters=args.iters, report=report)
    out = console()
    if args.onnx:
        bench.bench_runner(OnnxrtRunner(args.onnx), **common)
    else:
        report.skipped["onnxruntime"] = "no MODEL.onnx given"
    if args.engine:
        bench.bench_runner(TrtRunner(args.engine, backend=args.backend), **common)
    else:
        report.skipped["tensorrt"] = "no --engine given"
    if loaded is not None:
        bench.bench_runner(TorchRunner(loaded.model, list(shapes)), **common)
    else:
        report.skipped["pytorch"] = "no PyTorch model given"
    out.print(bench.render_table(report))
    bench.write_json(report, args.output)
    if not report.rows:
        raise DeployError("no backend produced a timing (see the skipped reasons above)")
    bench.plot(report, plot_path)
    out.print(f"wrote {args.output} and {plot_path}")
    return 0
