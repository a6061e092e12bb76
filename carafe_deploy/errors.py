"""Exceptions whose message is meant for the user as it stands, and the one error boundary every entry point (the
command line, the ``export/`` scripts, the samples) runs inside: a user mistake is one line on stderr and a non-zero
exit; a traceback only with ``--debug`` (or ``CARAFE_DEPLOY_DEBUG=1``) or for a genuine bug, which says so."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
from typing import Callable, Iterator

__all__ = ["DeployError", "MissingDependencyError", "run_guarded", "debug_requested", "ArgumentParser",
           "interrupts_noticed", "raise_if_interrupted", "EXIT_USER_ERROR", "EXIT_BAD_ARGUMENT", "EXIT_BUG",
           "EXIT_INTERRUPTED"]

EXIT_USER_ERROR = 1  # DeployError, an unwritable or unreadable file, out of memory
EXIT_BAD_ARGUMENT = 2  # ValueError / TypeError / FileNotFoundError: a bad value, as argparse's own exit 2
EXIT_BUG = 70  # EX_SOFTWARE: an exception that no user input should cause
EXIT_INTERRUPTED = 130


class DeployError(RuntimeError):
    """Something the user must fix: a bad file, a bad option, an incompatible model."""


class MissingDependencyError(DeployError):
    """An optional dependency (TensorRT, pycuda, the plugin library) is not installed; the message says how to get it."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the boundary's manners: a bad option or value is one line on stderr, exit status 2, not the
    usage block first (``--help`` still shows it). Subparsers made by ``add_subparsers`` are of this class too."""

    def error(self, message: str):
        self.exit(EXIT_BAD_ARGUMENT, f"{self.prog}: error: {_one_line(message)} ({self.prog} --help lists the "
                                     "options)\n")


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
        _forget_unhandled_interrupt()
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


def _forget_unhandled_interrupt() -> None:
    """CPython (3.8 to 3.12 at least) remembers a KeyboardInterrupt that ended a ``PyRun_*`` call -- C extensions run
    Python code through them, during ``import torch`` among others -- even when the program catches it further up,
    and a ``python -m`` process then ends by SIGINT at exit instead of with the status it chose (seen in CI: Ctrl-C
    during the demo's imports gave -2, not 130). Each ``PyRun_*`` call clears that flag first, so running an empty one
    forgets the caught interrupt."""
    try:
        import ctypes

        ctypes.pythonapi.PyRun_SimpleStringFlags(b"", None)
    except Exception:  # noqa: BLE001 -- not CPython, or no ctypes: nothing to forget there
        pass


# ----------------------------------------------------------------------------------------------------------------
# Interrupts that a library turns into its own error


@contextlib.contextmanager
def interrupts_noticed() -> Iterator[Callable[[], bool]]:
    """Yield ``interrupted()``: whether SIGINT arrived inside the block. Code that catches a library's failures
    asks it before it treats one as a failure to recover from: a library that catches broadly can turn the
    ``KeyboardInterrupt`` into an error of its own (torch's exporter, interrupted while it imports ``torch._dynamo``,
    reports an ``AttributeError`` about the half-imported module), and a fallback would then carry on past the
    user's Ctrl-C. The interrupt is still raised as usual; outside the main thread only the exception chain tells."""
    hit = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield hit.is_set
        return
    previous = signal.getsignal(signal.SIGINT)

    def note(signum, frame):
        hit.set()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield hit.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def raise_if_interrupted(exc: BaseException, interrupted: Callable[[], bool] = lambda: False) -> None:
    """``KeyboardInterrupt`` (from ``exc``) when ``interrupted()`` says SIGINT arrived, or when a
    ``KeyboardInterrupt`` is anywhere in ``exc``'s chain of causes and contexts; else nothing."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        todo += [e.__cause__, e.__context__]
    if interrupted():
        raise KeyboardInterrupt from exc
