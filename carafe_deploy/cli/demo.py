"""carafe-deploy demo: the main job. Builds a small CARAFE / CARAFE++ network, runs it, exports it to a portable
ONNX file (dynamic batch, height and width) and compares ONNX Runtime with PyTorch, builds and checks a TensorRT
engine when a TensorRT is here (with the plugin where its library is found, else from standard ops; --plugin and
--no-plugin force either), then trains a small UperNet-CARAFE and a small Faster R-CNN with FPN-CARAFE on synthetic
shapes, deploys them and evaluates each backend on held-out images (mIoU and box AP per backend and precision, as
carafe-deploy evaluate prints them, and pictures)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .args import HelpFormatter, add_plugin_choice, parse_plugin_choice


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: build, run, export and check CARAFE models", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("-o", "--output", type=Path, default=Path("carafe_deploy_demo"), metavar="DIR",
                   help="folder for the ONNX files, engine, picture and results")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads of PyTorch and ONNX Runtime (default: the cores free of other work, measured "
                        "at the start and followed during training)")
    p.add_argument("--size", type=int, nargs=2, default=[63, 95], metavar=("H", "W"),
                   help="input size of the small network, odd sizes too")
    p.add_argument("--batch", type=int, default=2, metavar="N", help="batch of the small network's input")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the small network's input")
    p.add_argument("--no-onnx", action="store_true", help="only run PyTorch (no export, engine or sample)")
    p.add_argument("--sample-steps", type=int, default=400, metavar="N",
                   help="training steps of the segmentation sample, UperNet-CARAFE on synthetic shapes")
    p.add_argument("--sample-size", type=int, default=64, metavar="PIXELS",
                   help="image size of the segmentation sample")
    p.add_argument("--sample-images", type=int, nargs=2, default=(800, 48), metavar=("TRAIN", "TEST"),
                   help="synthetic images to train on and to evaluate on")
    p.add_argument("--no-sample", action="store_true", help="skip both samples (segmentation and detection)")
    p.add_argument("--detection-steps", type=int, default=200, metavar="N",
                   help="training steps of the detection sample, Faster R-CNN with FPN-CARAFE on synthetic scenes")
    p.add_argument("--detection-size", type=int, default=96, metavar="PIXELS",
                   help="image size of the detection sample")
    p.add_argument("--detection-images", type=int, nargs=2, default=(800, 64), metavar=("TRAIN", "TEST"),
                   help="synthetic scenes to train the detector on and to evaluate it on")
    p.add_argument("--no-detection-sample", action="store_true",
                   help="skip the detection sample (it adds about 2-3 minutes on 2 cores)")
    add_plugin_choice(p.add_argument_group("TensorRT engine (built when TensorRT is installed)"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import DeployError

    if args.batch < 1 or min(args.size) < 1:
        raise DeployError(f"--batch and --size must be >= 1, got {args.batch} and {args.size}")
    if args.threads is not None and args.threads < 1:
        raise DeployError(f"--threads must be >= 1, got {args.threads}")
    parse_plugin_choice(args)  # a --plugin LIB.so that is not a file fails now
    if args.detection_steps < 1 or args.detection_size < 64 or min(args.detection_images) < 1:
        raise DeployError(f"--detection-steps and --detection-images must be >= 1 and --detection-size >= 64, got "
                          f"{args.detection_steps}, {' '.join(map(str, args.detection_images))} and "
                          f"{args.detection_size}")
    if not (args.no_onnx or args.no_sample):  # all of the demo's arguments before any of its work
        from ..tasks.segmentation_sample import check_arguments

        check_arguments({"steps": "--sample-steps", "size": "--sample-size", "train_count": "--sample-images TRAIN",
                         "test_count": "--sample-images TEST"}, steps=args.sample_steps, size=args.sample_size,
                        train_count=args.sample_images[0], test_count=args.sample_images[1])
    if args.no_onnx:
        return _demo(args)
    from ..files import output_dir

    # made before any work (a folder that cannot be written fails now); removed again if the demo writes nothing
    with output_dir(args.output, "-o/--output"):
        return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    import torch

    from ..report import console, make_table
    from ..tasks.source import ModelSource
    from ..tasks.threads import auto_threads

    out = console()
    if args.threads:
        threads, why = args.threads, "--threads"
    else:
        threads, auto = auto_threads()
        why = f"{auto}; --threads N to choose"
    torch.set_num_threads(threads)
    out.print(f"CPU threads: {threads} ({why})")
    loaded = ModelSource(model="tiny_carafe_net").load()
    model = loaded.model
    h, w = args.size
    x = torch.randn(args.batch, 3, h, w, generator=torch.Generator().manual_seed(args.seed))
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
    rows = [(name, str(i), str(o)) for name, (i, o) in shapes.items()]
    rows.append(("network", str(tuple(x.shape)), str(tuple(y.shape))))
    out.print(make_table("carafe-deploy demo: PyTorch forward", ("module", "input", "output"), rows))
    params = sum(p.numel() for p in model.parameters())
    out.print(f"{params} parameters, forward on CPU in {elapsed * 1e3:.1f} ms, output finite: "
              f"{bool(torch.isfinite(y).all())}")
    if args.no_onnx:
        return 0
    code, engine_skipped = _deploy_tiny(out, loaded, tuple(x.shape), args.output, *parse_plugin_choice(args))
    if code or args.no_sample:
        return code
    code = _segmentation_sample(out, args.output / "segmentation", args.sample_steps, args.sample_size,
                                *args.sample_images, threads=args.threads, said=[engine_skipped])
    if code or args.no_detection_sample:
        return code
    return _detection_sample(out, args.output / "detection", args.detection_steps, args.detection_size,
                             *args.detection_images, threads=args.threads, said=[engine_skipped])


def _deploy_tiny(out, loaded, shape, out_dir: Path, use_plugin: bool | None = None,
                 plugin_path: Path | None = None) -> tuple[int, str | None]:
    """Export (portable, dynamic), compare ONNX Runtime with PyTorch, and build + check an engine when TensorRT is
    here (with the plugin when its library is built, else from the unrolled standard ops): the deploy pipeline every
    model goes through. Returns (exit status, why the engine was skipped or None)."""
    from ..files import make_dir
    from ..report import make_table
    from ..tasks import CheckOptions, EngineOptions, ExportOptions, deploy
    make_dir(out_dir, "-o/--output")
    onnx_path = out_dir / "tiny_carafe_net.onnx"
    with out.status("exporting to ONNX (portable) and checking it in ONNX Runtime"):
        report = deploy(loaded, ExportOptions(output=onnx_path, mode="portable", input_shapes=[shape], dynamic=True),
                        CheckOptions(), EngineOptions(path=onnx_path.with_suffix(".engine"), use_plugin=use_plugin,
                                                    plugin_path=plugin_path),
                        log=lambda _m: None)
    onnx_info = report["onnx"]
    out.print(f"exported {onnx_path} in {onnx_info['export_s']:.1f} s: {onnx_info['carafe_nodes']} carafe::CARAFE "
              "nodes with their standard-op function (ONNX Runtime needs no custom library)")
    rows = [(c["backend"], c["status"], c.get("summary") or c.get("reason", "")) for c in report["checks"]]
    engine = report["engine"]
    skipped = engine.get("skipped")
    # "skipped: reason", not "skipped (reason)": the reason may end on a URL, which must not run into punctuation
    notes = [f"TensorRT engine: skipped: {skipped}" if skipped else
             f"TensorRT engine: wrote {engine['path']} ({engine['runtime']['name']} {engine['runtime']['version']}, "
             f"CARAFE {engine['carafe_form']})"] + ([engine["note"]] if engine.get("note") else [])
    out.print(make_table("backends vs PyTorch", ("backend", "result", "details"), rows, notes))
    repo = out_dir / "triton"
    out.print(f"serve it with Triton (docs/SERVING.md): carafe-deploy triton {onnx_path} -o {repo} && "
              f"carafe-deploy serve {repo}", highlight=False)
    return (0 if report["passed"] else 1), skipped


def _segmentation_sample(out, out_dir: Path, steps: int, size: int, train: int, test: int,
                         threads: int | None, said=()) -> int:
    from ..tasks.segmentation_sample import run

    out.rule("segmentation sample: train UperNet-CARAFE (CARAFE + CARAFE++) on synthetic shapes, then deploy")
    results = run(str(out_dir), steps=steps, size=size, train_count=train, test_count=test, progress=True,
                  log=out.print, threads=threads)
    return _show(out, results, said, tolerance=0.1, unit="points of mIoU")


def _detection_sample(out, out_dir: Path, steps: int, size: int, train: int, test: int,
                      threads: int | None, said=()) -> int:
    from ..errors import MissingDependencyError
    from ..tasks.detection_sample import run
    from ..tasks.metrics import coco_evaluator

    out.rule("detection sample: train Faster R-CNN with FPN-CARAFE on synthetic scenes, then deploy")
    try:
        coco_evaluator()
    except MissingDependencyError as exc:
        out.print(f"[yellow]detection sample: skipped: {exc}[/]")
        return 0
    results = run(str(out_dir), steps=steps, size=size, train_count=train, test_count=test, progress=True,
                  log=out.print, threads=threads)
    return _show(out, results, said, tolerance=0.005, unit="box AP")


def _show(out, results: dict, said, tolerance: float, unit: str) -> int:
    """A sample's evaluate table, its files, and exit status 1 when an fp32 export's headline metric is off
    PyTorch's by more than ``tolerance``."""
    from ..tasks.evaluation_report import rich_table

    report = results["report"]
    out.print(rich_table(report, said))
    out.print(f"the same table from the files: {results['command']}", highlight=False)
    out.print(f"picture: {results['files']['figure']}; chart: {results['files']['chart']}", highlight=False)
    off = {f"{e['backend']} ({e['form']}) {e['precision']}": e["delta"][report["headline"]]
           for e in report["backends"] if e["status"] == "evaluated" and e["precision"] == "fp32"
           and abs(e.get("delta", {}).get(report["headline"], 0.0)) > tolerance}
    if off:
        out.print(f"[red]{report['headline']} differs from PyTorch by more than {tolerance} {unit}: {off}[/]")
        return 1
    return 0
