"""The CARAFE operator (``carafe_deploy::carafe``)."""

from . import _cuda
from .carafe import MODES, carafe, carafe_output_size, check_carafe_args

# CUDA tensors go to the kernels in plugins/common (compiled lazily on first use; falls back with a warning).
_cuda.register()

__all__ = ["MODES", "carafe", "carafe_output_size", "check_carafe_args"]

# detection ops (NMS keep mask, RoI Align; the detectors' plugin form: multi-level RoI Align, batched NMS)
from .detection import batched_nms, multi_level_roi_align, nms_keep, roi_align  # noqa: E402

__all__ += ["nms_keep", "roi_align", "multi_level_roi_align", "batched_nms"]
