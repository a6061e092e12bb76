"""A TensorRT engine as a runner (over :class:`carafe_deploy.trt.runner.EngineRunner`)."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from .base import Runner, TensorMeta

__all__ = ["TrtRunner"]


class TrtRunner(Runner):
    """A serialized engine; ``plugin`` and ``backend`` (the TensorRT runtime: "tensorrt", "tensorrt-rtx", or ``None``
    for the one that built the engine) as :class:`~carafe_deploy.trt.runner.EngineRunner` takes them."""

    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, plugin=True, verbose: bool = False, backend: str | None = None):
        super().__init__()
        self.engine_path = engine_path
        self.plugin = plugin
        self.verbose = verbose
        self.backend = backend
        self._runner = None

    def activate_impl(self) -> None:
        from ..trt.runner import EngineRunner
        from ..trt.runtime import import_tensorrt

        if not os.path.isfile(self.engine_path):  # without TensorRT the backend is unavailable, whatever the path says
            import_tensorrt(self.backend)
        self._runner = EngineRunner(self.engine_path, plugin=self.plugin, verbose=self.verbose, backend=self.backend)

    def deactivate_impl(self) -> None:
        self._runner.close()
        self._runner = None

    @property
    def device(self) -> str:
        gpu = ((self._runner.sidecar or {}).get("gpu") or {}) if self._runner else {}
        return gpu.get("name", "cuda") if isinstance(gpu, dict) else "cuda"

    def input_metadata(self) -> list[TensorMeta]:
        return [TensorMeta(t.name, t.dtype, t.shape) for t in self._runner.inputs]

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._runner.infer(feeds)

    def timed_call(self, feeds):
        # inputs bound once (device-resident): only execute_async_v3 + stream sync are timed
        self._runner.bind(feeds)
        return self._runner.execute
