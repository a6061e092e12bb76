"""Loading checkpoints saved by mmcv/mmdet/mmseg (mmcv 1.x runners and mmengine's), torchvision or this package, with
errors that list the bad keys.

Files are read with ``torch.load(weights_only=True)``: nothing in a checkpoint runs. A training checkpoint of mmengine
(``epoch_12.pth``) also holds the runner's state -- ``message_hub`` (mmengine ``HistoryBuffer`` objects, numpy arrays),
optimizer and scheduler states -- whose classes ``weights_only`` refuses; those objects are read as inert
placeholders (:func:`_load_file`), so the weights and the ``meta`` (with the embedded config) load from such a file too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import DeployError

__all__ = ["load_checkpoint", "read_checkpoint", "read_state_dict", "save_checkpoint", "CheckpointMismatchError"]

_MAX_LISTED = 20


class CheckpointMismatchError(DeployError):
    """The checkpoint's keys or shapes do not fit the model; the message lists them."""


def read_checkpoint(checkpoint) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state, meta)`` from a path or a mapping: the flat ``{name: tensor}`` (``state_dict``/``model`` unwrapped, a
    ``module.`` prefix dropped) and the checkpoint's ``meta`` (mmcv/mmengine write the config text and the class names
    there; ``{}`` when there is none)."""
    if isinstance(checkpoint, (str, os.PathLike)):
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        try:
            checkpoint = _load_file(checkpoint)
        except Exception as exc:  # torch raises several types for a corrupt or foreign file
            why = str(exc) if isinstance(exc, DeployError) else _why_unreadable(checkpoint, exc)
            raise DeployError(f"cannot read checkpoint {checkpoint}: {why}") from None
    if not isinstance(checkpoint, Mapping):
        raise DeployError(f"a checkpoint must be a mapping of tensors, got {type(checkpoint).__name__}")
    meta = checkpoint.get("meta")
    meta = dict(meta) if isinstance(meta, Mapping) else {}
    for wrapper in ("state_dict", "model"):  # mmengine/mmdet save {'meta': ..., 'state_dict': ...}
        if wrapper in checkpoint and isinstance(checkpoint[wrapper], Mapping):
            checkpoint = checkpoint[wrapper]
            break
    state = {}
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            continue
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state, meta


def read_state_dict(checkpoint) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from a path or a mapping; unwraps ``state_dict``/``model`` and a ``module.`` prefix."""
    return read_checkpoint(checkpoint)[0]


class _Opaque:
    """Stands in for an object of another library in a checkpoint's training state: built from anything, holding
    nothing, running nothing (the weights never need it). ``foreign`` names the class it replaces."""

    foreign = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        pass


def _load_file(path):
    """``torch.load(weights_only=True)``; where it refuses classes of other libraries (an mmengine training
    checkpoint's message hub and optimizer state), again with each of them read as an :class:`_Opaque`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 -- re-raised unless foreign classes explain it
        try:
            foreign = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 -- not a zip checkpoint, or a torch without this function
            foreign = []
        if not foreign:
            raise first from None
        stand_ins = [(type(name.rsplit(".", 1)[-1], (_Opaque,), {"foreign": name}), name) for name in foreign]
        with torch.serialization.safe_globals(stand_ins):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(loaded, _Opaque):  # torch.save(model): the weights are inside an object of the user's class
            raise DeployError(f"it is a pickled {loaded.foreign} object, not weights; save model.state_dict() "
                              "instead (torch.save(model.state_dict(), path))")
        return loaded


def _why_unreadable(path, exc: Exception) -> str:
    """One line: what the file is not, or the last line of torch's message for a real checkpoint it refused."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # torch.save writes a zip archive; legacy files are pickles
        return "not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    refusal = [line for line in lines if line.startswith("WeightsUnpickler error:")]  # weights_only refused an object
    if refusal:
        return f"it holds more than tensors ({refusal[0].split('. ')[0]})"
    return f"{type(exc).__name__}: {lines[0].split('. ')[0] if lines else 'unreadable'}"


def _listed(keys) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def load_checkpoint(model: nn.Module, checkpoint, strict: bool = True, prefix: str = "") -> dict[str, torch.Tensor]:
    """Load ``checkpoint`` into ``model``; with ``strict``, any missing, unexpected or mis-shaped key is an error.

    ``prefix`` selects a sub-tree of the checkpoint (e.g. ``"backbone."``) and strips it.
    """
    state = read_state_dict(checkpoint)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    wrong_shape = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    problems = []
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} with the wrong shape: {_listed(wrong_shape)}")
    if strict and missing:
        problems.append(f"{len(missing)} missing: {_listed(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listed(unexpected)}")
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint does not fit {type(model).__name__}: " + "; ".join(problems)
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return state


def save_checkpoint(model: nn.Module, path, meta: dict | None = None) -> None:
    """Save in mmengine's layout (``{'meta': ..., 'state_dict': ...}``) so both this package and mmdet read it;
    atomically (a failed write leaves the previous file)."""
    from ..files import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"meta": dict(meta or {}), "state_dict": model.state_dict()}, tmp)
