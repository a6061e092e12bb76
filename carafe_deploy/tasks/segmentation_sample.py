"""Train a small UperNet-CARAFE on synthetic shapes, export it, and compare mIoU across backends.

``run(out_dir, ...)`` does it all and returns a results dict; ``main(argv)`` is the command line
(``python samples/segmentation/synthetic.py --help``). Export and engine go through the deploy pipeline
(:func:`carafe_deploy.tasks.deploy`); every backend runs through :mod:`carafe_deploy.backends`. Backends: PyTorch eager (the reference), ONNX Runtime on the
``portable`` and ``decomposed`` exports, and TensorRT (plugin engine) when TensorRT and the plugin library load;
otherwise TensorRT is reported as skipped with the reason.

The model is ``upernet_r50_carafe_pp`` at reduced width and depth (one block per stage), so both CARAFE (10 modules in
the head) and CARAFE++ (7 in the backbone) are trained and exported.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import ArgumentParser, run_guarded
from ..files import atomic_path, atomic_write_text, output_dir
from ..imaging import normalize
from ..models import build, spec
from ..models.checkpoint import save_checkpoint
from ..models.segmenters import count_carafe_modules
from ..onnx import to_decomposed
from ..onnx.files import load_model, save_model
from ..report import make_table, write_json
from ..trt.availability import plugin_engine_unavailable
from .pipeline import CheckOptions, EngineOptions, ExportOptions, deploy
from .source import LoadedModel
from .synthetic_shapes import CLASSES, PALETTE, make_set, mean_iou
from .threads import CoreMonitor, auto_threads, threads_for

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


# the first step pays for lazy initialisation; the estimate of the training time is taken over the next ones
_ESTIMATE_STEPS = 3
# with automatic threads, the free cores are measured again this often (seconds) and the thread count follows
_RECHECK_SECONDS = 5.0


def train(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, cfg: TrainConfig,
          progress: bool = True, threads: int | None = None, log=print) -> list[float]:
    """AdamW + cosine schedule with random flips; returns the loss per step.

    ``threads``: torch's CPU threads for the whole run; ``None`` follows the cores free of other work
    (:mod:`carafe_deploy.tasks.threads`), measured every few seconds. After the first steps, one line estimates
    the training time; the progress bar keeps it up to date.
    """
    if threads:
        torch.set_num_threads(threads)
    monitor, checked = (CoreMonitor(), time.monotonic()) if threads is None else (None, 0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_all, y_all = _to_input(images), torch.from_numpy(labels)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    model.train()
    losses = []
    bar = tqdm(range(cfg.steps), desc=f"training ({_threads(torch.get_num_threads())})", unit="step",
               disable=not progress, dynamic_ncols=True)
    say = bar.write if progress else log
    for step in bar:
        if step == 1:
            t1 = time.perf_counter()
        elif step == 1 + _ESTIMATE_STEPS and cfg.steps > step:
            per_step = (time.perf_counter() - t1) / _ESTIMATE_STEPS
            say(f"training time estimate: {_duration(per_step * cfg.steps)} for {cfg.steps} steps ({per_step:.2f} s "
                f"per step over the first steps, {_threads(torch.get_num_threads())})")
        if monitor is not None and time.monotonic() - checked > _RECHECK_SECONDS:
            checked, n = time.monotonic(), threads_for(monitor.free_cores())
            if n != torch.get_num_threads():
                torch.set_num_threads(n)
                bar.set_description(f"training ({_threads(n)})")
        idx = torch.randint(0, len(x_all), (cfg.batch,), generator=gen)
        x, y = x_all[idx], y_all[idx]
        if torch.rand((), generator=gen) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    return losses


def _threads(n: int) -> str:
    return f"{n} thread{'s' * (n != 1)}"


def _duration(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


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


def _export(model, example: torch.Tensor, path: str, mode: str, engine: EngineOptions | None = None) -> dict:
    # the sample's own evaluation over the test set is the comparison here, so the pipeline's check is off
    return deploy(_loaded(model), ExportOptions(output=path, mode=mode, input_shapes=[tuple(example.shape)]),
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


_LIMITS = {"steps": 1, "batch": 1, "train_count": 1, "test_count": 2, "size": 8}


def check_arguments(names: dict[str, str] | None = None, **values: int) -> None:
    """``ValueError`` for the first of ``values`` (steps, batch, train_count, test_count, size) below its minimum,
    named as ``names`` says (the caller's option names), before any work."""
    for key, value in values.items():
        if value < _LIMITS[key]:
            label = (names or {}).get(key, key)
            raise ValueError(f"{label} must be >= {_LIMITS[key]}, got {value}")


def run(out_dir: str, steps: int = TrainConfig.steps, batch: int = 8, size: int = 64, train_count: int = 800,
        test_count: int = 48, lr: float = 3e-3, seed: int = 0, backends=("portable", "decomposed", "tensorrt"),
        progress: bool = True, log=print, threads: int | None = None) -> dict:
    """Train, export, evaluate; write ``model.pth``, ``*.onnx``, ``segmentation_sample.png`` and ``results.json``.

    ``threads``: CPU threads of PyTorch and ONNX Runtime; ``None``: the cores free of other work, followed during
    training (:mod:`carafe_deploy.tasks.threads`).

    Returns ``{"miou": {backend: percent}, "skipped": {backend: reason}, "argmax_agreement": {...},
    "max_abs_logit_diff": {...}, "train_seconds", "losses", "files"}``.
    """
    cfg = TrainConfig(steps, batch, size, train_count, test_count, lr, seed)
    check_arguments(steps=steps, batch=batch, train_count=train_count, test_count=test_count, size=size)
    unknown = [b for b in backends if b not in ("portable", "decomposed", "tensorrt")]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; use portable, decomposed or tensorrt")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    # removed again if interrupted before anything is written in it
    with output_dir(out_dir, "output folder"):
        return _run(out_dir, cfg, backends, progress, log, threads)


def _run(out_dir: str, cfg: TrainConfig, backends, progress: bool, log, threads: int | None) -> dict:
    steps, size = cfg.steps, cfg.size
    train_x, train_y = make_set(cfg.train_count, cfg.size, seed=cfg.seed)
    test_x, test_y = make_set(cfg.test_count, cfg.size, seed=cfg.seed + 10_000)  # disjoint stream: held out
    model = small_segmenter(cfg.seed)
    counts = count_carafe_modules(model)
    if threads is None:
        n, why = auto_threads()
        torch.set_num_threads(n)
        threads_note = f"{_threads(n)} to start with ({why})"
    else:
        threads_note = _threads(threads)
    log(f"{MODEL_NAME} (small): {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{counts['up']} CARAFE, {counts['down']} CARAFE++ modules; {cfg.steps} steps on {cfg.train_count} training "
        f"images {size}x{size}, {threads_note}")
    t0 = time.perf_counter()
    losses = train(model, train_x, train_y, cfg, progress, threads, log)
    train_seconds = time.perf_counter() - t0
    files = {"checkpoint": os.path.join(out_dir, "model.pth")}
    save_checkpoint(model, files["checkpoint"], {"model": MODEL_NAME, "config": SMALL_CONFIG, "steps": steps})

    ref_logits, ref_pred = predict_torch(model, test_x)
    preds = {"PyTorch": ref_pred}
    results = {"miou": {"PyTorch": mean_iou(ref_pred, test_y, len(CLASSES))[0]}, "skipped": {},
               "argmax_agreement": {}, "max_abs_logit_diff": {}}
    # batch 2: with a batch-1 example torch.export may specialise the batch dimension to 1
    example = _to_input(test_x[:2])
    for backend in backends:
        if backend in ("portable", "decomposed"):
            from ..backends import OnnxrtRunner

            path = os.path.join(out_dir, f"segmenter_{backend}.onnx")
            if backend == "decomposed" and "onnx_portable" in files:
                # what --mode decomposed writes: the portable graph with each CARAFE node inlined; one export less
                save_model(to_decomposed(load_model(files["onnx_portable"])), path)
            else:
                _export(model, example, path, backend)
            files[f"onnx_{backend}"] = path
            logits, pred = predict(OnnxrtRunner(path, threads=torch.get_num_threads()), test_x)
            key = f"ORT {backend}"
        else:
            reason = plugin_engine_unavailable()
            if reason:
                results["skipped"]["TensorRT"] = reason
                continue
            from ..backends import TrtRunner  # pragma: no cover -- needs TensorRT and a GPU

            path = os.path.join(out_dir, "segmenter_plugin.onnx")
            files["engine"] = os.path.join(out_dir, "segmenter.engine")
            shape = lambda n: (n, 3, cfg.size, cfg.size)  # noqa: E731
            _export(model, example, path, "plugin", EngineOptions(
                path=files["engine"], min_shapes={"image": shape(1)}, opt_shapes={"image": shape(16)},
                max_shapes={"image": shape(16)}, progress=False))
            logits, pred = predict(TrtRunner(files["engine"]), test_x)
            key = "TensorRT"
        preds[key] = pred
        results["miou"][key] = mean_iou(pred, test_y, len(CLASSES))[0]
        results["argmax_agreement"][key] = float((pred == ref_pred).mean())
        results["max_abs_logit_diff"][key] = float(np.abs(logits - ref_logits).max())

    files["figure"] = os.path.join(out_dir, "segmentation_sample.png")
    save_figure(files["figure"], test_x, test_y, preds, results["miou"])
    results.update(train_seconds=train_seconds, losses=losses, files=files, config=vars(cfg),
                   chance_miou=_chance_miou(test_y))
    write_json(os.path.join(out_dir, "results.json"), {k: v for k, v in results.items() if k != "losses"})
    return results


def _chance_miou(labels: np.ndarray) -> float:
    """mIoU of always predicting the most frequent class: the floor a trained model must clear."""
    majority = np.bincount(labels.ravel(), minlength=len(CLASSES)).argmax()
    return mean_iou(np.full_like(labels, majority), labels, len(CLASSES))[0]


def format_table(results: dict) -> str:
    """A Markdown table of mIoU per backend with the difference to PyTorch."""
    ref = results["miou"]["PyTorch"]
    lines = ["| backend | mIoU (%) | Δ vs PyTorch (points) | argmax agreement | max abs logit diff |",
             "|---|---|---|---|---|"]
    for k, v in results["miou"].items():
        agree = results["argmax_agreement"].get(k)
        diff = results["max_abs_logit_diff"].get(k)
        lines.append(f"| {k} | {v:.2f} | {v - ref:+.3f} | "
                     f"{'-' if agree is None else f'{agree * 100:.3f}%'} | {'-' if diff is None else f'{diff:.2e}'} |")
    for k, reason in results["skipped"].items():
        lines.append(f"| {k} | skipped: {reason} | | | |")
    return "\n".join(lines)


def rich_table(results: dict, said=()):
    """The same content as :func:`format_table`, as a table for the terminal (``carafe-deploy demo``); skip reasons
    once, below it (a reason in ``said``, already printed above, is referred to, not repeated)."""
    ref = results["miou"]["PyTorch"]
    rows = []
    for k, v in results["miou"].items():
        agree = results["argmax_agreement"].get(k)
        diff = results["max_abs_logit_diff"].get(k)
        rows.append((k, f"{v:.2f}", f"{v - ref:+.3f}", "-" if agree is None else f"{agree * 100:.3f}%",
                     "-" if diff is None else f"{diff:.2e}"))
    rows += [(k, "[yellow]skipped[/]", "", "", "") for k in results["skipped"]]
    notes = [f"{k}: skipped: {'the reason above' if reason in said else reason}"
             for k, reason in results["skipped"].items()]
    return make_table("UperNet-CARAFE on held-out synthetic images: mIoU per backend",
                      ("backend", "mIoU (%)", "Δ vs PyTorch", "argmax agreement", "max |Δlogit|"), rows, notes)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown, except ``None``: such an option's help says what it defaults to."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def main(argv=None) -> int:
    p = ArgumentParser(
        description="Train a small UperNet-CARAFE (CARAFE and CARAFE++) on synthetic shapes, export it to ONNX "
                    "(portable and decomposed), and compare mIoU of PyTorch, ONNX Runtime and TensorRT (when "
                    "present); writes the checkpoint, the ONNX files, a PNG, results.json and table.md.",
        formatter_class=_HelpFormatter)
    p.add_argument("-o", "--output", "--out", dest="out", default="segmentation_sample_out", metavar="DIR",
                   help="output folder")
    p.add_argument("--steps", type=int, default=TrainConfig.steps, metavar="N", help="training steps")
    p.add_argument("--batch", type=int, default=TrainConfig.batch, metavar="N", help="training batch")
    p.add_argument("--size", type=int, default=TrainConfig.size, metavar="PIXELS", help="image size")
    p.add_argument("--train-count", type=int, default=TrainConfig.train_count, metavar="N",
                   help="synthetic training images")
    p.add_argument("--test-count", type=int, default=TrainConfig.test_count, metavar="N",
                   help="held-out images the mIoU is measured on")
    p.add_argument("--seed", type=int, default=TrainConfig.seed, metavar="N", help="seed of data, weights and order")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads of PyTorch and ONNX Runtime (default: the cores free of other work, followed "
                        "during training)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = p.parse_args(argv)
    return run_guarded(p.prog, lambda: _main(args), debug=args.debug)


def _main(args) -> int:
    res = run(args.out, steps=args.steps, batch=args.batch, size=args.size, train_count=args.train_count,
              test_count=args.test_count, seed=args.seed, threads=args.threads)
    print(f"trained {args.steps} steps in {res['train_seconds']:.0f} s; chance mIoU {res['chance_miou']:.2f}")
    print(format_table(res))
    atomic_write_text(os.path.join(args.out, "table.md"), format_table(res) + "\n")
    print(f"figure: {res['files']['figure']}")
    return 0


if __name__ == "__main__":  # python -m carafe_deploy.tasks.segmentation_sample
    import sys

    sys.exit(main())
