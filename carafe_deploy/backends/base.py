"""The runner interface."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

__all__ = ["Runner", "TensorMeta"]


@dataclass(frozen=True)
class TensorMeta:
    """An input as the runner sees it: numpy dtype name and dims (an int, or a name/None where dynamic)."""

    name: str
    dtype: str
    shape: tuple


class Runner(abc.ABC):
    """Feeds in, outputs out. Subclasses implement :meth:`activate_impl`, :meth:`input_metadata` and
    :meth:`infer_impl`; :meth:`infer` records :attr:`last_inference_time`."""

    name: str = "runner"

    def __init__(self):
        self.is_active = False
        self.last_inference_time: float | None = None

    # -- lifetime ---------------------------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @abc.abstractmethod
    def activate_impl(self) -> None:
        """Load the model/engine; raise MissingDependencyError when the runtime is not installed."""

    def deactivate_impl(self) -> None:
        pass

    # -- running ----------------------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return "cpu"

    @abc.abstractmethod
    def input_metadata(self) -> list[TensorMeta]:
        """The model's inputs, in order."""

    @abc.abstractmethod
    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ...

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{self.name} runner used before activate() (use it as a context manager)")
        t0 = time.perf_counter()
        out = self.infer_impl(feeds)
        self.last_inference_time = time.perf_counter() - t0
        return out

    def timed_call(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], None]:
        """A no-argument function that runs the model once on ``feeds`` and returns when the work is done: what
        ``bench`` times. Runners with device memory override it to bind the inputs once and time only the launch."""
        return lambda: self.infer_impl(feeds)
