"""carafe-deploy quantize MODEL.onnx -o OUT.onnx: post-training INT8 quantization with explicit Q/DQ nodes, for
TensorRT / TensorRT-RTX (strongly typed engines) and ONNX Runtime.

ONNX Runtime's quantizer calibrates on images sent through the model's own preprocessing (--calibration-images DIR;
the task family comes from the file's metadata, or --task) or on random images (--calibration-random N, a quick
look), and puts QuantizeLinear/DequantizeLinear on the inputs of Conv/ConvTranspose/MatMul/Gemm (INT8, symmetric,
weights per channel). Every carafe::CARAFE node stays in floating point between a DequantizeLinear and a
QuantizeLinear, and its softmax-normalised kernels are never quantized. A plugin-form file is written in the plugin
form, a portable one in the portable form. Then: carafe-deploy check OUT.onnx --also MODEL.onnx (accuracy next to
fp32), carafe-deploy build OUT.onnx (an INT8 engine). docs/QUANTIZATION.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import HelpFormatter, parse_shape

METHODS = ("minmax", "entropy", "percentile")  # carafe_deploy.tasks.quantize.METHODS (not imported: --help stays light)
OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # ... DEFAULT_OP_TYPES
TASKS = ("segmentation", "detection", "generic")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="post-training INT8 quantization (explicit Q/DQ) with calibration",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("onnx", type=Path, metavar="MODEL.onnx", help="the fp32 ONNX model (portable or plugin form)")
    p.add_argument("-o", "--output", type=Path, metavar="OUT.onnx",
                   help="the quantized file (default: MODEL_int8.onnx beside the model)")
    g = p.add_argument_group("calibration data (one of)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--calibration-images", type=Path, metavar="DIR",
                     help="a folder of images (png, jpg, ...), sent through the model's preprocessing (needed, or "
                          "--calibration-random)")
    src.add_argument("--calibration-random", type=int, metavar="N",
                     help="N random images through the preprocessing (standard-normal inputs for a model of no task "
                          "family): a quick look, not a calibration (needed, or --calibration-images)")
    g.add_argument("--calibration-count", type=int, default=64, metavar="N", help="use at most N images of the folder")
    g.add_argument("--input-shape", type=parse_shape, action="append", metavar="N,C,H,W",
                   help="calibration input shape, once per input: images are resized to it; needed for a generic "
                        "model's random data where its dims are dynamic (default: the model's fixed dims, else each "
                        "image's own size; random images 512x512 for segmenters, 800x1333 for detectors)")
    g.add_argument("--task", choices=TASKS, default=None,
                   help="the preprocessing to use (default: the task the file's metadata names, else generic)")
    g.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random calibration data")
    q = p.add_argument_group("quantization")
    q.add_argument("--method", choices=METHODS, default="minmax", help="how activation ranges are calibrated")
    q.add_argument("--no-per-channel", action="store_true", help="one weight scale per tensor, not per channel")
    q.add_argument("--op-types", nargs="+", default=list(OP_TYPES), metavar="OP",
                   help="op types that run in INT8 (the kernels of CARAFE nodes never do)")
    q.add_argument("--exclude", nargs="+", default=None, metavar="NODE",
                   help="node names to leave in floating point (default: none beyond the CARAFE kernels' way)")
    p.add_argument("--save-report", type=Path, metavar="REPORT.json", help="also write the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..files import refuse_overwriting_inputs
    from ..report import console, make_table, write_json
    from ..tasks.quantize import QuantizeOptions, default_output, quantize

    output = args.output or default_output(args.onnx)
    refuse_overwriting_inputs({"-o/--output": output, "--save-report": args.save_report}, [args.onnx])
    out = console(stderr=True)
    options = QuantizeOptions(model=args.onnx, output=output, calibration_images=args.calibration_images,
                              calibration_random=args.calibration_random, calibration_count=args.calibration_count,
                              input_shapes=args.input_shape, task=args.task, method=args.method,
                              per_channel=not args.no_per_channel, op_types=tuple(args.op_types),
                              exclude=tuple(args.exclude or ()), seed=args.seed, progress=not args.quiet)
    report = quantize(options, log=out.print)
    rows = [(c["node"], c["features"], c["output"], c["kernels"], c["softmax"] or "-",
             "[green]yes[/green]" if c["kernels_sum_kept"] else "[red]no[/red]") for c in report["carafe"]]
    if rows:
        out.print(make_table(f"CARAFE nodes in {output}", ("node", "features", "output", "kernels", "kernels from",
                                                           "kernel sum kept"), rows))
    if args.save_report:
        write_json(args.save_report, report)
        out.print(f"wrote {args.save_report}")
    return 0
