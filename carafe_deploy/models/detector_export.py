"""Detector checkpoint → whole-graph ONNX → parity report (ONNX Runtime vs PyTorch) → TensorRT engine.

``export/detector.py`` and ``carafe-deploy export --model <detector>`` call :func:`main` / :func:`export_detector`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from ..errors import DeployError
from . import build, spec
from ..trt import plugin_engine_unavailable
from .detection_parity import compare_detections
from .detectors import MIN_IMAGE_SIZE, PAD_DIVISOR, TestConfig, TwoStageDetector, calibrate_random_heads

__all__ = ["export_detector", "main", "DETECTORS", "TINY", "onnx_op_types"]

DETECTORS = ("faster_rcnn_r50_fpn_carafe", "mask_rcnn_r50_fpn_carafe")
# narrow widths, same structure and names: quick graph checks (tests, --tiny)
TINY = dict(base_channels=8, neck_channels=32, fc_channels=64, mask_channels=32, compressed_channels=16)


def onnx_op_types(proto) -> list[str]:
    """Sorted op types of a model's main graph, custom domains as ``domain::Op``."""
    return sorted({f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                   for n in proto.graph.node})


def parity_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A deterministic (1, 3, H, W) 0..255 test image: smooth colour blobs plus noise, so features vary."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, height // 32), max(2, width // 32), generator=gen)
    smooth = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    noise = torch.rand(1, 3, height, width, generator=gen)
    return (smooth * 0.8 + noise * 0.2) * 255


def _run_onnx(path: Path, image: np.ndarray, output_names) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(list(output_names), {"image": image})


def _build_engine(onnx_path: Path, engine_path, height: int, width: int, dynamic: bool, fp16: bool):  # pragma: no cover
    """TensorRT engine with the CARAFE plugin (carafe_deploy.trt); a dynamic graph gets a 320²..1344² profile."""
    from ..trt import BuildOptions, build_engine

    shapes = {}
    if dynamic:
        shapes = dict(
            min_shapes={"image": (1, 3, 320, 320)},
            opt_shapes={"image": (1, 3, height, width)},
            max_shapes={"image": (1, 3, max(1344, height), max(1344, width))},
        )
    return build_engine(BuildOptions(onnx_path=onnx_path, engine_path=Path(engine_path), fp16=fp16, **shapes))


def export_detector(
    name: str,
    output,
    *,
    checkpoint=None,
    model: TwoStageDetector | None = None,
    height: int = 800,
    width: int = 1216,
    dynamic: bool = False,
    fp16: bool = False,
    mode: str = "portable",
    opset: int | None = None,
    image: torch.Tensor | None = None,
    parity: bool = True,
    engine=None,
    log=print,
    **overrides,
) -> dict:
    """Export detector ``name`` (or the given ``model``) to ``output`` and return a report.

    Without ``checkpoint`` (and without ``model``) the weights are random: the report says so, and the classifier
    is calibrated (:func:`calibrate_random_heads`) so that the parity check compares real detections.
    ``overrides`` are test-config fields (``score_thr=0.3``, ...). ``engine``: a path for the TensorRT engine,
    built only when TensorRT and the plugin are present (otherwise the report says why it was skipped).
    """
    from ..onnx import export as onnx_export

    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; use one of {', '.join(DETECTORS)}")
    if min(height, width) < MIN_IMAGE_SIZE:
        raise ValueError(f"export size {height}x{width}: both sides must be at least {MIN_IMAGE_SIZE}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    report: dict = {"model": name, "onnx": str(output), "input_shape": [1, 3, height, width], "dynamic": dynamic,
                    "fp16": fp16, "mode": mode}
    if image is None:
        image = parity_image(height, width)
    if model is None:
        if checkpoint is None:
            torch.manual_seed(0)  # reproducible random weights
        model = build(name, checkpoint=checkpoint, **overrides)
        weights = str(checkpoint) if checkpoint is not None else "random"
        if checkpoint is None:
            log("no --checkpoint: RANDOM weights (classifier calibrated so that detections exist)")
            calibrate_random_heads(model, image)
    else:
        weights = "given model"
    report["weights"] = weights
    model.eval()
    ms = spec(name)
    t0 = time.perf_counter()
    proto = onnx_export(
        model, (image,), None, mode=mode, input_names=list(ms.input_names), output_names=list(model.output_names),
        dynamic_axes=ms.dynamic_axes if dynamic else None, opset=opset, fp16=fp16,
    )
    # what produced the file, for the sample and for people: random weights must never pass for a trained model
    onnx.helper.set_model_props(proto, {
        "carafe_deploy.model": name,
        "carafe_deploy.weights": "random" if weights == "random" else Path(str(weights)).name,
        "carafe_deploy.input": "image: N x 3 x H x W float32 RGB 0..255 (resized, not normalized)",
    })
    onnx.save(proto, str(output))  # a detector is far below protobuf's 2 GB limit
    report["export_s"] = round(time.perf_counter() - t0, 2)
    report["ops"] = onnx_op_types(proto)
    log(f"wrote {output} ({report['export_s']} s); ops: {', '.join(report['ops'])}")

    if parity:
        if mode == "plugin":
            report["parity"] = "skipped: a plugin-mode graph needs the TensorRT plugin (use mode=portable)"
        else:
            images = [image]
            if dynamic:  # a second size checks that the graph really follows the input shape
                images.append(parity_image(height + PAD_DIVISOR // 2, max(MIN_IMAGE_SIZE, width - PAD_DIVISOR), 1))
            report["parity_passed"] = True
            for key, img in zip(("parity", "parity_second_size"), images):
                with torch.no_grad():
                    ref = [t.numpy() for t in model(img)]
                try:
                    got = _run_onnx(output, img.numpy(), model.output_names)
                except Exception as exc:  # noqa: BLE001 -- e.g. an fp16 op ONNX Runtime's CPU provider lacks
                    report[key] = f"skipped: ONNX Runtime cannot run this graph ({type(exc).__name__}: {exc})"
                    report.pop("parity_passed", None)
                    break
                tol = 1e-3 if not fp16 else 5e-2
                result = compare_detections(ref, got, iou_thr=0.99 if not fp16 else 0.9, score_tol=tol)
                report[key] = {"image": list(img.shape), **result.as_dict()}
                report["parity_passed"] &= result.passed(mask_tol=tol)
                log(f"parity at {tuple(img.shape)} (ONNX Runtime vs PyTorch eager): {result.summary()}")
                if result.reference == 0:
                    log("warning: no detections on the parity image; the comparison is vacuous")
    if engine is not None:
        why_not = plugin_engine_unavailable()
        if why_not is not None:
            report["engine"] = f"skipped: {why_not}"
            log(f"engine skipped: {why_not}")
        else:  # pragma: no cover -- needs TensorRT
            _build_engine(output, engine, height, width, dynamic, fp16)
            report["engine"] = str(engine)
            log(f"wrote engine {engine}")
    return report


def _parse_set(items) -> dict:
    fields = TestConfig.__dataclass_fields__
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set expects KEY=VALUE with KEY one of {', '.join(fields)}; got {item!r}")
        default = getattr(TestConfig(), key)
        try:
            out[key] = value if isinstance(default, str) else type(default)(value)
        except ValueError:
            raise ValueError(f"--set {key}: expected a {type(default).__name__}, got {value!r}") from None
    return out


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(
        prog="carafe-deploy export",
        description="Export a CARAFE detector (mmdet checkpoint) to one ONNX graph, check it against PyTorch, "
        "and build a TensorRT engine when TensorRT is present."
    )
    p.add_argument("--model", required=True, choices=DETECTORS)
    p.add_argument("--checkpoint", help="mmdetection checkpoint (.pth); random weights when omitted")
    p.add_argument("--output", "-o", required=True, help="ONNX file to write")
    p.add_argument("--height", type=int, default=800, help="export/parity image height (default 800)")
    p.add_argument("--width", type=int, default=1216, help="export/parity image width (default 1216)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute (float32 input/outputs)")
    p.add_argument("--mode", default="portable", choices=("portable", "plugin", "decomposed"),
                   help="how CARAFE is written (portable: node + ONNX function; plugin: node only)")
    p.add_argument("--opset", type=int, default=None)
    p.add_argument("--engine", help="TensorRT engine to build (skipped when TensorRT is not installed)")
    p.add_argument("--no-parity", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="test setting, e.g. score_thr=0.3, rpn_nms_pre=500, input_order=bgr (repeatable)")
    p.add_argument("--report", help="write the report as JSON here")
    p.add_argument("--tiny", action="store_true",
                   help="a narrow random model with the same structure (8 base channels, 32-channel FPN) for quick "
                   "checks of the graph; cannot take a released checkpoint")
    return p


def run(args) -> int:
    overrides = _parse_set(args.set)
    if args.tiny:
        if args.checkpoint:
            raise ValueError("--tiny builds a narrow random model; it cannot load a released checkpoint")
        overrides.update(TINY)
    report = export_detector(
        args.model, args.output, checkpoint=args.checkpoint, height=args.height, width=args.width,
        dynamic=args.dynamic, fp16=args.fp16, mode=args.mode, opset=args.opset, parity=not args.no_parity,
        engine=args.engine, **overrides,
    )
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    # an fp16 graph is compared with the float32 PyTorch model: informational (half precision flips near-tie NMS
    # decisions), so only float32 exports are gated
    if report.get("parity_passed") is False and not args.fp16:
        raise DeployError("ONNX Runtime and PyTorch disagree beyond the tolerances (see the parity line above)")
    return 0


def main(argv=None) -> int:
    import sys

    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (DeployError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"export/detector.py: error: {exc}", file=sys.stderr)
        return 1
