"""Where a PyTorch model comes from on the command line: a Python file + class, a TorchScript file, an
ExportedProgram file, or a registered model name. Shared by ``export`` and ``check``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DeployError

__all__ = ["add_source_args", "load_source", "Source", "parse_shape", "save_reference", "load_reference"]


@dataclass
class Source:
    model: object  # nn.Module, ScriptModule or ExportedProgram
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    input_shapes: list[tuple[int, ...]] | None = None
    dynamic_axes: dict = field(default_factory=dict)
    description: str = ""


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: use comma-separated ints, e.g. 1,3,224,224") from None
    if not dims or any(d < 0 for d in dims):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: use comma-separated non-negative ints")
    return dims


def add_source_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("model source (one of)")
    src = g.add_mutually_exclusive_group(required=required)
    src.add_argument("--python", metavar="FILE", help="a Python file defining the model class (with --class)")
    src.add_argument("--torchscript", metavar="FILE", help="a TorchScript file (torch.jit.save)")
    src.add_argument("--exported-program", metavar="FILE", help="an ExportedProgram file (torch.export.save, .pt2)")
    src.add_argument("--model", metavar="NAME", help="a model registered in carafe_deploy.models")
    g.add_argument("--class", dest="class_name", metavar="NAME", help="the nn.Module class in --python FILE")
    g.add_argument("--kwargs", default="{}", metavar="JSON", help="constructor keyword arguments for --class")
    g.add_argument("--checkpoint", metavar="PATH", help="weights to load (--python or --model)")
    p.add_argument("--input-shape", type=parse_shape, action="append", metavar="N,C,H,W",
                   help="example input shape; repeat once per input (default: the model's own default)")


def _load_python(path: str, class_name: str | None, kwargs_json: str):
    if not class_name:
        raise DeployError("--python needs --class NAME (the nn.Module class to build)")
    file = Path(path)
    if not file.is_file():
        raise DeployError(f"--python: no such file {path!r}")
    try:
        kwargs = json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        raise DeployError(f"--kwargs is not valid JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise DeployError("--kwargs must be a JSON object")
    spec = importlib.util.spec_from_file_location(f"_carafe_user_model_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise DeployError(f"{path} defines no {class_name!r}")
    return cls(**kwargs)


def load_source(args: argparse.Namespace) -> Source:
    from .. import nn as _  # noqa: F401 -- registers the op before a TorchScript/ExportedProgram file is loaded

    # Built without a checkpoint, a model's weights come from its random init: seed it so that `export` and `check`
    # of the same --python/--model build the same weights.
    torch.manual_seed(0)
    if args.python:
        model = _load_python(args.python, args.class_name, args.kwargs)
        if args.checkpoint:
            from ..models.checkpoint import load_checkpoint

            load_checkpoint(model, args.checkpoint)
        return Source(model.eval(), description=f"{args.python}:{args.class_name}")
    if args.torchscript:
        if not Path(args.torchscript).is_file():
            raise DeployError(f"--torchscript: no such file {args.torchscript!r}")
        return Source(torch.jit.load(args.torchscript, map_location="cpu").eval(), description=args.torchscript)
    if args.exported_program:
        if not Path(args.exported_program).is_file():
            raise DeployError(f"--exported-program: no such file {args.exported_program!r}")
        return Source(torch.export.load(args.exported_program), description=args.exported_program)
    if args.model:
        from .. import models

        spec = models.spec(args.model)
        model = models.build(args.model, args.checkpoint)
        return Source(
            model,
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            input_shapes=[tuple(spec.default_input_shape)],
            dynamic_axes=dict(spec.dynamic_axes),
            description=f"model {args.model}",
        )
    raise DeployError("give a model: --python FILE --class NAME, --torchscript FILE, --exported-program FILE or --model NAME")


def example_inputs(source: Source, shapes) -> tuple[torch.Tensor, ...]:
    if isinstance(source.model, torch.export.ExportedProgram) and not shapes:
        return tuple(source.model.example_inputs[0])
    shapes = shapes or source.input_shapes
    if not shapes:
        raise DeployError("give the example input shape with --input-shape N,C,H,W (once per input)")
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(*s, generator=gen) for s in shapes)


def save_reference(path, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    arrays = {f"input/{k}": v for k, v in inputs.items()}
    arrays.update({f"output/{k}": v for k, v in outputs.items()})
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_reference(path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    if not Path(path).is_file():
        raise DeployError(f"--reference: no such file {str(path)!r}")
    data = np.load(path)
    inputs = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("input/")}
    outputs = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("output/")}
    if not outputs:
        raise DeployError(f"{path} holds no output/<name> arrays (write it with carafe-deploy export --save-reference)")
    return inputs, outputs
