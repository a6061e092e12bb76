"""Writing files safely: every file the project writes goes through here.

A write goes to a temporary file in the destination's own directory and is renamed over the destination only when it
is complete, so a failed write (disk full, file-size limit, an exception half-way) leaves the previous file as it was
and no half-written file behind. A process killed outright (``kill -9``, a power cut) cannot remove its temporary
file or folder; it is hidden, named after the destination, this host and the writer's process id, and the next write
to the same destination removes those whose process is gone (:func:`sweep_stale`). Before any work, :func:`refuse_overwriting_inputs` refuses an output that is an
input (or another output) and an output whose directory is missing or cannot be written; :func:`require_file` refuses
an input that is missing, not a file, or empty.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import DeployError

__all__ = ["atomic_path", "atomic_files", "atomic_write_bytes", "atomic_write_text", "staging_dir", "replace_dir",
           "sweep_stale", "refuse_overwriting_inputs", "check_writable", "make_dir", "output_dir", "require_file"]

# temporary names: ".<destination name>.carafe-tmp-<host>-<pid>.<random>[suffix]", beside the destination
_TAG = "carafe-tmp-"
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname() or "host")


def _staging_prefix(path: Path) -> str:
    return f".{path.name}.{_TAG}{_HOST}-{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders that killed writers of ``path`` left beside it: those of this host
    whose process no longer runs (a live writer's are never touched). Returns what was removed."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}.{_TAG}{_HOST}-"
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid = entry.name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        leftover = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


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
    sweep_stale(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_staging_prefix(path), suffix=path.suffix if suffix is None else suffix,
                                   dir=path.parent)
    except OSError as exc:
        raise DeployError(f"cannot write {str(shown)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # keep the permissions of the file being replaced
        os.chmod(tmp_path, (path.stat().st_mode & 0o7777) if path.exists() else 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise DeployError(f"cannot write {str(shown)!r}: {exc.strerror or exc}") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staging_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A new hidden folder beside ``path`` (same file system: its contents can be renamed into place), removed on
    exit with whatever is still in it; a killed process's is removed by the next write to ``path``."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    sweep_stale(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(path), dir=parent))
    except OSError as exc:
        raise DeployError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(*paths: str | os.PathLike) -> Iterator[Path]:
    """For a writer that makes several files side by side (an ONNX model and its external data): yield a staging
    folder; the writer writes each of ``paths`` there under its own name. On success each replaces its destination,
    in the order given (put the file that refers to the others last), directly one after the other; on failure
    nothing is replaced and the staging folder is removed."""
    dests = [_destination(p) for p in paths]
    parents = {d.parent.resolve() for d in dests}
    if len(parents) != 1:
        raise ValueError(f"atomic_files writes into one folder, got {', '.join(map(str, parents))}")
    with staging_dir(dests[-1]) as tmp:
        yield tmp
        missing = [d.name for d in dests if not (tmp / d.name).is_file()]
        if missing:
            raise DeployError(f"the writer made no {', '.join(missing)}; nothing was replaced")
        try:
            for dest in dests:
                os.chmod(tmp / dest.name, (dest.stat().st_mode & 0o7777) if dest.exists() else 0o666 & ~_umask())
            for dest in dests:
                os.replace(tmp / dest.name, dest)
        except OSError as exc:
            raise DeployError(f"cannot write {str(dests[-1])!r}: {exc.strerror or exc}") from None


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def replace_dir(new: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Put the folder ``new`` at ``dest`` in one step, replacing any folder there: Linux swaps the two atomically
    (``renameat2(RENAME_EXCHANGE)``), so ``dest`` is the old folder or the new one at every instant, never missing
    or half-written; the old one ends up at ``new``, for the caller to remove. Elsewhere: two renames."""
    new, dest = Path(new), Path(dest)
    if not dest.exists():
        os.replace(new, dest)
        return
    if _exchange(new, dest):
        return
    aside = new.with_name(new.name + ".old")
    os.replace(dest, aside)
    os.replace(new, dest)
    os.replace(aside, new)


def _exchange(a: Path, b: Path) -> bool:
    """``renameat2(a, b, RENAME_EXCHANGE)``; False where the system has no such call."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # an old kernel, a file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


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


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, option: str | None = None) -> Iterator[Path]:
    """:func:`make_dir`, undone when the block fails or is interrupted: the folders this call created are removed
    again if they are still empty, so a command that wrote nothing leaves no empty folder behind (what it did
    write stays)."""
    path = Path(path)
    created, p = [], path.absolute()
    while not os.path.lexists(p):
        created.append(p)
        p = p.parent
    make_dir(path, option)
    try:
        yield path
    except BaseException:
        for folder in created:  # the deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty: it holds what the command did write
                break
        raise


_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is a readable, non-empty regular file; otherwise ``FileNotFoundError`` (missing) or
    ``DeployError`` (a directory, a pipe or device -- never opened: reading one would block or never end --, a loop
    or dangling chain of symbolic links, empty, unreadable) naming ``what`` (e.g. ``"--checkpoint"``)."""
    p = Path(path)
    shown = repr(str(path))
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise DeployError(f"{what}: {shown} is a symbolic link to {os.readlink(p)!r}, which does not exist") \
                from None
        raise FileNotFoundError(f"{what}: no such file {shown}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DeployError(f"{what}: {shown} is a loop of symbolic links") from None
        raise DeployError(f"{what}: cannot read {shown}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DeployError(f"{what}: {shown} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise DeployError(f"{what}: {shown} is {kind}, not a regular file")
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise DeployError(f"{what}: cannot read {shown}: {exc.strerror or exc}") from None
    if st.st_size == 0:
        raise DeployError(f"{what}: {shown} is empty (0 bytes)")
    return p
