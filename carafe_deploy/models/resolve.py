"""Which model to build, with which options, from what the user gives: a registered name, a config, a checkpoint
and explicit options.

The settings come from, in this order (later wins): the registered model's defaults; a config given explicitly, or
else the config the checkpoint embeds, or else the checkpoint's tensor shapes; the ``tiny`` widths; explicit options
(``--set``). Whatever the source, the result is checked against the checkpoint's shapes before anything is built:
a class count, width or CARAFE setting that does not fit the checkpoint is one line saying what the checkpoint holds,
where the wrong value came from and how to fix it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import DeployError
from .checkpoint import CheckpointMismatchError
from .config_reader import ConfigSyntaxError, embedded_config, read_config
from .from_config import describe_config
from .from_shapes import describe_state
from .settings import Description, same, show

__all__ = ["Resolved", "resolve"]


@dataclass
class Resolved:
    name: str  # the registered model
    options: dict  # its builder options
    described: Description | None = None  # the config's or the shapes' description the options start from
    state: dict | None = None  # the checkpoint's tensors (read once)
    meta: dict = field(default_factory=dict)  # the checkpoint's meta
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """``"ResNet-101, 3 classes, from config faster.py"``: what differs from the registered model, and why."""
        o = self.options
        parts = []
        if "depth" in o or o.get("deep_stem"):
            parts.append(f"ResNet-{o.get('depth', 50)}" + (" deep stem" if o.get("deep_stem") else ""))
        if "num_classes" in o:
            parts.append(f"{o['num_classes']} classes")
        if self.described is not None:
            parts.append(f"from {self.described.source}")
        return ", ".join(parts)


def resolve(name: str | None = None, *, config=None, checkpoint=None, overrides: dict | None = None,
            tiny: bool = False) -> Resolved:
    """The model and options that ``config`` (a path, text or dict) and/or ``checkpoint`` (a path or a state dict)
    describe, with ``overrides`` on top; ``name`` (a registered model) when the caller names it."""
    from . import spec
    from .checkpoint import read_checkpoint

    overrides = dict(overrides or {})
    if name is not None:
        spec(name)  # an unknown name fails before a checkpoint is read
    state, meta, notes = None, {}, []
    if checkpoint is not None:
        state, meta = read_checkpoint(checkpoint)
    shapes = describe_state(state) if state else None
    described = None
    if config is not None:
        source = f"config {os.fspath(config)}" if isinstance(config, (str, os.PathLike)) and "\n" not in str(
            config) else "the config"
        described = describe_config(read_config(config), source)
    elif meta:
        try:
            cfg, where = embedded_config(meta)
        except ConfigSyntaxError as exc:
            cfg = None
            notes.append(f"{exc}; the settings are read from the tensor shapes instead")
        if cfg is not None and "model" in cfg:
            described = describe_config(cfg, where)
    if described is None:
        described = shapes
    if name is None:
        if described is None:
            raise DeployError("the checkpoint is neither a CARAFE detector (roi_head.*) nor a UperNet segmenter "
                              "(decode_head.*), and no config says what it is: give a config or a model name")
        name = described.name
    elif described is not None and described.name != name:
        raise CheckpointMismatchError(f"this is {described.name}, not {name} ({_why_family(described)}, in "
                                      f"{described.source}): use the model {described.name}")
    model_spec = spec(name)

    options = dict(described.options) if described is not None else {}
    if tiny:
        options.update(model_spec.tiny)
    for key, value in overrides.items():
        base = options.get(key)
        options[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
    if shapes is not None:
        if described is not None and described is not shapes:
            _check_fits(described.options, shapes, lambda *args: _by_config(described, *args))
        _check_fits(overrides, shapes, _by_option)
        for option, why in shapes.unknown.items():
            if option not in options:
                raise DeployError(f"{why}: give {option} (or a config)")
    if described is not None:
        notes = [*described.notes, *notes] if described is shapes else notes
    return Resolved(name, options, described, state, meta, notes)


def _why_family(d: Description) -> str:
    if d.source == "the checkpoint's tensor shapes":
        return {"mask_rcnn_r50_fpn_carafe": "it has roi_head.mask_head.*",
                "faster_rcnn_r50_fpn_carafe": "it has roi_head.* and no mask head",
                "upernet_r50_carafe_pp": "its backbone has CARAFE++ modules (backbone.maxpool.content_encoder)",
                "upernet_r50_carafe": "it has decode_head.* and a plain ResNet"}[d.name]
    origin = d.origin
    return ("its backbone has downsample_cfg (CARAFE++)" if "downsample_cfg" in origin else
            "model.type")


def _by_option(option: str, want, have) -> str:
    return (f"{option}={show(want)} was asked for: leave it out to use the checkpoint's value, or give "
            f"{option}={show(have)}")


def _by_config(described: Description, option: str, want, have) -> str:
    top, _, sub = option.partition(".")
    key = described.origin.get(top, top) + (f".{sub}" if sub else "")
    return f"{described.source} sets {key}={show(want)}: set {key}={show(have)} in the config"


def _taps(cfg: dict, k: str, g: str):
    return cfg[k] ** 2 * cfg[g] if k in cfg and g in cfg else None


def _check_fits(requested: dict, shapes: Description, by) -> None:
    """Each requested option the shapes tell must equal what the checkpoint holds; else one line."""
    for option, have in shapes.options.items():
        if option not in requested:
            continue
        want = requested[option]
        if not (isinstance(have, dict) and isinstance(want, dict)):
            pairs = [(option, want, have)]
        else:
            k, g = ("up_kernel", "up_group") if "up_kernel" in have else ("kernel_size", "group")
            pairs = [(f"{option}.{sub}", want[sub], value) for sub, value in have.items()
                     if sub in want and sub not in (k, g, "encoder_dilation")]  # dilation: not in the shapes
            if _taps(want, k, g) is not None and _taps(want, k, g) != _taps(have, k, g):
                raise CheckpointMismatchError(f"the checkpoint holds {option} with {k}²·{g} = {_taps(have, k, g)} "
                                  f"({shapes.origin[option]}), but {by(option, want, have)} (whose {k}²·{g} = "
                                  f"{_taps(want, k, g)})")
        for label, want_value, have_value in pairs:
            if not same(want_value, have_value):
                raise CheckpointMismatchError(f"the checkpoint holds {label}={show(have_value)} ({shapes.origin[option]}), "
                                  f"but {by(label, want_value, have_value)}")
