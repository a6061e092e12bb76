"""What a task family plugs into the deploy pipeline (:mod:`.pipeline`): its example inputs, how its outputs are
compared across backends, and its engine profile. :class:`Task` itself is the generic family: random example
inputs and an element-wise comparison."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..compare import precision_class  # noqa: F401 -- the task families' tolerance classes
from ..errors import DeployError
from .source import LoadedModel

__all__ = ["Task", "CheckResult", "random_inputs", "precision_class"]

Shapes = dict[str, tuple[int, ...]]


@dataclass
class CheckResult:
    """One backend compared with PyTorch on one input set."""

    passed: bool
    summary: str  # one line for people
    details: dict = field(default_factory=dict)  # for the JSON report
    gated: bool = True  # False: reported, but does not decide the exit status (e.g. fp16 detections)


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def random_inputs(shapes: Sequence[Sequence[int]], seed: int, option: str) -> tuple:
    """Standard-normal float32 tensors of ``shapes``, seeded; ``DeployError`` naming ``option`` when they would not
    fit in this machine's memory (refused before allocating: a huge shape is a typo, not a reason to swap)."""
    import torch

    need = sum(4 * math.prod(s) for s in shapes)
    memory = _memory_bytes()
    if memory is not None and need > memory:
        raise DeployError(f"{option} {' '.join(','.join(map(str, s)) for s in shapes)}: the inputs alone need "
                          f"{need / 2**30:.3g} GiB, more than this machine's {memory / 2**30:.3g} GiB of memory")
    gen = torch.Generator().manual_seed(seed)
    try:
        return tuple(torch.randn(*s, generator=gen) for s in shapes)
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc):
            raise
        raise DeployError(f"{option}: not enough memory for inputs of {need / 2**30:.3g} GiB") from None


class Task:
    """The generic family: any model, element-wise comparison (``allclose`` with rtol/atol)."""

    name = "generic"

    def example_inputs(self, loaded: LoadedModel, shapes: Sequence[Sequence[int]] | None):
        """The tensors the model is traced with: standard-normal, seeded, of ``shapes`` (else the source's)."""
        import torch

        if shapes is None and isinstance(loaded.model, torch.export.ExportedProgram) and loaded.model.example_inputs:
            return tuple(loaded.model.example_inputs[0])
        shapes = shapes or loaded.input_shapes
        if not shapes:
            raise DeployError("give the example input shape with --input-shape N,C,H,W (once per input)")
        return random_inputs(shapes, seed=0, option="--input-shape")

    def prepare(self, loaded: LoadedModel, inputs, log) -> None:
        """Anything the model needs before export (the detectors calibrate random heads)."""

    def exporting(self, loaded: LoadedModel, detection_ops: str):
        """A context in which the model exports its detection ops as ``detection_ops`` ("plugin" / "standard");
        only detectors have any."""
        return contextlib.nullcontext()

    def metadata(self, loaded: LoadedModel) -> dict[str, str]:
        """Extra ONNX metadata_props."""
        return {}

    def check_inputs(self, loaded: LoadedModel, export_inputs, shapes, dynamic: bool) -> list[tuple]:
        """Input sets the backends are compared on: ``shapes`` when given, else the export's own inputs."""
        if shapes:
            return [random_inputs(shapes, seed=1, option="--check-shape")]
        return [tuple(export_inputs)]

    def compare(self, reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], precision: str | bool,
                rtol: float | None = None, atol: float | None = None) -> CheckResult:
        """``actual`` against ``reference`` for a file of ``precision`` ("fp32", "fp16", "int8", ...; the pipeline's
        fp16 flag as a bool), element-wise with :func:`carafe_deploy.compare.compare`'s tolerances of that precision
        (the default atol scaled per output)."""
        from ..compare import compare, describe_tolerances

        diffs = compare(reference, actual, rtol=rtol, atol=atol, precision=precision)
        passed = all(d.passed for d in diffs)
        worst = max((d.max_rel for d in diffs if d.max_rel is not None), default=None)
        problems = [f"{d.name}: {d.problem}" for d in diffs if d.problem]
        summary = (f"{sum(d.passed for d in diffs)}/{len(diffs)} outputs allclose ({describe_tolerances(rtol, atol, precision)})"
                   + (f", max rel {worst:.2e}" if worst is not None else "") + ("; " + "; ".join(problems)
                                                                              if problems else ""))
        return CheckResult(passed, summary, {"rtol": diffs[0].rtol if diffs else rtol, "atol": atol,
                                             "outputs": [{**d.__dict__, "passed": d.passed} for d in diffs]})

    def sample_inputs(self, shapes: Sequence[Sequence[int]], seed: int) -> tuple | None:
        """Inputs of ``shapes`` for a check against a rebuilt model, where random normal values are not what the
        model takes (``None``: they are)."""
        return None

    def rebuild(self, loaded: LoadedModel, metadata: Mapping[str, str], input_shapes, log) -> None:
        """Do to a model rebuilt from its source (``check``) what :meth:`prepare` did before the export, from the
        file's ``metadata`` (what :meth:`metadata` wrote) and its static ``input_shapes`` (``None`` where dynamic),
        so that it computes what the file was exported from."""

    def engine_profile(self, input_names: Sequence[str], export_inputs, dynamic: bool) -> tuple[Shapes, Shapes, Shapes]:
        """(min, opt, max) shapes per input: the export shapes (override with --min/--opt/--max)."""
        shapes = {n: tuple(t.shape) for n, t in zip(input_names, export_inputs)}
        return shapes, shapes, shapes
