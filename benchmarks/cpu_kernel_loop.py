"""One native CPU kernel of carafe_deploy::carafe called in a loop, for a profiler (the profiles of docs/PERFORMANCE.md).

    perf record -D 8100 -e cpu-clock -F 1000 -o fwd-down.data python benchmarks/cpu_kernel_loop.py fwd down
    perf report -i fwd-down.data --no-children --sort dso,symbol --stdio

The process sleeps until 8 s after its start (imports and the first call are done by then; ``perf record -D 8100``
starts sampling there), then calls the kernel for --seconds of CPU time, 1 thread, fp32, k=5, G=1, s=2, at the FPN
shapes of issue 14 ("up": 1×256×100×168 -> ×2, "down": 1×256×200×336 ÷ 2), and prints its CPU time per call.
"""

from __future__ import annotations

import argparse
import gc
import time

START = time.time()

import torch  # noqa: E402

from carafe_deploy.ops import _cpu  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("direction", choices=("fwd", "bwd"))
    p.add_argument("mode", choices=("up", "down"))
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--start-at", type=float, default=8.0, help="seconds after start when the timed loop begins")
    p.add_argument("--shape", type=int, nargs=4, metavar=("N", "C", "H", "W"),
                   help="the input's shape (default: the FPN shape of the mode)")
    a = p.parse_args()
    if not _cpu.available():
        raise SystemExit(f"the native CPU kernels are not available: {_cpu.status()}")
    torch.set_num_threads(1)
    n, c, h, w = a.shape or ((1, 256, 100, 168) if a.mode == "up" else (1, 256, 200, 336))
    ho, wo = (2 * h, 2 * w) if a.mode == "up" else (h // 2, w // 2)
    x, kern, gout = torch.randn(n, c, h, w), torch.rand(n, 25, ho, wo), torch.randn(n, c, ho, wo)
    ops = torch.ops.carafe_deploy_cpu
    if a.direction == "fwd":
        def call():
            return ops.forward(x, kern, 5, 1, 2, a.mode)
    else:
        def call():
            return ops.backward(gout, x, kern, 5, 1, 2, a.mode)
    call()
    gc.disable()
    time.sleep(max(0.0, a.start_at - (time.time() - START)))
    t0, calls = time.process_time(), 0
    while time.process_time() - t0 < a.seconds:
        call()
        calls += 1
    print(f"{a.direction} {a.mode}: {(time.process_time() - t0) / calls * 1e3:.1f} ms CPU time per call ({calls} calls)")


if __name__ == "__main__":
    main()
