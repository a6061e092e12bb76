"""Latency and throughput of one model on TensorRT, ONNX Runtime and PyTorch over batch sizes.

Each backend is timed on device-resident inputs where it has a device: TensorRT times ``execute_async_v3`` + stream
sync on bound buffers (no host copies); ONNX Runtime times ``session.run`` (host in, host out, as an ORT user sees
it); PyTorch times ``model(*inputs)`` + ``cuda.synchronize`` on the model's device. A backend that is not installed
or cannot run the model is reported as skipped with the reason, never as a result.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import DeployError, MissingDependencyError

__all__ = ["BenchRow", "BenchReport", "time_callable", "summarize", "with_batch",
           "bench_tensorrt", "bench_onnxruntime", "bench_torch", "render_table", "write_json", "plot"]


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


def bench_tensorrt(engine_path, shapes, batches, warmup, iters, report: BenchReport, seed: int = 0) -> None:
    from .runner import EngineRunner

    try:
        runner = EngineRunner(engine_path)
    except MissingDependencyError as exc:
        report.skipped["tensorrt"] = str(exc)
        return
    with runner:
        dtypes = {t.name: t.dtype for t in runner.inputs}
        gpu = (runner.sidecar or {}).get("gpu") or {}
        device = gpu.get("name", "cuda") if isinstance(gpu, dict) else "cuda"
        for batch in batches:
            feeds = random_inputs(with_batch(shapes, batch), dtypes, seed)
            try:
                runner.bind(feeds)
            except ValueError as exc:  # outside the profile: say so for this batch, keep the others
                report.skipped[f"tensorrt@{batch}"] = str(exc)
                continue
            report.rows.append(summarize("tensorrt", batch, time_callable(runner.execute, warmup, iters), device))


def bench_onnxruntime(onnx_path, shapes, batches, warmup, iters, report: BenchReport, seed: int = 0) -> None:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        report.skipped["onnxruntime"] = f"onnxruntime is not installed ({exc})"
        return
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        session = ort.InferenceSession(str(onnx_path), providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        report.skipped["onnxruntime"] = f"could not load {onnx_path}: {first}"
        return
    dtypes = {i.name: _ort_dtype(i.type) for i in session.get_inputs()}
    device = session.get_providers()[0].replace("ExecutionProvider", "")
    for batch in batches:
        feeds = random_inputs(with_batch(shapes, batch), dtypes, seed)
        try:
            session.run(None, feeds)
        except Exception as exc:
            report.skipped[f"onnxruntime@{batch}"] = " ".join(str(exc).split())
            continue
        times = time_callable(lambda: session.run(None, feeds), warmup, iters)
        report.rows.append(summarize("onnxruntime", batch, times, device))


def _ort_dtype(type_str: str) -> str:
    inner = type_str.removeprefix("tensor(").removesuffix(")")
    return {"float": "float32", "double": "float64"}.get(inner, inner)


def bench_torch(model, input_names, shapes, batches, warmup, iters, report: BenchReport, seed: int = 0) -> None:
    import torch

    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None else torch.float32
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    for batch in batches:
        feeds = random_inputs(with_batch(shapes, batch), {}, seed)
        args = [torch.from_numpy(feeds[n]).to(device=device, dtype=dtype) for n in input_names]

        def call():
            with torch.inference_mode():
                model(*args)
            sync()

        report.rows.append(summarize("pytorch", batch, time_callable(call, warmup, iters), name))


def render_table(report: BenchReport):
    from rich.table import Table

    table = Table(title="carafe-deploy bench")
    for col in ("backend", "batch", "median ms", "p90 ms", "samples/s", "iters", "device"):
        table.add_column(col, justify="right" if col not in ("backend", "device") else "left")
    for r in report.rows:
        table.add_row(r.backend, str(r.batch), f"{r.median_ms:.3f}", f"{r.p90_ms:.3f}", f"{r.throughput:.1f}",
                      str(r.iters), r.device)
    from rich.console import Group
    from rich.text import Text

    skipped = [Text(f"skipped {backend}: {reason}", style="yellow") for backend, reason in report.skipped.items()]
    return Group(table, *skipped)


def write_json(report: BenchReport, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return path


def plot(report: BenchReport, path) -> Path:
    """Median latency (p90 as the upper whisker) and throughput per backend over batch size, as a PNG."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
