"""The CARAFE operator (``carafe_deploy::carafe``)."""

from .carafe import MODES, carafe, carafe_output_size, check_carafe_args

__all__ = ["MODES", "carafe", "carafe_output_size", "check_carafe_args"]
