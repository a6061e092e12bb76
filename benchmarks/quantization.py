"""The accuracy table and the TensorRT-RTX build rows of docs/QUANTIZATION.md, measured on the trained UperNet-CARAFE
segmentation sample (carafe_deploy.tasks.segmentation_sample: CARAFE x10 and CARAFE++ x7, 5 classes, 64x64).

    python benchmarks/quantization.py -o /tmp/quant                      # train (1 thread, seed 0) and measure
    python benchmarks/quantization.py -o /tmp/quant --checkpoint seg_out/model.pth   # a sample run's weights
    python benchmarks/quantization.py -o /tmp/quant --plugin             # plugin engines too (plugin library built)
    python benchmarks/quantization.py -o /tmp/quant_full --full --plugin # + full-width upernet_r50_carafe engines

The model is trained once (or loaded) and exported in fp32 and fp16 (portable and plugin forms, through the deploy
pipeline); the first 64 training images are written as PNG files and ``carafe_deploy.tasks.quantize.quantize``
calibrates on that folder (``carafe-deploy quantize --calibration-images``), for the portable and the plugin file.
Every file then runs in ONNX Runtime on the 48 held-out images: mIoU, its change from PyTorch, argmax agreement with
PyTorch and the largest logit difference, and whether the segmentation check's limits for that precision pass
(``SegmentationTask.compare`` on the held-out logits: what ``carafe-deploy check`` applies). Last, TensorRT-RTX
builds an engine from each file, with the CARAFE nodes unrolled and (``--plugin``) through the plugin; engines cannot
run without a GPU. ``--full`` adds the engines of the full-width ``upernet_r50_carafe`` (random weights: sizes and
build times only; calibrated on 4 random 512x512 images), where the weights, not the kernels, fill the engine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trt_rtx_builds import _build, _restart_with_link  # noqa: E402  -- the same timing as docs/TENSORRT.md's rows

CALIBRATION_IMAGES = 64


def _model(args, cfg, train_x, train_y):
    from carafe_deploy.models.checkpoint import load_checkpoint
    from carafe_deploy.tasks.segmentation_sample import small_segmenter, train

    model = small_segmenter(cfg.seed)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
        return model.eval(), f"weights from {args.checkpoint}"
    losses = train(model, train_x, train_y, cfg, progress=False, threads=args.threads, log=lambda _m: None)
    return model.eval(), f"trained here: {cfg.steps} steps, {args.threads} thread(s), final loss {losses[-1]:.3f}"


def _export(model, example, path: Path, mode: str, fp16: bool) -> Path:
    from carafe_deploy.tasks import CheckOptions, ExportOptions, deploy
    from carafe_deploy.tasks.segmentation_sample import _loaded

    deploy(_loaded(model), ExportOptions(output=path, mode=mode, fp16=fp16, input_shapes=[tuple(example.shape)]),
           CheckOptions(enabled=False), log=lambda _m: None)
    return path


def _write_images(folder: Path, images: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"train_{i:03d}.png")
    return folder


def full_width_builds(out: Path, plugin: bool) -> list[dict]:
    """fp32 / fp16 / INT8 engines of the full-width upernet_r50_carafe (random weights), at the task's profile."""
    from carafe_deploy.tasks import CheckOptions, ExportOptions, ModelSource, deploy
    from carafe_deploy.tasks.pipeline import task_for
    from carafe_deploy.tasks.quantize import QuantizeOptions, quantize

    loaded = ModelSource(model="upernet_r50_carafe").load()
    task = task_for(loaded)
    example = task.example_inputs(loaded, None)
    builds = []
    for mode in ("portable", "plugin") if plugin else ("portable",):
        fp32 = out / f"upernet_full_{mode}.onnx"
        report = deploy(loaded, ExportOptions(output=fp32, mode=mode), CheckOptions(enabled=False), log=lambda _m: None)
        fp16 = out / f"upernet_full_{mode}_fp16.onnx"
        deploy(loaded, ExportOptions(output=fp16, mode=mode, fp16=True), CheckOptions(enabled=False),
               log=lambda _m: None)
        int8 = out / f"upernet_full_{mode}_int8.onnx"
        quantize(QuantizeOptions(fp32, output=int8, calibration_random=4, progress=False), log=lambda _m: None)
        mins, opts, maxs = task.engine_profile(report["onnx"]["inputs"], example, report["onnx"]["dynamic"])
        for path in (fp32, fp16, int8):
            builds.append({"file": path.name, **_build(path, path.with_suffix(".engine"), mode == "plugin",
                                                       min_shapes=mins, opt_shapes=opts, max_shapes=maxs)})
            print(json.dumps(builds[-1]), flush=True)
    return builds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, required=True, help="folder for the files, engines and results")
    ap.add_argument("--checkpoint", type=Path, help="the sample's model.pth (default: train it here)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1: deterministic training)")
    ap.add_argument("--plugin", action="store_true", help="also plugin engines (needs libcarafe_trt_plugin.so)")
    ap.add_argument("--no-engines", action="store_true", help="accuracy only")
    ap.add_argument("--full", action="store_true", help="also the full-width upernet_r50_carafe's engines (~3 GB)")
    args = ap.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    if args.plugin:
        from carafe_deploy.trt.plugin import plugin_library

        plugin_library(required=True)
        _restart_with_link(args.output)
    torch.set_num_threads(args.threads)
    from carafe_deploy.backends import OnnxrtRunner
    from carafe_deploy.tasks.quantize import QuantizeOptions, quantize
    from carafe_deploy.tasks.segmentation import SegmentationTask
    from carafe_deploy.tasks.segmentation_sample import TrainConfig, _to_input, predict, predict_torch
    from carafe_deploy.tasks.synthetic_shapes import CLASSES, make_set, mean_iou
    from carafe_deploy.trt.graph import precision_mode

    load = os.getloadavg()
    cfg = TrainConfig()
    train_x, train_y = make_set(cfg.train_count, cfg.size, seed=cfg.seed)
    test_x, test_y = make_set(cfg.test_count, cfg.size, seed=cfg.seed + 10_000)
    model, weights = _model(args, cfg, train_x, train_y)
    example = _to_input(test_x[:2])
    out = args.output
    files = {"fp32": _export(model, example, out / "seg.onnx", "portable", False),
             "fp16": _export(model, example, out / "seg_fp16.onnx", "portable", True)}
    plugin_fp32 = _export(model, example, out / "seg_plugin.onnx", "plugin", False)
    plugin_fp16 = _export(model, example, out / "seg_plugin_fp16.onnx", "plugin", True)
    calib = _write_images(out / "calibration", train_x[:CALIBRATION_IMAGES])
    reports = {}
    for src, dst in ((files["fp32"], out / "seg_int8.onnx"), (plugin_fp32, out / "seg_plugin_int8.onnx")):
        reports[dst.name] = quantize(QuantizeOptions(src, output=dst, calibration_images=calib, progress=False),
                                     log=lambda _m: None)
    files["int8"] = out / "seg_int8.onnx"

    ref_logits, ref_pred = predict_torch(model, test_x)
    task = SegmentationTask()
    rows = [{"file": "PyTorch", "precision": "fp32", "miou": mean_iou(ref_pred, test_y, len(CLASSES))[0]}]
    for precision, path in files.items():
        assert precision_mode(__import__("onnx").load(str(path))) == precision, path
        logits, pred = predict(OnnxrtRunner(path, threads=args.threads), test_x)
        check = task.compare({"logits": ref_logits}, {"logits": logits}, precision)
        rows.append({"file": path.name, "precision": precision, "miou": mean_iou(pred, test_y, len(CLASSES))[0],
                     "argmax_agreement": float((pred == ref_pred).mean()),
                     "max_abs_logit_diff": float(np.abs(logits - ref_logits).max()),
                     "max_rel_logit_diff": check.details["max_rel"], "check": check.summary,
                     "check_passed": check.passed})
    builds = []
    if not args.no_engines:
        profile = {k: {"image": (n, 3, cfg.size, cfg.size)} for k, n in
                   (("min_shapes", 1), ("opt_shapes", 16), ("max_shapes", 16))}
        for path in (files["fp32"], files["fp16"], files["int8"]):
            builds.append({"file": path.name, **_build(path, path.with_suffix(".engine"), False, **profile)})
        if args.plugin:
            for path in (plugin_fp32, plugin_fp16, out / "seg_plugin_int8.onnx"):
                builds.append({"file": path.name, **_build(path, path.with_suffix(".engine"), True, **profile)})
        if args.full:
            builds += full_width_builds(out, args.plugin)
    results = {"weights": weights, "load_average_start": load, "load_average_end": os.getloadavg(),
               "calibration": f"{CALIBRATION_IMAGES} training images ({calib})", "accuracy": rows, "engines": builds,
               "quantize": reports}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")

    ref = rows[0]["miou"]
    print(f"\n{weights}; held-out: {cfg.test_count} images; load average {load[0]:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores)\n")
    print("| file | precision | runtime | mIoU (%) | Δ vs PyTorch (points) | argmax agreement | max abs logit diff "
          "| check (segmentation limits) |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["file"] == "PyTorch":
            print(f"| PyTorch | fp32 | PyTorch | {r['miou']:.2f} | +0.000 | - | - | - |")
            continue
        print(f"| {r['file']} | {r['precision']} | ONNX Runtime (CPU) | {r['miou']:.2f} | {r['miou'] - ref:+.3f} | "
              f"{r['argmax_agreement'] * 100:.3f}% | {r['max_abs_logit_diff']:.2e} | "
              f"{'passed' if r['check_passed'] else 'FAILED'} |")
    if builds:
        print("\n| file | CARAFE | precision | engine | build (wall / CPU) |\n|---|---|---|---|---|")
        for b in builds:
            if "refused" in b:
                print(f"| {b['file']} | refused: {b['refused']} | | | |")
            else:
                print(f"| {b['file']} | {b['carafe']} | {b['precision']} | {b['bytes'] / 2**20:.2f} MiB | "
                      f"{b['build_s']:.1f} s / {b['cpu_s']:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
