"""Model zoo: CARAFE detectors, segmenters and a tiny demo network, by name. Model code only: modules, builders and
checkpoint import (the deploy pipelines that export, check and build these models are in :mod:`carafe_deploy.tasks`).

Each family module registers its builders with :func:`register`; ``build(name, checkpoint=None, resampling="carafe", **overrides)``
creates the model (eval mode) and loads the checkpoint when one is given.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # the registry itself needs no torch: the families import it when they are loaded
    from torch import nn

__all__ = ["ModelSpec", "RESAMPLING", "register", "build", "available", "spec", "MODEL_NAMES"]

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

    ``resampling="nearest"`` builds the papers' baseline twin: every CARAFE / CARAFE++ module replaced by nearest
    resampling of the same scale (:func:`carafe_deploy.nn.with_nearest_resampling`), everything else identical; a
    checkpoint is then the twin's own (it has no CARAFE parameters).
    """
    if resampling not in RESAMPLING:
        raise ValueError(f"resampling must be one of {RESAMPLING}, got {resampling!r}")
    model = spec(name).builder(**overrides)
    if resampling == "nearest":
        from ..nn import with_nearest_resampling

        with_nearest_resampling(model)
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    return model.eval()
