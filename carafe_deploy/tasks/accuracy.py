"""Several files of one model (fp32, fp16, INT8; an engine) compared with one reference at the level of its task:
what ``carafe-deploy check`` prints for a segmenter or a detector (a generic model is compared element-wise by
:mod:`carafe_deploy.compare`).

Each file is labelled by the precision it computes in (:func:`carafe_deploy.trt.graph.precision_mode`: "int8" where
it has Q/DQ nodes) and judged by that precision's limits, which the task family states
(:attr:`carafe_deploy.tasks.base.Task.tolerances`, :data:`carafe_deploy.tasks.segmentation.THRESHOLDS`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..compare import failure_reason
from ..errors import MissingDependencyError
from .base import Task

__all__ = ["Candidate", "TaskCheck", "check_candidates", "render_task_table"]


@dataclass
class Candidate:
    """A runner (not yet activated) and the precision its file computes in."""

    runner: object
    precision: str
    file: str = ""


@dataclass
class TaskCheck:
    backend: str
    precision: str
    file: str
    status: str  # passed / failed / error / skipped
    summary: str = ""
    gated: bool = True  # False: reported, not deciding the exit status
    details: dict = field(default_factory=dict)


def check_candidates(task: Task, candidates: Sequence[Candidate], feeds: Mapping[str, np.ndarray],
                     reference: Mapping[str, np.ndarray]) -> list[TaskCheck]:
    """Run each candidate on ``feeds`` and compare it with ``reference`` through ``task.compare`` at its precision.
    A runtime that is missing is "skipped", a failure to run an "error" row, never a pass."""
    out = []
    for c in candidates:
        name = c.runner.name
        try:
            with c.runner:
                actual = c.runner.infer(feeds)
        except MissingDependencyError as exc:
            out.append(TaskCheck(name, c.precision, c.file, "skipped", str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 -- a backend failure is a row in the report, not a crash
            out.append(TaskCheck(name, c.precision, c.file, "error", failure_reason(exc)))
            continue
        result = task.compare(reference, actual, c.precision)
        out.append(TaskCheck(name, c.precision, c.file, "passed" if result.passed else "failed", result.summary,
                             result.gated, result.details))
    return out


def render_task_table(checks: Sequence[TaskCheck], title: str):
    from ..report import make_table

    colours = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow"}
    rows, notes = [], []
    for c in checks:
        # FAILED in capitals, as the element-wise table writes it: the word a reader looks for
        status = {"failed": "FAILED" if c.gated else "failed (not gated)"}.get(c.status, c.status)
        colour = colours[c.status]
        if c.status in ("skipped", "error"):
            rows.append((c.backend, c.precision, c.file, "-", f"[{colour}]{status}[/{colour}]"))
            notes.append(f"{c.backend} ({c.file}) {c.status}: {c.summary}")
        else:
            rows.append((c.backend, c.precision, c.file, c.summary, f"[{colour}]{status}[/{colour}]"))
    return make_table(title, ("backend", "precision", "file", "result (limits in brackets)", "status"), rows, notes)
