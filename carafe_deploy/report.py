"""One writer for every table and JSON report the project prints or saves (check, bench, export, samples)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

from .files import atomic_write_text

__all__ = ["make_table", "write_json", "fmt_float", "console"]


def fmt_float(x: float | None, spec: str = ".3e") -> str:
    """``-`` for a missing value, else ``format(x, spec)``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def make_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], notes: Iterable[str] = (),
               right: Sequence[str] = ()):
    """A rich renderable: the table, then one line per note (skip and error reasons, printed once, never wrapped
    inside the table). ``right``: columns to right-align (numbers)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    lines = [Text(note, style="yellow") for note in notes]
    return Group(table, *lines) if lines else table


def write_json(path: str | Path, data) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def console(stderr: bool = False):
    """A rich console; off a terminal (logs, CI) it is wide enough to keep table rows and URLs on one line."""
    from rich.console import Console

    c = Console(stderr=stderr, soft_wrap=True)
    if not c.is_terminal:
        c.width = max(c.width, 160)
    return c
