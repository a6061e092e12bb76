"""CPU speed of carafe_deploy::carafe's native kernels: this tree's against another commit's, paired in one process.

    python benchmarks/cpu_op.py --before cac7fb6             # the four FPN shapes, 1 and 2 threads, fp32/fp16/bf16
    python benchmarks/cpu_op.py --before cac7fb6 --threads 1 --clock cpu
    python benchmarks/cpu_op.py --shapes up:1,256,50,84 --threads 1 --repeat 9 --dtypes float32
    python benchmarks/cpu_op.py --formulation --dtypes float32     # the PyTorch formulation (the op's fallback) too
    python benchmarks/cpu_op.py --memory [--shape 1 64 100 168]

Each (thread count, shape) runs every variant alternately in one process (median of --repeat): the kernels of the
commit named by --before ("before", built from git by kernels_at.py) and of this tree ("after", on the widest
instruction set this CPU runs and, where it has AVX-512, on AVX2 as well), forward and backward, in each of --dtypes.
Next to them, measured in the same run at the same thread count:
- the memory floor: the bytes the call must move at this machine's copy bandwidth (a 256 MB tensor copy); forward:
  features + kernels read once, output written once; backward: grad_output, features and kernels read once, both
  gradients written once (its own floor). "% of floor" = floor / time.
- the fresh output: allocating a tensor of the output's size and writing it once (the page faults any op with that
  output pays when its memory is new), and the minor page faults per call of each variant (getrusage).
Without --before, only this tree's kernels run; --formulation adds the PyTorch formulation the op falls back to
(carafe_deploy/ops/torch_formulation.py).

--memory reports instead how much each formulation grows the peak resident set, each in a fresh process
(the naive F.unfold formulation against carafe_deploy's op).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from carafe_deploy.bench import paired_medians
from carafe_deploy.ops import _cpu, torch_formulation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels_at import build  # noqa: E402

DEFAULT_SHAPES = ("up:1,256,25,42", "up:1,256,50,84", "up:1,256,100,168", "down:1,256,200,336")
K, GROUP, SCALE = 5, 1, 2
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def naive_unfold(x, kern, k, group, s):
    """The textbook formulation (mode="up"): unfold k² neighbourhoods, repeat to the output size, weight, sum."""
    n, c, h, w = x.shape
    cols = F.unfold(x, k, padding=k // 2).view(n, c, k * k, h, w)
    cols = cols.repeat_interleave(s, dim=3).repeat_interleave(s, dim=4)
    kern = kern.view(n, group, 1, k * k, h * s, w * s)
    return (cols.view(n, group, c // group, k * k, h * s, w * s) * kern).sum(3).view(n, c, h * s, w * s)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def copy_bandwidth(repeat: int, clock) -> float:
    """Bytes per second read + written by a 256 MB tensor copy."""
    a = torch.empty(256 << 20, dtype=torch.uint8)
    b = torch.empty_like(a)
    a.fill_(1)
    b.fill_(0)
    return 2 * a.numel() / paired_medians({"copy": lambda: b.copy_(a)}, repeat, clock)["copy"]


def parse_shape(text: str):
    mode, dims = text.split(":")
    n, c, h, w = (int(v) for v in dims.split(","))
    if mode not in ("up", "down"):
        raise SystemExit(f"--shapes: mode must be up or down, got {mode!r}")
    return mode, (n, c, h, w)


def minor_faults_per_call(fn, calls: int = 3) -> float:
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def variants(before_ops, isas, formulation: bool):
    """name -> (ops, instruction set or None): the implementations to compare (each has forward and backward)."""
    out = {}
    if formulation:
        out["formulation"] = (torch_formulation, None)
    if before_ops is not None:
        out["before"] = (before_ops, None)
    for isa in isas:
        out["after" if isa == isas[0] else f"after-{isa}"] = (torch.ops.carafe_deploy_cpu, isa)
    return out


def measure(mode, shape, dtypes, impls, repeat, clock):
    n, c, h, w = shape
    ho, wo = (h * SCALE, w * SCALE) if mode == "up" else (-(-h // SCALE), -(-w // SCALE))
    torch.manual_seed(0)
    x32 = torch.randn(n, c, h, w)
    kern32 = torch.rand(n, GROUP * K * K, ho, wo)
    gout32 = torch.randn(n, c, ho, wo)
    fns, faults = {}, {}
    for dname in dtypes:
        x, kern, gout = (t.to(DTYPES[dname]) for t in (x32, kern32, gout32))
        for name, (ops, isa) in impls.items():
            def call(direction, ops=ops, isa=isa, x=x, kern=kern, gout=gout):
                if isa is not None:
                    torch.ops.carafe_deploy_cpu.isa(isa)
                if direction == "fwd":
                    return ops.forward(x, kern, K, GROUP, SCALE, mode)
                return ops.backward(gout, x, kern, K, GROUP, SCALE, mode)
            for direction in ("fwd", "bwd"):
                fns[(name, dname, direction)] = lambda call=call, d=direction: call(d)
    # what any op with this output pays: allocating it and touching every page once
    fns[("fresh", "float32", "fwd")] = lambda: torch.empty(n, c, ho, wo).fill_(0.0)
    for key, fn in fns.items():
        faults[key] = minor_faults_per_call(fn)
    named = {"/".join(key): fn for key, fn in fns.items()}
    t = paired_medians(named, repeat, clock)
    times = {key: t["/".join(key)] for key in fns}
    # agreement: every variant's fp32 forward against the first one's
    ref = next(iter(impls))
    err = {}
    for name in impls:
        a = fns[(name, "float32", "fwd")]() if "float32" in dtypes else None
        b = fns[(ref, "float32", "fwd")]() if "float32" in dtypes else None
        err[name] = (a - b).abs().max().item() if a is not None else float("nan")
    elem = 4
    fwd_bytes = (x32.numel() + kern32.numel() + gout32.numel()) * elem
    bwd_bytes = (2 * x32.numel() + 2 * kern32.numel() + gout32.numel()) * elem
    return dict(times=times, faults=faults, err=err, fwd_bytes=fwd_bytes, bwd_bytes=bwd_bytes)


def case_name(mode, shape):
    n, c, h, w = shape
    return f"{mode} {n}×{c}×{h}×{w} " + ("→ ×2" if mode == "up" else "÷2")


def ms(v: float) -> str:
    return f"{v * 1e3:.2f} ms" if v < 0.1 else f"{v * 1e3:.1f} ms"


def report(rows, impls, dtypes, threads_list):
    names = list(impls)
    arrow = " → ".join
    print("\nfp32, % of the memory floor (forward: its floor; backward: its own), and backward / forward:\n")
    head = ["case", "threads", "fwd floor", *[f"fwd {v}" for v in names], "fwd % of floor",
            "bwd floor", *[f"bwd {v}" for v in names], "bwd % of floor", "bwd / fwd", "max abs diff"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        t = r["times"]
        fwd = [t[(v, "float32", "fwd")] for v in names]
        bwd = [t[(v, "float32", "bwd")] for v in names]
        cells = [case_name(r["mode"], r["shape"]), str(r["threads"]), ms(r["fwd_floor"]), *map(ms, fwd),
                 arrow(f"{100 * r['fwd_floor'] / v:.0f} %" for v in fwd), ms(r["bwd_floor"]), *map(ms, bwd),
                 arrow(f"{100 * r['bwd_floor'] / v:.0f} %" for v in bwd),
                 arrow(f"{b / f:.2f}×" for f, b in zip(fwd, bwd)),
                 ", ".join(f"{r['err'][v]:.1e}" for v in names[1:]) or "–"]
        print("| " + " | ".join(cells) + " |")

    print("\nFresh output pages: the op's minor page faults per call, and the cost of a fresh output-sized tensor:\n")
    head = ["case", "threads", "fresh output (alloc + fill)", "its page faults",
            *[f"page faults / call, {v}" for v in names]]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        f = r["faults"]
        cells = [case_name(r["mode"], r["shape"]), str(r["threads"]), ms(r["times"][("fresh", "float32", "fwd")]),
                 f"{f[('fresh', 'float32', 'fwd')]:.0f}",
                 *[f"fwd {f[(v, 'float32', 'fwd')]:.0f}, bwd {f[(v, 'float32', 'bwd')]:.0f}" for v in names]]
        print("| " + " | ".join(cells) + " |")

    narrow = [d for d in dtypes if d != "float32"]
    if narrow and "float32" in dtypes:
        print("\nNarrow dtypes: time over the same call in fp32 (below 1 = faster than fp32):\n")
        head = ["case", "threads", *[f"{SHORT[d]}/fp32 {direction}, {arrow(names)}" for d in narrow
                                     for direction in ("fwd", "bwd")]]
        print("| " + " | ".join(head) + " |")
        print("|" + " --- |" * len(head))
        for r in rows:
            t = r["times"]
            cells = [case_name(r["mode"], r["shape"]), str(r["threads"])]
            for d in narrow:
                for direction in ("fwd", "bwd"):
                    cells.append(arrow(f"{t[(v, d, direction)] / t[(v, 'float32', direction)]:.2f}" for v in names))
            print("| " + " | ".join(cells) + " |")

    if len(threads_list) > 1:
        t0, t1 = threads_list[0], threads_list[1]
        print(f"\nSpeed-up from {t0} to {t1} threads (time at {t0} / time at {t1}), fp32:\n")
        head = ["case", *[f"{direction} {v}" for direction in ("forward", "backward") for v in names]]
        print("| " + " | ".join(head) + " |")
        print("|" + " --- |" * len(head))
        by = {(r["mode"], r["shape"], r["threads"]): r for r in rows}
        for mode, shape in dict.fromkeys((r["mode"], r["shape"]) for r in rows):
            a, b = by[(mode, shape, t0)]["times"], by[(mode, shape, t1)]["times"]
            cells = [case_name(mode, shape)]
            for direction in ("fwd", "bwd"):
                for v in names:
                    x0, x1 = a[(v, "float32", direction)], b[(v, "float32", direction)]
                    cells.append(f"{ms(x0)} → {ms(x1)} ({x0 / x1:.2f}×)")
            print("| " + " | ".join(cells) + " |")


def benchmark(shapes, threads_list, repeat, dtypes, before, clock_name, formulation=False):
    clock = CLOCKS[clock_name]
    before_ops = build(before) if before else None
    # the widest first ("after"), then each narrower x86 build this CPU runs
    isas = [i for i in reversed(_cpu.ISAS[1:]) if _cpu.isa_supported(i)] or [_cpu.isa()]
    impls = variants(before_ops, isas, formulation)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"torch {torch.__version__}; after: {_cpu.status()}; before: {before or '–'}; k={K}, group={GROUP}, "
          f"s={SCALE}; median of {repeat}, variants alternating, clock {clock_name}; load average {' '.join(load)}",
          flush=True)
    rows = []
    try:
        for threads in threads_list:
            torch.set_num_threads(threads)
            bw = copy_bandwidth(repeat, clock)
            print(f"{threads} thread(s): copy bandwidth {bw / 1e9:.1f} GB/s", flush=True)
            for mode, shape in shapes:
                r = measure(mode, shape, dtypes, impls, repeat, clock)
                r.update(threads=threads, mode=mode, shape=shape, fwd_floor=r["fwd_bytes"] / bw,
                         bwd_floor=r["bwd_bytes"] / bw)
                rows.append(r)
                t = r["times"]
                print(f"  {case_name(mode, shape)}: " + "; ".join(
                    f"{v} fwd {ms(t[(v, 'float32', 'fwd')])} bwd {ms(t[(v, 'float32', 'bwd')])}" for v in impls)
                    if "float32" in dtypes else "", flush=True)
    finally:
        torch.ops.carafe_deploy_cpu.isa(isas[0])
    with open("/proc/loadavg") as f:
        print(f"load average at the end: {' '.join(f.read().split()[:3])}")
    if "float32" in dtypes:
        report(rows, impls, dtypes, threads_list)


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
    code = _MEMORY_PROBE.format(here=str(Path(__file__).resolve().parent), args=(*shape, k, s), ours=ours)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", metavar="COMMIT", help="the commit whose kernels are the 'before' (e.g. cac7fb6)")
    p.add_argument("--formulation", action="store_true", help="time the PyTorch formulation (the fallback) too")
    p.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), metavar="MODE:N,C,H,W")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=list(DTYPES))
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
    if a.clock == "cpu" and max(a.threads) > 1:
        raise SystemExit("--clock cpu measures one thread's speed only: use it with --threads 1")
    benchmark([parse_shape(s) for s in a.shapes], a.threads, a.repeat, a.dtypes, a.before, a.clock, a.formulation)


if __name__ == "__main__":
    main()
