"""Latency and throughput of one model on any runners (:mod:`carafe_deploy.backends`) over batch sizes.

Each runner times what :meth:`~carafe_deploy.backends.Runner.timed_call` gives: TensorRT ``execute_async_v3`` +
stream sync on bound, device-resident buffers (no host copies); ONNX Runtime ``session.run`` (host in, host out, as
an ORT user sees it); PyTorch ``model(*inputs)`` + ``cuda.synchronize`` on the model's device. A runner that is not
installed or cannot run the model is reported as skipped with the reason, never as a result.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import DeployError, MissingDependencyError
from .files import atomic_path
from .report import make_table, write_json as _write_json

__all__ = ["BenchRow", "BenchReport", "time_callable", "paired_medians", "summarize", "with_batch", "bench_runner",
           "render_table", "write_json", "plot", "check_plot_path", "peak_rss_growth"]


@dataclass
class BenchRow:
    backend: str
    batch: int
    median_ms: float
    p90_ms: float
    throughput: float  # samples per second at the median latency
    iters: int
    device: str


@dataclass
class BenchReport:
    rows: list[BenchRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> reason
    shapes: dict[str, list[int]] = field(default_factory=dict)  # batch-1 input shapes
    host: str = field(default_factory=lambda: f"{platform.node()} ({platform.machine()}, {platform.python_version()})")

    def to_json(self) -> dict:
        return {"rows": [asdict(r) for r in self.rows], "skipped": self.skipped, "shapes": self.shapes,
                "host": self.host}


def time_callable(fn: Callable[[], object], warmup: int, iters: int) -> list[float]:
    """Seconds per call of ``fn`` (which must block until its work is done), after ``warmup`` untimed calls."""
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got {iters} and {warmup}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def paired_medians(fns: Mapping[str, Callable[[], object]], repeat: int,
                   clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call of each of ``fns``, run in turn ``repeat`` times after one warm-up call each.

    Side by side, so a slow spell of a shared machine slows them all alike and their ratios hold; ``clock`` may be
    ``time.process_time`` (CPU time, which other processes disturb less; a speed for one thread only).
    """
    if repeat < 1:
        raise ValueError(f"need repeat >= 1, got {repeat}")
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_rss_growth(fn: Callable[[], object]) -> tuple[object, float]:
    """``(fn(), MB)``: how far ``fn`` raises this process's peak resident set above its current one (Linux).

    ru_maxrss survives fork+exec (a big parent inflates it), so the kernel's high-water mark VmHWM is reset to the
    current RSS first (``/proc/self/clear_refs``) and read after. Run it in a fresh process per measurement.
    """

    def status(field: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    result = fn()
    return result, (status("VmHWM") - before) / 1024


def summarize(backend: str, batch: int, times: Sequence[float], device: str) -> BenchRow:
    ms = sorted(t * 1e3 for t in times)
    median = statistics.median(ms)
    p90 = float(np.percentile(ms, 90))
    return BenchRow(backend, batch, median, p90, batch / (median / 1e3), len(ms), device)


def with_batch(shapes: Mapping[str, Sequence[int]], batch: int) -> dict[str, tuple[int, ...]]:
    """The same shapes with dimension 0 set to ``batch``."""
    if batch < 1:
        raise ValueError(f"batch sizes must be >= 1, got {batch}")
    return {name: (batch, *tuple(shape)[1:]) for name, shape in shapes.items()}


def random_inputs(shapes: Mapping[str, Sequence[int]], dtypes: Mapping[str, str], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(tuple(s)).astype(dtypes.get(n, "float32")) for n, s in shapes.items()}


def bench_runner(runner, shapes: Mapping[str, Sequence[int]], batches: Sequence[int], warmup: int, iters: int,
                 report: BenchReport, seed: int = 0) -> None:
    """Time ``runner`` at each batch size; add a row per batch, or the reason it was skipped."""
    try:
        runner.activate()
    except MissingDependencyError as exc:
        report.skipped[runner.name] = str(exc)
        return
    except DeployError as exc:
        report.skipped[runner.name] = str(exc)
        return
    try:
        dtypes = {m.name: m.dtype for m in runner.input_metadata()}
        for batch in batches:
            feeds = random_inputs(with_batch(shapes, batch), dtypes, seed)
            try:
                call = runner.timed_call(feeds)
                call()  # a shape the model or engine refuses shows here, not as a timing
            except Exception as exc:  # noqa: BLE001 -- outside the profile, ORT shape errors: a skip for this batch
                report.skipped[f"{runner.name}@{batch}"] = " ".join(str(exc).split())
                continue
            report.rows.append(summarize(runner.name, batch, time_callable(call, warmup, iters), runner.device))
    finally:
        runner.deactivate()


def render_table(report: BenchReport):
    rows = [(r.backend, str(r.batch), f"{r.median_ms:.3f}", f"{r.p90_ms:.3f}", f"{r.throughput:.1f}", str(r.iters),
             r.device) for r in report.rows]
    notes = [f"skipped {backend}: {reason}" for backend, reason in report.skipped.items()]
    return make_table("carafe-deploy bench", ("backend", "batch", "median ms", "p90 ms", "samples/s", "iters", "device"),
                      rows, notes, right=("batch", "median ms", "p90 ms", "samples/s", "iters"))


def write_json(report: BenchReport, path) -> Path:
    return _write_json(path, report.to_json())


def check_plot_path(path, option: str = "plot") -> None:
    """``ValueError`` unless ``path`` names a PNG (the plot is one: a ``.txt`` or ``.pdf`` name would get PNG
    bytes)."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"{option} {path}: the plot is a PNG image; give a file name ending in .png")


def plot(report: BenchReport, path) -> Path:
    """Median latency (p90 as the upper whisker) and throughput per backend over batch size, as a PNG."""
    check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not report.rows:
        raise DeployError("nothing to plot: no backend produced a timing")
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend in dict.fromkeys(r.backend for r in report.rows):
        rows = sorted((r for r in report.rows if r.backend == backend), key=lambda r: r.batch)
        b = [r.batch for r in rows]
        med = np.array([r.median_ms for r in rows])
        p90 = np.array([r.p90_ms for r in rows])
        label = f"{backend} ({rows[0].device})"
        ax_lat.errorbar(b, med, yerr=[np.zeros_like(med), p90 - med], marker="o", capsize=3, label=label)
        ax_thr.plot(b, [r.throughput for r in rows], marker="o", label=label)
    for ax, ylabel, title in ((ax_lat, "latency, ms (median; bar to p90)", "Latency"),
                              (ax_thr, "throughput, samples/s", "Throughput")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r.batch for r in report.rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    shape_text = ", ".join(f"{n}: {'x'.join(map(str, ['N', *s[1:]]))}" for n, s in report.shapes.items())
    fig.suptitle(f"carafe-deploy bench — {shape_text}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
