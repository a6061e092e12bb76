"""Accuracy on a dataset, per backend and precision (``carafe-deploy evaluate``): the table mmdeploy publishes for its
models, box / mask AP or mIoU for PyTorch, ONNX Runtime and TensorRT at each precision, with the difference to PyTorch.

Each backend runs over the whole dataset with the task family's own pre- and post-processing
(:func:`~.detection.detect_active`, :mod:`carafe_deploy.imaging`); the metrics are :mod:`.metrics`' (the COCO evaluator
for detection, mmseg's IoU metric for segmentation).

    rows = backends_for(loaded_model, ["det.onnx", "det_fp16.onnx", "det.engine"])
    report = evaluate(rows, DatasetOptions(images="val/images", annotations="val/instances.json"))
    write_report(report, "report.json", "report.png")      # carafe_deploy.tasks.evaluation_report

A backend that cannot run here is a row that says why (``skipped``, or ``built, not run`` for an engine without a GPU
to run it); a backend that fails on the data is a row with the error. Never a number that was not measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import DeployError, MissingDependencyError
from ..imaging import DETECTION_SCALE, label_map, segmentation_input
from .source import LoadedModel

__all__ = ["DatasetOptions", "EvaluateOptions", "Backend", "backends_for", "evaluate", "check_task", "HEADLINE"]

# the metric each task is judged by
HEADLINE = {"detection": "bbox_mAP", "segmentation": "mIoU"}
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass
class DatasetOptions:
    """The dataset: ``images`` with ``annotations`` (COCO instances JSON: detection) or ``labels`` (a folder of label
    maps, mmseg's ``ann_dir``: segmentation)."""

    images: Path
    annotations: Path | None = None
    labels: Path | None = None
    label_suffix: str = ".png"
    ignore_index: int = 255
    limit: int | None = None  # the first N images only
    _loaded: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def task(self) -> str:
        if (self.annotations is None) == (self.labels is None):
            raise DeployError("give the dataset's ground truth: --annotations INSTANCES.json (detection, COCO) or "
                              "--labels DIR (segmentation label maps), one of them")
        return "detection" if self.annotations is not None else "segmentation"

    def inputs(self) -> list[Path]:
        return [Path(p) for p in (self.annotations,) if p]

    def check(self) -> None:
        """The paths and settings, before any work (:meth:`load` reads the files)."""
        if self.limit is not None and self.limit < 1:
            raise DeployError(f"--limit must be >= 1, got {self.limit}")
        if self.task == "detection" and not Path(self.annotations).is_file():
            raise DeployError(f"--annotations {self.annotations}: no such file")
        for option, folder in (("--images", self.images), ("--labels", self.labels)):
            if folder is not None and not Path(folder).is_dir():
                raise DeployError(f"{option} {folder}: no such folder")

    def load(self):
        """The dataset (read once: the command line reads it before the models, to report its problems first)."""
        from .datasets import load_coco, load_segmentation

        if self._loaded is None:
            self.check()
            if self.task == "detection":
                self._loaded = load_coco(self.annotations, self.images, self.limit)
            else:
                self._loaded = load_segmentation(self.images, self.labels, self.label_suffix, self.ignore_index,
                                                 self.limit)
        return self._loaded


@dataclass
class EvaluateOptions:
    scale: tuple[int, int] = DETECTION_SCALE  # detection: mmdet's keep-ratio resize limits (dynamic graphs, PyTorch)
    threads: int | None = None  # ONNX Runtime's intra-op threads (PyTorch: torch's setting)
    progress: bool = True


@dataclass
class Backend:
    """One row of the table: a backend at a precision, and how to make its runner (``None``: it cannot run here,
    ``status`` and ``reason`` say why)."""

    backend: str  # "PyTorch", "ONNX Runtime", "TensorRT"
    precision: str
    form: str  # "eager"; the CARAFE form of an ONNX file; the engine's
    file: str | None = None
    make_runner: Callable[[], object] | None = None
    status: str = "evaluated"  # else "skipped" or "built, not run"
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.backend} ({self.form})" if self.form != "eager" else self.backend


# --------------------------------------------------------------------------------------------------------------
# the rows


def _torch_row(loaded: LoadedModel, task: str) -> Backend:
    from ..backends import TorchRunner

    names = loaded.input_names or ["image"]
    # a model of unknown output names (--python, TorchScript) gives them as output0, output1...: detection reads them
    # in the registered detectors' order (_InferGuard)
    outputs = loaded.output_names
    dtype = "fp32"
    params = getattr(loaded.model, "parameters", None)
    if params is not None:
        first = next(iter(params()), None)
        dtype = {"torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(getattr(first, "dtype", "")), "fp32")
    notes = ["RANDOM weights: the PyTorch model is not a trained one"] if loaded.weights == "random" else []
    return Backend("PyTorch", dtype, "eager", None, lambda: TorchRunner(loaded.model, names, outputs, device="cpu"),
                   notes=notes)


def _plugin_library_missing() -> str | None:
    """Why ONNX Runtime cannot run plugin-form files here (the CARAFE custom-op library cannot be built), or None."""
    from ..errors import MissingDependencyError
    from ..onnxruntime import library_path

    try:
        library_path()
    except MissingDependencyError as exc:
        return str(exc)
    return None


def _onnx_row(path: Path, threads: int | None) -> Backend:
    from ..backends import OnnxrtRunner
    from ..onnx.describe import carafe_form, precision
    from ..onnx.files import load_model

    model = load_model(path)
    form = carafe_form(model)
    row = Backend("ONNX Runtime", precision(model), form, str(path),
                  lambda: OnnxrtRunner(path, threads=threads, name=f"onnxruntime {path.name}"))
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("carafe_deploy.weights") == "random":  # the export records where the weights came from
        row.notes.append(f"{path.name}: RANDOM weights (its metadata says so)")
    missing = _plugin_library_missing() if form == "plugin" else None
    if missing:
        row.make_runner, row.status = None, "skipped"
        row.reason = (f"a plugin-form file runs in ONNX Runtime through the CARAFE custom-op library, and {missing}; "
                      "`carafe-deploy convert FILE --to portable` makes a file ONNX Runtime runs as it is")
    return row


def _engine_row(path: Path) -> Backend:
    from ..backends import TrtRunner
    from ..trt import read_sidecar, run_unavailable

    try:
        sidecar = read_sidecar(path)
    except ValueError as exc:
        raise DeployError(f"{path}: its sidecar is unreadable: {exc}") from None
    precision = ((sidecar or {}).get("precision") or {}).get("mode", "unknown")
    graph = (sidecar or {}).get("graph") or {}
    runtime = (sidecar or {}).get("runtime") or {}
    form = f"CARAFE {graph['carafe_form']}" if graph.get("carafe_form") not in (None, "none") else "engine"
    row = Backend("TensorRT", precision, form, str(path), lambda: TrtRunner(path))
    if runtime:
        row.backend = "TensorRT-RTX" if runtime.get("name") == "tensorrt-rtx" else "TensorRT"
    reason = run_unavailable()
    if reason is not None:
        row.make_runner, row.status, row.reason = None, "built, not run", reason
    return row


def backends_for(loaded: LoadedModel | None, files: Sequence[str | Path] = (), task: str | None = None,
                 threads: int | None = None) -> list[Backend]:
    """The rows for a PyTorch model (``loaded``, the reference) and exported files: ONNX files in any form and
    precision (``export``'s, ``quantize``'s, another tool's) and TensorRT engines."""
    from ..files import require_file

    rows = [_torch_row(loaded, task or "detection")] if loaded is not None else []
    for f in files:
        path = Path(f)
        try:
            require_file(path, "model file")
        except FileNotFoundError as exc:
            raise DeployError(str(exc)) from None
        if path.suffix.lower() == ".onnx":
            rows.append(_onnx_row(path, threads))
        elif path.suffix.lower() in ENGINE_SUFFIXES:
            rows.append(_engine_row(path))
        else:
            raise DeployError(f"{path}: neither an ONNX file (.onnx) nor a TensorRT engine "
                              f"({', '.join(ENGINE_SUFFIXES)})")
    if not rows:
        raise DeployError("nothing to evaluate: give ONNX files or engines, and/or a PyTorch model (--model, "
                          "--python, ...)")
    return rows


# --------------------------------------------------------------------------------------------------------------
# running one backend over the dataset


class _BackendFailed(Exception):
    """The runtime failed on an input (not the user's data): the row reports it."""


def _infer(runner, feeds):
    try:
        return runner.infer(feeds)
    except (DeployError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 -- each runtime raises its own types (ORT's Fail, TensorRT's...)
        raise _BackendFailed(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc


_DETECTION_OUTPUTS = ("dets", "labels", "masks")


class _InferGuard:
    """A detector's runner whose ``infer`` reports the runtime's failures as :class:`_BackendFailed` and names
    unnamed outputs (``output0``, ``output1``, ...) in the registered detectors' order."""

    def __init__(self, runner):
        self.runner = runner

    def input_metadata(self):
        return self.runner.input_metadata()

    def infer(self, feeds):
        out = _infer(self.runner, feeds)
        if "dets" not in out and all(k == f"output{i}" for i, k in enumerate(out)):
            out = dict(zip(_DETECTION_OUTPUTS, out.values()))
        return out


def _detections(runner, dataset, scale, bar) -> tuple[list[dict], bool]:
    """COCO results of ``runner`` over ``dataset``; and whether the model gives masks."""
    from ..models.detectors import paste_masks
    from .detection import detect_active
    from .metrics import coco_evaluator

    guarded = _InferGuard(runner)
    results, with_masks = [], False
    cats = dataset.category_ids
    for image_id, image in dataset:
        out = detect_active(guarded, image, scale)
        keep = out["labels"] >= 0
        dets, labels = out["dets"][keep], out["labels"][keep].astype(np.int64)
        if len(labels) and labels.max() >= len(cats):
            raise DeployError(f"the model predicts class {int(labels.max())}; the annotations have {len(cats)} "
                              f"categories ({', '.join(dataset.class_names[:5])}{', ...' if len(cats) > 5 else ''})"
                              ": is it the model for this dataset? (--set num_classes=N builds one of N classes)")
        rles = None
        if out["masks"] is not None:
            with_masks = True
            _, _, mask_api = coco_evaluator()
            pasted = paste_masks(out["masks"][keep], dets[:, :4], image.height, image.width).numpy()
            rles = [mask_api.encode(np.asfortranarray(m.astype(np.uint8))) for m in pasted]
        for k, ((x1, y1, x2, y2, score), label) in enumerate(zip(dets, labels)):
            entry = {"image_id": image_id, "category_id": cats[label], "score": float(score),
                     "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
            if rles is not None:
                entry["segmentation"] = rles[k]
            results.append(entry)
        bar.update()
    return results, with_masks


def _detection_metrics(runner, dataset, options: EvaluateOptions, bar) -> tuple[dict, list[str]]:
    from .metrics import coco_metrics

    results, with_masks = _detections(runner, dataset, options.scale, bar)
    iou_types = ["bbox"]
    notes = []
    if with_masks and dataset.has_masks:
        iou_types.append("segm")
    elif with_masks:
        notes.append("the model gives masks, the annotations have none: box AP only")
    metrics = coco_metrics(dataset.coco, results, iou_types, dataset.image_ids)
    metrics["detections"] = len(results)
    return metrics, notes


def _segmentation_metrics(runner, dataset, bar) -> tuple[dict, list[str]]:
    from .metrics import confusion_matrix, segmentation_metrics

    (meta,) = runner.input_metadata()[:1]
    total = None
    for name, image, label in dataset:
        out = _infer(runner, {meta.name: segmentation_input(image)})
        logits = next(iter(out.values()))
        if logits.ndim != 4 or logits.shape[0] != 1:
            raise DeployError(f"a segmenter gives (N, classes, H, W) logits; this model gives {list(logits.shape)}")
        pred = label_map(logits)[0]
        if pred.shape != label.shape:
            raise DeployError(f"label map of {name} is {label.shape[1]}x{label.shape[0]}, the model's output for it "
                              f"{pred.shape[1]}x{pred.shape[0]}")
        classes = logits.shape[1]
        valid = label[label != dataset.ignore_index]
        if valid.size and (valid.min() < 0 or valid.max() >= classes):
            raise DeployError(f"label map of {name} has class {int(valid.max())}; the model has {classes} classes "
                              f"(pixels of --ignore-index {dataset.ignore_index} are left out)")
        cm = confusion_matrix(pred, label, classes, dataset.ignore_index)
        total = cm if total is None else total + cm
        bar.update()
    return segmentation_metrics(total), []


def _run_row(row: Backend, task: str, dataset, options: EvaluateOptions, log) -> dict:
    from tqdm import tqdm

    entry = {"backend": row.backend, "precision": row.precision, "form": row.form, "file": row.file,
             "status": row.status, "metrics": {}}
    if row.make_runner is None:
        entry["reason"] = row.reason
        return entry
    runner = row.make_runner()
    try:
        runner.activate()
    except MissingDependencyError as exc:
        entry.update(status="skipped", reason=str(exc))
        return entry
    except DeployError as exc:  # a runtime that refuses this file (an op it lacks, say): the row says so
        entry.update(status="error", reason=str(exc))
        log(f"{row.label} {row.precision}: error: {exc}")
        return entry
    t0 = time.perf_counter()
    bar = tqdm(total=len(dataset), desc=f"{row.label} {row.precision}", unit="image", disable=not options.progress,
               dynamic_ncols=True, leave=False)
    try:
        if task == "detection":
            metrics, notes = _detection_metrics(runner, dataset, options, bar)
        else:
            metrics, notes = _segmentation_metrics(runner, dataset, bar)
    except _BackendFailed as exc:
        entry.update(status="error", reason=str(exc))
        log(f"{row.label} {row.precision}: error: {exc}")
        return entry
    finally:
        bar.close()
        runner.deactivate()
    seconds = time.perf_counter() - t0
    entry.update(metrics=metrics, seconds=round(seconds, 2), images_per_second=round(len(dataset) / seconds, 2))
    if notes:
        entry["notes"] = notes
    return entry


def check_task(loaded_task: str | None, task: str) -> None:
    """``DeployError`` when the PyTorch model's task family is not the dataset's."""
    if loaded_task in ("detection", "segmentation") and loaded_task != task:
        other = "--labels DIR (label maps)" if loaded_task == "segmentation" else "--annotations INSTANCES.json"
        raise DeployError(f"the PyTorch model is a {loaded_task} model; the dataset given is a {task} dataset "
                          f"(give {other})")


def evaluate(rows: Sequence[Backend], dataset: DatasetOptions, options: EvaluateOptions | None = None,
             model: str | None = None, model_task: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Run every row over the dataset; returns the report: ``{"task", "model", "dataset", "reference",
    "headline", "backends": [{"backend", "precision", "form", "file", "status", "metrics", "delta", ...}]}``.

    ``delta``: each metric minus PyTorch's (when a PyTorch row was evaluated). ``model_task``: the PyTorch model's
    task family, checked against the dataset's.
    """
    options = options or EvaluateOptions()
    task = dataset.task
    check_task(model_task, task)
    data = dataset.load()
    for row in rows:
        for note in row.notes:
            log(f"note: {note}")
    entries = []
    for row in rows:
        entries.append(_run_row(row, task, data, options, log))
    reference = next((e for e in entries if e["backend"] == "PyTorch" and e["status"] == "evaluated"), None)
    for e in entries:
        if reference is not None and e["status"] == "evaluated":
            e["delta"] = {k: v - reference["metrics"][k] for k, v in e["metrics"].items()
                          if isinstance(v, float) and isinstance(reference["metrics"].get(k), float)}
    described = {"images": str(dataset.images), "count": len(data)}
    if task == "detection":
        described.update(annotations=str(dataset.annotations), categories=data.class_names)
    else:
        described.update(labels=str(dataset.labels), ignore_index=dataset.ignore_index)
    return {"task": task, "model": model, "dataset": described, "headline": HEADLINE[task],
            "reference": "PyTorch" if reference is not None else None, "backends": entries}
