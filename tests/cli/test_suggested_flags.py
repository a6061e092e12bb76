"""No command suggests an option it lacks: every ``--flag`` that a message of the package names exists on the command
that shows it.

* A command's own module (``cli/<command>.py``): its messages name its own options.
* ``carafe-deploy <command> ... --flag`` anywhere in the package (a command a message tells the user to run): the
  flag exists on that command.
* The engine choice (``trt/plugin.py``, ``trt/rtx.py``, ``trt/availability.py``, ``trt/builder.py``, the pipeline's
  engine step): every command that builds an engine -- build, export (--save-engine), demo -- has the options they
  name among ``--plugin`` / ``--no-plugin``.
Flags of other tools (cmake, pip, trtexec, polygraphy, the sample scripts' own) are told apart by the tool's name in
the same string.
"""

from __future__ import annotations

import argparse
import ast
import re

import pytest
from support import REPO

from carafe_deploy.cli import build_parser

PACKAGE = REPO / "carafe_deploy"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND_LINE = re.compile(r"carafe-deploy (\w+)([^`'\"]*)")
OTHER_TOOLS = ("cmake", "pip ", "trtexec", "polygraphy", "nvcc", "samples/", "export/", "python ", "ctest", "apt")
ENGINE_COMMANDS = ("build", "export", "demo")
ENGINE_CHOICE_MODULES = ("trt/plugin.py", "trt/rtx.py", "trt/availability.py", "trt/builder.py", "tasks/pipeline.py")


def _options() -> dict[str, set[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {s for a in p._actions for s in a.option_strings} for name, p in sub.choices.items()}


def _strings(path) -> list[str]:
    """Every string literal of a module, f-strings with their placeholders as `{}`; docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            out.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append(node.value)
    return out


def _own_flags(text: str) -> list[str]:
    """The flags of ``text`` that are not in a `carafe-deploy <command> ...` snippet or another tool's command."""
    if any(tool in text for tool in OTHER_TOOLS):
        return []
    return FLAG.findall(COMMAND_LINE.sub("", text))


OPTIONS = _options()


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_a_command_module_names_only_its_own_options(command):
    module = PACKAGE / "cli" / f"{command}.py"
    if not module.is_file():
        pytest.skip(f"{command} has no module of its own")
    wrong = sorted({f for text in _strings(module) for f in _own_flags(text) if f not in OPTIONS[command]})
    assert not wrong, f"cli/{command}.py names options `{command}` does not have: {wrong}"


def test_every_suggested_command_line_has_its_options():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for text in _strings(path):
            for command, rest in COMMAND_LINE.findall(text):
                if command not in OPTIONS:  # prose ("the carafe-deploy engine sidecar"), not a command line
                    continue
                wrong += [f"{path.relative_to(REPO)}: `carafe-deploy {command}` has no {f}: {text!r}"
                          for f in FLAG.findall(rest) if f not in OPTIONS[command]]
    assert not wrong, "\n".join(wrong)


def test_the_engine_choice_names_options_every_engine_command_has():
    named = set()
    for module in ENGINE_CHOICE_MODULES:
        for text in _strings(PACKAGE / module):
            named |= {f for f in _own_flags(text) if f in ("--plugin", "--no-plugin")}
    assert named, "the engine choice's messages name neither --plugin nor --no-plugin: this test checks nothing"
    for command in ENGINE_COMMANDS:
        assert named <= OPTIONS[command], f"`carafe-deploy {command}` lacks {sorted(named - OPTIONS[command])}"


def test_the_checker_sees_a_missing_option():
    """The control: a message naming an option its command lacks is found."""
    assert _own_flags("rerun with --no-such-option") == ["--no-such-option"]
    assert "--no-plugin" not in OPTIONS["convert"]
    assert COMMAND_LINE.findall("run `carafe-deploy convert M.onnx --no-plugin`") == [("convert", " M.onnx --no-plugin")]
