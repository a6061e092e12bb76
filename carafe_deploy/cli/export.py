"""carafe-deploy export: a PyTorch model with CARAFE ops -> ONNX -> check against PyTorch -> TensorRT engine.

The same options for every model source (a Python class, a TorchScript file, an ExportedProgram, a registered
--model NAME). Detectors are compared detection by detection (IoU-matched), segmenters on logits and argmax, other
models element-wise. The engine step runs when --save-engine is given and TensorRT is installed; otherwise it says
why it was skipped. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse

from .args import CheckArgs, EngineArgs, ExportArgs, HelpFormatter, ModelSourceArgs

SOURCE, EXPORT, CHECK, ENGINE = ModelSourceArgs(required=True), ExportArgs(), CheckArgs(), EngineArgs()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a CARAFE model to ONNX, check it, build an engine",
                       description=__doc__, formatter_class=HelpFormatter)
    for group in (SOURCE, EXPORT, CHECK, ENGINE):
        group.add(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..files import refuse_overwriting_inputs
    from ..report import console, make_table, write_json
    from ..tasks import deploy
    from ..tasks.pipeline import output_paths

    out = console()
    source = SOURCE.parse(args)
    export, check, engine = EXPORT.parse(args, default_name=_default_name(source)), CHECK.parse(args), ENGINE.parse(args)
    # before the model is loaded: no output may overwrite an input, and every output's folder must take a file
    refuse_overwriting_inputs(output_paths(export, check, engine, {"--save-report": args.save_report}), source.inputs())
    with out.status(f"loading {_label(source)}"):
        loaded = source.load()
    report = deploy(loaded, export, check, engine, inputs=source.inputs(), other_outputs={"--save-report": args.save_report},
                    log=out.print)
    rows = [(c["backend"], " ".join("x".join(map(str, s)) for s in c.get("inputs", [])) or "-",
             {"passed": "[green]passed[/]", "failed": "[red]FAILED[/]"}.get(c["status"], f"[yellow]{c['status']}[/]")
             + ("" if c["gated"] else " (not gated)"), c.get("summary") or c.get("reason", ""))
            for c in report["checks"]]
    if rows:
        out.print(make_table(f"{loaded.description} ({export.mode}{', fp16' if export.fp16 else ''}) vs PyTorch",
                             ("backend", "input", "result", "details"), rows))
    if args.save_report:
        write_json(args.save_report, report)
        out.print(f"wrote {args.save_report}")
    return 0 if report["passed"] else 1


def _label(source) -> str:
    return source.model or source.config or source.python or source.torchscript or source.exported_program


def _default_name(source) -> str:
    from pathlib import Path

    if source.model or source.config:
        return (source.model or Path(source.config).stem) + ("_tiny" if source.tiny else "")
    if source.python:
        return source.class_name or Path(source.python).stem
    return Path(source.torchscript or source.exported_program).stem
