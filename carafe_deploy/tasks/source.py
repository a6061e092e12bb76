"""Where a PyTorch model comes from: a Python file + class, a TorchScript file, an ExportedProgram file, a
registered model name or an mmdetection / mmsegmentation config (with an optional checkpoint; a checkpoint's embedded
config or tensor shapes set the class count and widths). The CLI's model-source options parse into
:class:`ModelSource`."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DeployError

__all__ = ["ModelSource", "LoadedModel"]


@dataclass
class LoadedModel:
    """A model ready for the pipeline, with what its source knows about its inputs and outputs."""

    model: object  # nn.Module, ScriptModule or ExportedProgram
    description: str
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    input_shapes: list[tuple[int, ...]] | None = None
    dynamic_axes: dict = field(default_factory=dict)
    dynamic_by_default: bool = False
    weights: str = "given model"  # "random", a checkpoint's file name, or "given model"
    spec: object = None  # the registered ModelSpec, for --model NAME
    name: str = "model"  # short name for default output files


@dataclass
class ModelSource:
    """One of ``python`` (+ ``class_name``, ``kwargs``), ``torchscript``, ``exported_program``, ``model`` (a
    registered name) or ``config`` (an mmdetection / mmsegmentation config file), the last two with ``overrides``
    for the builder and ``tiny`` for the narrow variant (whose checkpoint, if given, must be of those widths: the
    detector sample's is); ``checkpoint`` for ``python``, ``model`` and ``config``."""

    python: str | None = None
    class_name: str | None = None
    kwargs: dict = field(default_factory=dict)
    torchscript: str | None = None
    exported_program: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    overrides: dict = field(default_factory=dict)
    tiny: bool = False
    config: str | None = None

    def given(self) -> bool:
        return any([self.python, self.torchscript, self.exported_program, self.model, self.config])

    def inputs(self) -> list[Path]:
        """The files this source reads (an output must never overwrite one of them)."""
        return [Path(p) for p in (self.python, self.torchscript, self.exported_program, self.config,
                                  self.checkpoint) if p]

    def load(self) -> LoadedModel:
        import torch

        from .. import nn as _  # noqa: F401 -- registers the op before a TorchScript/ExportedProgram file is loaded

        if sum(bool(x) for x in (self.python, self.torchscript, self.exported_program, self.model, self.config)) != 1:
            raise DeployError("give one model: --python FILE --class NAME, --torchscript FILE, --exported-program "
                              "FILE, --model NAME or --config FILE")
        if (self.overrides or self.tiny) and not (self.model or self.config):
            raise DeployError("--set and --tiny apply to a registered model (--model NAME) or a config (--config)")
        if (self.class_name or self.kwargs not in ({}, "{}", "", None)) and not self.python:
            raise DeployError("--class and --kwargs apply to --python FILE (the class it defines and its arguments)")
        if self.checkpoint and not (self.python or self.model or self.config):
            raise DeployError("--checkpoint applies to --python, --model and --config (TorchScript and "
                              "ExportedProgram files carry their weights)")
        # Built without a checkpoint, a model's weights come from its random init: seed it so that `export` and
        # `check` of the same --python/--model build the same weights.
        torch.manual_seed(0)
        if self.checkpoint:
            if not Path(self.checkpoint).exists():
                raise FileNotFoundError(f"checkpoint not found: {self.checkpoint}")
            _existing(self.checkpoint, "--checkpoint")  # a directory, an empty file
        weights = Path(self.checkpoint).name if self.checkpoint else "random"
        if self.python:
            model = self._load_python()
            if self.checkpoint:
                from ..models.checkpoint import load_checkpoint

                load_checkpoint(model, self.checkpoint)
            return LoadedModel(model.eval(), f"{self.python}:{self.class_name}", weights=weights,
                               name=self.class_name)
        if self.torchscript:
            path = _existing(self.torchscript, "--torchscript")
            with _reading(path, "--torchscript", "a TorchScript file (torch.jit.save)"):
                module = torch.jit.load(str(path), map_location="cpu")
            return LoadedModel(module.eval(), str(path), name=path.stem, weights=path.name)
        if self.exported_program:
            path = _existing(self.exported_program, "--exported-program")
            with _reading(path, "--exported-program", "an ExportedProgram file (torch.export.save)"):
                program = torch.export.load(str(path))
            shapes = [tuple(t.shape) for t in program.example_inputs[0]] if program.example_inputs else None
            return LoadedModel(program, str(path), input_shapes=shapes, name=path.stem, weights=path.name)
        from .. import models
        from ..models.resolve import resolve

        if self.config:
            _existing(self.config, "--config")
        resolved = resolve(self.model, config=self.config, checkpoint=self.checkpoint, overrides=self.overrides,
                           tiny=self.tiny)
        spec = models.spec(resolved.name)
        try:
            model = models.build_resolved(resolved)
        except TypeError as exc:
            raise DeployError(f"--set: {resolved.name} does not take these options ({exc})") from None
        details = "; ".join(x for x in (resolved.summary(), *resolved.notes) if x)
        return LoadedModel(
            model,
            f"model {resolved.name}" + (" (tiny)" if self.tiny else "") + (f" ({details})" if details else ""),
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            input_shapes=[tuple(spec.default_input_shape)],
            dynamic_axes=dict(spec.dynamic_axes),
            dynamic_by_default=spec.dynamic_by_default,
            weights=weights,
            spec=spec,
            name=resolved.name,
        )

    def _load_python(self):
        if not self.class_name:
            raise DeployError("--python needs --class NAME (the nn.Module class to build)")
        file = _existing(self.python, "--python")
        kwargs = self.kwargs
        if isinstance(kwargs, str):
            try:
                kwargs = json.loads(kwargs)
            except json.JSONDecodeError as exc:
                raise DeployError(f"--kwargs is not valid JSON: {exc}") from None
        if not isinstance(kwargs, dict):
            raise DeployError("--kwargs must be a JSON object")
        from torch import nn

        spec = importlib.util.spec_from_file_location(f"_carafe_user_model_{file.stem}", file)
        if spec is None:
            raise DeployError(f"--python {self.python}: not a Python file Python can import (name it *.py)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            sys.modules.pop(spec.name, None)
            raise DeployError(f"--python {self.python}: syntax error at line {exc.lineno}: {exc.msg}") from None
        except Exception as exc:  # noqa: BLE001 -- the user's module failed while it was imported
            sys.modules.pop(spec.name, None)
            raise DeployError(f"--python {self.python} failed while it was imported: {_first_line(exc)}") from exc
        cls = getattr(module, self.class_name, None)
        if cls is None:
            raise DeployError(f"{self.python} defines no {self.class_name!r}")
        if not callable(cls):
            raise DeployError(f"--class {self.class_name}: {self.python} defines it as an object of type "
                              f"{type(cls).__name__}, not a torch.nn.Module class")
        try:
            model = cls(**kwargs)
        except Exception as exc:  # noqa: BLE001 -- the user's constructor failed
            raise DeployError(f"--class {self.class_name} --kwargs {json.dumps(kwargs)}: the constructor failed: "
                              f"{_first_line(exc)}") from exc
        if not isinstance(model, nn.Module):
            raise DeployError(f"--class {self.class_name}: {self.python}'s {self.class_name}() made an object of type "
                              f"{type(model).__name__}, not a torch.nn.Module")
        return model


def _existing(path: str, option: str) -> Path:
    from ..files import require_file

    try:
        return require_file(path, option)
    except FileNotFoundError as exc:
        raise DeployError(str(exc)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def _reading(path: Path, option: str, kind: str):
    """A file torch cannot read is the user's to fix: one line naming the option and what the file should be (and
    not torch.export's logged traceback of each format it tried)."""
    import logging

    log = logging.getLogger("torch.export")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    except Exception as exc:  # noqa: BLE001 -- torch raises RuntimeError, BadZipFile, pickle errors...
        raise DeployError(f"{option} {path}: not {kind}: {_first_line(exc)}") from None
    finally:
        log.setLevel(level)
