"""How many CPU threads the demo's and the samples' PyTorch and ONNX Runtime work use.

PyTorch's default is one thread per core. On a machine whose cores other work already holds, those threads wait for
each other at every op (a thread that is not scheduled holds up the rest): on the 2-core dev machine under load, a
training step of the segmentation sample took 3.8 s with 2 threads and 0.43 s with 1. So the default here is the
cores that are free: other processes' CPU use, measured from ``/proc/stat`` with this process's own use subtracted,
is taken off the core count; during training it is measured again every few seconds and the thread count follows.

OMP_WAIT_POLICY is left as it is: one thread, what a busy machine gets, has no pool to spin or sleep. (Under load,
PASSIVE brought a 2-thread step from 3.8 s to 0.95 s, still twice one thread's 0.43 s.)
"""

from __future__ import annotations

import os
import time

__all__ = ["cores", "CoreMonitor", "threads_for", "auto_threads"]


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _busy_and_own() -> tuple[float, float] | None:
    """(seconds of CPU busy on the whole machine, seconds of this process) so far; ``None`` without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return busy, own.user + own.system


class CoreMonitor:
    """Cores free of other work since the last sample: the machine's busy CPU time less this process's own, over the
    wall time between samples."""

    def __init__(self):
        self._last = (time.monotonic(), _busy_and_own())

    def free_cores(self, wait: float = 0.0) -> float:
        """Free cores since the last call (or since construction), after sleeping ``wait`` seconds if asked."""
        if wait:
            time.sleep(wait)
        then, before = self._last
        now, after = time.monotonic(), _busy_and_own()
        self._last = (now, after)
        total = os.cpu_count() or 1
        if before is None or after is None or now - then <= 0:
            return _free_from_loadavg(total)
        others = ((after[0] - before[0]) - (after[1] - before[1])) / (now - then)
        return max(0.0, total - max(0.0, others))


def _free_from_loadavg(total: int) -> float:
    try:
        return max(0.0, total - os.getloadavg()[0])
    except (AttributeError, OSError):
        return float(total)


def threads_for(free: float) -> int:
    """Threads for ``free`` free cores: a core counts when three quarters of it are free (a thread that shares its
    core holds up the others far more than one thread fewer costs); at least one, at most the cores this process
    may use."""
    return max(1, min(cores(), int(free + 0.25)))


def auto_threads(monitor: CoreMonitor | None = None, wait: float = 0.5) -> tuple[int, str]:
    """(threads, why) from the cores free now, measured over ``wait`` seconds."""
    free = (monitor or CoreMonitor()).free_cores(wait)
    total = os.cpu_count() or 1
    return threads_for(free), f"{total} core{'s' * (total != 1)}, {total - free:.1f} busy with other work"
