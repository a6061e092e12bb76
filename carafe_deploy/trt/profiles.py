"""Optimization profiles: ``--min/--opt/--max NAME:DxDxD`` as trtexec and polygraphy write them, checked against
the ONNX inputs before TensorRT sees them.

Rules (the same as trtexec's where it has one):

- a spec is ``name:1x3x224x224``; several may be given in one argument separated by commas, or by repeating the
  option; the name is everything before the last ``:``.
- an input with a dynamic dimension needs at least one of min/opt/max. Missing ones are filled in: opt from max,
  else min; min and max from opt. So ``--opt x:1x3x64x64`` alone gives a single-shape profile.
- a fully static input may be left out (its ONNX shape is used); if it is given, the shape must equal it.
- ranks must match the ONNX input, static ONNX dimensions must be kept, every dimension is >= 1 and
  min <= opt <= max holds per dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

__all__ = ["InputProfile", "parse_shape", "parse_shape_specs", "make_profile"]


@dataclass(frozen=True)
class InputProfile:
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max))

    def to_json(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` -> ``(1, 3, 224, 224)``; ``ValueError`` naming the bad part otherwise."""
    text = text.strip()
    if not text:
        raise ValueError("empty shape (write it as DxDxD, e.g. 1x3x224x224)")
    dims = []
    for part in text.lower().split("x"):
        part = part.strip()
        if not part.isdigit():
            raise ValueError(f"bad dimension {part!r} in shape {text!r} (write it as DxDxD, e.g. 1x3x224x224)")
        dims.append(int(part))
    return tuple(dims)


def parse_shape_specs(values: Iterable[str] | None, option: str = "--shape") -> dict[str, tuple[int, ...]]:
    """``["x:1x3x8x8,y:1x4x8x8", "z:2x2"]`` -> ``{"x": (1, 3, 8, 8), "y": ..., "z": (2, 2)}``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values or ():
        for spec in value.split(","):
            spec = spec.strip()
            if not spec:
                continue
            name, sep, shape = spec.rpartition(":")
            if not sep or not name:
                raise ValueError(f"{option} {spec!r}: expected NAME:DxDxD, e.g. input:1x3x224x224")
            if name in shapes:
                raise ValueError(f"{option}: input {name!r} is given twice")
            try:
                shapes[name] = parse_shape(shape)
            except ValueError as exc:
                raise ValueError(f"{option} {spec!r}: {exc}") from None
    return shapes


def _describe(dims: Sequence) -> str:
    return "x".join("?" if not isinstance(d, int) or d < 0 else str(d) for d in dims)


def make_profile(
    onnx_inputs: Mapping[str, Sequence],
    min_shapes: Mapping[str, Sequence[int]] | None = None,
    opt_shapes: Mapping[str, Sequence[int]] | None = None,
    max_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, InputProfile]:
    """One optimization profile for all ``onnx_inputs`` (``{name: dims}``, dims int or str/None when dynamic).

    Raises ``ValueError`` naming the input and the problem.
    """
    given = {"min": dict(min_shapes or {}), "opt": dict(opt_shapes or {}), "max": dict(max_shapes or {})}
    for kind, shapes in given.items():
        unknown = sorted(set(shapes) - set(onnx_inputs))
        if unknown:
            raise ValueError(
                f"--{kind}: no input named {', '.join(map(repr, unknown))}; the model's inputs are "
                + ", ".join(f"{n} ({_describe(d)})" for n, d in onnx_inputs.items())
            )

    profile: dict[str, InputProfile] = {}
    for name, dims in onnx_inputs.items():
        dims = list(dims)
        static = all(isinstance(d, int) and d >= 0 for d in dims)
        mn, op, mx = (given[k].get(name) for k in ("min", "opt", "max"))
        if mn is None and op is None and mx is None:
            if not static:
                raise ValueError(
                    f"input {name!r} has dynamic shape {_describe(dims)}: give its profile with "
                    f"--min/--opt/--max {name}:DxDxD (e.g. --opt {name}:"
                    + "x".join(str(d) if isinstance(d, int) and d >= 0 else "1" for d in dims)
                    + ")"
                )
            mn = op = mx = dims
        if op is None:
            op = mx if mx is not None else mn
        mn = op if mn is None else mn
        mx = op if mx is None else mx
        shapes = {"min": tuple(mn), "opt": tuple(op), "max": tuple(mx)}
        for kind, shape in shapes.items():
            if len(shape) != len(dims):
                raise ValueError(
                    f"--{kind} {name}:{_describe(shape)} has rank {len(shape)}, the model's input {name!r} "
                    f"({_describe(dims)}) has rank {len(dims)}"
                )
            for axis, (want, got) in enumerate(zip(dims, shape)):
                if got < 1:
                    raise ValueError(f"--{kind} {name}:{_describe(shape)}: dimension {axis} must be >= 1")
                if isinstance(want, int) and want >= 0 and got != want:
                    raise ValueError(
                        f"--{kind} {name}:{_describe(shape)}: dimension {axis} is fixed to {want} in the model "
                        f"({_describe(dims)})"
                    )
        for axis in range(len(dims)):
            lo, mid, hi = shapes["min"][axis], shapes["opt"][axis], shapes["max"][axis]
            if not lo <= mid <= hi:
                raise ValueError(
                    f"input {name!r} dimension {axis}: need min <= opt <= max, got {lo}, {mid}, {hi} "
                    f"(min {_describe(shapes['min'])}, opt {_describe(shapes['opt'])}, max {_describe(shapes['max'])})"
                )
        profile[name] = InputProfile(name, shapes["min"], shapes["opt"], shapes["max"])
    return profile
