"""What the natively compiled parts (the op's CPU kernels, the ONNX Runtime custom-op library) are built for: the
instruction set of this CPU. No torch, no onnxruntime: both builders import it."""

from __future__ import annotations

import platform

__all__ = ["isa", "isa_flags"]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def isa() -> str:
    """"avx2" (with FMA and F16C) when this CPU has them, else "base" (the compiler's default for the platform)."""
    if platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma", "f16c"} <= _cpu_flags():
        return "avx2"
    return "base"


def isa_flags(name: str) -> list[str]:
    """The compiler flags of instruction set ``name``."""
    return ["-mavx2", "-mfma", "-mf16c"] if name == "avx2" else []
