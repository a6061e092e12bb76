"""carafe-deploy evaluate: accuracy on a dataset for each backend and precision, with the difference to PyTorch.

Give the exported files (ONNX in any form and precision, fp16 and INT8 included, and TensorRT engines) and/or the
PyTorch model they came from (the reference), and a dataset: COCO detection (--images DIR --annotations
instances.json: bbox mAP, AP50, AP75, and mask mAP for Mask R-CNN, by the COCO evaluator, pycocotools) or segmentation
in mmseg's layout (--images DIR --labels DIR of label-map PNGs with the same names: mIoU, aAcc, mAcc, with
--ignore-index). Every backend runs over every image with the task's own pre- and post-processing; the table shows
one row per backend × precision. -o writes the JSON report, and a PNG chart beside it.

A backend that cannot run here is a row that says why (an engine without a GPU: built, not run); exit status 1 when a
backend failed on the data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import HelpFormatter, ModelSourceArgs

SOURCE = ModelSourceArgs(required=False, title="PyTorch model, the reference (one of; optional)")


def _scale(text: str) -> tuple[int, int]:
    from .args import parse_shape

    dims = parse_shape(text)
    if len(dims) != 2:
        raise argparse.ArgumentTypeError(f"bad --scale {text!r}: give LONG,SHORT, e.g. 1333,800")
    return dims


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy on a dataset (COCO AP, mIoU) per backend and precision",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("files", nargs="*", type=Path, metavar="MODEL",
                   help="exported files to evaluate: ONNX (.onnx, any form and precision) and TensorRT engines "
                        "(.engine, .plan)")
    SOURCE.add(p)
    g = p.add_argument_group("dataset")
    g.add_argument("--images", type=Path, required=True, metavar="DIR", help="the image folder")
    truth = g.add_mutually_exclusive_group(required=True)
    truth.add_argument("--annotations", type=Path, metavar="INSTANCES.json",
                       help="COCO annotations of the images: a detection dataset (needed for detection; a "
                            "segmentation dataset takes --labels)")
    truth.add_argument("--labels", type=Path, metavar="DIR",
                       help="label maps, one single-channel PNG per image with its name: a segmentation dataset, "
                            "mmseg's ann_dir (needed for segmentation; a detection dataset takes --annotations)")
    g.add_argument("--label-suffix", default=".png", metavar="SUFFIX",
                   help="a label map's name is the image's stem + this (mmseg's seg_map_suffix)")
    g.add_argument("--ignore-index", type=int, default=255, metavar="N", help="label of unlabelled pixels")
    g.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (default: all)")
    g.add_argument("--scale", type=_scale, default=None, metavar="LONG,SHORT",
                   help="detection: mmdet's keep-ratio resize limits, for PyTorch and dynamic-size graphs (a "
                        "fixed-size graph gets the image fitted to its size; default: 1333,800, mmdet's)")
    o = p.add_argument_group("output")
    o.add_argument("-o", "--output", type=Path, metavar="REPORT.json",
                   help="write the report as JSON (default: the table only)")
    o.add_argument("--chart", type=Path, metavar="CHART.png",
                   help="write the bar chart here (default: beside -o, as .png)")
    o.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads of PyTorch and ONNX Runtime (default: theirs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import DeployError
    from ..files import refuse_overwriting_inputs
    from ..report import console
    from ..tasks.evaluation import DatasetOptions, EvaluateOptions, backends_for, check_task, evaluate
    from ..tasks.evaluation_report import rich_table, write_report

    if args.threads is not None and args.threads < 1:
        raise DeployError(f"--threads must be >= 1, got {args.threads}")
    out = console()
    source = SOURCE.parse(args)
    dataset = DatasetOptions(images=args.images, annotations=args.annotations, labels=args.labels,
                             label_suffix=args.label_suffix, ignore_index=args.ignore_index, limit=args.limit)
    chart = args.chart or (args.output.with_suffix(".png") if args.output else None)
    if chart is not None and chart.suffix.lower() != ".png":
        raise DeployError(f"--chart {chart}: the chart is a PNG; name it *.png")
    refuse_overwriting_inputs({"-o/--output": args.output, "--chart": chart},
                              [*args.files, *source.inputs(), *dataset.inputs()])
    dataset.load()  # its problems first, before any model is read
    if not source.given() and not args.files:
        raise DeployError("nothing to evaluate: give exported files (MODEL.onnx, MODEL.engine) and/or a PyTorch "
                          "model (--model NAME, --python FILE --class NAME, ...)")
    loaded = None
    if source.given():
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        with out.status("loading the PyTorch model"):
            loaded = source.load()
    model_task = getattr(loaded.spec, "task", None) if loaded is not None else None
    check_task(model_task, dataset.task)
    rows = backends_for(loaded, args.files, dataset.task, args.threads)
    name = loaded.description if loaded is not None else ", ".join(f.name for f in args.files)
    options = EvaluateOptions(threads=args.threads) if args.scale is None else EvaluateOptions(
        scale=args.scale, threads=args.threads)
    report = evaluate(rows, dataset, options, model=name,
                      model_task=model_task, log=out.print)
    out.print(rich_table(report))
    write_report(report, args.output, chart)
    for path in (args.output, chart):
        if path is not None:
            out.print(f"wrote {path}")
    return 1 if any(e["status"] == "error" for e in report["backends"]) else 0
