"""``carafe-deploy convert``: an ONNX file's CARAFE nodes to another form, whoever exported it.

Forms: plugin (the carafe::CARAFE nodes alone, for TensorRT with the plugin), portable (the nodes plus their
standard-op function: ONNX Runtime runs it as it is), decomposed (standard ops only), mmcv (mmcv::MMCVCARAFE, for
mmcv/mmdeploy tools; up-sampling only). Inputs: this project's exports, a plain torch.onnx.export (either exporter,
any opset), mmcv/mmdeploy files. Opsets below what the form needs are raised (onnx.version_converter), and said so;
files are written with IR version 9 unless their opset needs newer. A file without CARAFE nodes is copied unchanged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import HelpFormatter

FORMS = ("plugin", "portable", "decomposed", "mmcv")  # carafe_deploy.onnx.convert.FORMS (not imported: --help stays light)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an ONNX file's CARAFE nodes to another form",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("onnx", type=Path, metavar="IN.onnx", help="ONNX model")
    p.add_argument("--to", required=True, choices=FORMS, help="the form to write")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.onnx", help="where to write it")
    p.add_argument("--opset", type=int, metavar="N", help="also convert the default ONNX domain to opset N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..files import refuse_overwriting_inputs
    from ..onnx.convert import convert
    from ..onnx.files import is_big, save_model
    from ..report import console

    refuse_overwriting_inputs({"-o/--output": args.output}, [args.onnx])
    out = console(stderr=True)
    result = convert(args.onnx, args.to, opset=args.opset)
    if result.carafe_nodes and not is_big(result.model):
        import onnx

        onnx.checker.check_model(result.model, full_check=True)
    for note in result.notes:
        out.print(f"[dim]{note}[/dim]")
    save_model(result.model, args.output)
    what = f"{result.carafe_nodes} CARAFE node(s), {args.to} form" if result.carafe_nodes else "unchanged"
    out.print(f"wrote {args.output} ({what}, opset {result.opset}, IR version {result.model.ir_version})")
    return 0
