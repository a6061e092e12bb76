"""The native CPU kernels (``carafe_deploy/csrc/carafe_cpu*.cpp``) behind ``carafe_deploy::carafe`` on the CPU.

Built on first use with ``torch.utils.cpp_extension.load`` into a cache folder (torch's extension root, which
``TORCH_EXTENSIONS_DIR`` moves, under a name that carries the torch version and a hash of the sources), so the
compiled library always matches the torch it is loaded into; the build prints one line and takes a minute or so once,
later processes load the cached library. ``pip install -e .`` therefore needs no torch at install time.

The library holds the kernels four times, for AVX-512 with BF16, AVX-512, AVX2 and the platform's baseline (x86-64
with GCC; other compilers and platforms get the baseline only), and uses the widest one this CPU runs (``isa()``);
``CARAFE_DEPLOY_CPU_ISA=avx2`` (or ``generic``, ``avx512``, ``avx512bf16``) picks one for the process, ``use_isa`` for
a while (tests).

When it cannot be had (no C++ compiler, a failed build, a non-GCC/Clang toolchain) the op warns once and runs the
PyTorch formulation instead. ``CARAFE_DEPLOY_NO_CPU_EXT=1`` disables the kernels without a warning;
``CARAFE_DEPLOY_REQUIRE_CPU_EXT=1`` turns an unavailable kernel into an error (CI sets it, so a silent fallback fails).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import threading
import warnings
from pathlib import Path

import torch

__all__ = ["DISABLE_ENV", "ISA_ENV", "ISAS", "REQUIRE_ENV", "SOURCES", "available", "isa", "isa_supported",
           "isa_unavailable", "load", "native_ops", "release_reused_outputs", "status", "use_isa"]

DISABLE_ENV = "CARAFE_DEPLOY_NO_CPU_EXT"
REQUIRE_ENV = "CARAFE_DEPLOY_REQUIRE_CPU_EXT"
ISA_ENV = "CARAFE_DEPLOY_CPU_ISA"
ISAS = ("generic", "avx2", "avx512", "avx512bf16")
_CSRC = Path(__file__).resolve().parents[1] / "csrc"
# compiled: the binding, the dispatcher and one translation unit per instruction set
COMPILED = tuple(_CSRC / name for name in ("carafe_cpu.cpp", "carafe_cpu_dispatch.cpp",
                                           *(f"carafe_cpu_isa_{isa}.cpp" for isa in ISAS)))
# what the build depends on (its folder name hashes them)
SOURCES = (*COMPILED, *(_CSRC / name for name in ("carafe_cpu_dispatch.h", "carafe_cpu_geometry.h",
                                                 "carafe_cpu_kernels.h", "carafe_cpu_isa_entry.h")))
_NAME = "carafe_deploy_cpu"

_lock = threading.Lock()
_state: dict[str, object] = {"loaded": False, "error": None, "warned": False}


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


# -fopenmp so that at::parallel_for runs on torch's OpenMP pool: the library links the libgomp torch already loaded
# (same soname), so there is one OpenMP runtime and torch.set_num_threads applies. torch adds its -std. No -m flags:
# the library must run on any CPU of the platform; the AVX2 / AVX-512 code is chosen at run time.
_CFLAGS = ["-O3", "-ffp-contract=fast", "-fopenmp"]


def _build_directory() -> Path:
    """One folder per (sources, torch, Python, platform): a changed source or torch never loads a stale build.

    Under torch's extension root (``TORCH_EXTENSIONS_DIR``, else the user cache), as torch's own JIT builds are.
    """
    from torch import _appdirs

    default = os.path.realpath(_appdirs.user_cache_dir(appname="torch_extensions"))
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or default
    digest = hashlib.sha256(" ".join(_CFLAGS).encode())
    for path in SOURCES:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    version = torch.__version__.replace("+", "_")
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return Path(root) / f"{_NAME}-{digest.hexdigest()[:12]}-torch{version}-{py}-{platform.machine().lower()}"


def _why_disabled() -> str | None:
    if _flag(DISABLE_ENV):
        return f"disabled by {DISABLE_ENV}"
    missing = [str(p) for p in SOURCES if not p.is_file()]
    if missing:
        return f"kernel sources not found ({', '.join(missing)})"
    return None


def load() -> str | None:
    """Build (once) and load the kernels; ``None`` when ``torch.ops.carafe_deploy_cpu`` is ready, else the reason."""
    with _lock:
        if _state["loaded"]:
            return None
        if _state["error"] is not None:
            return _state["error"]  # type: ignore[return-value]
        reason = _why_disabled()
        if reason is None:
            try:
                reason = _build_and_load()
            except Exception as exc:  # whatever goes wrong, the op must still run (on the fallback)
                reason = f"loading the CPU kernels failed: {type(exc).__name__}: {exc}"
        if reason is None:
            _state["loaded"] = True
        else:
            _state["error"] = reason
        return reason


def _build_and_load() -> str | None:
    reason = _load_library()
    if reason is None:
        reason = _apply_isa_env()
    return reason


def _apply_isa_env() -> str | None:
    wanted = os.environ.get(ISA_ENV, "")
    if not wanted:
        return None
    if wanted not in ISAS:
        return f"{ISA_ENV}={wanted!r} is not one of {', '.join(ISAS)}"
    why = torch.ops.carafe_deploy_cpu.isa_status(wanted)
    if why:
        return f"{ISA_ENV}={wanted}: {why}"
    torch.ops.carafe_deploy_cpu.isa(wanted)
    return None


def _load_library() -> str | None:
    build_dir = _build_directory()
    library = build_dir / f"{_NAME}.so"
    if library.is_file():  # built before from these very sources (the folder name says so): no build tools needed
        try:
            torch.ops.load_library(str(library))
            return None
        except Exception:  # e.g. a half-written file from an interrupted build: build again below
            pass
    try:
        from torch.utils.cpp_extension import load as cpp_load

        build_dir.mkdir(parents=True, exist_ok=True)
        print(f"carafe_deploy: compiling the CPU kernels once into {build_dir} (about a minute)...",
              file=sys.stderr, flush=True)
        cpp_load(
            name=_NAME,
            sources=[str(p) for p in COMPILED],
            build_directory=str(build_dir),
            extra_cflags=_CFLAGS,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=_flag("CARAFE_DEPLOY_VERBOSE_BUILD"),
        )
    except Exception as exc:  # a failed build must never break the op: fall back instead
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        return f"building the CPU kernels failed: {type(exc).__name__}: {lines[0] if lines else ''}"
    if not hasattr(torch.ops, _NAME) or not hasattr(getattr(torch.ops, _NAME), "forward"):
        return "the CPU kernel library loaded but registered no ops"
    return None


def native_ops():
    """``torch.ops.carafe_deploy_cpu`` when the native kernels run CPU calls, else ``None`` (see fallback_reason)."""
    if _state["loaded"]:
        return torch.ops.carafe_deploy_cpu
    return torch.ops.carafe_deploy_cpu if fallback_reason() is None else None


def available() -> bool:
    """True when the native kernels run this process's CPU calls (builds them on the first call)."""
    return load() is None


def status() -> str:
    """One line for reports: which CPU implementation the op uses and why."""
    reason = load()
    if reason is None:
        return f"native ({isa()}, {_build_directory()})"
    return f"PyTorch formulation ({reason})"


def isa() -> str:
    """The instruction set the native kernels use now: one of ISAS (loads them first)."""
    reason = load()
    if reason is not None:
        raise RuntimeError(f"the native CPU kernels are not available: {reason}")
    return torch.ops.carafe_deploy_cpu.isa("")


def isa_unavailable(name: str) -> str | None:
    """``None`` when the native kernels of instruction set `name` can run here, else why not (one line)."""
    if name not in ISAS:
        raise ValueError(f"unknown instruction set {name!r}; one of {', '.join(ISAS)}")
    reason = load()
    if reason is not None:
        return f"the native CPU kernels are not available: {reason}"
    return torch.ops.carafe_deploy_cpu.isa_status(name) or None


def isa_supported(name: str) -> bool:
    """Whether this build has the kernels for `name` and this CPU runs them."""
    return isa_unavailable(name) is None


@contextlib.contextmanager
def use_isa(name: str):
    """Run the native kernels of one instruction set inside the block (process-wide; tests and benchmarks)."""
    why = isa_unavailable(name)
    if why is not None:
        raise RuntimeError(f"the {name} CPU kernels cannot run here: {why}")
    previous = torch.ops.carafe_deploy_cpu.isa(name)
    try:
        yield
    finally:
        torch.ops.carafe_deploy_cpu.isa(previous)


def release_reused_outputs() -> None:
    """Free the large output blocks the native kernels keep for reuse (see carafe_cpu.cpp, ReusingAllocator)."""
    if _state["loaded"]:
        torch.ops.carafe_deploy_cpu.release_reused()


def fallback_reason() -> str | None:
    """``None`` when the native kernels are to be used; otherwise the reason, after warning once (or raising)."""
    reason = load()
    if reason is None:
        return None
    if _flag(REQUIRE_ENV):
        raise RuntimeError(f"carafe_deploy: the native CPU kernels are required ({REQUIRE_ENV}) but {reason}")
    if reason.startswith("disabled by"):
        return reason  # asked for: no warning
    with _lock:
        warn = not _state["warned"]
        _state["warned"] = True
    if warn:
        warnings.warn(
            f"carafe_deploy: native CPU kernels unavailable ({reason}); using the slower PyTorch formulation",
            RuntimeWarning,
            stacklevel=4,
        )
    return reason


def _reset_for_tests() -> None:
    with _lock:
        if not _state["loaded"]:
            _state.update(error=None, warned=False)
        else:
            _state.update(warned=False)
