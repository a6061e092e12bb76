"""Exceptions whose message is meant for the user as it stands, and the one error boundary every entry point (the
command line, the ``export/`` scripts, the samples) runs inside: a user mistake is one line on stderr and a non-zero
exit; a traceback only with ``--debug`` (or ``CARAFE_DEPLOY_DEBUG=1``) or for a genuine bug, which says so."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

__all__ = ["DeployError", "MissingDependencyError", "run_guarded", "debug_requested", "EXIT_USER_ERROR",
           "EXIT_BAD_ARGUMENT", "EXIT_BUG"]

EXIT_USER_ERROR = 1  # DeployError, an unwritable or unreadable file, out of memory
EXIT_BAD_ARGUMENT = 2  # ValueError / TypeError / FileNotFoundError: a bad value, as argparse's own exit 2
EXIT_BUG = 70  # EX_SOFTWARE: an exception that no user input should cause
EXIT_INTERRUPTED = 130


class DeployError(RuntimeError):
    """Something the user must fix: a bad file, a bad option, an incompatible model."""


class MissingDependencyError(DeployError):
    """An optional dependency (TensorRT, pycuda, the plugin library) is not installed; the message says how to get it."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _user_message(exc: BaseException) -> tuple[int, str] | None:
    """(exit status, message) for an exception a user's input or machine explains; ``None`` for a bug."""
    if isinstance(exc, DeployError):
        return EXIT_USER_ERROR, str(exc)
    if isinstance(exc, (ValueError, TypeError, FileNotFoundError)):
        return EXIT_BAD_ARGUMENT, _one_line(exc)
    if isinstance(exc, MemoryError):
        detail = _one_line(exc) or "an allocation failed"
        return EXIT_USER_ERROR, f"out of memory ({detail}); try smaller input shapes or batch sizes"
    if isinstance(exc, OSError):  # permission, disk full, a directory where a file was expected, ...
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_USER_ERROR, f"{where}{exc.strerror or _one_line(exc)}"
    return None


def debug_requested() -> bool:
    """``CARAFE_DEPLOY_DEBUG`` is set (to anything but 0): tracebacks for user mistakes too."""
    return os.environ.get("CARAFE_DEPLOY_DEBUG", "") not in ("", "0")


def run_guarded(prog: str, fn: Callable[[], int | None], debug: bool = False) -> int:
    """Run ``fn()`` inside the error boundary and return the process exit status.

    - user mistakes (:class:`DeployError`: 1; ``ValueError``/``TypeError``/``FileNotFoundError``: 2; other
      ``OSError``, ``MemoryError``: 1): ``"<prog>: error: <message>"``, one line;
    - anything else is a bug: its traceback and a line that says so (status 70);
    - ``debug`` (or ``CARAFE_DEPLOY_DEBUG=1``): the traceback of a user mistake too, before its line.
    """
    debug = debug or debug_requested()
    try:
        return int(fn() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 -- this is the boundary
        known = _user_message(exc)
        if known is None or debug:
            traceback.print_exc(file=sys.stderr)
        if known is None:
            print(f"{prog}: internal error: {type(exc).__name__}: {_one_line(exc)}. This is a bug in carafe-deploy; "
                  "please report it with the traceback above.", file=sys.stderr)
            return EXIT_BUG
        status, message = known
        print(f"{prog}: error: {message}", file=sys.stderr)
        return status
