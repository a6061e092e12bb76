"""carafe-deploy build MODEL.onnx: ONNX -> TensorRT engine + JSON sidecar.

The graph is prepared (mmcv nodes converted, the CARAFE local function dropped for the plugin, or every CARAFE node
unrolled into standard ops with --no-plugin), the profile checked and the plugin library found before TensorRT is
touched, so those errors show on any machine. Full TensorRT or TensorRT-RTX (--backend); what TensorRT-RTX cannot build
is refused before parsing. --dry-run stops there: it never imports TensorRT, and names (as notes) what a real build
here would still lack, TensorRT first, then the plugin library.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import HelpFormatter, ProfileArgs, add_backend, add_plugin_choice, parse_plugin_choice

PROFILE = ProfileArgs("optimization profile (trtexec syntax; default: the ONNX's static shapes)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build a TensorRT engine from an ONNX model", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("onnx", type=Path, metavar="MODEL.onnx",
                   help="ONNX model (plugin or portable export; mmcv exports are converted)")
    p.add_argument("-o", "--output", type=Path, metavar="ENGINE", help="engine path (default: MODEL.engine)")
    PROFILE.add(p)
    add_plugin_choice(p)
    add_backend(p, building=True)
    p.add_argument("--fp16", action="store_true",
                   help="TensorRT 10 only: FP16 builder flag. TensorRT 11 and TensorRT-RTX build the ONNX's types: "
                        "export with --fp16")
    p.add_argument("--bf16", action="store_true", help="TensorRT 10 only: BF16 builder flag")
    p.add_argument("--workspace", metavar="SIZE",
                   help="workspace memory pool limit, e.g. 2G or 512M (default: TensorRT's, the device memory)")
    p.add_argument("--timing-cache", type=Path, metavar="FILE",
                   help="timing cache file: read if it exists, written after the build (default: none)")
    p.add_argument("--version-compatible", action="store_true",
                   help="engine that later TensorRT versions can run; the plugin library is serialized into it")
    p.add_argument("--exclude-lean-runtime", action="store_true",
                   help="with --version-compatible: leave the lean runtime out of the engine")
    p.add_argument("--opt-level", type=int, metavar="N",
                   help="builder optimization level 0..5 (default: TensorRT's, 3)")
    p.add_argument("--save-prepared", type=Path, metavar="FILE.onnx", help="also write the prepared ONNX (e.g. for trtexec/polygraphy)")
    p.add_argument("--dry-run", action="store_true",
                   help="prepare and check only, never import TensorRT; what a real build here lacks is a note")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="print TensorRT's log")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace):
    """The command line as the builder's BuildOptions."""
    from ..trt.builder import BuildOptions, parse_size

    use_plugin, plugin_path = parse_plugin_choice(args)
    mins, opts, maxs = PROFILE.parse(args)
    return BuildOptions(
        onnx_path=args.onnx,
        engine_path=args.output,
        min_shapes=mins,
        opt_shapes=opts,
        max_shapes=maxs,
        use_plugin=use_plugin,
        plugin_path=plugin_path,
        backend=args.backend,
        fp16=args.fp16,
        bf16=args.bf16,
        workspace_bytes=parse_size(args.workspace) if args.workspace else None,
        timing_cache=args.timing_cache,
        version_compatible=args.version_compatible,
        exclude_lean_runtime=args.exclude_lean_runtime,
        optimization_level=args.opt_level,
        progress=not args.no_progress,
        verbose=args.verbose,
        save_prepared=args.save_prepared,
    )


def _missing_for_a_build(plan, backend: str | None) -> list[str]:
    """What a real build on this machine would stop on, the most fundamental first; found without importing
    TensorRT (a dry run never does)."""
    from ..trt.runtime import INSTALL_HINT, runtime_installed

    return ([] if runtime_installed(backend) else [INSTALL_HINT]) + ([plan.plugin_missing] if plan.plugin_missing else [])


def run(args: argparse.Namespace) -> int:
    from rich.text import Text

    from ..files import make_dir, refuse_overwriting_inputs
    from ..report import console
    from ..trt.builder import build_engine, plan_build
    from ..trt.runtime import RUNTIME_LABELS
    from ..trt import sidecar_path

    options = options_from_args(args)
    engine = Path(options.engine_path or args.onnx.with_suffix(".engine"))
    if not args.dry_run:
        make_dir(engine.parent, "-o/--output")  # the builder makes the engine's folder; now, before the build
    outputs = {"--save-prepared": args.save_prepared}
    if engine.parent.is_dir():  # a dry run too: "ready to build" includes a place to write the engine
        outputs.update({"-o/--output": engine, "-o/--output (its sidecar)": sidecar_path(engine)})
    refuse_overwriting_inputs(outputs, [args.onnx, options.plugin_path])
    out = console(stderr=True)
    plan = plan_build(options)
    for note in plan.prepared.notes:
        out.print(f"[dim]{note}[/dim]")
    for name, p in plan.profile.items():
        fmt = lambda s: "x".join(map(str, s))  # noqa: E731
        out.print(f"[dim]profile {name}: min {fmt(p.min)}  opt {fmt(p.opt)}  max {fmt(p.max)}[/dim]")
    if plan.plugin_path:
        out.print(f"[dim]plugin library {plan.plugin_path}[/dim]")
    if args.save_prepared:
        out.print(f"wrote prepared ONNX {args.save_prepared}")
    if args.dry_run:
        out.print(f"dry run: {args.onnx} is ready to build into {plan.engine_path}")
        for missing in _missing_for_a_build(plan, options.backend):
            out.print(Text(f"missing for a real build here: {missing}", style="yellow"))
        return 0
    result = build_engine(options, plan)
    side = result.sidecar
    runtime = RUNTIME_LABELS[side["runtime"]["name"]]
    out.print(f"wrote {result.engine_path} ({side['engine']['bytes']} bytes, {runtime} {side['runtime']['version']}, "
              f"{side['precision']['mode']}, CARAFE {side['graph']['carafe_form']}) and {result.sidecar_path}")
    return 0
