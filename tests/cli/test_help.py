"""Every ``--help`` as a new user reads it: nothing heavy imported (so it is fast: the times are in the README),
every option described with its default, plain text, the registered models listed."""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from carafe_deploy.cli import _COMMANDS, build_parser
from carafe_deploy.models import MODEL_NAMES
from support import REPO

# what --help must not import: each costs a noticeable part of a second (torch several), on a busy machine seconds
HEAVY = ("torch", "onnx", "onnxruntime", "onnxscript", "onnx_ir", "numpy", "rich", "tqdm", "matplotlib", "PIL",
         "tensorrt", "tensorrt_rtx", "pycuda")
COMMANDS = [[]] + [[name] for name in _COMMANDS]


def _imported(argv: list[str]) -> set[str]:
    """Top-level modules that ``argv`` (a real entry point, with -X importtime) imports."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: carafe-deploy" in proc.stdout
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def _console_script() -> Path | None:
    script = Path(sys.executable).with_name("carafe-deploy")
    return script if script.is_file() else None


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0] if c else "carafe-deploy")
def test_help_imports_nothing_heavy(command):
    modules = _imported(["-m", "carafe_deploy", *command, "--help"])
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"carafe-deploy {' '.join(command)} --help imports {heavy[:8]}"


@pytest.mark.skipif(_console_script() is None, reason="the carafe-deploy console script is not installed next to "
                                                      "this Python (pip install -e . puts it there)")
def test_console_script_help_imports_nothing_heavy():
    modules = _imported([str(_console_script()), "export", "--help"])
    assert not sorted(m for m in modules if m.split(".")[0] in HEAVY)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **sub.choices}


def _options(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction,
                                                             argparse._SubParsersAction))]


def _rendered(parser: argparse.ArgumentParser, action) -> str:
    """The help line of one option as --help prints it, joined over its wrapped lines."""
    formatter = parser._get_formatter()
    return " ".join(formatter._expand_help(action).split()) if action.help else ""


@pytest.mark.parametrize("name, parser", _subparsers().items(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_option_is_described_with_its_default(name, parser):
    for action in _options(parser):
        flag = "/".join(action.option_strings) or action.dest
        text = _rendered(parser, action)
        assert text, f"{name} {flag} has no help"
        takes_value = action.nargs != 0
        if not takes_value:
            continue
        if action.default is not None:
            # shown by the formatter, or said in the help
            assert "default" in text, f"{name} {flag}: default {action.default!r} not shown: {text!r}"
        elif action.option_strings and action.required is False:
            # no default value: the help says what happens without the option -- a default, an "also" output,
            # or the model source it is one of
            said = "default" in text or text.startswith("also") or "with --" in text or "(needed" in text
            assert said or _is_a_model_source(action), f"{name} {flag}: what happens without it? {text!r}"


def _is_a_model_source(action) -> bool:
    return action.dest in ("python", "torchscript", "exported_program", "model", "reference")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0] if c else "carafe-deploy")
def test_help_is_plain_text(command, capsys):
    from carafe_deploy.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    # module docstrings are the descriptions: their reST must not show
    assert "`" not in text and not re.search(r":(class|func|mod|meth|attr):", text), text
    if any(a.dest == "model" for a in _options(_subparsers()[command[0] if command else ""])):
        for model in MODEL_NAMES:
            assert model in text, f"{model} is not listed in carafe-deploy {command[0]} --help"
