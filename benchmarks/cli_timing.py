"""Wall time of the command line as a new user meets it: every ``--help``, or any command (the demo), on the machine
as it is or with busy loops loading its cores.

    python benchmarks/cli_timing.py [--repeat 5] [--busy 2]          # every --help, console script and python -m
    python benchmarks/cli_timing.py --busy 2 -- carafe-deploy demo   # one command, once

``--busy N`` starts N busy-loop processes for the whole measurement (and stops them after), so "under load" is a
command anyone can rerun. The machine's load average and the command's user+system CPU time are printed with each
figure: on a shared machine the other work matters as much as ours.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager


@contextmanager
def busy_loops(n: int):
    """N processes that spin until stopped: the cores as a busy laptop has them."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)  # let them get scheduled before timing starts
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def timed(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, user+system CPU seconds of the command, exit status)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL if "--help" in cmd else None, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def help_commands() -> list[list[str]]:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from carafe_deploy.cli import _COMMANDS

    script = shutil.which("carafe-deploy")
    entries = ([[script]] if script else []) + [[sys.executable, "-m", "carafe_deploy"]]
    return [[*entry, *sub, "--help"] for sub in ([], *([c] for c in _COMMANDS)) for entry in entries]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5, help="runs per --help command (default: 5); a command runs once")
    p.add_argument("--busy", type=int, default=0, help="busy-loop processes during the measurement (default: 0)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="a command to time (after --); default: every --help")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} before, {args.busy} busy loops")
    with busy_loops(args.busy):
        if command:
            wall, cpu, code = timed(command)
            print(f"{' '.join(command)}: {wall:.1f} s wall, {cpu:.1f} s CPU, exit {code}, "
                  f"load average {os.getloadavg()[0]:.2f} after")
            return code
        worst = 0.0
        for cmd in help_commands():
            runs = [timed(cmd) for _ in range(args.repeat)]
            if any(code for _, _, code in runs):
                print(f"{' '.join(cmd)}: exit {runs[-1][2]}")
                return 1
            walls = [w for w, _, _ in runs]
            worst = max(worst, statistics.median(walls))
            name = " ".join(os.path.basename(c) if i == 0 else c for i, c in enumerate(cmd))
            print(f"{name:48s} median {statistics.median(walls):.3f} s  (min {min(walls):.3f}, max {max(walls):.3f}; "
                  f"CPU {statistics.median(c for _, c, _ in runs):.3f} s)")
        print(f"slowest median {worst:.3f} s; load average {os.getloadavg()[0]:.2f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
