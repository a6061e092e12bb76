"""``carafe-deploy export``: a PyTorch model with CARAFE ops to ONNX (plugin / portable / decomposed, fp16)."""

from __future__ import annotations

import argparse

import numpy as np
import torch
from rich.console import Console

from ..errors import DeployError
from ._source import add_source_args, example_inputs, load_source, save_reference


def parse_dynamic(text: str) -> tuple[str, dict[int, str]]:
    """"image:0,2,3" or "image:0=N,2=H,3=W" -> ("image", {0: "N", 2: "H", 3: "W"})."""
    name, sep, axes = text.partition(":")
    if not sep or not name or not axes:
        raise argparse.ArgumentTypeError(f"bad --dynamic {text!r}: use NAME:AXES, e.g. image:0,2,3 or image:0=N,2=H")
    out = {}
    for item in axes.split(","):
        axis, _, label = item.partition("=")
        try:
            axis = int(axis)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad axis {item!r} in --dynamic {text!r}") from None
        out[axis] = label or f"{name}_dim{axis}"
    return name, out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a CARAFE model to ONNX", description=__doc__)
    add_source_args(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    p.add_argument("--mode", choices=("plugin", "portable", "decomposed"), default="portable",
                   help="plugin: carafe::CARAFE nodes only; portable: + standard-op function (default); "
                        "decomposed: standard ops only")
    p.add_argument("--dynamic", type=parse_dynamic, action="append", metavar="NAME:AXES",
                   help="dynamic axes of an input, e.g. image:0,2,3 or image:0=N,2=H,3=W (repeatable)")
    p.add_argument("--static", action="store_true", help="ignore the registered model's default dynamic axes")
    p.add_argument("--input-names", nargs="+", metavar="NAME")
    p.add_argument("--output-names", nargs="+", metavar="NAME")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset of the default domain (18-23, default 18)")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute (float32 inputs/outputs)")
    p.add_argument("--save-reference", metavar="REF.npz",
                   help="also save the example inputs and PyTorch's outputs, for `carafe-deploy check --reference`")
    p.set_defaults(func=run)


def _names(given, count: int, stem: str) -> list[str]:
    if given:
        return list(given)
    return [stem] if count == 1 else [f"{stem}{i}" for i in range(count)]


def torch_outputs(model, inputs) -> list[np.ndarray]:
    fn = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    with torch.no_grad():
        out = fn(*inputs)
    flat, _ = torch.utils._pytree.tree_flatten(out)
    return [t.detach().float().numpy() if t.is_floating_point() else t.numpy() for t in flat]


def run(args: argparse.Namespace) -> int:
    from ..onnx import carafe_nodes, export

    console = Console()
    source = load_source(args)
    inputs = example_inputs(source, args.input_shape)
    input_names = _names(args.input_names or source.input_names, len(inputs), "input")
    if len(input_names) != len(inputs):
        raise DeployError(f"{len(input_names)} input names for {len(inputs)} inputs")
    dynamic = {} if args.static else dict(source.dynamic_axes)
    for name, axes in args.dynamic or []:
        if name not in input_names:
            raise DeployError(f"--dynamic names input {name!r}; the inputs are {input_names}")
        dynamic[name] = axes
    reference = torch_outputs(source.model, inputs) if args.save_reference else None
    output_names = args.output_names or source.output_names
    with console.status(f"exporting {source.description} ({args.mode}{', fp16' if args.fp16 else ''})"):
        proto = export(
            source.model,
            inputs,
            args.output,
            mode=args.mode,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic or None,
            opset=args.opset,
            fp16=args.fp16,
        )
    console.print(
        f"wrote {args.output}: {len(carafe_nodes(proto))} carafe::CARAFE node(s), "
        f"{len(proto.functions)} local function(s), opset {proto.opset_import[0].version}, "
        f"inputs {[i.name for i in proto.graph.input]}, outputs {[o.name for o in proto.graph.output]}"
    )
    if args.save_reference:
        onnx_outputs = [o.name for o in proto.graph.output]
        if len(onnx_outputs) != len(reference):
            raise DeployError(f"PyTorch gave {len(reference)} outputs, the ONNX model has {len(onnx_outputs)}")
        save_reference(
            args.save_reference,
            {n: t.numpy() for n, t in zip(input_names, inputs)},
            dict(zip(onnx_outputs, reference)),
        )
        console.print(f"wrote {args.save_reference} (inputs and PyTorch outputs)")
    return 0
