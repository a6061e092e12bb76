"""ONNX for CARAFE: the ``carafe::CARAFE`` schema (registered on import), its standard-op function, the three forms
(plugin / portable / decomposed) and conversion between them, mmcv interop, and export from PyTorch. See docs/ONNX.md.

Everything but :func:`export` works without torch (graph preparation for TensorRT uses it); ``export`` is loaded on
first use.
"""

from .detection_nodes import register_schemas as register_detection_schemas
from .schema import DOMAIN, OP_TYPE, OPSET_VERSION, register_schema

register_schema()
register_detection_schemas()

from .files import load_model, save_model  # noqa: E402
from .forms import EXPORT_MODES, carafe_nodes, to_decomposed, to_plugin, to_portable  # noqa: E402
from .function import carafe_function  # noqa: E402
from .mmcv import convert_mmcv  # noqa: E402

__all__ = [
    "DOMAIN", "OP_TYPE", "OPSET_VERSION", "register_schema", "export", "EXPORT_MODES", "carafe_function",
    "carafe_nodes", "to_plugin", "to_portable", "to_decomposed", "convert_mmcv", "load_model", "save_model",
]


def __getattr__(name: str):
    if name == "export":
        from .exporter import export

        return export
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
