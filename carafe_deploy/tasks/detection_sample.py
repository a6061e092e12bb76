"""Train a small Faster R-CNN with FPN-CARAFE on synthetic scenes, export it, and evaluate box AP per backend.

``run(out_dir, ...)`` does it all and returns a results dict; ``main(argv)`` is the command line
(``python samples/detection/synthetic.py --help``); ``carafe-deploy demo`` runs it too. The scenes are the segmentation
sample's shapes as objects (:func:`~.synthetic_shapes.make_scenes`: discs, squares, triangles, rings on striped,
noisy backgrounds); the held-out ones are written as a COCO dataset, which ``carafe-deploy evaluate`` reads like any
other. The model is ``faster_rcnn_r50_fpn_carafe --tiny`` with 4 classes (the structure and parameter names of
mmdet's config at narrow widths: 4 CARAFE modules in the FPN), trained from scratch with mmdet's losses
(:mod:`.detection_training`).

Backends (each through :func:`~.evaluation.evaluate`): PyTorch (the reference), ONNX Runtime on the portable export
at fp32 and fp16, the plugin-form file through ONNX Runtime's CARAFE custom-op library where this installation has it,
and the TensorRT engine, reported as built and not run (no GPU), or as skipped with the reason it could not be built.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..files import atomic_path, make_dir
from ..models import build, spec
from ..models.checkpoint import save_checkpoint
from ..models.detectors import TINY
from ..report import write_json
from .evaluation import DatasetOptions, EvaluateOptions
from .pipeline import CheckOptions, EngineOptions, ExportOptions, deploy
from .samples import evaluate_sample, exported_files, metric_of, sample_engine, sample_main
from .source import LoadedModel
from .synthetic_shapes import CLASSES, make_scenes
from .training import start_threads

MODEL_NAME = "faster_rcnn_r50_fpn_carafe"
OBJECT_CLASSES = CLASSES[1:]  # the shapes; background is no class for a detector
# --tiny's widths with one class per shape (builder options, as --tiny --set num_classes=4 gives them)
SMALL_CONFIG = dict(TINY, num_classes=len(OBJECT_CLASSES))
# what the sample evaluates, in order
BACKENDS = ("portable", "fp16", "plugin", "tensorrt")


@dataclass
class TrainConfig:
    # 200 steps: box AP50 0.75 on 64 held-out images after about 2 minutes of training on 1 core (measured)
    steps: int = 200
    batch: int = 8
    size: int = 96
    train_count: int = 800
    test_count: int = 64
    lr: float = 3e-3
    seed: int = 0


def small_detector(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(MODEL_NAME, **SMALL_CONFIG)


def _loaded(model, checkpoint: str) -> LoadedModel:
    s = spec(MODEL_NAME)
    return LoadedModel(model, f"{MODEL_NAME} (tiny, 4 classes, trained on synthetic scenes)",
                       input_names=list(s.input_names), output_names=list(s.output_names),
                       dynamic_axes=dict(s.dynamic_axes), dynamic_by_default=False, weights=os.path.basename(checkpoint),
                       spec=s, name=MODEL_NAME)


def _export(loaded: LoadedModel, size: int, path: str, fp16: bool, engine: EngineOptions | None = None) -> dict:
    # evaluate over the test set is the comparison here: the pipeline's own check is off
    return deploy(loaded, ExportOptions(output=path, mode="portable", fp16=fp16, input_shapes=[(1, 3, size, size)]),
                  CheckOptions(enabled=False), engine, log=lambda _msg: None)


def _plugin_form(portable: str, path: str) -> None:
    from ..onnx import to_plugin
    from ..onnx.files import load_model, save_model

    save_model(to_plugin(load_model(portable)), path)


def evaluate_command(files: dict, test_dir: str, size: int) -> str:
    """The ``carafe-deploy evaluate`` command line that gives the sample's table (for docs and the demo)."""
    exported = " ".join(exported_files(files))
    return (f"carafe-deploy evaluate {exported} --model {MODEL_NAME} --tiny --set num_classes={len(OBJECT_CLASSES)} "
            f"--checkpoint {files['checkpoint']} --images {test_dir}/images --annotations {test_dir}/instances.json "
            f"--scale {size},{size} -o {files['report']}")


def run(out_dir: str, steps: int = TrainConfig.steps, batch: int = TrainConfig.batch, size: int = TrainConfig.size,
        train_count: int = TrainConfig.train_count, test_count: int = TrainConfig.test_count, lr: float = TrainConfig.lr,
        seed: int = TrainConfig.seed, backends=BACKENDS, progress: bool = True, log=print,
        threads: int | None = None) -> dict:
    """Train, write the COCO test set, export, evaluate; write ``model.pth``, ``*.onnx``, ``report.json`` / ``.png``,
    ``detection_sample.png`` and ``results.json``. Returns ``{"report": evaluate's report, "train_seconds", "losses",
    "files", "config", "command"}``."""
    from .datasets import write_coco
    from .detection_training import train_detector

    cfg = TrainConfig(steps, batch, size, train_count, test_count, lr, seed)
    if steps < 1 or batch < 1 or train_count < 1 or test_count < 1 or size < 64:
        raise ValueError(f"need steps >= 1, batch >= 1, train_count >= 1, test_count >= 1 and size >= 64, got "
                         f"{steps}, {batch}, {train_count}, {test_count} and {size}")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; use {', '.join(BACKENDS)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    out = make_dir(out_dir, "output folder")
    train_set = make_scenes(cfg.train_count, cfg.size, seed=cfg.seed)
    test_set = make_scenes(cfg.test_count, cfg.size, seed=cfg.seed + 10_000)  # a disjoint stream: held out
    test_dir = out / "coco"
    write_coco(test_dir, [s.image for s in test_set], [s.boxes for s in test_set], [s.classes - 1 for s in test_set],
               [s.masks for s in test_set], OBJECT_CLASSES)
    model = small_detector(cfg.seed)
    threads_note = start_threads(threads)
    objects = sum(len(s.classes) for s in train_set)
    log(f"{MODEL_NAME} (tiny, {len(OBJECT_CLASSES)} classes): {sum(p.numel() for p in model.parameters()):,} "
        f"parameters, 4 CARAFE modules; {cfg.steps} steps of {cfg.batch} on {cfg.train_count} training images "
        f"{size}x{size} ({objects} objects), {threads_note}")
    t0 = time.perf_counter()
    losses = train_detector(model, np.stack([s.image for s in train_set]), [s.boxes for s in train_set],
                            [s.classes - 1 for s in train_set], cfg.steps, cfg.batch, cfg.lr, cfg.seed,
                            progress=progress, threads=threads, log=log)
    train_seconds = time.perf_counter() - t0
    files = {"checkpoint": str(out / "model.pth"), "report": str(out / "report.json"), "chart": str(out / "report.png")}
    save_checkpoint(model, files["checkpoint"], {"model": MODEL_NAME, "config": SMALL_CONFIG, "steps": steps})
    loaded = _loaded(model, files["checkpoint"])

    files["onnx_portable"] = str(out / "detector.onnx")
    engine = None
    if "tensorrt" in backends:
        files["engine"] = str(out / "detector.engine")
        engine = sample_engine(files["engine"])
    export_report = _export(loaded, size, files["onnx_portable"], False, engine)
    if "fp16" in backends:
        files["onnx_fp16"] = str(out / "detector_fp16.onnx")
        _export(loaded, size, files["onnx_fp16"], True)
    if "plugin" in backends:
        files["onnx_plugin"] = str(out / "detector_plugin.onnx")
        _plugin_form(files["onnx_portable"], files["onnx_plugin"])
    report = evaluate_sample(loaded, files, export_report, [k for k in ("portable", "fp16", "plugin") if k in backends],
                             DatasetOptions(images=test_dir / "images", annotations=test_dir / "instances.json"),
                             EvaluateOptions(scale=(size, size), threads=torch.get_num_threads(), progress=progress),
                             log)
    files["figure"] = str(out / "detection_sample.png")
    save_figure(files["figure"], test_set[:4], loaded, files, size, report)
    results = {"report": report, "train_seconds": train_seconds, "losses": losses, "files": files,
               "config": asdict(cfg), "command": evaluate_command(files, str(test_dir), size)}
    write_json(out / "results.json", {k: v for k, v in results.items() if k != "losses"})
    return results


def save_figure(path: str, scenes, loaded: LoadedModel, files: dict, size: int, report: dict,
                score_thr: float = 0.5) -> None:
    """Ground truth and each evaluated backend's detections (score >= ``score_thr``) on a few held-out images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from ..backends import OnnxrtRunner, TorchRunner
    from .detection import detect_active
    from .drawing import draw_detections

    panels = {"ground truth": None, "PyTorch": TorchRunner(loaded.model, loaded.input_names, loaded.output_names,
                                                             device="cpu")}
    for key, title in (("onnx_portable", "ONNX Runtime fp32"), ("onnx_fp16", "ONNX Runtime fp16")):
        if key in files:
            panels[title] = OnnxrtRunner(files[key])
    ap = {title: metric_of(report, *row, metric="bbox_mAP_50") for title, row in
          (("PyTorch", ("PyTorch", "eager", "fp32")), ("ONNX Runtime fp32", ("ONNX Runtime", "portable", "fp32")),
           ("ONNX Runtime fp16", ("ONNX Runtime", "portable", "fp16")))}
    zoom = max(2, 288 // size)  # the labels' font is drawn at image pixels: on a larger image it covers less
    cells = {}
    for title, runner in panels.items():
        if runner is not None:
            runner.activate()
        try:
            for i, scene in enumerate(scenes):
                img = Image.fromarray(scene.image)
                if runner is None:
                    dets = np.concatenate([scene.boxes, np.ones((len(scene.boxes), 1), np.float32)], 1)
                    labels = scene.classes - 1
                else:
                    out = detect_active(runner, img, (size, size))
                    dets, labels = out["dets"].copy(), out["labels"]
                dets[:, :4] *= zoom
                big = img.resize((size * zoom, size * zoom), Image.NEAREST)
                cells[title, i] = draw_detections(big, dets, labels, None, OBJECT_CLASSES, score_thr,
                                                  scores=runner is not None)
        finally:
            if runner is not None:
                runner.deactivate()
    cols, rows = len(panels), len(scenes)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.1 * rows + 0.5), squeeze=False)
    for c, title in enumerate(panels):
        for r in range(rows):
            ax = axes[r][c]
            ax.imshow(cells[title, r])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title + (f"\nbox AP50 {ap[title]:.3f}" if ap.get(title) is not None else "\n"), fontsize=8)
    fig.suptitle(f"Faster R-CNN with FPN-CARAFE on held-out synthetic scenes (detections scoring >= {score_thr})",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    plt.close(fig)
    # the noisy backgrounds make a full-colour PNG of 1.2 MB; 128 colours look the same at a sixth of it
    picture = Image.open(buffer).convert("RGB").quantize(colors=128, dither=Image.Dither.NONE)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG", optimize=True)


def main(argv=None) -> int:
    return sample_main(
        argv, "Train a small Faster R-CNN with FPN-CARAFE on synthetic scenes, write the held-out scenes as a COCO "
        "dataset, export the model (ONNX portable, fp16, plugin form; a TensorRT engine where one can be built) and "
        "evaluate box AP with each backend (carafe-deploy evaluate); writes the checkpoint, the files, report.json, "
        "report.png, a picture, results.json and table.md.", "detection_sample_out", TrainConfig, "box AP", run)


if __name__ == "__main__":  # python -m carafe_deploy.tasks.detection_sample
    import sys

    sys.exit(main())
