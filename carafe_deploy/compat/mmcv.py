"""Code written against mmcv's CARAFE (``from mmcv.ops.carafe import carafe, CARAFEPack, ...``) on this project's op.

``import carafe_deploy.compat.mmcv`` provides every public name of ``mmcv.ops.carafe`` in mmcv 1.x and 2.x --
``carafe``, ``carafe_naive`` (mmcv's ``CARAFEFunction.apply`` / ``CARAFENaiveFunction.apply``: features, masks,
kernel_size, group_size, scale_factor), the functions' classes ``CARAFEFunction`` / ``CARAFENaiveFunction``
(``.apply``), the modules ``CARAFE``, ``CARAFENaive`` (kernel_size, group_size, scale_factor) and ``CARAFEPack``
(mmcv's constructor, parameter names, ``init_weights``, ``kernel_normalizer``, ``feature_reassemble``, ``forward``;
mmcv/mmdet checkpoints load) -- all computed by ``carafe_deploy::carafe``, so they run on CPU and CUDA without mmcv's
compiled ops and export with both of torch's ONNX exporters as ``carafe::CARAFE``; and what the module imports and
code reaches for through it: the weight-init helpers ``normal_init`` and ``xavier_init``
(:mod:`.weight_init`), the registry ``CARAFEPack`` is registered in as ``"carafe"`` (``UPSAMPLE_LAYERS`` in 1.x,
``MODELS`` in 2.x: mmengine's when it is installed, else a stand-in), ``ext_module`` / ``ext_loader`` (the compiled
ops' CARAFE entry points, :mod:`.mmcv_parts`), and ``torch``, ``nn``, ``F``, ``Tensor``, ``Function``, ``Module``,
``Tuple``.

It also makes ``mmcv.ops.carafe`` (and ``mmcv.ops``' CARAFE names) import from here where mmcv cannot provide them:

* mmcv absent: stand-in modules ``mmcv``, ``mmcv.ops``, ``mmcv.ops.carafe``, ``mmcv.cnn`` (mmcv 1.x's weight-init
  helpers and ``UPSAMPLE_LAYERS``, so code written for mmcv 1.x, ``from mmcv.cnn import xavier_init``, imports) and
  ``mmcv.utils`` (the device flags, ``ext_loader``) (``mmcv.__carafe_deploy__`` is true);
* mmcv installed without compiled ops (mmcv-lite, or a build without ``mmcv._ext``): the real ``mmcv`` package and
  its pure-Python parts stay; ``mmcv.ops`` (which cannot import there) and ``mmcv.ops.carafe`` come from here;
* mmcv installed whole: nothing of mmcv is changed. Its CARAFE exports ``mmcv::MMCVCARAFE``, which
  ``carafe-deploy convert`` turns into any form; the names of this module remain this project's op.

With mmengine present (and mmcv not registering it), ``CARAFEPack`` is registered in mmengine's ``MODELS`` as
``"carafe"``, as mmcv does, so configs with ``upsample_cfg=dict(type="carafe")`` build it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from typing import Tuple  # noqa: F401 -- a public name of mmcv.ops.carafe

import torch  # noqa: F401 -- a public name of mmcv.ops.carafe
import torch.nn.functional as F  # noqa: F401 -- a public name of mmcv.ops.carafe
from torch import Tensor, nn
from torch.autograd import Function  # noqa: F401 -- a public name of mmcv.ops.carafe
from torch.nn.modules.module import Module  # noqa: F401 -- a public name of mmcv.ops.carafe

from ..nn.modules import CARAFEUpsample, _check_int
from ..ops import carafe as _carafe
from . import weight_init
from .mmcv_parts import Registry, device_flags, ext_loader, ext_module  # noqa: F401 -- mmcv's names
from .weight_init import normal_init, xavier_init

__all__ = ["carafe", "carafe_naive", "CARAFEFunction", "CARAFENaiveFunction", "CARAFE", "CARAFENaive", "CARAFEPack",
           "normal_init", "xavier_init", "MODELS", "UPSAMPLE_LAYERS", "ext_module", "ext_loader", "MMCV_STATE"]


def carafe(features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int) -> Tensor:
    """mmcv's ``carafe(features, masks, kernel_size, group_size, scale_factor)``: CARAFE up-sampling by
    ``scale_factor`` with normalized ``masks`` (N, group_size·k², s·H, s·W)."""
    return _carafe(features, masks, kernel_size, group_size, scale_factor, "up")


def carafe_naive(features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int) -> Tensor:
    """mmcv's ``carafe_naive``: the same result as ``carafe`` (mmcv's naive kernel is a slower CUDA version)."""
    return _carafe(features, masks, kernel_size, group_size, scale_factor, "up")


class CARAFEFunction:
    """mmcv's autograd Function's entry point, ``CARAFEFunction.apply``; autograd is the op's own."""

    apply = staticmethod(carafe)


class CARAFENaiveFunction:
    apply = staticmethod(carafe_naive)


class _CARAFEModule(nn.Module):
    _function = staticmethod(carafe)

    def __init__(self, kernel_size: int, group_size: int, scale_factor: int):
        super().__init__()
        for name, value in (("kernel_size", kernel_size), ("group_size", group_size), ("scale_factor", scale_factor)):
            _check_int(name, value, 1)
        self.kernel_size = kernel_size
        self.group_size = group_size
        self.scale_factor = scale_factor

    def forward(self, features: Tensor, masks: Tensor) -> Tensor:
        return self._function(features, masks, self.kernel_size, self.group_size, self.scale_factor)


class CARAFE(_CARAFEModule):
    """mmcv's ``CARAFE(kernel_size, group_size, scale_factor)``: ``forward(features, masks)``."""


class CARAFENaive(_CARAFEModule):
    """mmcv's ``CARAFENaive(kernel_size, group_size, scale_factor)``."""

    _function = staticmethod(carafe_naive)


class CARAFEPack(CARAFEUpsample):
    """mmcv's ``CARAFEPack(channels, scale_factor, up_kernel=5, up_group=1, encoder_kernel=3, encoder_dilation=1,
    compressed_channels=64)``; ``forward`` goes through ``kernel_normalizer`` and ``feature_reassemble`` as mmcv's
    does, so subclasses that override either keep working."""

    def __init__(self, channels: int, scale_factor: int, up_kernel: int = 5, up_group: int = 1,
                 encoder_kernel: int = 3, encoder_dilation: int = 1, compressed_channels: int = 64):
        super().__init__(channels, scale_factor, up_kernel, up_group, encoder_kernel, encoder_dilation,
                         compressed_channels)

    def feature_reassemble(self, x: Tensor, mask: Tensor) -> Tensor:
        return carafe(x, mask, self.up_kernel, self.up_group, self.scale_factor)

    def forward(self, x: Tensor) -> Tensor:
        mask = self.kernel_normalizer(self.content_encoder(self.channel_compressor(x)))
        return self.feature_reassemble(x, mask)


# --------------------------------------------------------------------------------------------------------------
# mmcv.ops.carafe where mmcv cannot provide it

_OPS_NAMES = ("carafe", "carafe_naive", "CARAFE", "CARAFENaive", "CARAFEPack")


def _mmcv_state() -> str:
    """"absent", "no-ops" (mmcv without its compiled ``mmcv._ext``) or "whole"."""
    try:
        found = "mmcv" in sys.modules or importlib.util.find_spec("mmcv") is not None
    except (ImportError, ValueError):  # a broken or hidden mmcv (sys.modules["mmcv"] = None)
        found = False
    if not found or sys.modules.get("mmcv", False) is None:
        return "absent"
    if getattr(sys.modules.get("mmcv"), "__carafe_deploy__", False):
        return "absent"  # our own stand-in, from an earlier import
    try:
        has_ext = importlib.util.find_spec("mmcv._ext") is not None
    except Exception:  # noqa: BLE001 -- importing the mmcv package itself failed
        return "absent"
    return "whole" if has_ext else "no-ops"


def _ops_module(real_mmcv: bool) -> types.ModuleType:
    ops = types.ModuleType("mmcv.ops", "mmcv.ops' CARAFE names, from carafe_deploy.compat.mmcv")
    ops.__path__ = []  # a package: mmcv.ops.carafe is found in sys.modules
    ops.__carafe_deploy__ = True
    _give_spec(ops, package=True)
    this = sys.modules[__name__]
    for name in _OPS_NAMES:
        setattr(ops, name, getattr(this, name))
    ops.carafe_module = this

    why = "mmcv is installed without its compiled ops (mmcv._ext)" if real_mmcv else "mmcv is not installed"

    def __getattr__(name):
        raise AttributeError(f"mmcv.ops.{name} is not available: {why}; carafe_deploy.compat.mmcv provides only "
                             f"the CARAFE ops ({', '.join(_OPS_NAMES)})")

    ops.__getattr__ = __getattr__
    return ops


def _install() -> str:
    state = _mmcv_state()
    if state == "whole":
        return state
    this = sys.modules[__name__]
    if state == "absent":
        mmcv = sys.modules.get("mmcv")
        if mmcv is None:
            mmcv = types.ModuleType("mmcv", "stand-in for mmcv, from carafe_deploy.compat.mmcv (CARAFE only)")
            mmcv.__path__ = []
            _give_spec(mmcv, package=True)
            mmcv.__carafe_deploy__ = True
            sys.modules["mmcv"] = mmcv
        for name, make in (("cnn", _cnn_module), ("utils", _utils_module)):
            if f"mmcv.{name}" not in sys.modules:
                sys.modules[f"mmcv.{name}"] = make()
            setattr(mmcv, name, sys.modules[f"mmcv.{name}"])
    else:
        import mmcv
    if not getattr(sys.modules.get("mmcv.ops"), "__carafe_deploy__", False):
        sys.modules["mmcv.ops"] = _ops_module(state == "no-ops")
    mmcv.ops = sys.modules["mmcv.ops"]
    sys.modules["mmcv.ops.carafe"] = this
    _register_with_mmengine()
    return state


def _give_spec(module: types.ModuleType, package: bool = False) -> None:
    # importlib.util.find_spec("mmcv") raises ValueError for a module in sys.modules whose __spec__ is None, and code
    # that asks whether mmcv is there (tests, mmengine's package checks) must get an answer, not that error.
    module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None, is_package=package)
    if package:
        module.__spec__.submodule_search_locations = module.__path__


def _stand_in(name: str, doc: str, names: dict) -> types.ModuleType:
    module = types.ModuleType(name, f"stand-in for {name}, from carafe_deploy.compat.mmcv: {doc}")
    module.__carafe_deploy__ = True
    _give_spec(module)
    module.__dict__.update(names)
    module.__all__ = sorted(names)

    def __getattr__(attr):
        raise AttributeError(f"{name}.{attr} is not available: mmcv is not installed and carafe_deploy.compat.mmcv's "
                             f"{name} has only {', '.join(sorted(names))}")

    module.__getattr__ = __getattr__
    return module


def _cnn_module() -> types.ModuleType:
    names = {n: getattr(weight_init, n) for n in weight_init.__all__}
    return _stand_in("mmcv.cnn", "mmcv 1.x's weight-init helpers and UPSAMPLE_LAYERS",
                     {**names, "UPSAMPLE_LAYERS": UPSAMPLE_LAYERS, "MODELS": MODELS})


def _utils_module() -> types.ModuleType:
    return _stand_in("mmcv.utils", "the device flags and ext_loader", {**device_flags(), "ext_loader": ext_loader})


def _registry():
    """mmengine's ``MODELS`` (where mmcv 2.x registers CARAFEPack) when mmengine is installed, else a stand-in."""
    if importlib.util.find_spec("mmengine") is not None:
        try:
            from mmengine.registry import MODELS as registry

            return registry
        except Exception:  # noqa: BLE001 -- a broken mmengine must not break this import
            pass
    return Registry("upsample layer")


def _register_with_mmengine() -> None:
    if MODELS.get("carafe") is None:
        MODELS.register_module(name="carafe", module=CARAFEPack)


# mmcv 2.x registers CARAFEPack in MODELS; mmcv 1.x in UPSAMPLE_LAYERS, which 2.x merged into MODELS
MODELS = UPSAMPLE_LAYERS = _registry()


MMCV_STATE = _install()  # what was found: "absent", "no-ops" or "whole"
