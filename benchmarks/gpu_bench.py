"""GPU benchmark of the CARAFE CUDA kernels (plugins/common) against the DRAM roofline and mmcv's CARAFE forward.

    python benchmarks/gpu_bench.py [--out docs/PERFORMANCE.md] [--iters 200]

Each case is timed after warm-up with CUDA events around replays of a CUDA graph of 10 launches (so host launch
overhead does not count); the median of --iters replays, divided by 10, is reported.
Bytes moved = features + kernels read once + output written once. The roofline is the bandwidth this device reaches
on a large device-to-device copy (measured here, same method). mmcv's forward is `mmcv.ops.carafe` of an mmcv installed
with CUDA ops on that machine (nothing of mmcv is vendored or built by this repo); without one the mmcv columns read
n/a. mmcv has no "down" mode and no bf16.
Outputs of both implementations are compared in every case (max |ours - mmcv| in the table's notes).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from carafe_deploy.files import atomic_write_text  # noqa: E402
from carafe_deploy.ops import _cuda  # noqa: E402

# (name, N, C, H, W, mode); k = 5, G = 1, s = 2 throughout (the benchmark set).
CASES = [
    ("FPN 25x42->50x84", 1, 256, 25, 42, "up"),
    ("FPN 50x84->100x168", 1, 256, 50, 84, "up"),
    ("FPN 100x168->200x336", 1, 256, 100, 168, "up"),
    ("FPN 25x42->50x84", 8, 256, 25, 42, "up"),
    ("FPN 50x84->100x168", 8, 256, 50, 84, "up"),
    ("FPN 100x168->200x336", 8, 256, 100, 168, "up"),
    ("mask head 14x14->28x28", 100, 256, 14, 14, "up"),
    ("CARAFE++ down 200x336->100x168", 1, 256, 200, 336, "down"),
    ("CARAFE++ down 200x336->100x168", 8, 256, 200, 336, "down"),
]
K, G, S = 5, 1, 2
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def time_us(fn, iters: int, warmup: int, launches: int = 10) -> float:
    """Median GPU time of one call of ``fn``, in microseconds.

    ``launches`` calls are captured in a CUDA graph and each replay is timed with CUDA events, so that host-side launch
    overhead (Python, allocation) does not count for the small shapes; falls back to plain launches if capture fails.
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    run, per_run = fn, 1
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(launches):
                fn()
        run, per_run = graph.replay, launches
    except Exception as exc:  # noqa: BLE001 - timing still works without a graph
        print(f"  (CUDA graph capture failed, timing plain launches: {exc})", file=sys.stderr)
    run()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        starts[i].record()
        run()
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) * 1e3 / per_run


def copy_bandwidth(iters: int) -> float:
    """GB/s of a 1 GiB device-to-device copy (read + write counted)."""
    n = (1 << 30) // 4
    src = torch.empty(n, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    us = time_us(lambda: dst.copy_(src), iters, 5, launches=1)
    return 2 * src.numel() * 4 / (us * 1e-6) / 1e9


def load_mmcv():
    """mmcv's own CARAFE op, when an mmcv with CUDA ops is installed (mmcv is never built or vendored here)."""
    try:
        from mmcv.ops.carafe import carafe as mmcv_carafe
    except Exception as exc:  # ImportError, or mmcv without compiled ops
        return None, f"mmcv with CUDA ops is not installed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return mmcv_carafe, None


def _build_dir(name: str) -> Path:
    d = REPO / "third_party_fetched" / "build" / name  # git-ignored
    d.mkdir(parents=True, exist_ok=True)
    return d


def inputs(n, c, h, w, mode, dtype, gen):
    ho, wo = (h * S, w * S) if mode == "up" else (-(-h // S), -(-w // S))
    x = torch.randn(n, c, h, w, device="cuda", generator=gen).to(dtype)
    kern = torch.randn(n, G, K * K, ho, wo, device="cuda", generator=gen).softmax(2).reshape(n, G * K * K, ho, wo)
    return x, kern.to(dtype).contiguous(), ho, wo


GPU_MARKER = "<!-- benchmarks/gpu_bench.py replaces everything below this line -->"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "PERFORMANCE.md")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to benchmark", file=sys.stderr)
        return 2
    ours, reason = _cuda.load_extension()
    if ours is None:
        print(f"our CUDA extension is unavailable: {reason}", file=sys.stderr)
        return 1
    mmcv, mmcv_reason = load_mmcv()
    if mmcv is None:
        print(f"mmcv column: n/a ({mmcv_reason})", file=sys.stderr)

    device = torch.cuda.get_device_name()
    bw = copy_bandwidth(max(20, args.iters // 4))
    print(f"{device}: device-to-device copy {bw:.0f} GB/s")
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    notes = []
    for name, n, c, h, w, mode in CASES:
        for dname, dtype in DTYPES.items():
            x, kern, ho, wo = inputs(n, c, h, w, mode, dtype, gen)
            out = torch.empty(n, c, ho, wo, device="cuda", dtype=dtype)
            us = time_us(lambda: ours.forward(x, kern, K, G, S, mode), args.iters, args.warmup)
            nbytes = (x.numel() + kern.numel() + out.numel()) * x.element_size()
            gbs = nbytes / (us * 1e-6) / 1e9
            mm_us = None
            if mmcv is not None and mode == "up" and dtype != torch.bfloat16:
                mm_us = time_us(lambda: mmcv(x, kern, K, G, S), args.iters, args.warmup)
                diff = (mmcv(x, kern, K, G, S).float() - ours.forward(x, kern, K, G, S, mode).float()).abs().max().item()
                notes.append(f"{name} N={n} {dname}: max |ours - mmcv| = {diff:.3g}")
            variant = ours.variant(x, kern, K, G, S, mode)
            row = (device, f"{name} N={n}", mode, dname, variant, us, gbs, 100 * gbs / bw, mm_us)
            rows.append(row)
            mm = f"{mm_us:9.1f} us  x{mm_us / us:5.2f}" if mm_us else "mmcv n/a"
            print(f"{row[1]:40s} {dname} {variant:9s} {us:9.1f} us {gbs:7.0f} GB/s {row[7]:5.1f}%  {mm}")
            del x, kern, out
            torch.cuda.empty_cache()

    cmd = "python benchmarks/gpu_bench.py" + ("" if args.out == REPO / "docs" / "PERFORMANCE.md" else f" --out {args.out}")
    lines = [
        GPU_MARKER,
        "## CUDA kernels",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on **{device}** with torch "
        f"{torch.__version__} (CUDA {torch.version.cuda}) by:",
        "",
        "```bash",
        cmd,
        "```",
        "",
        f"k = {K}, G = {G}, s = {S}, C = 256. Median of {args.iters} CUDA-event timings of a CUDA graph of 10 "
        f"launches (divided by 10), after {args.warmup} warm-up launches. Bytes = features + kernels read once + output written once. Roofline = "
        f"{bw:.0f} GB/s, the bandwidth of a 1 GiB device-to-device copy measured in the same run. mmcv = `mmcv.ops.carafe` "
        "of an installed mmcv with CUDA ops (its forward includes its layout transposes and its output allocation); it has no \"down\" mode and no bf16.",
        "",
        "| device | shape | mode | dtype | kernel | µs | GB/s | % of roofline | mmcv µs | × vs mmcv |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for dev, shape, mode, dname, variant, us, gbs, pct, mm_us in rows:
        mm = f"{mm_us:.1f} | {mm_us / us:.2f}" if mm_us else "n/a | n/a"
        lines.append(f"| {dev} | {shape} | {mode} | {dname} | {variant} | {us:.1f} | {gbs:.0f} | {pct:.0f}% | {mm} |")
    if mmcv_reason:
        lines += ["", f"mmcv columns n/a: {mmcv_reason}."]
    if notes:
        lines += ["", "Agreement with mmcv's output (same inputs):", ""] + [f"- {s}" for s in notes]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # the file's CPU part (benchmarks/cpu_op.py, model_overhead.py) stays: only what follows the marker is replaced
    before = args.out.read_text().split(GPU_MARKER)[0] if args.out.is_file() else "# Performance\n\n"
    atomic_write_text(args.out, before + "\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
