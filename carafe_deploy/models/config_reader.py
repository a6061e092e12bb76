"""Reading mmdetection / mmsegmentation configs: a config file, the config text a checkpoint carries, or a dict.

- A file (``.py``, as those projects ship them, ``_base_`` inheritance included) is read with mmengine's
  ``Config.fromfile`` when mmengine is installed (``pip install 'carafe-deploy[mm]'``). mmengine *runs* the file as
  Python, exactly as mmdet and mmseg do: read only config files you trust, as you would before training with them.
- Without mmengine, a file that needs no inheritance is read by :func:`literal_config`, which runs nothing: it
  evaluates only literals, ``dict(...)``/``list(...)``/``tuple(...)``, arithmetic and names assigned earlier in the
  file. A file with ``_base_`` (or imports) then says it needs mmengine. ``.json`` files are read as JSON.
- The config a checkpoint embeds (mmengine's ``meta['cfg']``, mmcv 1.x runners' ``meta['config']``: the resolved
  config as text, no ``_base_``) is **never** run, mmengine or not: it comes with a downloaded file, so
  :func:`literal_config` reads it as data.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import operator
import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import DeployError, MissingDependencyError

__all__ = ["read_config", "literal_config", "embedded_config", "ConfigSyntaxError", "MMENGINE_HINT"]

MMENGINE_HINT = "pip install 'carafe-deploy[mm]' (mmengine)"


class ConfigSyntaxError(DeployError):
    """A config text uses something :func:`literal_config` does not evaluate without running it."""


def read_config(source) -> dict:
    """A config as a plain dict, from a path, a mapping (an mmengine ``Config`` included) or config text."""
    if isinstance(source, Mapping):
        return _plain(source)
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                           and source.endswith((".py", ".json"))):
        return _read_file(Path(source))
    if isinstance(source, str):
        return literal_config(source, "config text")
    raise TypeError(f"a config must be a file path, config text or a dict, got {type(source).__name__}")


def embedded_config(meta: Mapping) -> tuple[dict | None, str]:
    """The config a checkpoint's ``meta`` carries and where it was (``"meta['cfg']"``), or ``(None, why not)``.

    Raises :class:`ConfigSyntaxError` when there is one that cannot be read without running it.
    """
    for key in ("cfg", "config"):  # mmengine writes cfg (pretty_text); mmcv 1.x runners config
        value = meta.get(key)
        where = f"the checkpoint's config (meta[{key!r}])"
        if isinstance(value, Mapping):
            return _plain(value), where
        if isinstance(value, str) and value.strip():
            return literal_config(value, where), where
    return None, "the checkpoint carries no config (meta['cfg'] / meta['config'])"


def _read_file(path: Path) -> dict:
    from ..files import require_file

    path = require_file(path, "config")
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DeployError(f"config {path}: not valid JSON: {exc}") from None
    if importlib.util.find_spec("mmengine") is not None:
        return _read_with_mmengine(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DeployError(f"config {path}: not a text file") from None
    return literal_config(text, f"config {path}", file_hint=True)


def _read_with_mmengine(path: Path) -> dict:
    from mmengine.config import Config

    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:  # noqa: BLE001 -- mmengine raises many types for a bad file; the user fixes the file
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise DeployError(f"config {path}: mmengine could not read it: {type(exc).__name__}: "
                          f"{lines[0].strip() if lines else ''}") from None
    return _plain(cfg.to_dict())


def _plain(value):
    """Nested mappings as dicts (an mmengine ConfigDict included), lists and tuples kept."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


# ---------------------------------------------------------------------------------------------------------------
# the literal reader

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_CALLS = {"dict", "list", "tuple"}


def literal_config(text: str, origin: str, file_hint: bool = False) -> dict:
    """Evaluate a config's assignments without running any code: literals, ``dict``/``list``/``tuple`` calls
    (``**`` included), + - * / // % ** and names assigned earlier. Anything else is a one-line
    :class:`ConfigSyntaxError` naming the line; ``_base_`` (inheritance) and imports need mmengine."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise ConfigSyntaxError(f"{origin}: syntax error at line {exc.lineno}: {exc.msg}") from None
    needs = f"; install mmengine to read it: {MMENGINE_HINT}" if file_hint else ""
    env: dict = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.With)):
            raise _needs_mmengine(origin, stmt, "imports modules (a config that mmengine runs)", needs)
        if not isinstance(stmt, ast.Assign) or not all(isinstance(t, ast.Name) for t in stmt.targets):
            raise ConfigSyntaxError(f"{origin}, line {stmt.lineno}: `{_source(stmt)}` is not a plain assignment "
                                    f"(only NAME = value is read without running the file){needs}")
        value = _evaluate(stmt.value, env, origin)
        for target in stmt.targets:
            env[target.id] = value
    if "_base_" in env:
        raise _needs_mmengine(origin, None, f"inherits _base_ = {env['_base_']!r}", needs)
    return {k: v for k, v in env.items() if not k.startswith("__")}


def _needs_mmengine(origin: str, stmt, what: str, needs: str) -> Exception:
    where = f", line {stmt.lineno}" if stmt is not None else ""
    if needs:
        return MissingDependencyError(f"{origin}{where} {what}{needs}")
    return ConfigSyntaxError(f"{origin}{where} {what}, which is not read without running it")


def _source(node) -> str:
    text = " ".join(ast.unparse(node).split())  # one line, whatever the statement
    return text if len(text) <= 60 else text[:57] + "..."


def _evaluate(node, env: dict, origin: str):
    def fail(why: str):
        return ConfigSyntaxError(f"{origin}, line {node.lineno}: cannot read `{_source(node)}` without running it "
                                 f"({why})")

    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise fail(f"{node.id} is not assigned before")
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_evaluate(e, env, origin) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        out = {}
        for key, value in zip(node.keys, node.values):
            if key is None:  # {**other}
                out.update(_mapping(_evaluate(value, env, origin), fail))
            else:
                out[_evaluate(key, env, origin)] = _evaluate(value, env, origin)
        return out
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _apply(_UNARY[type(node.op)], fail, _evaluate(node.operand, env, origin))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _apply(_BINARY[type(node.op)], fail, _evaluate(node.left, env, origin),
                      _evaluate(node.right, env, origin))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS:
        args = [_evaluate(a, env, origin) for a in node.args]
        if node.func.id == "dict":
            out = dict(_mapping(args[0], fail)) if args else {}
            for kw in node.keywords:
                if kw.arg is None:
                    out.update(_mapping(_evaluate(kw.value, env, origin), fail))
                else:
                    out[kw.arg] = _evaluate(kw.value, env, origin)
            return out
        if node.keywords or len(args) > 1:
            raise fail(f"{node.func.id}() takes one iterable here")
        return {"list": list, "tuple": tuple}[node.func.id](args[0] if args else ())
    raise fail("only literals, dict/list/tuple, arithmetic and earlier names are evaluated")


def _mapping(value, fail):
    if not isinstance(value, Mapping):
        raise fail(f"** needs a dict, got {type(value).__name__}")
    return value


def _apply(op, fail, *args):
    try:
        return op(*args)
    except Exception as exc:  # noqa: BLE001 -- a type error in the user's arithmetic
        raise fail(f"{type(exc).__name__}: {exc}") from None
