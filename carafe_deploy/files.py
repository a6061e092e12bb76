"""Writing files safely: every file the project writes goes through here.

A write goes to a temporary file in the destination's own directory and is renamed over the destination only when it
is complete, so a failed write (disk full, file-size limit, an exception half-way) leaves the previous file as it was
and no half-written file behind. Before any work, :func:`refuse_overwriting_inputs` refuses an output that is an
input (or another output) and an output whose directory is missing or cannot be written; :func:`require_file` refuses
an input that is missing, not a file, or empty.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import DeployError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "refuse_overwriting_inputs", "check_writable",
           "make_dir", "require_file"]


def _destination(path: str | os.PathLike) -> Path:
    """``path`` with symlinks resolved (a write replaces the link's target, not the link), checked to be a place a
    regular file can be written: an existing directory, device or pipe there is refused, never replaced."""
    path = Path(os.path.realpath(os.fspath(path))) if os.path.islink(path) else Path(path)
    if path.is_dir():
        raise DeployError(f"cannot write {str(path)!r}: it is a directory")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise DeployError(f"cannot write {str(path)!r}: it exists and is not a regular file")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DeployError(f"cannot write {str(path)!r}: directory {str(parent)!r} does not exist")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    For writers that take a path (``onnx.save``, ``np.save``, ``savefig``). ``suffix`` defaults to ``path``'s, because
    some writers choose the format from it.
    """
    shown = path
    path = _destination(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix,
                                   dir=path.parent)
    except OSError as exc:
        raise DeployError(f"cannot write {str(shown)!r}: {exc.strerror or exc}") from None
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
        raise DeployError(f"cannot write {str(shown)!r}: {exc.strerror or exc}") from None
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


def check_writable(path: str | os.PathLike, option: str | None = None) -> None:
    """``DeployError`` now, before any work, when ``path`` could not be written later: its directory is missing or
    refuses a new file (read-only, no permission: tried for real, as root bypasses the permission bits), or ``path``
    is a directory or not a regular file."""
    label = f"{option} " if option else ""
    try:
        dest = _destination(path)
    except DeployError as exc:
        raise DeployError(f"{label}{exc}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".probe", dir=dest.parent)
    except OSError as exc:
        raise DeployError(f"{label}cannot write {str(path)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def refuse_overwriting_inputs(outputs: dict, inputs) -> None:
    """``DeployError`` before any work when an output path (``{option: path}``) is one of the input files or another
    output, or cannot be written (:func:`check_writable`); outputs that are ``None`` are ignored."""
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
    for option, path in outputs.items():
        if path:
            check_writable(path, option)


def make_dir(path: str | os.PathLike, option: str | None = None) -> Path:
    """Create the output directory ``path`` (and its parents) and check that files can be written in it;
    ``DeployError`` naming ``option`` otherwise."""
    label = f"{option} " if option else ""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DeployError(f"{label}{str(path)!r} exists and is not a directory") from None
    except OSError as exc:
        raise DeployError(f"{label}cannot create directory {str(path)!r}: {exc.strerror or exc}") from None
    try:  # tried for real: root passes the permission bits
        fd, probe = tempfile.mkstemp(prefix=".carafe_deploy_write_test.", dir=path)
    except OSError as exc:
        raise DeployError(f"{label}cannot write files in {str(path)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)
    return path


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is a readable, non-empty regular file; otherwise ``FileNotFoundError`` (missing) or
    ``DeployError`` (a directory, empty, unreadable) naming ``what`` (e.g. ``"--checkpoint"``)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what}: no such file {str(path)!r}")
    if p.is_dir():
        raise DeployError(f"{what}: {str(path)!r} is a directory, not a file")
    try:
        size = p.stat().st_size
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise DeployError(f"{what}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if size == 0 and stat.S_ISREG(p.stat().st_mode):
        raise DeployError(f"{what}: {str(path)!r} is empty (0 bytes)")
    return p
