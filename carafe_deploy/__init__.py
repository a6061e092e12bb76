"""carafe-deploy: ship CARAFE / CARAFE++ models to ONNX, TensorRT and Triton.

The package root imports nothing heavy, so that the engine tools (``carafe_deploy.trt``) and the command line start
without torch. The op lives in :mod:`carafe_deploy.ops`; ``carafe_deploy.carafe`` is the same function, loaded on
first use. When torch is already imported, importing the package registers the op right away, so that loading a
TorchScript file or an ExportedProgram that calls ``torch.ops.carafe_deploy.carafe`` works after ``import carafe_deploy``.
"""

import sys

__version__ = "0.1.0"

__all__ = ["carafe", "__version__"]

if "torch" in sys.modules:
    from . import ops  # noqa: F401  (registers the torch.library ops)


def __getattr__(name: str):
    if name == "carafe":
        from .ops import carafe

        return carafe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
