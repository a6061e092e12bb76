"""CPU speed of carafe_deploy's op against the naive F.unfold formulation, side by side in one run.

    python benchmarks/cpu_op.py [--shape 1 256 50 84] [--k 5] [--repeat 5]
    python benchmarks/cpu_op.py --memory [--shape 1 64 100 168]

--memory reports instead how much each formulation grows the peak resident set, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from carafe_deploy.ops import carafe


def naive_unfold(x, kern, k, group, s):
    """The textbook formulation (mode="up"): unfold k² neighbourhoods, repeat to the output size, weight, sum."""
    n, c, h, w = x.shape
    cols = F.unfold(x, k, padding=k // 2).view(n, c, k * k, h, w)
    cols = cols.repeat_interleave(s, dim=3).repeat_interleave(s, dim=4)
    kern = kern.view(n, group, 1, k * k, h * s, w * s)
    return (cols.view(n, group, c // group, k * k, h * s, w * s) * kern).sum(3).view(n, c, h * s, w * s)


def timeit(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


_MEMORY_PROBE = """
import json, resource, sys, torch
sys.path.insert(0, {here!r})
from cpu_op import naive_unfold
from carafe_deploy.ops import carafe
n, c, h, w, k, s = {args!r}
x = torch.randn(n, c, h, w); kern = torch.rand(n, k * k, h * s, w * s)
fn = (lambda a, b: carafe(a, b, k, 1, s)) if {ours!r} else (lambda a, b: naive_unfold(a, b, k, 1, s))
fn(x[..., :8, :8], kern[..., : 8 * s, : 8 * s])  # warm-up on a slice: dispatch, thread pool
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.no_grad():
    y = fn(x, kern)
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024))
"""


def peak_growth_mb(shape, k, s, ours: bool) -> float:
    from pathlib import Path

    code = _MEMORY_PROBE.format(here=str(Path(__file__).resolve().parent), args=(*shape, k, s), ours=ours)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=4, default=[1, 256, 50, 84], metavar=("N", "C", "H", "W"))
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--group", type=int, default=1)
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--memory", action="store_true", help="peak RSS growth of each formulation instead of time")
    a = p.parse_args()
    n, c, h, w = a.shape
    if a.memory:
        print(f"peak RSS growth, shape {tuple(a.shape)} -> x{a.scale}, k={a.k}, group=1 (each in a fresh process):")
        print(f"naive unfold : {peak_growth_mb(a.shape, a.k, a.scale, False):8.1f} MB")
        print(f"carafe_deploy: {peak_growth_mb(a.shape, a.k, a.scale, True):8.1f} MB")
        return
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w)
    kern = torch.rand(n, a.group * a.k * a.k, h * a.scale, w * a.scale)
    with torch.no_grad():
        ref = naive_unfold(x, kern, a.k, a.group, a.scale)
        out = carafe(x, kern, a.k, a.group, a.scale)
        err = (ref - out).abs().max().item()
        t_naive = timeit(lambda: naive_unfold(x, kern, a.k, a.group, a.scale), a.repeat)
        t_ours = timeit(lambda: carafe(x, kern, a.k, a.group, a.scale), a.repeat)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, shape {tuple(x.shape)} -> "
          f"{tuple(out.shape)}, k={a.k}, group={a.group}")
    print(f"naive unfold : {t_naive * 1e3:8.1f} ms (median of {a.repeat})")
    print(f"carafe_deploy: {t_ours * 1e3:8.1f} ms (median of {a.repeat})")
    print(f"ratio        : {t_ours / t_naive:.3f}  (max abs diff {err:.2e})")


if __name__ == "__main__":
    main()
