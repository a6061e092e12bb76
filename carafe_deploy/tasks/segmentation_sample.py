"""Train a small UperNet-CARAFE on synthetic shapes, export it, and compare mIoU across backends.

``run(out_dir, ...)`` does it all and returns a results dict; ``main(argv)`` is the command line
(``python samples/segmentation/synthetic.py --help``). Export and engine go through the deploy pipeline
(:func:`carafe_deploy.tasks.deploy`); the held-out images are written in mmseg's layout and every backend is
evaluated on them by :func:`~.evaluation.evaluate`, the code of ``carafe-deploy evaluate``: PyTorch eager (the
reference), ONNX Runtime on the ``portable``, ``decomposed`` and fp16 exports, and a TensorRT engine where TensorRT can
build one (run where a GPU is, else reported as built and not run; skipped with the reason where none can be built).

The model is ``upernet_r50_carafe_pp`` at reduced width and depth (one block per stage), so both CARAFE (10 modules in
the head) and CARAFE++ (7 in the backbone) are trained and exported.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..files import atomic_path, output_dir
from ..imaging import normalize
from ..models import build, spec
from ..models.checkpoint import save_checkpoint
from ..models.segmenters import count_carafe_modules
from ..onnx import to_decomposed
from ..onnx.files import load_model, save_model
from ..report import write_json
from .evaluation import DatasetOptions, EvaluateOptions
from .metrics import confusion_matrix, segmentation_metrics
from .pipeline import CheckOptions, EngineOptions, ExportOptions, deploy
from .samples import evaluate_sample, exported_files, metric_of, sample_engine, sample_main
from .source import LoadedModel
from .synthetic_shapes import CLASSES, PALETTE, make_set
from .training import fit, start_threads

MODEL_NAME = "upernet_r50_carafe_pp"
# reduced width/depth: ~0.5 M parameters, trains on 2 CPU cores in minutes
SMALL_CONFIG = dict(num_classes=len(CLASSES), channels=32, base_channels=8, stage_blocks=(1, 1, 1, 1),
                    compressed_channels=16)


@dataclass
class TrainConfig:
    # 400 steps: 76 mIoU in under 2 minutes of training on 2 cores (600 reach 79, in half as long again)
    steps: int = 400
    batch: int = 8
    size: int = 64
    train_count: int = 800
    test_count: int = 48
    lr: float = 3e-3
    seed: int = 0


def small_segmenter(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(MODEL_NAME, **SMALL_CONFIG)


def _to_input(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) 0..255 images -> the segmenter's input; the normalization the Triton ensemble runs too."""
    return torch.from_numpy(normalize(images.transpose(0, 3, 1, 2)))


def train(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, cfg: TrainConfig,
          progress: bool = True, threads: int | None = None, log=print) -> list[float]:
    """AdamW + cosine schedule with random flips; returns the loss per step.

    ``threads``: torch's CPU threads for the whole run; ``None`` follows the cores free of other work
    (:mod:`carafe_deploy.tasks.threads`), measured every few seconds. After the first steps, one line estimates
    the training time; the progress bar keeps it up to date (:class:`~.training.TrainingSteps`).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    x_all, y_all = _to_input(images), torch.from_numpy(labels)

    def batch_loss() -> torch.Tensor:
        idx = torch.randint(0, len(x_all), (cfg.batch,), generator=gen)
        x, y = x_all[idx], y_all[idx]
        if torch.rand((), generator=gen) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return F.cross_entropy(model(x), y)

    return fit(model, batch_loss, cfg.steps, cfg.lr, threads, progress, log)


def predict_torch(model: torch.nn.Module, images: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(logits float32 (N, K, H, W), argmax (N, H, W)) from PyTorch eager."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            outs.append(model(_to_input(images[i:i + batch])).numpy())
    logits = np.concatenate(outs)
    return logits, logits.argmax(1)


def predict(runner, images: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(logits float32 (N, K, H, W), argmax (N, H, W)) from any runner (ONNX Runtime, TensorRT)."""
    outs = []
    with runner:
        for i in range(0, len(images), batch):
            out = runner.infer({"image": _to_input(images[i:i + batch]).numpy()})
            outs.append(np.asarray(next(iter(out.values()))).astype(np.float32))
    logits = np.concatenate(outs)
    return logits, logits.argmax(1)


def _loaded(model: torch.nn.Module) -> LoadedModel:
    s = spec(MODEL_NAME)
    return LoadedModel(model, f"{MODEL_NAME} (small, trained on synthetic shapes)", input_names=list(s.input_names),
                       output_names=list(s.output_names), dynamic_axes=dict(s.dynamic_axes), dynamic_by_default=True,
                       weights="trained on synthetic shapes", spec=s, name=MODEL_NAME)


def _export(model, example: torch.Tensor, path: str, mode: str, engine: EngineOptions | None = None,
            fp16: bool = False) -> dict:
    # the evaluation over the test set is the comparison here, so the pipeline's check is off
    return deploy(_loaded(model), ExportOptions(output=path, mode=mode, fp16=fp16, input_shapes=[tuple(example.shape)]),
                  CheckOptions(enabled=False), engine, log=lambda _msg: None)


def save_figure(path: str, images: np.ndarray, labels: np.ndarray, preds: dict[str, np.ndarray],
                mious: dict[str, float], rows: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = min(rows, len(images))
    cols = 2 + len(preds)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows + 0.7), squeeze=False)
    titles = ["image", "ground truth"] + [f"{k}\nmIoU {mious[k]:.2f}" for k in preds]
    for r in range(rows):
        panels = [images[r], PALETTE[labels[r]]] + [PALETTE[p[r]] for p in preds.values()]
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
    handles = [Patch(color=PALETTE[i] / 255, label=n) for i, n in enumerate(CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=len(CLASSES), fontsize=8, frameon=False)
    fig.suptitle("UperNet-CARAFE (CARAFE ×10, CARAFE++ ×7) on held-out synthetic images", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


BACKENDS = ("portable", "decomposed", "fp16", "tensorrt")


_LIMITS = {"steps": 1, "batch": 1, "train_count": 1, "test_count": 2, "size": 8}


def check_arguments(names: dict[str, str] | None = None, **values: int) -> None:
    """``ValueError`` for the first of ``values`` (steps, batch, train_count, test_count, size) below its minimum,
    named as ``names`` says (the caller's option names), before any work."""
    for key, value in values.items():
        if value < _LIMITS[key]:
            label = (names or {}).get(key, key)
            raise ValueError(f"{label} must be >= {_LIMITS[key]}, got {value}")


def run(out_dir: str, steps: int = TrainConfig.steps, batch: int = 8, size: int = 64, train_count: int = 800,
        test_count: int = 48, lr: float = 3e-3, seed: int = 0, backends=BACKENDS, progress: bool = True, log=print,
        threads: int | None = None) -> dict:
    """Train, write the held-out images in mmseg's layout, export, evaluate (:func:`~.evaluation.evaluate`); write
    ``model.pth``, ``*.onnx``, ``report.json`` / ``.png``, ``segmentation_sample.png`` and ``results.json``.

    ``backends``: the exports evaluated beside PyTorch: ``portable``, ``decomposed``, ``fp16`` (ONNX Runtime) and
    ``tensorrt`` (an engine, built where TensorRT can build one: evaluated where it can run, else reported as built
    and not run). ``threads``: CPU threads of PyTorch and ONNX Runtime; ``None``: the cores free of other work,
    followed during training (:mod:`carafe_deploy.tasks.threads`).

    Returns ``{"report": evaluate's report, "train_seconds", "losses", "files", "config", "chance_miou",
    "command"}``.
    """
    cfg = TrainConfig(steps, batch, size, train_count, test_count, lr, seed)
    check_arguments(steps=steps, batch=batch, train_count=train_count, test_count=test_count, size=size)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; use {', '.join(BACKENDS)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    # removed again if interrupted before anything is written in it
    with output_dir(out_dir, "output folder") as out:
        return _run(out, cfg, backends, progress, log, threads)


def _run(out, cfg: TrainConfig, backends, progress: bool, log, threads: int | None) -> dict:
    from .datasets import write_segmentation

    steps, size = cfg.steps, cfg.size
    train_x, train_y = make_set(cfg.train_count, cfg.size, seed=cfg.seed)
    test_x, test_y = make_set(cfg.test_count, cfg.size, seed=cfg.seed + 10_000)  # disjoint stream: held out
    img_dir, ann_dir = write_segmentation(out / "data", test_x, test_y)
    model = small_segmenter(cfg.seed)
    counts = count_carafe_modules(model)
    threads_note = start_threads(threads)
    log(f"{MODEL_NAME} (small): {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{counts['up']} CARAFE, {counts['down']} CARAFE++ modules; {cfg.steps} steps on {cfg.train_count} training "
        f"images {size}x{size}, {threads_note}")
    t0 = time.perf_counter()
    losses = train(model, train_x, train_y, cfg, progress, threads, log)
    train_seconds = time.perf_counter() - t0
    files = {"checkpoint": str(out / "model.pth"), "report": str(out / "report.json"), "chart": str(out / "report.png"),
             "onnx_portable": str(out / "segmenter_portable.onnx")}
    save_checkpoint(model, files["checkpoint"], {"model": MODEL_NAME, "config": SMALL_CONFIG, "steps": steps})

    # batch 2: with a batch-1 example torch.export may specialise the batch dimension to 1
    example = _to_input(test_x[:2])
    engine = None
    if "tensorrt" in backends:
        files["engine"] = str(out / "segmenter.engine")
        engine = sample_engine(files["engine"])
    report = _export(model, example, files["onnx_portable"], "portable", engine)
    if "decomposed" in backends:
        # what --mode decomposed writes: the portable graph with each CARAFE node inlined; one export less
        files["onnx_decomposed"] = str(out / "segmenter_decomposed.onnx")
        save_model(to_decomposed(load_model(files["onnx_portable"])), files["onnx_decomposed"])
    if "fp16" in backends:
        files["onnx_fp16"] = str(out / "segmenter_fp16.onnx")
        _export(model, example, files["onnx_fp16"], "portable", fp16=True)
    loaded = _loaded(model)
    report = evaluate_sample(loaded, files, report, [k for k in ("portable", "decomposed", "fp16") if k in backends],
                             DatasetOptions(images=img_dir, labels=ann_dir),
                             EvaluateOptions(threads=torch.get_num_threads(), progress=progress), log)

    files["figure"] = str(out / "segmentation_sample.png")
    mious = {title: metric_of(report, *row) for title, row in
             (("PyTorch", ("PyTorch", "eager", "fp32")), ("ORT fp32", ("ONNX Runtime", "portable", "fp32")),
              ("ORT fp16", ("ONNX Runtime", "portable", "fp16")))}
    preds = {"PyTorch": predict_torch(model, test_x[:4])[1]}
    for key, title in (("onnx_portable", "ORT fp32"), ("onnx_fp16", "ORT fp16")):
        if mious[title] is not None:  # the files evaluated
            from ..backends import OnnxrtRunner

            preds[title] = predict(OnnxrtRunner(files[key], threads=torch.get_num_threads()), test_x[:4])[1]
    save_figure(files["figure"], test_x, test_y, preds, mious)
    command = (f"carafe-deploy evaluate {' '.join(exported_files(files))} --model {MODEL_NAME} "
               + " ".join(f"--set {_setting(k, v)}" for k, v in SMALL_CONFIG.items())
               + f" --checkpoint {files['checkpoint']} --images {img_dir} --labels {ann_dir} -o {files['report']}")
    results = {"report": report, "train_seconds": train_seconds, "losses": losses, "files": files,
               "config": vars(cfg), "chance_miou": _chance_miou(test_y), "command": command}
    write_json(out / "results.json", {k: v for k, v in results.items() if k != "losses"})
    return results


def _setting(key: str, value) -> str:
    """``KEY=VALUE`` as ``--set`` reads it (JSON), quoted for the shell."""
    return shlex.quote(f"{key}={json.dumps(value, separators=(',', ':'))}")


def _chance_miou(labels: np.ndarray) -> float:
    """mIoU of always predicting the most frequent class: the floor a trained model must clear."""
    majority = np.bincount(labels.ravel(), minlength=len(CLASSES)).argmax()
    return segmentation_metrics(confusion_matrix(np.full_like(labels, majority), labels, len(CLASSES)))["mIoU"]


def main(argv=None) -> int:
    return sample_main(
        argv, "Train a small UperNet-CARAFE (CARAFE and CARAFE++) on synthetic shapes, export it to ONNX (portable, "
        "decomposed, fp16; a TensorRT engine where one can be built), write the held-out images in mmseg's layout and "
        "evaluate mIoU with each backend (carafe-deploy evaluate); writes the checkpoint, the files, report.json, "
        "report.png, a picture, results.json and table.md.", "segmentation_sample_out", TrainConfig, "mIoU", run,
        lambda res: f"; chance mIoU {res['chance_miou']:.2f}")


if __name__ == "__main__":  # python -m carafe_deploy.tasks.segmentation_sample
    import sys

    sys.exit(main())
