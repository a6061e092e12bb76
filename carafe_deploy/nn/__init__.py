"""CARAFE modules: ``CARAFEUpsample`` (mmcv CARAFEPack) and ``CARAFEDownsample`` (CARAFE++)."""

from .modules import CARAFEDownsample, CARAFEUpsample, normalize_kernels

__all__ = ["CARAFEUpsample", "CARAFEDownsample", "normalize_kernels"]
