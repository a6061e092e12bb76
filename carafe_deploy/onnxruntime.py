"""The ONNX Runtime custom-op library for ``carafe::CARAFE``: ONNX Runtime runs the plugin form (CONTRACT §2) with the
op's own native CPU kernels.

``library_path()`` returns the library's path for ``SessionOptions.register_custom_ops_library``, as
onnxruntime-extensions' ``get_library_path()`` does::

    import onnxruntime as ort
    from carafe_deploy.onnxruntime import library_path

    options = ort.SessionOptions()
    options.register_custom_ops_library(library_path())
    session = ort.InferenceSession("model_plugin.onnx", options)

**Compiled on first use, like the op's CPU kernels** (``carafe_deploy/csrc/carafe_ort.cpp`` with the kernels'
torch-free dispatch, ``carafe_cpu_dispatch.cpp`` and ``carafe_cpu_isa_*.cpp``): a C++ compiler builds it once into a
cache folder named after the sources and the ONNX Runtime header, later processes find it there. Not at install:
``pip install -e .`` needs no compiler and no ONNX Runtime header. Like the op, it holds the AVX-512, AVX2 and baseline
kernels and runs the widest this CPU has. It links no
ONNX Runtime library and asks for C API version 16, so one build serves ONNX Runtime 1.16 up to the newest in the
same environment.

The build needs ``onnxruntime_c_api.h``, which ONNX Runtime's pip wheel does not ship: the folder holding it is
``$CARAFE_DEPLOY_ORT_INCLUDE``, else a system install (Debian's and Ubuntu's ``libonnxruntime-dev`` put it in
``/usr/include/onnxruntime``), else ONNX Runtime's release archives' ``include/`` folder, wherever the user unpacked
it. Any version from 1.16 on will do. ``$CARAFE_DEPLOY_ORT_LIBRARY_DIR`` moves the cache (default
``~/.cache/carafe-deploy/onnxruntime``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from .errors import MissingDependencyError

__all__ = ["INCLUDE_ENV", "CACHE_ENV", "SOURCES", "library_path", "available", "status", "register_library"]

INCLUDE_ENV = "CARAFE_DEPLOY_ORT_INCLUDE"
CACHE_ENV = "CARAFE_DEPLOY_ORT_LIBRARY_DIR"
HEADER = "onnxruntime_c_api.h"
_CSRC = Path(__file__).resolve().parent / "csrc"
SOURCE = _CSRC / "carafe_ort.cpp"
# the kernels without torch: the dispatcher and its instruction-set builds, one file each (and the headers they include)
_UNITS = (SOURCE, _CSRC / "carafe_cpu_dispatch.cpp", *sorted(_CSRC.glob("carafe_cpu_isa_*.cpp")))
SOURCES = (*_UNITS, *(_CSRC / h for h in ("carafe_cpu_dispatch.h", "carafe_cpu_geometry.h", "carafe_cpu_kernels.h",
                                          "carafe_cpu_isa_entry.h")))
_NAME = "libcarafe_ort.so"
_SYSTEM_INCLUDES = ("/usr/include/onnxruntime", "/usr/local/include/onnxruntime", "/usr/include", "/usr/local/include")

_lock = threading.Lock()
_built: dict[str, str] = {}


def _include_dir() -> Path:
    env = os.environ.get(INCLUDE_ENV)
    if env:
        if not (Path(env) / HEADER).is_file():
            raise MissingDependencyError(f"{INCLUDE_ENV}={env} has no {HEADER}")
        return Path(env)
    for folder in _SYSTEM_INCLUDES:
        if (Path(folder) / HEADER).is_file():
            return Path(folder)
    raise MissingDependencyError(
        f"the ONNX Runtime custom-op library for carafe::CARAFE is built on first use and needs {HEADER} "
        f"(ONNX Runtime 1.16 or newer), which the onnxruntime wheel does not ship: install libonnxruntime-dev "
        f"(Debian, Ubuntu) or unpack an ONNX Runtime release archive and set {INCLUDE_ENV} to its include/ folder; "
        f"or run the portable form instead (`carafe-deploy convert MODEL.onnx --to portable`)"
    )


def _compiler() -> str:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise MissingDependencyError("the ONNX Runtime custom-op library needs a C++ compiler (g++ or clang++); none found")


def _flags(include: Path) -> list[str]:
    # no -m flags: the instruction-set builds carry their own target pragmas, and the library runs on any CPU
    return ["-std=c++17", "-O3", "-ffp-contract=fast", "-fPIC", "-shared",
            "-fvisibility=hidden", f"-I{include}", f"-I{_CSRC}"]


def _build_directory(include: Path) -> Path:
    """One folder per (sources, header, flags): a changed source or header never loads a stale build."""
    digest = hashlib.sha256(" ".join(_flags(Path("."))).encode())
    for path in (*SOURCES, include / HEADER):
        digest.update(path.read_bytes())
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
        "carafe-deploy" / "onnxruntime"
    return Path(root) / f"carafe_ort-{digest.hexdigest()[:12]}"


def library_path() -> str:
    """The library's path (built on the first call in an environment); ``MissingDependencyError`` with the reason
    when it cannot be built."""
    with _lock:
        if "path" in _built:
            return _built["path"]
        missing = [str(p) for p in SOURCES if not p.is_file()]
        if missing:
            raise MissingDependencyError(f"the custom-op library's sources are missing ({', '.join(missing)})")
        include = _include_dir()
        folder = _build_directory(include)
        library = folder / _NAME
        if not library.is_file():
            _build(library, include)
        _built["path"] = str(library)
        return _built["path"]


def _build(library: Path, include: Path) -> None:
    from .files import atomic_path

    compiler = _compiler()
    library.parent.mkdir(parents=True, exist_ok=True)
    print(f"carafe_deploy: compiling the ONNX Runtime custom-op library once into {library.parent} "
          "(about 15 s)...", file=sys.stderr, flush=True)
    with atomic_path(library) as tmp:  # a concurrent or interrupted build never leaves half a library
        proc = subprocess.run([compiler, *_flags(include), *map(str, _UNITS), "-o", str(tmp)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            errors = [line for line in proc.stderr.splitlines() if "error" in line] or proc.stderr.splitlines()
            raise MissingDependencyError(f"building the ONNX Runtime custom-op library failed: "
                                         f"{errors[0].strip() if errors else 'exit status ' + str(proc.returncode)}")


def available() -> bool:
    """True when the library is built or can be (builds it)."""
    try:
        library_path()
    except MissingDependencyError:
        return False
    return True


def status() -> str:
    """One line for reports: the library's path, or why there is none."""
    try:
        return library_path()
    except MissingDependencyError as exc:
        return f"unavailable ({exc})"


def register_library(options) -> str:
    """Register the library with ``options`` (an ``onnxruntime.SessionOptions``); returns its path."""
    path = library_path()
    options.register_custom_ops_library(path)
    return path
