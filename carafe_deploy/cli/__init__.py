"""The carafe-deploy command line. Each subcommand lives in its own module with register(subparsers) and run(args);
options are parsed before anything heavy (torch, onnx, TensorRT) is imported, and every command runs inside one
error boundary (:func:`carafe_deploy.errors.run_guarded`): a user mistake is one line on stderr and a non-zero exit, not
a traceback (``--debug`` shows it)."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module (relative to this package) that registers it
_COMMANDS = {
    "demo": ".demo",
    "export": ".export",
    "check": ".check",
    "evaluate": ".evaluate",
    "build": ".build",
    "run": ".run",
    "bench": ".bench",
    "convert": ".convert",
    "quantize": ".quantize",
    "triton": ".triton",
    "serve": ".serve",
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from ..errors import ArgumentParser

    parser = ArgumentParser(
        prog="carafe-deploy",
        description="Ship CARAFE / CARAFE++ models: PyTorch op and modules, ONNX export, TensorRT plugin and engines.",
        epilog="carafe-deploy COMMAND --help shows the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _COMMANDS.values():
        importlib.import_module(module, __package__).register(sub)
    for command in sub.choices.values():  # also after the command; SUPPRESS keeps a --debug given before it
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the traceback of an error")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import run_guarded

    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return run_guarded(f"carafe-deploy {args.command}", lambda: args.func(args), debug=args.debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
