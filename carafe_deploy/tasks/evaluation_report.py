"""The report of :func:`~.evaluation.evaluate`: the table for the terminal and for Markdown, the bar chart, the JSON
file. Detection metrics are shown as COCO AP 0..1 with 4 digits, segmentation metrics in percent with 2; a difference
that rounds to zero at those digits is still shown (``-2.1e-05``), an exact zero as ``0``."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

__all__ = ["rich_table", "markdown_table", "save_chart", "write_report"]

# the metrics the table shows
_SHOWN = {"detection": ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "segm_mAP"), "segmentation": ("mIoU", "aAcc", "mAcc")}


def _shown(report: dict) -> list[str]:
    present = {k for e in report["backends"] for k, v in e["metrics"].items() if v is not None}
    return [k for k in _SHOWN[report["task"]] if k in present]


def _fmt(report: dict, value, delta: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    digits = 4 if report["task"] == "detection" else 2
    if not delta:
        return f"{value:.{digits}f}"
    if value == 0:
        return "0"
    # a difference that rounds to zero at the metric's own digits is still shown, not as "+0.0000"
    return f"{value:+.{digits + 1}f}" if abs(value) >= 0.5 * 10 ** -digits else f"{value:+.1e}"


def _delta_cell(report: dict, e: dict) -> str:
    if e["backend"] == "PyTorch" and report["reference"] == "PyTorch":
        return "reference"
    return _fmt(report, e.get("delta", {}).get(report["headline"]), delta=True)


def _label(e: dict) -> str:
    return e["backend"] if e["form"] == "eager" else f"{e['backend']} ({e['form']})"


def _status(e: dict) -> str:
    return e["status"] if e["status"] != "evaluated" else ""


def _rows(report: dict, said=()) -> tuple[list[str], list[list[str]], list[str]]:
    shown = _shown(report)
    columns = ["backend", "precision", *shown, f"Δ {report['headline']} vs PyTorch"]
    rows, notes = [], []
    for e in report["backends"]:
        if e["status"] == "evaluated":
            rows.append([_label(e), e["precision"], *(_fmt(report, e["metrics"].get(k)) for k in shown),
                         _delta_cell(report, e)])
        else:
            rows.append([_label(e), e["precision"], e["status"], *([""] * len(shown))])
            reason = "the reason above" if any(r and r in e["reason"] for r in said) else e["reason"]
            notes.append(f"{_label(e)} {e['precision']}: {e['status']}: {reason}")
    return columns, rows, notes


def _title(report: dict) -> str:
    units = "COCO AP, 0..1" if report["task"] == "detection" else "percent"
    what = report["model"] or "the model"
    return f"{what} on {report['dataset']['count']} images: {report['task']} metrics ({units}) per backend"


def rich_table(report: dict, said=()):
    """The table for the terminal (skip and error reasons as notes below it; one that holds a reason in ``said``,
    printed above already, refers to it instead of repeating it)."""
    from ..report import make_table

    columns, rows, notes = _rows(report, said)
    return make_table(_title(report), columns, rows, notes, right=columns[2:])


def markdown_table(report: dict) -> str:
    """The same table in Markdown (for docs); reasons in the status cell."""
    columns, _, _ = _rows(report)
    shown = _shown(report)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for e in report["backends"]:
        if e["status"] == "evaluated":
            cells = [_fmt(report, e["metrics"].get(k)) for k in shown]
            cells.append(_delta_cell(report, e))
        else:
            cells = [f"{e['status']}: {e['reason']}"] + [""] * len(shown)
        lines.append("| " + " | ".join([_label(e), e["precision"], *cells]) + " |")
    return "\n".join(lines)


def save_chart(report: dict, path) -> Path:
    """A grouped bar chart of the shown metrics per backend (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_path

    shown = _shown(report)
    done = [e for e in report["backends"] if e["status"] == "evaluated"]
    others = [e for e in report["backends"] if e["status"] != "evaluated"]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * len(done) + 2.5), 3.8))
    width = 0.8 / max(1, len(shown))
    colours = plt.get_cmap("tab10").colors
    for j, metric in enumerate(shown):
        values = [e["metrics"].get(metric) for e in done]
        xs = [i + (j - (len(shown) - 1) / 2) * width for i in range(len(done))]
        bars = ax.bar(xs, [v if v is not None else 0 for v in values], width, label=metric, color=colours[j])
        for bar, v in zip(bars, values):
            ax.annotate(_fmt(report, v), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=6.5, rotation=90, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(done)))
    deltas = [_delta_cell(report, e) for e in done]
    ax.set_xticklabels([f"{_label(e)}\n{e['precision']}\n" + ("(reference)" if d == "reference" else
                                                              f"Δ {report['headline']} {d}")
                        for e, d in zip(done, deltas)], fontsize=7)
    top = 1.0 if report["task"] == "detection" else 100.0
    ax.set_ylim(0, top * 1.35)  # room for the values above the bars and the legend above them
    ax.set_yticks(np.linspace(0, top, 6))
    ax.set_ylabel("AP (0..1)" if report["task"] == "detection" else "percent")
    ax.legend(fontsize=7, ncol=len(shown), loc="upper left", frameon=False)
    ax.set_title(textwrap.fill(_title(report), 100), fontsize=8.5)
    if others:
        fig.text(0.01, 0.01, "not evaluated: " + "; ".join(f"{_label(e)} {e['precision']} ({e['status']})"
                                                           for e in others), fontsize=6.5, wrap=True)
    fig.tight_layout(rect=(0, 0.05 if others else 0, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


def write_report(report: dict, json_path=None, chart_path=None) -> None:
    """The JSON report and the chart, each atomically, where asked."""
    from ..report import write_json

    if json_path is not None:
        write_json(json_path, report)
    if chart_path is not None:
        save_chart(report, chart_path)
