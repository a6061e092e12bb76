"""Command-line tools the tests run as a user runs them."""

import os
import shutil
import sys

import pytest


def polygraphy() -> str:
    """The ``polygraphy`` of this Python's environment (the test extra installs it), else the one on PATH. The
    environment's own first: one found on PATH may belong to another Python (a pyenv shim when the venv is not
    activated), with another TensorRT or none, and its failures would say nothing about this project."""
    exe = os.path.join(os.path.dirname(sys.executable), "polygraphy")
    if not os.path.exists(exe):
        exe = shutil.which("polygraphy") or exe
    if not os.path.exists(exe):
        pytest.fail("polygraphy is not installed (the test extra installs it: pip install -e '.[test]')")
    return exe
