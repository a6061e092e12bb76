"""The CARAFE operator (``carafe_deploy::carafe``)."""

from . import _cuda
from .carafe import MODES, carafe, carafe_output_size, check_carafe_args

# CUDA tensors go to the kernels in plugins/common (compiled lazily on first use; falls back with a warning).
_cuda.register()

__all__ = ["MODES", "carafe", "carafe_output_size", "check_carafe_args"]
