"""What the trained samples (:mod:`.segmentation_sample`, :mod:`.detection_sample`) share: their command line, the
engine they ask the deploy pipeline for, and evaluating their exports on their held-out set with
:func:`~.evaluation.evaluate`, the same code as ``carafe-deploy evaluate``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Sequence

from .evaluation import Backend, DatasetOptions, EvaluateOptions, backends_for, evaluate
from .evaluation_report import write_report
from .pipeline import EngineOptions
from .source import LoadedModel

__all__ = ["sample_engine", "exported_files", "evaluate_sample", "metric_of", "sample_main", "SampleHelpFormatter"]

# the files a sample may write, in the order of the table
_FILE_KEYS = ("onnx_portable", "onnx_decomposed", "onnx_fp16", "onnx_plugin", "engine")


def sample_engine(path: str) -> EngineOptions:
    """The engine a sample builds after its portable export: the one engine choice (``choose_plugin`` of
    ``carafe_deploy.trt``: the CARAFE plugin where its library is found, else the unrolled standard ops; the pipeline
    skips it, with the reason, where no TensorRT can build it)."""
    return EngineOptions(path=Path(path), use_plugin=None, progress=False)


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


class SampleHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown, except ``None``: such an option's help says what it defaults to."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def sample_main(argv, description: str, default_out: str, defaults, measured: str, run: Callable[..., dict],
                summary: Callable[[dict], str] = lambda res: "") -> int:
    """A sample's command line: train (``defaults``: its ``TrainConfig``), evaluate, print the table and the
    ``carafe-deploy evaluate`` command that gives it again; ``measured``: what the held-out images measure."""
    from ..errors import ArgumentParser, run_guarded

    p = ArgumentParser(description=description, formatter_class=SampleHelpFormatter)
    p.add_argument("-o", "--output", "--out", dest="out", default=default_out, metavar="DIR", help="output folder")
    p.add_argument("--steps", type=int, default=defaults.steps, metavar="N", help="training steps")
    p.add_argument("--batch", type=int, default=defaults.batch, metavar="N", help="training batch")
    p.add_argument("--size", type=int, default=defaults.size, metavar="PIXELS", help="image size")
    p.add_argument("--train-count", type=int, default=defaults.train_count, metavar="N",
                   help="synthetic training images")
    p.add_argument("--test-count", type=int, default=defaults.test_count, metavar="N",
                   help=f"held-out images the {measured} is measured on")
    p.add_argument("--seed", type=int, default=defaults.seed, metavar="N", help="seed of data, weights and order")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads of PyTorch and ONNX Runtime (default: the cores free of other work, followed "
                        "during training)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = p.parse_args(argv)

    def work() -> int:
        from ..files import atomic_write_text
        from .evaluation_report import markdown_table

        res = run(args.out, steps=args.steps, batch=args.batch, size=args.size, train_count=args.train_count,
                  test_count=args.test_count, seed=args.seed, threads=args.threads)
        table = markdown_table(res["report"])
        print(f"trained {args.steps} steps in {res['train_seconds']:.0f} s{summary(res)}")
        print(table)
        print(f"the same table from the files: {res['command']}")
        atomic_write_text(os.path.join(args.out, "table.md"), table + "\n")
        print(f"picture: {res['files']['figure']}; chart: {res['files']['chart']}")
        return 0

    return run_guarded(p.prog, work, debug=args.debug)
