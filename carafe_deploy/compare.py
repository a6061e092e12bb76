"""The comparator: run runners (:mod:`carafe_deploy.backends`) on the same feeds and compare each one's outputs with a
reference: per-output max abs / max rel error and allclose, a table, a JSON report. Shape, dtype and missing-output
mismatches are reported as failed rows, never raised; a runner whose runtime is missing is "skipped" with the reason,
never "passed".

``max_rel`` is the largest absolute error divided by the reference's largest magnitude (``max|a - r| / max|r|``):
an element-wise ratio explodes on the near-zero values every network output has, and says nothing about them.
``allclose`` is ``numpy.allclose(actual, reference, rtol, atol)`` (element-wise ``|a - r| <= atol + rtol·|r|``).

The default ``atol`` scales with each output: :data:`DEFAULT_TOLERANCES`' value times the reference's largest
magnitude (its *scale*), as float32's rounding does -- a correct export whose outputs are around 10 differs by a few
1e-5 near its zeros, one whose outputs are around 1e-3 by far less, and a fixed atol fails the first and waves through
anything on the second. A given ``atol`` is absolute, as numpy's. Each ``OutputDiff`` records the tolerances it used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping

import numpy as np

from .errors import MissingDependencyError
from .report import fmt_float, make_table

__all__ = ["OutputDiff", "BackendResult", "compare", "compare_runner", "run_comparison", "render_table",
           "report_dict", "DEFAULT_TOLERANCES", "precision_class", "check_tolerance", "describe_tolerances",
           "failure_reason"]

# (rtol, atol as a fraction of each output's scale) per precision class (:func:`precision_class`). INT8: measured on
# the tiny demo net (docs/QUANTIZATION.md); element-wise limits say little for a quantized model: compare at the
# task's level where there is one
DEFAULT_TOLERANCES = {"fp32": (1e-4, 1e-5), "fp16": (1e-2, 1e-2), "int8": (1e-1, 1e-1)}


def precision_class(precision: str | bool) -> str:
    """The tolerance class of a file's precision: "fp32"; "fp16" for fp16, bf16 and mixed float files; "int8" for
    quantized ones (int8, fp8, int4). ``True``/``False`` are the pipeline's fp16 flag."""
    if isinstance(precision, bool):
        return "fp16" if precision else "fp32"
    if precision == "fp32":
        return "fp32"
    return "fp16" if precision in ("fp16", "bf16", "mixed") else "int8"


def check_tolerance(name: str, value) -> float:
    """``value`` as a float when it is a finite number >= 0; ``ValueError`` naming ``name`` otherwise (a negative or
    NaN tolerance would fail, or pass, everything)."""
    import math

    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def describe_tolerances(rtol: float | None, atol: float | None, precision: str | bool = "fp32") -> str:
    """The rule the comparison applies, for a title: ``rtol 0.0001, atol 1e-05 x each output's max |reference|``."""
    default_rtol, default_atol = DEFAULT_TOLERANCES[precision_class(precision)]
    rtol = default_rtol if rtol is None else rtol
    scaled = f"{default_atol:g} x each output's max |reference|"
    return f"rtol {rtol:g}, atol {scaled if atol is None else f'{atol:g}'}"


@dataclass
class OutputDiff:
    name: str
    reference_shape: tuple | None
    actual_shape: tuple | None
    reference_dtype: str | None
    actual_dtype: str | None
    max_abs: float | None = None
    max_rel: float | None = None
    allclose: bool = False
    rtol: float = 0.0
    atol: float = 0.0  # the absolute tolerance applied: given, or the default fraction times ``scale``
    scale: float | None = None  # the reference's largest finite magnitude
    atol_rule: str = "given"  # how ``atol`` came about: "given", or e.g. "1e-05 x max |reference| 12.5"
    problem: str | None = None  # why no numeric comparison was possible

    @property
    def passed(self) -> bool:
        return self.problem is None and self.allclose


@dataclass
class BackendResult:
    """One backend's comparison: ``status`` is "passed", "failed", "error" or "skipped" (never counted as passed)."""

    backend: str
    status: str
    diffs: list[OutputDiff] = field(default_factory=list)
    reason: str | None = None


def _one(name: str, ref: np.ndarray | None, act: np.ndarray | None, rtol: float, atol: float | None,
         atol_fraction: float) -> OutputDiff:
    d = OutputDiff(
        name,
        tuple(ref.shape) if ref is not None else None,
        tuple(act.shape) if act is not None else None,
        str(ref.dtype) if ref is not None else None,
        str(act.dtype) if act is not None else None,
        rtol=rtol,
        atol=atol if atol is not None else 0.0,
    )
    if ref is None:
        d.problem = "no reference for this output"
        return d
    if act is None:
        d.problem = "output missing"
        return d
    if ref.shape != act.shape:
        d.problem = f"shape {tuple(act.shape)} != reference {tuple(ref.shape)}"
        return d
    r = np.asarray(ref, dtype=np.float64)
    a = np.asarray(act, dtype=np.float64)
    if r.size == 0:
        d.problem = "empty output (0 elements): nothing was compared"
        return d
    bad_ref, bad_act = ~np.isfinite(r), ~np.isfinite(a)
    if bad_ref.any():
        # NaN == NaN, or inf == inf, would say nothing about the computation: a non-finite reference is no reference
        d.problem = f"the reference has {int(bad_ref.sum())} NaN/Inf of {r.size} values: nothing to compare them with"
    elif bad_act.any():
        d.problem = f"output has {int(bad_act.sum())} NaN/Inf where the reference is finite"
    finite = ~(bad_ref | bad_act)
    finite_ref = r[~bad_ref]
    d.scale = float(np.abs(finite_ref).max()) if finite_ref.size else None
    if atol is None:  # the default: a fraction of the output's scale (of 1 for an all-zero reference)
        scale = d.scale if d.scale else 1.0
        d.atol = atol_fraction * scale
        d.atol_rule = f"{atol_fraction:g} x max |reference| {scale:.4g}"
    if finite.any():
        err = np.abs(a[finite] - r[finite])
        d.max_abs = float(err.max())
        peak = float(np.abs(r[finite]).max())
        d.max_rel = d.max_abs / peak if peak > 0 else (0.0 if d.max_abs == 0 else None)
    d.allclose = d.problem is None and bool(np.allclose(a, r, rtol=rtol, atol=d.atol, equal_nan=False))
    return d


def compare(
    reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], rtol: float | None = None,
    atol: float | None = None, precision: str | bool = "fp32",
) -> list[OutputDiff]:
    """One ``OutputDiff`` per output name in either mapping (reference order first). ``rtol``/``atol`` default to
    :data:`DEFAULT_TOLERANCES` of ``precision``'s class (a file's precision, or the fp16 flag), the atol scaled per
    output (module docstring)."""
    default_rtol, atol_fraction = DEFAULT_TOLERANCES[precision_class(precision)]
    rtol = default_rtol if rtol is None else check_tolerance("rtol", rtol)
    atol = None if atol is None else check_tolerance("atol", atol)
    names = list(reference) + [n for n in actual if n not in reference]
    return [_one(n, reference.get(n), actual.get(n), rtol, atol, atol_fraction) for n in names]


def failure_reason(exc: BaseException) -> str:
    """A backend's failure in one line: a ``DeployError``'s message as it stands, else the type and first line."""
    from .errors import DeployError

    text = " ".join(str(exc).split()) if isinstance(exc, DeployError) else (str(exc).strip().splitlines() or [""])[0]
    return text if isinstance(exc, DeployError) else f"{type(exc).__name__}: {text}"


def compare_runner(runner, feeds: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                   rtol: float | None = None, atol: float | None = None, precision: str | bool = "fp32") -> BackendResult:
    """Run ``runner`` (a :class:`~carafe_deploy.backends.Runner`, activated here) on ``feeds`` and compare."""
    try:
        with runner:
            actual = runner.infer(feeds)
    except MissingDependencyError as exc:
        return BackendResult(runner.name, "skipped", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 -- a backend failure is a row in the report, not a crash
        return BackendResult(runner.name, "error", reason=failure_reason(exc))
    diffs = compare(reference, actual, rtol=rtol, atol=atol, precision=precision)
    if not diffs:  # no output on either side: nothing compared is not a pass
        return BackendResult(runner.name, "failed", diffs, reason="no outputs to compare")
    return BackendResult(runner.name, "passed" if all(d.passed for d in diffs) else "failed", diffs)


def run_comparison(runners: Iterable, feeds: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                   rtol: float | None = None, atol: float | None = None,
                   precision: str | bool = "fp32") -> list[BackendResult]:
    """:func:`compare_runner` for each runner, in order."""
    return [compare_runner(r, feeds, reference, rtol, atol, precision) for r in runners]


def render_table(results: list[BackendResult], title: str = "parity"):
    """One row per (backend, output); a skipped/errored backend gets one row, and its reason once, below the table."""
    rows, notes = [], []
    for res in results:
        if res.status in ("skipped", "error") or not res.diffs:
            colour = "yellow" if res.status == "skipped" else "red"
            status = res.status if res.status != "failed" else "FAILED"
            rows.append((res.backend, "-", "-", "-", "-", "-", f"[{colour}]{status}[/{colour}]"))
            notes.append(f"{res.backend} {res.status}: {res.reason}")
            continue
        for d in res.diffs:
            ok = "[green]yes[/green]" if d.passed else f"[red]no{': ' + d.problem if d.problem else ''}[/red]"
            shape = str(d.actual_shape if d.actual_shape is not None else d.reference_shape)
            rows.append((res.backend, d.name, shape, fmt_float(d.max_abs), fmt_float(d.max_rel), fmt_float(d.atol),
                         ok))
    return make_table(title, ("backend", "output", "shape", "max abs", "max rel", "atol", "allclose"), rows, notes)


def report_dict(results: list[BackendResult], **extra) -> dict:
    compared = [r for r in results if r.status in ("passed", "failed", "error")]
    return {
        **extra,
        "passed": bool(compared) and all(r.status == "passed" for r in compared),
        "skipped": [r.backend for r in results if r.status == "skipped"],
        "backends": [
            {
                "backend": r.backend,
                "status": r.status,
                "reason": r.reason,
                "outputs": [{**asdict(d), "passed": d.passed} for d in r.diffs],
            }
            for r in results
        ],
    }
