"""carafe-deploy run ENGINE: run a TensorRT engine on .npy/.npz inputs and write its outputs as .npy files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DeployError
from .args import HelpFormatter, add_backend

if TYPE_CHECKING:  # numpy is imported inside the functions: --help stays fast
    import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a TensorRT engine on numpy inputs", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("engine", type=Path, metavar="ENGINE", help="serialized engine (from carafe-deploy build)")
    p.add_argument("-i", "--input", action="append", required=True, metavar="[NAME=]FILE",
                   help="an input as .npy (NAME= may be left out for a one-input engine), or an .npz of all inputs")
    p.add_argument("-o", "--output", type=Path, metavar="DIR",
                   help="folder to write OUTPUT_NAME.npy into (default: ENGINE_outputs/ beside the engine)")
    p.add_argument("--no-plugin", action="store_true", help="do not load the CARAFE plugin library")
    add_backend(p, building=False)
    p.add_argument("-v", "--verbose", action="store_true", help="print TensorRT's log")
    p.set_defaults(func=run)


def load_inputs(specs: list[str]) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Named arrays from NAME=FILE / .npz specs, and unnamed ones (bound later if the engine has one input)."""
    import numpy as np

    from ..files import require_file

    named: dict[str, np.ndarray] = {}
    unnamed: list[np.ndarray] = []
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep:
            name, file = "", spec
        path = require_file(file, "--input")
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DeployError(f"{path} is not a .npy/.npz file: {exc}") from exc
        if isinstance(data, np.lib.npyio.NpzFile):
            if name:
                raise ValueError(f"--input {spec}: an .npz holds named arrays; give it without NAME=")
            for key in data.files:
                if key in named:
                    raise ValueError(f"input {key!r} is given twice")
                named[key] = data[key]
        elif name:
            if name in named:
                raise ValueError(f"input {name!r} is given twice")
            named[name] = data
        else:
            unnamed.append(data)
    return named, unnamed


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..backends import TrtRunner
    from ..files import atomic_path, output_dir, refuse_overwriting_inputs, require_file
    from ..report import console

    if not args.engine.exists():
        raise FileNotFoundError(f"engine {args.engine} does not exist")
    require_file(args.engine, "engine")  # a directory or an empty file
    named, unnamed = load_inputs(args.input)
    out_dir = args.output or args.engine.with_name(args.engine.stem + "_outputs")
    out = console(stderr=True)
    # made before the engine runs (a folder that cannot be written fails now), removed again if nothing is written
    with output_dir(out_dir, "-o/--output"):
        with TrtRunner(args.engine, plugin=not args.no_plugin, verbose=args.verbose, backend=args.backend) as runner:
            names = [t.name for t in runner.input_metadata()]
            if unnamed:
                if len(unnamed) > 1 or len(names) != 1 or named:
                    raise ValueError(f"the engine's inputs are {', '.join(names)}: name each input as NAME=FILE")
                named = {names[0]: unnamed[0]}
            outputs = runner.infer(named)
        paths = {name: out_dir / f"{name.replace('/', '_')}.npy" for name in outputs}
        inputs = [args.engine] + [spec.partition("=")[2] or spec for spec in args.input]
        refuse_overwriting_inputs({f"output {name!r}": path for name, path in paths.items()}, inputs)
        for name, value in outputs.items():
            path = paths[name]
            with atomic_path(path) as tmp:
                np.save(tmp, value)
            out.print(f"{name}: {value.dtype} {'x'.join(map(str, value.shape))} -> {path}")
    return 0
