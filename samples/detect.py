#!/usr/bin/env python3
"""Run a CARAFE detector on an image and draw its boxes, labels and masks into a PNG.

    python samples/detect.py --checkpoint mask_rcnn_r50_fpn_carafe_1x_coco.pth            # bundled test image
    python samples/detect.py street.jpg --model faster_rcnn_r50_fpn_carafe --checkpoint faster.pth -o out.png
    python samples/detect.py --onnx mask.onnx                                              # ONNX Runtime instead
    python samples/detect.py --engine mask.engine                                          # a TensorRT engine
    python samples/detect.py                       # no checkpoint: RANDOM weights, labelled so on the picture

The image is resized as mmdet's test pipeline does (keep ratio, fit in 1333×800; a fixed-size graph gets it fitted
and padded); the graph normalises and pads it. Boxes are drawn in the original image; masks are pasted as mmdet
pastes them (bilinear, then >= 0.5). The work is done by carafe_deploy.tasks.detection and carafe_deploy.backends.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGE = HERE / "data" / "scene.png"


def main(argv=None) -> int:
    from carafe_deploy.errors import ArgumentParser, run_guarded
    from carafe_deploy.models.detectors import DETECTORS

    p = ArgumentParser(description="Detect objects with a CARAFE detector and draw them into a PNG.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("image", nargs="?", default=str(DEFAULT_IMAGE), help="input image (default: the bundled scene)")
    p.add_argument("--model", default=DETECTORS[1], choices=DETECTORS, help="the detector (PyTorch)")
    p.add_argument("--checkpoint", help="mmdetection checkpoint; without it the weights are random")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--onnx", help="run this exported ONNX file (ONNX Runtime) instead of PyTorch")
    source.add_argument("--engine", help="run this TensorRT engine instead of PyTorch")
    p.add_argument("-o", "--output", default="detections.png", help="the PNG to write")
    p.add_argument("--score-thr", type=float, default=0.3, help="draw detections scoring at least this")
    p.add_argument("--scale", type=int, nargs=2, default=(1333, 800), metavar=("LONG", "SHORT"),
                   help="resize limits (mmdet: 1333 800); smaller is faster")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = p.parse_args(argv)
    return run_guarded("detect.py", lambda: _run(args), debug=args.debug)


def _run(args) -> int:
    from PIL import Image

    from carafe_deploy.errors import DeployError
    from carafe_deploy.files import atomic_path, refuse_overwriting_inputs, require_file
    from carafe_deploy.models.detectors import COCO_CLASSES
    from carafe_deploy.tasks.detection import RANDOM_WEIGHTS_BANNER, detect
    from carafe_deploy.tasks.drawing import draw_detections

    if min(args.scale) < 1:
        raise ValueError(f"--scale must be positive, got {args.scale[0]} {args.scale[1]}")
    if not Path(args.image).exists():
        raise DeployError(f"image not found: {args.image}")
    require_file(args.image, "image")  # a directory, an empty file
    refuse_overwriting_inputs({"-o/--output": args.output},
                              [args.image, args.checkpoint, args.onnx, args.engine])
    try:
        original = Image.open(args.image).convert("RGB")
    except OSError as exc:
        raise DeployError(f"cannot read image {args.image}: {exc}") from exc
    banner = None
    if args.onnx or args.engine:
        from carafe_deploy.backends import OnnxrtRunner, TrtRunner

        runner = TrtRunner(args.engine) if args.engine else None
        if args.onnx:
            from carafe_deploy.onnx.files import load_model

            model = load_model(args.onnx)
            runner = OnnxrtRunner(model)
            props = {p.key: p.value for p in model.metadata_props}
            if props.get("carafe_deploy.weights") == "random":  # the export records where the weights came from
                banner = RANDOM_WEIGHTS_BANNER
    else:
        runner, banner = _torch_runner(args, original)
    if banner:
        print(f"note: {banner}", file=sys.stderr)
    result = detect(runner, original, tuple(args.scale))
    dets, labels = result["dets"], result["labels"]
    picture = draw_detections(original, dets, labels, result["masks"], COCO_CLASSES, args.score_thr, banner)
    with atomic_path(args.output) as tmp:
        picture.save(tmp, format="PNG")
    shown = int(((labels >= 0) & (dets[:, 4] >= args.score_thr)).sum())
    print(f"wrote {args.output}: {shown} detections with score >= {args.score_thr}")
    for (x1, y1, x2, y2, s), lab in zip(dets, labels):
        if lab >= 0 and s >= args.score_thr:
            print(f"  {COCO_CLASSES[int(lab)]:>14s} {s:.3f}  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
    return 0


def _torch_runner(args, original):
    import torch

    from carafe_deploy.backends import TorchRunner
    from carafe_deploy.imaging import image_tensor, resize_keep_ratio
    from carafe_deploy.models import build, spec
    from carafe_deploy.models.detectors import calibrate_random_heads
    from carafe_deploy.tasks.detection import RANDOM_WEIGHTS_BANNER

    model = build(args.model, checkpoint=args.checkpoint)
    banner = None
    if args.checkpoint is None:
        banner = RANDOM_WEIGHTS_BANNER
        resized, _ = resize_keep_ratio(original, tuple(args.scale))
        calibrate_random_heads(model, torch.from_numpy(image_tensor(resized)))
    s = spec(args.model)
    return TorchRunner(model, s.input_names, s.output_names), banner


if __name__ == "__main__":
    sys.exit(main())
