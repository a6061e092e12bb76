"""The architecture a config or a checkpoint describes, as this package builds it: a registered model name and its
builder options, each traced to where it came from (a config key, or a checkpoint tensor and its shape), so that a
setting that cannot be built, or a checkpoint that does not fit the settings, is one line naming the key."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import DeployError

__all__ = ["Description", "UnsupportedSetting", "Section", "show", "same"]


class UnsupportedSetting(DeployError):
    """A config key whose value this package cannot build; the message names the key and the value."""


@dataclass
class Description:
    name: str  # the registered model (carafe_deploy.models.spec)
    options: dict  # builder options
    origin: dict  # option -> where it came from: "model.neck.out_channels", "neck.lateral_convs.0.conv.weight (...)"
    source: str  # "config faster.py", "the checkpoint's config (meta['cfg'])", "the checkpoint's tensor shapes"
    notes: list[str] = field(default_factory=list)  # what was assumed (shown with the model's description)
    # options the shapes leave open: option -> the other readings (e.g. up_kernel/up_group from one channel count)
    ambiguous: dict = field(default_factory=dict)
    # options the shapes cannot tell and no default fits: option -> why (resolving fails unless they are given)
    unknown: dict = field(default_factory=dict)

    def put(self, option: str, value, origin: str) -> None:
        """Set a builder option and say where its value came from."""
        self.options[option] = value
        self.origin[option] = origin


def show(value) -> str:
    """A config value as a config file writes it."""
    if isinstance(value, (list, tuple)):
        inner = ", ".join(show(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, Mapping):
        return "dict(" + ", ".join(f"{k}={show(v)}" for k, v in value.items()) + ")"
    return repr(value)


def same(a, b) -> bool:
    """Config equality: lists and tuples alike, floats to 1e-6 (mean/std are written with 2-3 decimals)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


# keys that only training reads: never part of the deployed graph
_TRAINING_ONLY = {"init_cfg", "pretrained", "frozen_stages", "norm_eval", "with_cp", "zero_init_residual",
                  "train_cfg", "_scope_", "sampler", "assigner", "ignore_index", "dropout_ratio", "loss_decode",
                  "loss_cls", "loss_bbox", "loss_mask", "reg_decoded_bbox", "init_std", "requires_grad"}
_MISSING = object()


class Section:
    """One dict of a config, read key by key: what is read is recorded, and :meth:`finish` refuses any key left
    over that would change the network (training-only keys and ``None``/``False`` values pass)."""

    def __init__(self, data, path: str, source: str):
        if not isinstance(data, Mapping):
            raise UnsupportedSetting(f"{source}: {path}={show(data)} cannot be built here: it must be a dict")
        self.data, self.path, self.source = data, path, source
        self._read: set = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}"

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str, default=None):
        self._read.add(name)
        return self.data.get(name, default)

    def refuse(self, name: str, value, why: str) -> UnsupportedSetting:
        return UnsupportedSetting(f"{self.source}: {self.key(name)}={show(value)} cannot be built here: {why}")

    def fixed(self, name: str, *allowed, why: str | None = None):
        """The value must be one of ``allowed`` (absent: the first, the default of mmdet/mmseg)."""
        value = self.get(name, _MISSING)
        if value is _MISSING:
            return allowed[0]
        if not any(same(value, a) for a in allowed):
            raise self.refuse(name, value, why or f"this project builds {' or '.join(show(a) for a in allowed)}")
        return value

    def number(self, name: str, default, kind=int, minimum=None):
        value = self.get(name, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or
                                                                                  float(value).is_integer())
        if not ok or (minimum is not None and value < minimum):
            what = "an integer" if kind is int else "a number"
            raise self.refuse(name, value, f"it must be {what}" + (f" >= {minimum}" if minimum is not None else ""))
        return kind(value)

    def sub(self, name: str, required: bool = True) -> "Section | None":
        value = self.get(name)
        if value is None:
            if required:
                raise UnsupportedSetting(f"{self.source}: {self.key(name)} is missing")
            return None
        return Section(value, self.key(name), self.source)

    def finish(self, *ignored: str) -> None:
        for name, value in self.data.items():
            if name in self._read or name in ignored or name in _TRAINING_ONLY or name.startswith("loss_"):
                continue
            if value is None or value is False:
                continue
            raise self.refuse(name, value, "this project does not build this setting")
