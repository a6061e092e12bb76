"""carafe-deploy check MODEL.onnx: run the model on ONNX Runtime (and a TensorRT engine with --engine) and compare
each output with PyTorch or a saved reference; print a per-output table and optionally write a JSON report.

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
    p.add_argument("--fp16", action="store_true", help="the ONNX file is an fp16 export: looser default tolerances")
    p.add_argument("--rtol", type=float, default=None, help="relative tolerance (default: 1e-4; with --fp16: 1e-2)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default: 1e-5; with --fp16: 1e-2)")
    p.add_argument("-o", "--output", type=Path, metavar="REPORT.json",
                   help="write the comparison as JSON (default: the table only)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random inputs")
    p.set_defaults(func=run)


def _reference(args, model):
    from ..backends.onnxrt import random_feeds
    from ..backends.pytorch import torch_outputs
    from ..errors import DeployError

    source = SOURCE.parse(args)
    if args.reference:
        if source.given():
            raise DeployError("give either --reference or a model source, not both")
        return _load_reference(args.reference)
    if not source.given():
        raise DeployError("nothing to compare with: give --reference REF.npz or a model (--python/--model/...)")
    import numpy as np
    import torch

    loaded = source.load()
    shapes = args.input_shape or loaded.input_shapes
    feeds = random_feeds(model, shapes, seed=args.seed)
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


def run(args: argparse.Namespace) -> int:
    from ..backends import OnnxrtRunner, TrtRunner
    from ..backends.onnxrt import check_providers, tensor_shapes
    from ..compare import render_table, report_dict, run_comparison
    from ..files import refuse_overwriting_inputs
    from ..onnx.files import load_model
    from ..onnx.validate import validate_carafe_nodes, validate_mmcv_nodes
    from ..report import console, write_json

    source = SOURCE.parse(args)
    refuse_overwriting_inputs({"-o/--output": args.output}, [args.onnx, args.reference, args.engine, *source.inputs()])
    out = console()
    model = load_model(args.onnx)
    # before anything runs: ONNX Runtime ignores `mode` and would run a node outside the contract
    validate_carafe_nodes(model)
    validate_mmcv_nodes(model)
    check_providers(args.providers)
    rtol = args.rtol if args.rtol is not None else (1e-2 if args.fp16 else 1e-4)
    atol = args.atol if args.atol is not None else (1e-2 if args.fp16 else 1e-5)
    feeds, reference = _reference(args, model)
    # again at the shapes it runs with: a dynamic-shape model's symbolic dims hid a mode that does not fit (ONNX
    # Runtime computes the right answer regardless, reading the mode from the shapes; the plugin would not)
    validate_carafe_nodes(model, input_shapes={name: value.shape for name, value in feeds.items()},
                          measure=lambda names: tensor_shapes(model, feeds, names, args.providers))
    runners = [OnnxrtRunner(model, args.providers)]
    if args.engine:
        runners.append(TrtRunner(args.engine, backend=args.backend))
    results = run_comparison(runners, feeds, reference, rtol, atol)
    out.print(render_table(results, title=f"carafe-deploy check: {args.onnx} (rtol {rtol:g}, atol {atol:g})"))
    report = report_dict(results, model=str(args.onnx), rtol=rtol, atol=atol, reference=str(args.reference or "pytorch"),
                         inputs={k: list(v.shape) for k, v in feeds.items()})
    if args.output:
        write_json(args.output, report)
        out.print(f"wrote {args.output}")
    if not any(r.status in ("passed", "failed", "error") for r in results):
        out.print("[red]nothing was compared: every backend was skipped[/]")
    return 0 if report["passed"] else 1
