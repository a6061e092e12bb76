"""What the trained samples (:mod:`.segmentation_sample`, :mod:`.detection_sample`) share after training: the engine
they ask the deploy pipeline for, and evaluating their exports on their held-out set with
:func:`~.evaluation.evaluate`, the same code as ``carafe-deploy evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .evaluation import Backend, DatasetOptions, EvaluateOptions, backends_for, evaluate, write_report
from .pipeline import EngineOptions
from .source import LoadedModel

__all__ = ["sample_engine", "exported_files", "evaluate_sample", "metric_of"]

# the files a sample may write, in the order of the table
_FILE_KEYS = ("onnx_portable", "onnx_decomposed", "onnx_fp16", "onnx_plugin", "engine")


def sample_engine(path: str) -> EngineOptions:
    """The engine a sample builds after its portable export: with the CARAFE plugin where its library is found, else
    from the unrolled standard ops (the pipeline skips it, with the reason, where no TensorRT can build it)."""
    from ..trt.plugin import plugin_library

    return EngineOptions(path=Path(path), use_plugin=plugin_library(required=False) is not None, progress=False)


def exported_files(files: dict) -> list[str]:
    return [files[k] for k in _FILE_KEYS if k in files]


def evaluate_sample(loaded: LoadedModel, files: dict, export_report: dict, evaluated: Sequence[str],
                    dataset: DatasetOptions, options: EvaluateOptions, log) -> dict:
    """Evaluate PyTorch, the ONNX files ``files["onnx_<key>"]`` for each key in ``evaluated`` and the engine
    (``files["engine"]``, dropped from ``files`` when ``export_report`` says it was skipped: its row gives the
    reason); write ``files["report"]`` and ``files["chart"]``; return the report."""
    engine = export_report.get("engine") or {}
    skipped = engine.get("skipped")
    if skipped is not None:
        files.pop("engine", None)
    paths = [files[f"onnx_{k}"] for k in evaluated] + ([files["engine"]] if "engine" in files else [])
    rows = backends_for(loaded, paths, dataset.task, options.threads)
    if skipped is not None:
        rows.append(Backend("TensorRT", "fp32", "engine", status="skipped",
                            reason=f"no engine could be built here: {skipped}"))
    report = evaluate(rows, dataset, options, model=loaded.description, model_task=dataset.task, log=log)
    write_report(report, files["report"], files["chart"])
    return report


def metric_of(report: dict, backend: str, form: str, precision: str, metric: str | None = None) -> float | None:
    """A row's metric (the headline by default), ``None`` when that row was not evaluated."""
    for e in report["backends"]:
        if (e["backend"], e["form"], e["precision"]) == (backend, form, precision) and e["status"] == "evaluated":
            return e["metrics"].get(metric or report["headline"])
    return None
