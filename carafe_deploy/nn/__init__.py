"""CARAFE modules: ``CARAFEUpsample`` (mmcv CARAFEPack), ``CARAFEDownsample`` (CARAFE++), the nearest baseline."""

from .modules import CARAFEDownsample, CARAFEUpsample, NearestResample, normalize_kernels, with_nearest_resampling

__all__ = ["CARAFEUpsample", "CARAFEDownsample", "NearestResample", "normalize_kernels", "with_nearest_resampling"]
