"""Compatibility with code written for other libraries: `compat.mmcv` (mmcv.ops.carafe on this project's op)."""
