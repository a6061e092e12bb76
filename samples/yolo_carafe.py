#!/usr/bin/env python3
"""A YOLOv8 with CARAFE in its neck, exported by ultralytics' own ``model.export(format="onnx")`` and by
carafe-deploy, run in ONNX Runtime and compared with PyTorch.

    python samples/yolo_carafe.py                      # yolov8n.yaml at 320x320, files in a temporary folder
    python samples/yolo_carafe.py --yaml yolov8s.yaml --imgsz 640 -o out/

Needs ultralytics, which imports torchvision (on the CPU machines here: torch==2.14.1 torchvision==0.29.1; PyPI's
torchvision does not import next to torch 2.13). The model is built from ultralytics' yaml (no weights are
downloaded); each ``nn.Upsample`` of the neck becomes a ``CARAFEUpsample`` with the same input channels and scale,
with random content-encoder weights so the kernels are far from uniform. Three files:

* ultralytics' export (TorchScript exporter, opset 18): ``import carafe_deploy`` is all it needs -- the file holds
  the ``carafe::CARAFE`` nodes and their standard-op function, and ONNX Runtime runs it as written;
* that file through ``carafe-deploy convert --to plugin`` and back ``--to portable`` (what a TensorRT user does);
* ``carafe_deploy.onnx.export`` (torch's dynamo exporter), portable form.

Exit status 1 when any of them differs from PyTorch by more than --atol + --rtol x max |PyTorch| (boxes and class
scores apart: boxes are pixels, an untrained model's scores are ~1e-4).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import carafe_deploy  # noqa: F401  -- registers the ONNX export of the op, whatever imports torch later


def carafe_neck(yolo, seed: int = 0) -> list[int]:
    """Replace every ``nn.Upsample`` of ``yolo.model`` by a ``CARAFEUpsample`` (same input channels and scale, the
    layer's routing attributes kept); returns the replaced layer indices."""
    import torch
    from torch import nn

    from carafe_deploy.nn import CARAFEUpsample

    layers = yolo.model.model
    channels = {}
    hooks = [m.register_forward_pre_hook(lambda m, args, i=i: channels.__setitem__(i, args[0].shape[1]))
             for i, m in enumerate(layers) if isinstance(m, nn.Upsample)]
    with torch.no_grad():
        yolo.model.eval()(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    torch.manual_seed(seed)
    for i, c in channels.items():
        old = layers[i]
        new = CARAFEUpsample(c, scale_factor=int(old.scale_factor))
        torch.nn.init.normal_(new.content_encoder.weight, std=0.3)  # kernels far from uniform
        for attr in ("f", "i", "np"):  # ultralytics routes layers by these
            setattr(new, attr, getattr(old, attr))
        new.type = "carafe_deploy.nn.CARAFEUpsample"
        layers[i] = new
    return sorted(channels)


def _ort(path: Path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def main(argv=None) -> int:
    from carafe_deploy.errors import ArgumentParser

    p = ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--yaml", default="yolov8n.yaml", help="ultralytics model yaml")
    p.add_argument("--imgsz", type=int, default=320, help="square input size")
    p.add_argument("-o", "--output-dir", type=Path, help="where the ONNX files go (default: a temporary folder)")
    p.add_argument("--rtol", type=float, default=1e-4, help="accepted: max abs error <= atol + rtol * max |PyTorch|")
    p.add_argument("--atol", type=float, default=1e-6, help="see --rtol (untrained class scores are ~1e-4)")
    args = p.parse_args(argv)

    import numpy as np
    import onnx
    import torch
    from ultralytics import YOLO

    from carafe_deploy.onnx import export
    from carafe_deploy.onnx.convert import convert

    out_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="yolo_carafe_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    yolo = YOLO(args.yaml)
    replaced = carafe_neck(yolo)
    print(f"{args.yaml}: nn.Upsample -> CARAFEUpsample at layers {replaced}")

    torch.manual_seed(1)
    x = torch.rand(1, 3, args.imgsz, args.imgsz)
    model = yolo.model.eval()
    with torch.no_grad():
        ref = model(x)[0].numpy()  # (1, 4 + classes, anchors): decoded boxes and class scores

    # 1. ultralytics' own export (it writes next to the yaml's name, in the working directory)
    cwd = os.getcwd()
    os.chdir(out_dir)
    try:
        ultra_path = Path(yolo.export(format="onnx", imgsz=args.imgsz, simplify=False)).resolve()
    finally:
        os.chdir(cwd)
    written = onnx.load(ultra_path)
    nodes = [n for n in written.graph.node if n.domain == "carafe"]
    opset = next(i.version for i in written.opset_import if i.domain == "")
    # 2. convert to the plugin form and back
    plugin = convert(written, "plugin").model
    onnx.save(plugin, out_dir / "yolo_plugin.onnx")
    onnx.save(convert(plugin, "portable").model, out_dir / "yolo_portable.onnx")
    # 3. carafe-deploy's exporter
    head = model.model[-1]
    head.export, head.format = True, "onnx"  # the head's export output: the decoded tensor alone
    try:
        export(model, (x,), out_dir / "yolo_carafe_deploy.onnx", mode="portable", input_names=["images"])
    finally:
        head.export = False

    rows = [("ultralytics model.export (as written)", ultra_path),
            ("convert --to plugin, then --to portable", out_dir / "yolo_portable.onnx"),
            ("carafe_deploy.onnx.export (dynamo)", out_dir / "yolo_carafe_deploy.onnx")]
    print(f"ultralytics' file: opset {opset}, {len(nodes)} carafe::CARAFE node(s), "
          f"{len(written.functions)} function(s)")
    ok = bool(nodes)
    parts = {"boxes": slice(0, 4), "scores": slice(4, None)}  # compared apart: boxes are pixels, scores 0..1
    print(f"{'ONNX file':42s}" + "".join(f" {name + ' max abs':>16s} {name + ' max rel':>16s}" for name in parts))
    for label, path in rows:
        y = _ort(path, x.numpy())
        ok &= y.shape == ref.shape
        cells = ""
        for part in parts.values():
            err = float(np.abs(y[:, part] - ref[:, part]).max())
            rel = err / float(np.abs(ref[:, part]).max())
            ok &= err <= args.atol + args.rtol * float(np.abs(ref[:, part]).max())
            cells += f" {err:16.3e} {rel:16.3e}"
        print(f"{label:42s}{cells}")
    print(f"files in {out_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
