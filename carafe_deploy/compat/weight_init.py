"""The weight-initialisation helpers of mmcv 1.x ``mmcv.cnn`` (mmcv 2.x moved them to ``mmengine.model``), which
code written for mmcv imports next to CARAFE (``from mmcv.ops.carafe import normal_init, xavier_init, carafe``,
``from mmcv.cnn import xavier_init``).

Same signatures and the same effect as mmcv's: each initialises ``module.weight`` when the module has one and sets
``module.bias`` to the constant ``bias`` when it has one (tests/compat compares them with mmengine's).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["constant_init", "xavier_init", "normal_init", "trunc_normal_init", "uniform_init", "kaiming_init",
           "caffe2_xavier_init", "bias_init_with_prob"]


def _weight(module: nn.Module):
    return getattr(module, "weight", None)


def _set_bias(module: nn.Module, bias: float) -> None:
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, bias)


def _distribution(distribution: str) -> None:
    if distribution not in ("uniform", "normal"):
        raise ValueError(f"distribution must be 'uniform' or 'normal', got {distribution!r}")


def constant_init(module: nn.Module, val: float, bias: float = 0) -> None:
    if _weight(module) is not None:
        nn.init.constant_(module.weight, val)
    _set_bias(module, bias)


def xavier_init(module: nn.Module, gain: float = 1, bias: float = 0, distribution: str = "normal") -> None:
    _distribution(distribution)
    if _weight(module) is not None:
        init = nn.init.xavier_uniform_ if distribution == "uniform" else nn.init.xavier_normal_
        init(module.weight, gain=gain)
    _set_bias(module, bias)


def normal_init(module: nn.Module, mean: float = 0, std: float = 1, bias: float = 0) -> None:
    if _weight(module) is not None:
        nn.init.normal_(module.weight, mean, std)
    _set_bias(module, bias)


def _trunc_normal_(tensor, mean: float, std: float, a: float, b: float):
    """N(mean, std²) truncated to [a, b] by inverse-CDF sampling, the method mmcv and mmengine use (and so the same
    numbers from the same seed; newer torch's ``nn.init.trunc_normal_`` samples differently)."""
    def cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    with torch.no_grad():
        tensor.uniform_(2 * cdf((a - mean) / std) - 1, 2 * cdf((b - mean) / std) - 1)
        tensor.erfinv_().mul_(std * math.sqrt(2.0)).add_(mean).clamp_(min=a, max=b)
    return tensor


def trunc_normal_init(module: nn.Module, mean: float = 0, std: float = 1, a: float = -2, b: float = 2,
                      bias: float = 0) -> None:
    if _weight(module) is not None:
        _trunc_normal_(module.weight, mean, std, a, b)
    _set_bias(module, bias)


def uniform_init(module: nn.Module, a: float = 0, b: float = 1, bias: float = 0) -> None:
    if _weight(module) is not None:
        nn.init.uniform_(module.weight, a, b)
    _set_bias(module, bias)


def kaiming_init(module: nn.Module, a: float = 0, mode: str = "fan_out", nonlinearity: str = "relu",
                 bias: float = 0, distribution: str = "normal") -> None:
    _distribution(distribution)
    if _weight(module) is not None:
        init = nn.init.kaiming_uniform_ if distribution == "uniform" else nn.init.kaiming_normal_
        init(module.weight, a=a, mode=mode, nonlinearity=nonlinearity)
    _set_bias(module, bias)


def caffe2_xavier_init(module: nn.Module, bias: float = 0) -> None:
    """Caffe2's ``XavierFill``, which is PyTorch's uniform Kaiming init with a=1 over fan_in (as mmcv has it)."""
    kaiming_init(module, a=1, mode="fan_in", nonlinearity="leaky_relu", bias=bias, distribution="uniform")


def bias_init_with_prob(prior_prob: float) -> float:
    """The bias whose sigmoid is ``prior_prob`` (focal-loss heads start from it)."""
    return float(-math.log((1 - prior_prob) / prior_prob))
