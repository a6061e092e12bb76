"""The CARAFE operator (``carafe_deploy::carafe``)."""

from . import _cuda
from .carafe import MODES, carafe, carafe_output_size, check_carafe_args

# CUDA tensors go to the kernels in plugins/common (compiled lazily on first use; falls back with a warning).
_cuda.register()

__all__ = ["MODES", "carafe", "carafe_output_size", "check_carafe_args"]

# detection ops (NMS keep mask, RoI Align) register carafe_deploy::nms_keep and carafe_deploy::roi_align
from .detection import nms_keep, roi_align  # noqa: E402

__all__ += ["nms_keep", "roi_align"]
