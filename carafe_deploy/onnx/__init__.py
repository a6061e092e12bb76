"""ONNX for CARAFE: the ``carafe::CARAFE`` schema (registered on import), its standard-op function, export in
plugin / portable / decomposed form, and mmcv interop. See docs/ONNX.md."""

from .schema import DOMAIN, OP_TYPE, OPSET_VERSION, register_schema

register_schema()

from .export import EXPORT_MODES, carafe_nodes, export, to_decomposed, to_plugin, to_portable  # noqa: E402
from .function import carafe_function  # noqa: E402
from .mmcv import convert_mmcv  # noqa: E402

__all__ = [
    "DOMAIN", "OP_TYPE", "OPSET_VERSION", "register_schema", "export", "EXPORT_MODES", "carafe_function",
    "carafe_nodes", "to_plugin", "to_portable", "to_decomposed", "convert_mmcv",
]
