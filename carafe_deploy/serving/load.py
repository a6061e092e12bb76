"""A bounded load on a served model: several concurrent HTTP clients for a fixed time, each sending the same request
back to back; throughput, latency percentiles, failures, and from Triton's statistics extension
(``/v2/models/<m>/stats``) how many executions ran at each batch size, which is how dynamic batching shows."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

__all__ = ["LoadResult", "run_load", "batch_executions"]


@dataclass
class LoadResult:
    model: str
    clients: int
    seconds: float  # wall time of the run
    latencies_ms: np.ndarray  # one per successful request
    failures: int
    first_error: str | None
    batches: dict[int, int] = field(default_factory=dict)  # batch size -> executions during the run

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.requests else float("nan")

    def summary(self) -> str:
        mean_batch = sum(b * n for b, n in self.batches.items()) / max(sum(self.batches.values()), 1)
        return (f"{self.model}: {self.clients} clients x {self.seconds:.1f} s: {self.requests} requests, "
                f"{self.failures} failed, {self.throughput:.1f} req/s, p50 {self.percentile(50):.1f} ms, "
                f"p99 {self.percentile(99):.1f} ms; executions by batch size {dict(sorted(self.batches.items()))} "
                f"(mean batch {mean_batch:.2f})")


def batch_executions(http_url: str, model: str) -> dict[int, int]:
    """Executions so far at each batch size, from the model's ``batch_stats``."""
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=10) as r:
        stats = json.load(r)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def run_load(http_url: str, model: str, inputs: Mapping[str, np.ndarray], clients: int = 8,
             seconds: float = 5.0) -> LoadResult:
    """``clients`` threads, each with its own ``tritonclient.http`` client, send ``inputs`` (binary tensors) to
    ``model`` until ``seconds`` have passed."""
    import tritonclient.http as http
    from tritonclient.utils import np_to_triton_dtype

    def request():
        tensors = []
        for name, array in inputs.items():
            t = http.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            t.set_data_from_numpy(array, binary_data=True)
            tensors.append(t)
        return tensors

    before = batch_executions(http_url, model)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(tensors) -> None:
        c = http.InferenceServerClient(http_url)
        mine, bad = [], []
        try:
            start.wait()
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    c.infer(model, tensors)
                except Exception as exc:  # noqa: BLE001 -- every failure is counted and the first one reported
                    bad.append(f"{type(exc).__name__}: {exc}")
                    continue
                mine.append((time.perf_counter() - t0) * 1e3)
        finally:
            c.close()  # an open keep-alive connection would hold the server's shutdown
            with lock:
                latencies.extend(mine)
                errors.extend(bad)

    threads = [threading.Thread(target=client, args=(request(),)) for _ in range(clients)]
    stop = float("inf")
    for t in threads:
        t.start()
    stop = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    time.sleep(0.2)  # the statistics are updated just after the responses go out
    after = batch_executions(http_url, model)
    batches = {b: n - before.get(b, 0) for b, n in after.items() if n - before.get(b, 0) > 0}
    return LoadResult(model, clients, wall, np.asarray(latencies), len(errors), errors[0] if errors else None,
                      batches)
