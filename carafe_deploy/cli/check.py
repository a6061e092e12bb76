"""carafe-deploy check MODEL.onnx: run the model on ONNX Runtime (and a TensorRT engine with --engine) and compare
each output with PyTorch or a saved reference; print a per-output table and optionally write a JSON report.

--also OTHER.onnx ... runs more files of the same model (its fp16 or INT8 file) on the same inputs: each is labelled
by the precision it computes in (INT8 where it has Q/DQ nodes) and judged by that precision's limits. A segmenter or
a detector (its task from --model, else from the file's metadata) is compared at the level of its task: logits and
argmax agreement, detections matched by IoU; any other model element-wise (default rtol/atol per precision: fp32
1e-4/1e-5, fp16 1e-2/1e-2, int8 1e-1/1e-1).

Exit status: 0 when every compared output is within tolerance, 1 when any is not (or a backend errored).
A backend that cannot run here (e.g. TensorRT missing) is reported as skipped, never as passed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import HelpFormatter, ModelSourceArgs, add_backend, parse_shape

SOURCE = ModelSourceArgs(required=False, title="PyTorch model to compare with (one of; or --reference)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="compare ONNX Runtime (and TensorRT) with PyTorch", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("onnx", type=Path, metavar="MODEL.onnx", help="the ONNX model (portable or decomposed form)")
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
    p.add_argument("--rtol", type=float, default=None,
                   help="relative tolerance of element-wise models, every file (default: per precision, above)")
    p.add_argument("--atol", type=float, default=None,
                   help="absolute tolerance of element-wise models, every file (default: per precision, above)")
    p.add_argument("-o", "--output", type=Path, metavar="REPORT.json",
                   help="write the comparison as JSON (default: the table only)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random inputs")
    p.set_defaults(func=run)


def _reference(args, model, loaded, task):
    from ..backends.onnxrt import random_feeds
    from ..backends.pytorch import torch_outputs
    from ..errors import DeployError

    if args.reference:
        if loaded is not None:
            raise DeployError("give either --reference or a model source, not both")
        return _load_reference(args.reference)
    if loaded is None:
        raise DeployError("nothing to compare with: give --reference REF.npz or a model (--python/--model/...)")
    import numpy as np
    import torch

    if task.name != "generic":  # the task's own inputs (a detector's image), and what it does before export
        example = task.example_inputs(loaded, args.input_shape)
        task.prepare(loaded, example, lambda _msg: None)
        inits = {i.name for i in model.graph.initializer}
        names = [i.name for i in model.graph.input if i.name not in inits]
        feeds = {n: t.detach().numpy() for n, t in zip(names, example)}
    else:
        feeds = random_feeds(model, args.input_shape or loaded.input_shapes, seed=args.seed)
    inputs = [torch.from_numpy(v.astype(np.float32) if v.dtype == np.float16 else v) for v in feeds.values()]
    outputs = torch_outputs(loaded.model, inputs)
    names = [o.name for o in model.graph.output]
    if len(names) != len(outputs):
        raise DeployError(f"PyTorch gave {len(outputs)} outputs, the ONNX model has {len(names)}")
    return feeds, dict(zip(names, outputs))


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


def _task(args, model, loaded):
    """The task family: the model source's (--model), else the one the file's metadata names, else generic."""
    from ..tasks.pipeline import TASK_METADATA, file_task, task_for, task_named

    if loaded is not None and loaded.spec is not None:
        return task_for(loaded)
    return task_named(file_task(model), f"{args.onnx} (metadata {TASK_METADATA})")


def run(args: argparse.Namespace) -> int:
    from ..backends import OnnxrtRunner, TrtRunner
    from ..backends.onnxrt import check_providers, tensor_shapes
    from ..compare import compare_runner, render_table, report_dict
    from ..files import refuse_overwriting_inputs
    from ..onnx.files import load_model
    from ..onnx.validate import validate_carafe_nodes, validate_mmcv_nodes
    from ..report import console, write_json
    from ..tasks.base import precision_class
    from ..trt.graph import precision_mode

    source = SOURCE.parse(args)
    refuse_overwriting_inputs({"-o/--output": args.output},
                              [args.onnx, args.reference, args.engine, *args.also, *source.inputs()])
    out = console()
    files = [(path, load_model(path)) for path in [args.onnx, *args.also]]
    model = files[0][1]
    # before anything runs: ONNX Runtime ignores `mode` and would run a node outside the contract
    for _, proto in files:
        validate_carafe_nodes(proto)
        validate_mmcv_nodes(proto)
    check_providers(args.providers)
    precisions = [precision_mode(proto) for _, proto in files]
    if args.fp16 and precisions[0] == "fp32":
        precisions[0] = "fp16"
    loaded = source.load() if source.given() else None
    task = _task(args, model, loaded)
    feeds, reference = _reference(args, model, loaded, task)
    # again at the shapes it runs with: a dynamic-shape model's symbolic dims hid a mode that does not fit (ONNX
    # Runtime computes the right answer regardless, reading the mode from the shapes; the plugin would not)
    for _, proto in files:
        validate_carafe_nodes(proto, input_shapes={name: value.shape for name, value in feeds.items()},
                              measure=lambda names, p=proto: tensor_shapes(p, feeds, names, args.providers))
    labelled = len(files) > 1  # one file keeps the plain backend name "onnxruntime"
    runners = [OnnxrtRunner(proto, args.providers, name=f"onnxruntime {prec} {path.name}" if labelled else None)
               for (path, proto), prec in zip(files, precisions)]
    if args.engine:
        runners.append(TrtRunner(args.engine, backend=args.backend))
        precisions.append(precisions[0])
    reference_label = str(args.reference or "pytorch")
    if task.name != "generic":
        return _task_level(args, out, task, runners, precisions, files, feeds, reference, reference_label)
    tolerances = [task.tolerances[precision_class(prec)] for prec in precisions]
    tolerances = [(args.rtol if args.rtol is not None else r, args.atol if args.atol is not None else a)
                  for r, a in tolerances]
    results = [compare_runner(r, feeds, reference, rtol, atol) for r, (rtol, atol) in zip(runners, tolerances)]
    rtol, atol = tolerances[0]
    limits = sorted({(precision_class(p), r, a) for p, (r, a) in zip(precisions, tolerances)})
    label = "; ".join(f"{k + ': ' if len(limits) > 1 else ''}rtol {r:g}, atol {a:g}" for k, r, a in limits)
    out.print(render_table(results, title=f"carafe-deploy check: {args.onnx} ({label})"))
    report = report_dict(results, model=str(args.onnx), rtol=rtol, atol=atol, reference=reference_label,
                         inputs={k: list(v.shape) for k, v in feeds.items()},
                         precision={r.name: p for r, p in zip(runners, precisions)})
    if args.output:
        write_json(args.output, report)
        out.print(f"wrote {args.output}")
    if not any(r.status in ("passed", "failed", "error") for r in results):
        out.print("[red]nothing was compared: every backend was skipped[/]")
    return 0 if report["passed"] else 1


def _task_level(args, out, task, runners, precisions, files, feeds, reference, reference_label) -> int:
    """A segmenter's or detector's files compared at the level of its task, one row per file (and engine)."""
    from dataclasses import asdict

    from ..report import write_json
    from ..tasks.accuracy import Candidate, check_candidates, render_task_table

    names = [path.name for path, _ in files] + ([args.engine.name] if args.engine else [])
    checks = check_candidates(task, [Candidate(r, p, n) for r, p, n in zip(runners, precisions, names)], feeds,
                              reference)
    out.print(render_task_table(checks, f"carafe-deploy check: {task.name}, against {reference_label}"))
    compared = [c for c in checks if c.status != "skipped"]
    passed = bool(compared) and all(c.status == "passed" for c in compared if c.gated or c.status == "error")
    report = {"model": str(args.onnx), "task": task.name, "reference": reference_label, "passed": passed,
              "inputs": {k: list(v.shape) for k, v in feeds.items()},
              "skipped": [c.backend for c in checks if c.status == "skipped"],
              "backends": [asdict(c) for c in checks]}
    if args.output:
        write_json(args.output, report)
        out.print(f"wrote {args.output}")
    if not compared:
        out.print("[red]nothing was compared: every backend was skipped[/]")
    return 0 if passed else 1
