"""The native CPU kernels of another commit, loaded next to this tree's, for before/after runs in one process.

    from kernels_at import build, kernels_in_use
    before = build("cac7fb6")                    # torch.ops.carafe_deploy_cpu_before (built once, cached)
    with kernels_in_use(before): model(x)        # carafe_deploy::carafe runs the old kernels inside the block

The commit's ``carafe_deploy/csrc`` and ``carafe_deploy/ops/_cpu.py`` come out of git (``git archive``) into
``build/kernels-at/<commit>/``; its own ``_cpu.py`` names the sources and compiler flags it was built with, and its
library is registered under ``carafe_deploy_cpu_before`` instead of ``carafe_deploy_cpu`` (the only change made to
it), so both sets of kernels can be called side by side, alternately, in one process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

from carafe_deploy.ops import _cpu

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "carafe_deploy_cpu_before"


def _commit(rev: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"], capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"--before {rev}: not a commit of this repository ({out.stderr.strip()})")
    return out.stdout.strip()


def _extract(commit: str, folder: Path) -> None:
    tar = subprocess.run(["git", "-C", str(REPO), "archive", commit, "carafe_deploy/csrc", "carafe_deploy/ops/_cpu.py"],
                         capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(folder, filter="data")
    for cpp in (folder / "carafe_deploy" / "csrc").glob("carafe_cpu*.cpp"):
        text = cpp.read_text()
        renamed = re.sub(r"TORCH_LIBRARY(_IMPL)?\(carafe_deploy_cpu\b", rf"TORCH_LIBRARY\1({NAMESPACE}", text)
        cpp.write_text(renamed)


def _build_recipe(folder: Path):
    """(sources, cflags) as the commit's own _cpu.py builds them."""
    spec = importlib.util.spec_from_file_location("carafe_cpu_at_commit", folder / "carafe_deploy" / "ops" / "_cpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sources = getattr(mod, "COMPILED", None) or (mod.SOURCE,)
    cflags = mod._CFLAGS if hasattr(mod, "_CFLAGS") else mod._cflags(mod._isa())
    return [str(s) for s in sources], list(cflags)


def build(rev: str):
    """``torch.ops.carafe_deploy_cpu_before``: the CPU kernels of commit ``rev``, built once into build/kernels-at/."""
    if hasattr(torch.ops, NAMESPACE) and hasattr(getattr(torch.ops, NAMESPACE), "forward"):
        return getattr(torch.ops, NAMESPACE)
    from torch.utils.cpp_extension import load

    commit = _commit(rev)
    folder = REPO / "build" / "kernels-at" / commit[:12]
    if not (folder / "carafe_deploy").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        _extract(commit, folder)
    sources, cflags = _build_recipe(folder)
    print(f"kernels of {rev} ({commit[:12]}): {' '.join(cflags)}", file=sys.stderr, flush=True)
    load(name=f"{NAMESPACE}_{commit[:12]}", sources=sources, build_directory=str(folder), extra_cflags=cflags,
         extra_ldflags=["-fopenmp"], is_python_module=False)
    return getattr(torch.ops, NAMESPACE)


@contextlib.contextmanager
def kernels_in_use(ops):
    """carafe_deploy::carafe calls ``ops`` (e.g. ``build(rev)``) instead of this tree's kernels inside the block."""
    if not _cpu.available():
        raise SystemExit(f"the native CPU kernels are not available: {_cpu.status()}")
    saved = _cpu.native_ops
    _cpu.native_ops = lambda: ops
    try:
        yield
    finally:
        _cpu.native_ops = saved
