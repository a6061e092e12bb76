"""``carafe-deploy check MODEL.onnx``: run the model on ONNX Runtime (and a TensorRT engine with --engine) and compare
each output with PyTorch or a saved reference; print a per-output table and optionally write a JSON report.

Exit status: 0 when every compared output is within tolerance, 1 when any is not (or a backend errored).
A backend that cannot run here (e.g. TensorRT missing) is reported as skipped, never as passed.
"""

from __future__ import annotations

import argparse
from typing import Callable

import numpy as np
import onnx
from rich.console import Console

from ..errors import DeployError
from ..parity import BackendResult, compare, render_table, report_dict, write_json
from ._source import add_source_args, load_reference, load_source


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="compare ONNX Runtime (and TensorRT) with PyTorch", description=__doc__)
    p.add_argument("onnx", metavar="MODEL.onnx")
    p.add_argument("--reference", metavar="REF.npz", help="saved inputs and outputs (carafe-deploy export --save-reference)")
    add_source_args(p, required=False)
    p.add_argument("--fp16", action="store_true", help="the ONNX file is an fp16 export: compare with looser defaults")
    p.add_argument("--rtol", type=float, default=None, help="default 1e-4 (fp32), 1e-2 (fp16)")
    p.add_argument("--atol", type=float, default=None, help="default 1e-5 (fp32), 1e-2 (fp16)")
    p.add_argument("--engine", metavar="PATH", help="also run this TensorRT engine (needs carafe_deploy.trt and TensorRT)")
    p.add_argument("--providers", nargs="+", default=None, help="ONNX Runtime providers (default CPUExecutionProvider)")
    p.add_argument("--json", metavar="REPORT.json", help="write the comparison as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _reference(args, model: onnx.ModelProto):
    from ..onnx.runtime import random_feeds
    from .export import torch_outputs

    if args.reference:
        if any([args.python, args.torchscript, args.exported_program, args.model]):
            raise DeployError("give either --reference or a model source, not both")
        return load_reference(args.reference)
    if not any([args.python, args.torchscript, args.exported_program, args.model]):
        raise DeployError("nothing to compare with: give --reference REF.npz or a model (--python/--model/...)")
    import torch

    source = load_source(args)
    shapes = args.input_shape or source.input_shapes
    feeds = random_feeds(model, shapes, seed=args.seed)
    inputs = [torch.from_numpy(v.astype(np.float32) if v.dtype == np.float16 else v) for v in feeds.values()]
    outputs = torch_outputs(source.model, inputs)
    names = [o.name for o in model.graph.output]
    if len(names) != len(outputs):
        raise DeployError(f"PyTorch gave {len(outputs)} outputs, the ONNX model has {len(names)}")
    return feeds, dict(zip(names, outputs))


def _run_backend(name: str, runner: Callable[[], dict], reference, rtol, atol) -> BackendResult:
    try:
        actual = runner()
    except _Skip as exc:
        return BackendResult(name, "skipped", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 -- a backend failure is a row in the report, not a crash
        return BackendResult(name, "error", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    diffs = compare(reference, actual, rtol=rtol, atol=atol)
    return BackendResult(name, "passed" if all(d.passed for d in diffs) else "failed", diffs)


class _Skip(Exception):
    pass


def _tensorrt_runner(engine: str, feeds):
    def run():
        try:
            from ..trt import run_engine
        except Exception as exc:  # noqa: BLE001 -- missing module or missing TensorRT runtime
            raise _Skip(f"carafe_deploy.trt is unavailable ({type(exc).__name__}: {exc})") from exc
        try:
            return run_engine(engine, feeds)
        except ImportError as exc:
            raise _Skip(f"TensorRT runtime missing ({exc})") from exc
        except Exception as exc:
            from ..errors import MissingDependencyError

            if isinstance(exc, MissingDependencyError):
                raise _Skip(str(exc)) from exc
            raise

    return run


def run(args: argparse.Namespace) -> int:
    from ..onnx import register_schema
    from ..onnx.runtime import run_onnxruntime

    register_schema()
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # logs and CI: keep the table's rows on one line
    try:
        model = onnx.load(args.onnx)
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise DeployError(f"cannot read {args.onnx!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- protobuf decode errors
        raise DeployError(f"{args.onnx!r} is not an ONNX model: {exc}") from None
    rtol = args.rtol if args.rtol is not None else (1e-2 if args.fp16 else 1e-4)
    atol = args.atol if args.atol is not None else (1e-2 if args.fp16 else 1e-5)
    feeds, reference = _reference(args, model)

    results = [_run_backend("onnxruntime", lambda: run_onnxruntime(model, feeds, args.providers), reference, rtol, atol)]
    if args.engine:
        results.append(_run_backend("tensorrt", _tensorrt_runner(args.engine, feeds), reference, rtol, atol))
    console.print(render_table(results, title=f"carafe-deploy check: {args.onnx} (rtol {rtol:g}, atol {atol:g})"))
    report = report_dict(results, model=args.onnx, rtol=rtol, atol=atol,
                         reference=args.reference or "pytorch", inputs={k: list(v.shape) for k, v in feeds.items()})
    if args.json:
        write_json(args.json, report)
        console.print(f"wrote {args.json}")
    failed = [r for r in results if r.status in ("failed", "error")]
    for r in results:
        if r.status in ("skipped", "error"):
            colour = "yellow" if r.status == "skipped" else "red"
            console.print(f"[{colour}]{r.backend} {r.status}: {r.reason}[/{colour}]", soft_wrap=True)
    return 1 if failed else 0
