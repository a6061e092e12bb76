"""Model zoo: CARAFE detectors, segmenters and a tiny demo network, by name. Model code only: modules, builders and
checkpoint import (the deploy pipelines that export, check and build these models are in :mod:`carafe_deploy.tasks`).

Each family module registers its builders with :func:`register`; ``build(name, checkpoint=None, resampling="carafe", **overrides)``
creates the model (eval mode) and loads the checkpoint when one is given, with the class count and widths the
checkpoint shows; ``build_from_config(config, checkpoint)`` builds what an mmdetection / mmsegmentation config (or a
checkpoint alone) describes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # the registry itself needs no torch: the families import it when they are loaded
    from torch import nn

__all__ = ["ModelSpec", "RESAMPLING", "register", "build", "build_from_config", "build_resolved", "available", "spec",
           "MODEL_NAMES"]

# The registered names, known without importing the families (which import torch): for --help. A test keeps it equal
# to available().
MODEL_NAMES = ("faster_rcnn_r50_fpn_carafe", "mask_rcnn_r50_fpn_carafe", "tiny_carafe_net", "upernet_r50_carafe",
               "upernet_r50_carafe_pp")


@dataclass(frozen=True)
class ModelSpec:
    """What the deploy pipeline needs to know about a model beyond its weights."""

    name: str
    builder: Callable[..., "nn.Module"]  # builder(**overrides) -> nn.Module
    # the task family: "detection", "segmentation" or "generic" (element-wise parity); carafe_deploy.tasks has one
    # pipeline per family
    task: str = "generic"
    input_names: tuple[str, ...] = ("image",)
    output_names: tuple[str, ...] = ("output",)
    default_input_shape: tuple[int, ...] = (1, 3, 512, 512)
    # ONNX dynamic axes per input/output name, as torch.onnx.export takes them
    dynamic_axes: dict = field(default_factory=dict)
    # export with dynamic_axes unless told otherwise (detectors export static graphs by default: faster engines)
    dynamic_by_default: bool = True
    # builder overrides for a narrow model of the same structure and names (quick checks of the graph; random weights)
    tiny: dict = field(default_factory=dict)
    # checkpoint keys (prefixes) that training saves and inference never uses, e.g. mmseg's auxiliary_head
    checkpoint_ignores: tuple[str, ...] = ()
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}

# family modules that register models on import (relative to this package)
_FAMILIES: tuple[str, ...] = (".detectors", ".segmenters", ".tiny")


def register(model_spec: ModelSpec) -> ModelSpec:
    if model_spec.name in _REGISTRY:
        raise ValueError(f"model {model_spec.name!r} is already registered")
    _REGISTRY[model_spec.name] = model_spec
    return model_spec


def _load_families() -> None:
    for family in _FAMILIES:
        importlib.import_module(family, __package__)


def available() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def spec(name: str) -> ModelSpec:
    _load_families()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name]


RESAMPLING = ("carafe", "nearest")


def build(name: str, checkpoint=None, resampling: str = "carafe", **overrides) -> "nn.Module":
    """Build model ``name`` in eval mode; load ``checkpoint`` (a path or a state dict) when given.

    With a checkpoint, the settings it shows (class count, depth, widths, CARAFE arguments: the config it embeds,
    else its tensor shapes) are used for every option not given in ``overrides``; an option that contradicts it is
    an error saying what the checkpoint holds (:mod:`carafe_deploy.models.resolve`).

    ``resampling="nearest"`` builds the papers' baseline twin: every CARAFE / CARAFE++ module replaced by nearest
    resampling of the same scale (:func:`carafe_deploy.nn.with_nearest_resampling`), everything else identical; a
    checkpoint is then the twin's own (it has no CARAFE parameters).
    """
    _check_resampling(resampling)
    if checkpoint is None:
        return _build(name, overrides, None, resampling)
    from .resolve import resolve

    return build_resolved(resolve(name, checkpoint=checkpoint, overrides=overrides), resampling)


def build_from_config(config=None, checkpoint=None, resampling: str = "carafe", **overrides) -> "nn.Module":
    """Build the model an mmdetection / mmsegmentation ``config`` describes (a ``.py`` file, ``_base_`` included
    with mmengine installed; config text; or a dict), in eval mode, and load ``checkpoint``.

    Without a config, the checkpoint's embedded config (``meta['cfg']`` / ``meta['config']``) or else its tensor
    shapes describe the model. ``overrides`` are builder options on top (e.g. ``score_thr=0.3``). A config setting this
    package cannot build raises :class:`~carafe_deploy.models.settings.UnsupportedSetting` naming the key and value.
    """
    _check_resampling(resampling)
    if config is None and checkpoint is None:
        raise ValueError("build_from_config needs a config, a checkpoint or both")
    from .resolve import resolve

    return build_resolved(resolve(config=config, checkpoint=checkpoint, overrides=overrides), resampling)


def build_resolved(resolved, resampling: str = "carafe") -> "nn.Module":
    """Build a :class:`~carafe_deploy.models.resolve.Resolved` (its checkpoint's weights loaded)."""
    return _build(resolved.name, resolved.options, resolved.state, resampling)


def _check_resampling(resampling: str) -> None:
    if resampling not in RESAMPLING:
        raise ValueError(f"resampling must be one of {RESAMPLING}, got {resampling!r}")


def _build(name: str, options: dict, state, resampling: str) -> "nn.Module":
    model_spec = spec(name)
    model = model_spec.builder(**options)
    if resampling == "nearest":
        from ..nn import with_nearest_resampling

        with_nearest_resampling(model)
    if state is not None:
        from .checkpoint import load_checkpoint

        if model_spec.checkpoint_ignores:
            state = {k: v for k, v in state.items() if not k.startswith(model_spec.checkpoint_ignores)}
        load_checkpoint(model, state)
    return model.eval()
