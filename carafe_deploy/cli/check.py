"""carafe-deploy check MODEL.onnx: run the model on ONNX Runtime (and a TensorRT engine with --engine) and compare
it with PyTorch or a saved reference; print a table and optionally write a JSON report.

The comparison is the task's, as export makes it: a registered detector's detections matched one to one (label, IoU,
score), a segmenter's logits and argmax agreement, anything else element-wise (allclose; the default atol scales with
each output's largest magnitude, and the table says what it was). A --model rebuilt with random weights is prepared
as the export prepared it (a detector's heads calibrated on the same image), so that it is the model the file came
from; --reference files are compared as the task named in the file's metadata.

--also OTHER.onnx ... runs more files of the same model (its fp16 or INT8 file) on the same inputs: each is labelled
by the precision it computes in (INT8 where it has Q/DQ nodes) and judged by that precision's limits (element-wise
defaults: fp32 rtol 1e-4, atol 1e-5 x each output's max |reference|; fp16 1e-2, 1e-2 x; int8 1e-1, 1e-1 x).

Exit status: 0 when every compared backend is within tolerance, 1 when any is not (or a backend errored).
A backend that cannot run here (e.g. TensorRT missing) is reported as skipped, never as passed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import HelpFormatter, ModelSourceArgs, add_backend, parse_shape, tolerance

SOURCE = ModelSourceArgs(required=False, title="PyTorch model to compare with (one of; or --reference)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="compare ONNX Runtime (and TensorRT) with PyTorch", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("onnx", type=Path, metavar="MODEL.onnx", help="the ONNX model (any form)")
    p.add_argument("--reference", type=Path, metavar="REF.npz",
                   help="saved inputs and outputs (carafe-deploy export --save-reference)")
    SOURCE.add(p)
    p.add_argument("--input-shape", type=parse_shape, action="append", metavar="N,C,H,W",
                   help="input shape for random inputs, once per input; needed where the model's dims are dynamic "
                        "(default: the model's static shapes)")
    p.add_argument("--engine", type=Path, metavar="ENGINE", help="also run this TensorRT engine")
    add_backend(p, building=False)
    p.add_argument("--providers", nargs="+", default=None, metavar="PROVIDER",
                   help="ONNX Runtime execution providers (default: CPUExecutionProvider)")
    p.add_argument("--also", type=Path, nargs="+", default=[], metavar="OTHER.onnx",
                   help="more ONNX files of the same model (e.g. its fp16 and INT8 files), compared the same way")
    p.add_argument("--fp16", action="store_true",
                   help="judge MODEL.onnx as an fp16 file (detected from its weights; this forces it)")
    p.add_argument("--rtol", type=tolerance, default=None,
                   help="relative tolerance of element-wise models, every file (default: per precision, above)")
    p.add_argument("--atol", type=tolerance, default=None,
                   help="absolute tolerance of element-wise models, every file (default: per precision, a fraction "
                        "of each output's largest magnitude, above)")
    p.add_argument("-o", "--output", type=Path, metavar="REPORT.json",
                   help="write the comparison as JSON (default: the table only)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random inputs")
    p.set_defaults(func=run)


def _reference(args, model, loaded, out):
    """(task, feeds, reference outputs): from --reference, or from the PyTorch model on inputs made here."""
    from ..backends.onnxrt import random_feeds
    from ..errors import DeployError
    from ..tasks.pipeline import TASK_METADATA, file_task, task_for, task_named, torch_reference

    if args.reference:
        if loaded is not None:
            raise DeployError("give either --reference or a model source, not both")
        feeds, outputs = _load_reference(args.reference)
        return task_named(file_task(model), f"{args.onnx} (metadata {TASK_METADATA})"), feeds, outputs
    if loaded is None:
        raise DeployError("nothing to compare with: give --reference REF.npz or a model (--python/--model/...)")
    import numpy as np
    import torch

    # the task: the model source's (--model), else the one the file's metadata names, else generic
    task = task_for(loaded) if loaded.spec is not None else task_named(
        file_task(model), f"{args.onnx} (metadata {TASK_METADATA})")
    props = {p.key: p.value for p in model.metadata_props}
    static = [_static(dims) for dims in _input_dims(model)]
    shapes = args.input_shape or (static if all(static) else None) or loaded.input_shapes
    feeds = random_feeds(model, shapes, seed=args.seed)  # also holds the shapes against the file's fixed dims
    task.rebuild(loaded, props, static, lambda m: out.print(f"[dim]{m}[/dim]"))
    samples = task.sample_inputs([v.shape for v in feeds.values()], args.seed)
    if samples is not None:
        feeds = {name: t.numpy().astype(v.dtype) for (name, v), t in zip(feeds.items(), samples)}
    inputs = [torch.from_numpy(v.astype(np.float32) if v.dtype == np.float16 else v) for v in feeds.values()]
    outputs = torch_reference(loaded, inputs)
    names = [o.name for o in model.graph.output]
    if len(names) != len(outputs):
        raise DeployError(f"PyTorch gave {len(outputs)} outputs, the ONNX model has {len(names)}")
    return task, feeds, dict(zip(names, outputs))


def _input_dims(model) -> list[list]:
    from ..trt.graph import onnx_input_dims

    return list(onnx_input_dims(model).values())


def _static(dims: list) -> tuple[int, ...] | None:
    return tuple(dims) if dims and all(isinstance(d, int) and d > 0 for d in dims) else None


def _load_reference(path: Path):
    import numpy as np

    from ..errors import DeployError
    from ..files import require_file

    require_file(path, "--reference")
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):
            raise ValueError("a .npy holds one array")
        inputs = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("input/")}
        outputs = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("output/")}
    except Exception as exc:  # noqa: BLE001 -- numpy raises several types for a foreign file
        raise DeployError(f"--reference {path} is not an .npz written by `carafe-deploy export --save-reference` "
                          f"({type(exc).__name__}: {exc})") from None
    if not outputs:
        raise DeployError(f"{path} holds no output/<name> arrays (write it with carafe-deploy export --save-reference)")
    return inputs, outputs


def run(args: argparse.Namespace) -> int:
    from ..backends import OnnxrtRunner, TrtRunner
    from ..backends.onnxrt import check_providers, tensor_shapes
    from ..compare import compare_runner, describe_tolerances, precision_class, render_table, report_dict
    from ..files import refuse_overwriting_inputs
    from ..onnx.files import load_model, uses_external_data
    from ..onnx.validate import validate_carafe_nodes, validate_mmcv_nodes
    from ..report import console, write_json
    from ..trt.availability import unidentified_engine
    from ..trt.graph import precision_mode

    source = SOURCE.parse(args)
    refuse_overwriting_inputs({"-o/--output": args.output},
                              [args.onnx, args.reference, args.engine, *args.also, *source.inputs()])
    out = console()
    if args.engine:
        unidentified_engine(args.engine, args.backend, "--engine")
    # the graphs only: a model over 2 GB keeps its weights in a data file, which ONNX Runtime reads from the file
    files = [(path, load_model(path, weights=False)) for path in [args.onnx, *args.also]]
    model = files[0][1]
    # before anything runs: ONNX Runtime ignores `mode` and would run a node outside the contract
    for _, proto in files:
        validate_carafe_nodes(proto)
        validate_mmcv_nodes(proto)
    check_providers(args.providers)
    precisions = [precision_mode(proto) for _, proto in files]
    if args.fp16 and precisions[0] == "fp32":
        precisions[0] = "fp16"
    task, feeds, reference = _reference(args, model, source.load() if source.given() else None, out)
    # again at the shapes it runs with: a dynamic-shape model's symbolic dims hid a mode that does not fit (ONNX
    # Runtime computes the right answer regardless, reading the mode from the shapes; the plugin would not)
    for _, proto in files:
        validate_carafe_nodes(proto, input_shapes={name: value.shape for name, value in feeds.items()},
                              measure=lambda names, p=proto: tensor_shapes(p, feeds, names, args.providers))
    labelled = len(files) > 1  # one file keeps the plain backend name "onnxruntime"
    runners = [OnnxrtRunner(path if uses_external_data(proto) else proto, args.providers,
                            name=f"onnxruntime {prec} {path.name}" if labelled else None)
               for (path, proto), prec in zip(files, precisions)]
    if args.engine:
        runners.append(TrtRunner(args.engine, backend=args.backend))
        precisions.append(precisions[0])
    extra = dict(model=str(args.onnx), reference=str(args.reference or "pytorch"), task=task.name,
                 inputs={k: list(v.shape) for k, v in feeds.items()})
    if task.name == "generic":
        results = [compare_runner(r, feeds, reference, args.rtol, args.atol, prec)
                   for r, prec in zip(runners, precisions)]
        rules = sorted({(precision_class(p), describe_tolerances(args.rtol, args.atol, p)) for p in precisions})
        tolerances = "; ".join(f"{k}: {rule}" if len(rules) > 1 else rule for k, rule in rules)
        out.print(render_table(results, title=f"carafe-deploy check: {args.onnx} ({tolerances})"))
        report = report_dict(results, rtol=args.rtol, atol=args.atol, tolerances=tolerances,
                             precision={r.name: p for r, p in zip(runners, precisions)}, **extra)
    else:
        report = _task_check(task, runners, precisions, files, feeds, reference, args, out, extra)
    if args.output:
        write_json(args.output, report)
        out.print(f"wrote {args.output}")
    if not any(b["status"] in ("passed", "failed", "error") for b in report["backends"]):
        out.print("[red]nothing was compared: every backend was skipped[/]")
    return 0 if report["passed"] else 1


def _task_check(task, runners, precisions, files, feeds, reference, args, out, extra) -> dict:
    """Each file (and engine) compared at the level of the task (detections matched, segmentation logits and argmax),
    each by its precision's limits."""
    from dataclasses import asdict

    from ..tasks.accuracy import Candidate, check_candidates, render_task_table

    names = [path.name for path, _ in files] + ([args.engine.name] if args.engine else [])
    checks = check_candidates(task, [Candidate(r, p, n) for r, p, n in zip(runners, precisions, names)], feeds,
                              reference)
    out.print(render_task_table(checks, f"carafe-deploy check: {args.onnx} ({task.name}: the task's comparison, "
                                        f"against {extra['reference']})"))
    compared = [c for c in checks if c.status != "skipped"]
    passed = bool(compared) and all(c.status == "passed" for c in compared if c.gated or c.status == "error")
    return {**extra, "passed": passed, "skipped": [c.backend for c in checks if c.status == "skipped"],
            "backends": [{**asdict(c), "reason": c.summary if c.status in ("skipped", "error") else None}
                         for c in checks]}
