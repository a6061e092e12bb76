"""Writing files safely: every file the project writes goes through here.

A write goes to a temporary file in the destination's own directory and is renamed over the destination only when it
is complete, so a failed write (disk full, file-size limit, an exception half-way) leaves the previous file as it was
and no half-written file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import DeployError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "refuse_overwriting_inputs"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    For writers that take a path (``onnx.save``, ``np.save``, ``savefig``). ``suffix`` defaults to ``path``'s, because
    some writers choose the format from it.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DeployError(f"cannot write {str(path)!r}: directory {str(parent)!r} does not exist")
    if path.is_dir():
        raise DeployError(f"cannot write {str(path)!r}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix,
                                   dir=parent)
    except OSError as exc:
        raise DeployError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if path.exists():  # keep the permissions of the file being replaced
            os.chmod(tmp_path, path.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise DeployError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def refuse_overwriting_inputs(outputs: dict, inputs) -> None:
    """``DeployError`` before any work when an output path (``{option: path}``) is one of the input files or another
    output; outputs that are ``None`` are ignored."""
    def key(p) -> str:
        return os.path.realpath(os.fspath(p))

    seen_inputs = {key(p): p for p in inputs if p}
    seen_outputs: dict[str, str] = {}
    for option, path in outputs.items():
        if not path:
            continue
        k = key(path)
        if k in seen_inputs:
            raise DeployError(f"{option} {str(path)!r} would overwrite an input file; choose another path")
        if k in seen_outputs:
            raise DeployError(f"{option} and {seen_outputs[k]} both write {str(path)!r}; choose different paths")
        seen_outputs[k] = option
