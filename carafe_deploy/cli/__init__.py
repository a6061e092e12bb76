"""The ``carafe-deploy`` command line. Each subcommand lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import DeployError

# subcommand name -> module (relative to this package) that registers it
_COMMANDS = {
    "demo": ".demo",
    "export": ".export",
    "check": ".check",
    "build": ".build",
    "run": ".run",
    "bench": ".bench",
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="carafe-deploy",
        description="Ship CARAFE / CARAFE++ models: PyTorch op and modules, ONNX export, TensorRT plugin and engines.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _COMMANDS.values():
        importlib.import_module(module, __package__).register(sub)
    return parser


def _task_exporter(argv: list[str]):
    """``export --model NAME`` for a model whose family has a task exporter: that exporter's ``main``, else None."""
    if not argv or argv[0] != "export" or any(a in ("-h", "--help") for a in argv[1:2]):
        return None
    name = None
    for i, arg in enumerate(argv):
        if arg == "--model" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--model="):
            name = arg.partition("=")[2]
    if name is None:
        return None
    from .. import models

    try:
        target = models.spec(name).task_exporter
    except ValueError:
        return None  # the generic export reports the unknown name
    if not target:
        return None
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    task_main = _task_exporter(argv)
    if task_main is not None:
        # detectors and segmenters: checkpoint -> ONNX -> task-level parity (IoU-matched detections, mIoU/argmax)
        # -> engine; the options are those of export/detector.py and export/segmenter.py
        return int(task_main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeployError as exc:
        print(f"carafe-deploy {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"carafe-deploy {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"carafe-deploy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
