"""The CARAFE operator (``carafe_deploy::carafe``)."""

from .carafe import MODES, carafe, carafe_output_size, check_carafe_args

__all__ = ["MODES", "carafe", "carafe_output_size", "check_carafe_args"]

# detection ops (NMS keep mask, RoI Align) register carafe_deploy::nms_keep and carafe_deploy::roi_align
from .detection import nms_keep, roi_align  # noqa: E402

__all__ += ["nms_keep", "roi_align"]
