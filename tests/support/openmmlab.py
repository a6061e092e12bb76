"""OpenMMLab's own files, fetched at test time and never committed: the configs (and sources) that the ``mmdet`` and
``mmsegmentation`` wheels on PyPI ship (``<package>/.mim/configs``), downloaded with ``pip download --no-deps`` (nothing
is installed) into a cache and unpacked there; and the checkpoint layouts mmdet/mmseg 2.x/0.x (mmcv 1.x runners) and
3.x/1.x (mmengine's runner) write.

Without network or pip the tests that need a wheel skip with the reason, unless ``CARAFE_DEPLOY_REQUIRE_OPENMMLAB=1``
(CI) makes that a failure. ``CARAFE_DEPLOY_OPENMMLAB_CACHE`` moves the cache (default
``~/.cache/carafe-deploy/openmmlab``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

CACHE = Path(os.environ.get("CARAFE_DEPLOY_OPENMMLAB_CACHE", Path.home() / ".cache" / "carafe-deploy" / "openmmlab"))
# name -> (pip requirement, package folder in the wheel)
WHEELS = {
    "mmdet3": ("mmdet>=3", "mmdet"),
    "mmdet2": ("mmdet<3", "mmdet"),
    "mmseg1": ("mmsegmentation>=1", "mmseg"),
    "mmseg0": ("mmsegmentation<1", "mmseg"),
}


def _unavailable(why: str):
    if os.environ.get("CARAFE_DEPLOY_REQUIRE_OPENMMLAB") == "1":
        pytest.fail(why)
    pytest.skip(why)


def package(name: str) -> Path:
    """The unpacked package folder of wheel ``name`` (e.g. ``.../mmdet3/mmdet``), downloaded on first use."""
    requirement, folder = WHEELS[name]
    root = CACHE / name
    if not (root / folder / ".mim" / "configs").is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                   "--disable-pip-version-check", "-q", "-d", tmp, requirement],
                                  capture_output=True, text=True, timeout=600)
            wheels = sorted(Path(tmp).glob("*.whl"))
            if proc.returncode or not wheels:
                _unavailable(f"pip download {requirement!r} failed (no network?): "
                             f"{(proc.stderr.strip().splitlines() or ['no wheel'])[-1]}")
            unpacked = Path(tmp) / "unpacked"
            with zipfile.ZipFile(wheels[0]) as zf:
                zf.extractall(unpacked)
            (unpacked / "WHEEL_NAME").write_text(wheels[0].name)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(unpacked, root)  # whole or not at all
    return root / folder


def configs(name: str) -> Path:
    return package(name) / ".mim" / "configs"


def wheel_name(name: str) -> str:
    package(name)
    return (CACHE / name / "WHEEL_NAME").read_text()


def require_mmengine():
    if importlib.util.find_spec("mmengine") is None:
        _unavailable("mmengine is not installed (pip install -e '.[mm]'): it reads configs with _base_")


def pretty_text(config_path: Path) -> str:
    """The resolved config as text, as mmengine's runner embeds it in a checkpoint (meta['cfg'])."""
    require_mmengine()
    from mmengine.config import Config

    return Config.fromfile(str(config_path)).pretty_text


# ---------------------------------------------------------------------------------------------------------------
# checkpoint layouts


def _optimizer_state(state: dict) -> dict:
    """An SGD-with-momentum state over some of the weights, as a runner saves it."""
    params = [torch.nn.Parameter(v.float().clone()) for v in list(state.values())[:3] if v.is_floating_point()]
    opt = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return opt.state_dict()


def _message_hub() -> dict:
    """mmengine's MessageHub state (HistoryBuffer objects, numpy scalars) where mmengine is installed."""
    if importlib.util.find_spec("mmengine") is None:
        return {"log_scalars": {}, "runtime_info": {"iter": 120}, "resumed_keys": {}}
    import numpy as np
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("carafe_deploy_tests")
    for i in range(3):
        hub.update_scalar("train/loss", 1.0 / (i + 1))
        hub.update_scalar("train/lr", np.float64(0.02))
    hub.update_info("iter", 120)
    return hub.state_dict()


def save(model_state: dict, path: Path, layout: str, cfg_text: str | None, classes) -> Path:
    """Write ``model_state`` as the runner of ``layout`` does: "mmengine" (mmdet 3.x / mmseg 1.x), "mmcv1" (mmdet 2.x
    / mmseg 0.x) or "bare" (the weights alone, no meta)."""
    state = OrderedDict((k, v.clone()) for k, v in model_state.items())
    if layout == "bare":
        torch.save(state, path)
        return path
    if layout == "mmengine":
        meta = {"epoch": 12, "iter": 120, "seed": 0, "experiment_name": "carafe_test", "time": "20240105_062400",
                "mmengine_version": "0.10.7", "dataset_meta": {"classes": tuple(classes),
                                                                "palette": [(i, 2 * i, 3 * i) for i in range(
                                                                    len(classes))]}}
        if cfg_text is not None:
            meta["cfg"] = cfg_text
        checkpoint = {"meta": meta, "state_dict": state, "message_hub": _message_hub(),
                      "optimizer": _optimizer_state(state), "param_schedulers": [{"last_epoch": 12}]}
    elif layout == "mmcv1":
        meta = {"mmcv_version": "1.7.1", "time": "Fri Jan  5 06:24:00 2024", "epoch": 12, "iter": 120, "seed": 0,
                "exp_name": "carafe_test.py", "env_info": "sys.platform: linux\nPyTorch: 1.13.1",
                "CLASSES": tuple(classes), "PALETTE": [[i, 2 * i, 3 * i] for i in range(len(classes))]}
        if cfg_text is not None:
            meta["config"] = cfg_text
        checkpoint = {"meta": meta, "state_dict": state, "optimizer": _optimizer_state(state)}
    else:
        raise ValueError(layout)
    torch.save(checkpoint, path)
    return path
