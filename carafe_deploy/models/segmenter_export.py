"""Export a UperNet-CARAFE segmenter: checkpoint -> ONNX -> parity report -> TensorRT engine (when available).

    carafe-deploy export --model upernet_r50_carafe --checkpoint upernet.pth --out build/seg \\
        [--mode portable|plugin|decomposed] [--fp16] [--size 512 512] [--check-size 256 384] [--engine]

Writes ``<out>/<model>_<mode>[_fp16].onnx`` (dynamic batch, height and width) and ``<out>/parity.json``, prints a
table comparing ONNX Runtime with PyTorch eager on a random normalized image (max |diff| / max |reference| of the
logits and argmax agreement), and exits 1 if the thresholds are missed (fp32: 1e-4 and 99.9 %; fp16: 2e-2 and 99 %).
A ``plugin`` model has no standard-op form for ONNX Runtime, so its parity check runs on the same graph with the
CARAFE function attached (``carafe_deploy.onnx.to_portable``). ``--engine`` builds ``<out>/<model>.engine`` with
the plugin when TensorRT, a CUDA device and the plugin library are present; otherwise it says why it was skipped.
Without ``--checkpoint`` the model keeps its random initialisation (useful to try the pipeline only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ..errors import DeployError
from ..trt import plugin_engine_unavailable
from . import available, build, spec

THRESHOLDS = {False: (1e-4, 0.999), True: (2e-2, 0.99)}  # fp16 -> (max relative error, min argmax agreement)


def parity(onnx_model, model: torch.nn.Module, shape, seed: int = 0) -> dict:
    """ONNX Runtime vs PyTorch eager (float32) on one random normalized input of ``shape``."""
    import onnxruntime as ort

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0].astype(np.float32)
    if out.shape != ref.shape:
        raise DeployError(f"ONNX output shape {out.shape} differs from PyTorch's {ref.shape}")
    return {
        "shape": list(shape),
        "max_abs": float(np.abs(out - ref).max()),
        "max_rel": float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-12)),
        "argmax_agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
    }


def main(argv=None) -> int:
    try:
        return _main(argv)
    except (DeployError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"segmenter export: error: {exc}", file=sys.stderr)
        return 1


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="carafe-deploy export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=[n for n in available() if n.startswith("upernet")])
    p.add_argument("--checkpoint", help="a checkpoint saved by this package or mmseg-style {'state_dict': ...}")
    p.add_argument("--out", default="build/segmenter", help="output folder")
    p.add_argument("--mode", choices=("portable", "plugin", "decomposed"), default="portable")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute, float32 input/output")
    p.add_argument("--opset", type=int, default=None)
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"),
                   help="example input size for tracing (H and W stay dynamic in the ONNX model)")
    p.add_argument("--check-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="input size of the parity check (default: --size)")
    p.add_argument("--engine", action="store_true",
                   help="also build a TensorRT engine with the plugin when possible (profile: 32×32 to twice --size)")
    p.add_argument("--max-batch", type=int, default=1, help="largest batch of the engine's profile")
    args = p.parse_args(argv)
    console = Console()

    s = spec(args.model)
    if args.checkpoint is None:
        console.print("[yellow]no --checkpoint: exporting randomly initialised weights[/]")
    torch.manual_seed(0)
    model = build(args.model, args.checkpoint)  # a bad checkpoint fails here, listing the keys

    from .. import onnx as carafe_onnx
    os.makedirs(args.out, exist_ok=True)
    suffix = "_fp16" if args.fp16 else ""
    onnx_path = os.path.join(args.out, f"{args.model}_{args.mode}{suffix}.onnx")
    # batch 2: torch.export specialises a dynamic dimension whose example size is 1
    example = torch.randn(2, 3, *args.size)
    with console.status(f"exporting {args.model} ({args.mode}{', fp16' if args.fp16 else ''})"):
        proto = carafe_onnx.export(model, (example,), onnx_path, mode=args.mode, input_names=list(s.input_names),
                                   output_names=list(s.output_names), dynamic_axes=s.dynamic_axes,
                                   opset=args.opset, fp16=args.fp16)
    console.print(f"wrote {onnx_path}: {len(carafe_onnx.carafe_nodes(proto))} carafe::CARAFE nodes")

    checked = carafe_onnx.to_portable(proto) if args.mode == "plugin" else proto
    check_shape = (1, 3, *(args.check_size or args.size))
    with console.status("ONNX Runtime vs PyTorch"):
        result = parity(checked, model, check_shape)
    max_rel, min_agree = THRESHOLDS[args.fp16]
    passed = result["max_rel"] <= max_rel and result["argmax_agreement"] >= min_agree
    table = Table(title=f"parity: {args.model} ({args.mode}{suffix}) vs PyTorch eager, input {check_shape}")
    for col in ("max |diff|", "max |diff| / max |ref|", "argmax agreement", "result"):
        table.add_column(col)
    table.add_row(f"{result['max_abs']:.3e}", f"{result['max_rel']:.3e} (≤ {max_rel:g})",
                  f"{result['argmax_agreement'] * 100:.3f}% (≥ {min_agree * 100:g}%)",
                  "[green]pass[/]" if passed else "[red]FAIL[/]")
    console.print(table)

    report = {"model": args.model, "mode": args.mode, "fp16": args.fp16, "onnx": onnx_path, "parity": result,
              "passed": passed, "engine": None}
    if args.engine:
        reason = plugin_engine_unavailable()
        if reason:
            console.print(f"engine: skipped ({reason})")
            report["engine"] = {"skipped": reason}
        else:
            from ..trt import BuildOptions, build_engine

            # the builder drops the portable form's CARAFE function so that the plugin is used (DESIGN §2)
            h, w = args.size
            engine_path = os.path.join(args.out, f"{args.model}_{args.mode}{suffix}.engine")
            build_engine(BuildOptions(onnx_path=onnx_path, engine_path=engine_path,
                                      min_shapes={"image": (1, 3, 32, 32)}, opt_shapes={"image": (1, 3, h, w)},
                                      max_shapes={"image": (args.max_batch, 3, 2 * h, 2 * w)}))
            console.print(f"wrote {engine_path}")
            report["engine"] = {"path": engine_path}
    with open(os.path.join(args.out, "parity.json"), "w") as f:
        json.dump(report, f, indent=2)
    return 0 if passed else 1


