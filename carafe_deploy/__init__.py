"""carafe-deploy: ship CARAFE / CARAFE++ models to ONNX and TensorRT."""

__version__ = "0.1.0"

from .ops import carafe  # noqa: E402  (registers the torch.library op on import)

__all__ = ["carafe", "__version__"]
