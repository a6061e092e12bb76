"""CPU speed of carafe_deploy::carafe: the native kernels against the PyTorch formulation they replaced, paired.

    python benchmarks/cpu_op.py                      # the four issue-14 shapes, 1 and 2 threads, forward and backward
    python benchmarks/cpu_op.py --shapes up:1,256,50,84 --threads 1 --repeat 9
    python benchmarks/cpu_op.py --threads 1 --clock cpu      # CPU time instead of wall time (busy machines)
    python benchmarks/cpu_op.py --memory [--shape 1 64 100 168]

Each (shape, thread count) row runs the two implementations alternately in one process (median of --repeat), next to
floors measured in the same run and thread count: the memory floor (bytes the op must move at this machine's copy
bandwidth, a 256 MB tensor copy), the compute floor (its multiply-adds at this machine's sgemm rate) and the fresh
output (allocating an output-sized tensor and writing it once: the page faults any op with that output pays).
fp32, k=5, group 1, s=2. The "before" is carafe_deploy.ops.torch_formulation (the op's fallback, main's CPU kernel).

--memory reports instead how much each formulation grows the peak resident set, each in a fresh process
(the naive F.unfold formulation against carafe_deploy's op).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from carafe_deploy.bench import paired_medians
from carafe_deploy.ops import _cpu, torch_formulation

DEFAULT_SHAPES = ("up:1,256,25,42", "up:1,256,50,84", "up:1,256,100,168", "down:1,256,200,336")
K, GROUP, SCALE = 5, 1, 2


def naive_unfold(x, kern, k, group, s):
    """The textbook formulation (mode="up"): unfold k² neighbourhoods, repeat to the output size, weight, sum."""
    n, c, h, w = x.shape
    cols = F.unfold(x, k, padding=k // 2).view(n, c, k * k, h, w)
    cols = cols.repeat_interleave(s, dim=3).repeat_interleave(s, dim=4)
    kern = kern.view(n, group, 1, k * k, h * s, w * s)
    return (cols.view(n, group, c // group, k * k, h * s, w * s) * kern).sum(3).view(n, c, h * s, w * s)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def paired(fns: dict, repeat: int) -> dict:
    return paired_medians(fns, repeat, _clock)


def copy_bandwidth(repeat: int) -> float:
    """Bytes per second read + written by a 256 MB tensor copy."""
    a = torch.empty(256 << 20, dtype=torch.uint8)
    b = torch.empty_like(a)
    a.fill_(1)
    b.fill_(0)
    return 2 * a.numel() / paired({"copy": lambda: b.copy_(a)}, repeat)["copy"]


def sgemm_macs_per_second(repeat: int) -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 1024**3 / paired({"mm": lambda: a @ b}, repeat)["mm"]


def parse_shape(text: str):
    mode, dims = text.split(":")
    n, c, h, w = (int(v) for v in dims.split(","))
    if mode not in ("up", "down"):
        raise SystemExit(f"--shapes: mode must be up or down, got {mode!r}")
    return mode, (n, c, h, w)


def measure(mode, shape, repeat):
    n, c, h, w = shape
    ho, wo = (h * SCALE, w * SCALE) if mode == "up" else (-(-h // SCALE), -(-w // SCALE))
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w)
    kern = torch.rand(n, GROUP * K * K, ho, wo)
    gout = torch.randn(n, c, ho, wo)
    native = torch.ops.carafe_deploy_cpu
    err = (native.forward(x, kern, K, GROUP, SCALE, mode)
           - torch_formulation.forward(x, kern, K, GROUP, SCALE, mode)).abs().max().item()
    t = paired({
        # what any op with this output pays: allocating it and touching every page once (page faults)
        "fresh_output": lambda: torch.empty(n, c, ho, wo).fill_(0.0),
        "before_fwd": lambda: torch_formulation.forward(x, kern, K, GROUP, SCALE, mode),
        "after_fwd": lambda: native.forward(x, kern, K, GROUP, SCALE, mode),
        "before_bwd": lambda: torch_formulation.backward(gout, x, kern, K, GROUP, SCALE, mode),
        "after_bwd": lambda: native.backward(gout, x, kern, K, GROUP, SCALE, mode),
    }, repeat)
    elem = x.element_size()
    fwd_bytes = (x.numel() + kern.numel() + gout.numel()) * elem
    bwd_bytes = (2 * x.numel() + 2 * kern.numel() + gout.numel()) * elem
    macs = gout.numel() * K * K
    return t, fwd_bytes, bwd_bytes, macs, err


def benchmark(shapes, threads_list, repeat):
    print(f"torch {torch.__version__}, native kernels: {_cpu.status()}; fp32, k={K}, group={GROUP}, s={SCALE}; "
          f"median of {repeat}, before/after alternating\n", flush=True)
    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        bw = copy_bandwidth(repeat)
        mac_rate = sgemm_macs_per_second(repeat)
        print(f"{threads} thread(s): copy bandwidth {bw / 1e9:.1f} GB/s, sgemm {mac_rate / 1e9:.1f} GMAC/s", flush=True)
        for mode, shape in shapes:
            t, fb, bb, macs, err = measure(mode, shape, repeat)
            rows.append(dict(threads=threads, mode=mode, shape=shape, bytes=fb, floor=fb / bw, compute=macs / mac_rate,
                             err=err, **t, bwd_floor=bb / bw))
            print(f"  {mode} {shape}: forward {t['before_fwd'] * 1e3:.1f} -> {t['after_fwd'] * 1e3:.2f} ms, "
                  f"backward {t['before_bwd'] * 1e3:.0f} -> {t['after_bwd'] * 1e3:.1f} ms", flush=True)
    print()
    print("| case | threads | bytes moved | memory floor | compute floor | fresh output | before | after | speed-up "
          "| % of memory floor | backward before | backward after | backward / forward | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        n, c, h, w = r["shape"]
        case = f"{r['mode']} {n}×{c}×{h}×{w} " + ("→ ×2" if r["mode"] == "up" else "÷2")
        print(f"| {case} | {r['threads']} | {r['bytes'] / 1e6:.1f} MB | {r['floor'] * 1e3:.2f} ms "
              f"| {r['compute'] * 1e3:.2f} ms | {r['fresh_output'] * 1e3:.2f} ms "
              f"| {r['before_fwd'] * 1e3:.1f} ms | {r['after_fwd'] * 1e3:.2f} ms "
              f"| {r['before_fwd'] / r['after_fwd']:.1f}× | {100 * r['floor'] / r['after_fwd']:.0f} % "
              f"| {r['before_bwd'] * 1e3:.0f} ms | {r['after_bwd'] * 1e3:.1f} ms "
              f"| {r['after_bwd'] / r['after_fwd']:.2f}× | {r['err']:.1e} |")
    if len(threads_list) > 1:
        print("\n| case | forward, 1 → 2 threads | backward, 1 → 2 threads |")
        print("| --- | --- | --- |")
        by = {(r["mode"], r["shape"], r["threads"]): r for r in rows}
        t0, t1 = threads_list[0], threads_list[1]
        for mode, shape in shapes:
            a, b = by[(mode, shape, t0)], by[(mode, shape, t1)]
            n, c, h, w = shape
            print(f"| {mode} {n}×{c}×{h}×{w} | {a['after_fwd'] * 1e3:.2f} → {b['after_fwd'] * 1e3:.2f} ms "
                  f"({a['after_fwd'] / b['after_fwd']:.2f}×) | {a['after_bwd'] * 1e3:.1f} → "
                  f"{b['after_bwd'] * 1e3:.1f} ms ({a['after_bwd'] / b['after_bwd']:.2f}×) |")


_MEMORY_PROBE = """
import json, sys, torch
sys.path.insert(0, {here!r})
from cpu_op import naive_unfold
from carafe_deploy.bench import peak_rss_growth
from carafe_deploy.ops import carafe
n, c, h, w, k, s = {args!r}
x = torch.randn(n, c, h, w); kern = torch.rand(n, k * k, h * s, w * s)
fn = (lambda a, b: carafe(a, b, k, 1, s)) if {ours!r} else (lambda a, b: naive_unfold(a, b, k, 1, s))
fn(x[..., :8, :8], kern[..., : 8 * s, : 8 * s])  # warm-up on a slice: dispatch, thread pool
with torch.no_grad():
    y, growth = peak_rss_growth(lambda: fn(x, kern))
print(json.dumps(growth))
"""


def peak_growth_mb(shape, k, s, ours: bool) -> float:
    from pathlib import Path

    code = _MEMORY_PROBE.format(here=str(Path(__file__).resolve().parent), args=(*shape, k, s), ours=ours)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), metavar="MODE:N,C,H,W")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="cpu: this process's CPU time, which a busy machine disturbs less (1 thread only: with more "
                        "it is the threads' sum, not a speed)")
    p.add_argument("--memory", action="store_true", help="peak RSS growth of each formulation instead of time")
    p.add_argument("--shape", type=int, nargs=4, default=[1, 64, 100, 168], metavar=("N", "C", "H", "W"),
                   help="the --memory shape")
    a = p.parse_args()
    if a.memory:
        print(f"peak RSS growth, shape {tuple(a.shape)} -> x{SCALE}, k={K}, group=1 (each in a fresh process):")
        print(f"naive unfold : {peak_growth_mb(a.shape, K, SCALE, False):8.1f} MB")
        print(f"carafe_deploy: {peak_growth_mb(a.shape, K, SCALE, True):8.1f} MB")
        return
    if not _cpu.available():
        raise SystemExit(f"the native CPU kernels are not available: {_cpu.status()}")
    global _clock
    _clock = CLOCKS[a.clock]
    if a.clock == "cpu" and max(a.threads) > 1:
        raise SystemExit("--clock cpu measures one thread's speed only: use it with --threads 1")
    print(f"clock: {a.clock}", flush=True)
    benchmark([parse_shape(s) for s in a.shapes], a.threads, a.repeat)


if __name__ == "__main__":
    main()
