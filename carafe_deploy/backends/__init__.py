"""Runners: one interface over the ways of running a model (PyTorch, ONNX Runtime, TensorRT), which ``check``,
``bench``, the task pipelines and the samples all use. Modelled on Polygraphy's ``backend`` runners.

A runner is built from a model, is used as a context manager (``with runner:`` loads the model or engine), and turns
``{input name: numpy array}`` into ``{output name: numpy array}`` with :meth:`Runner.infer`. A runner whose runtime is
missing raises :class:`~carafe_deploy.errors.MissingDependencyError` when it is activated, so callers can report the
backend as skipped with the reason.
"""

from .base import Runner, TensorMeta

__all__ = ["Runner", "TensorMeta", "OnnxrtRunner", "TorchRunner", "TrtRunner"]


def __getattr__(name: str):
    # each runner imports its runtime (onnxruntime, torch, tensorrt) only when it is asked for
    if name == "OnnxrtRunner":
        from .onnxrt import OnnxrtRunner

        return OnnxrtRunner
    if name == "TorchRunner":
        from .pytorch import TorchRunner

        return TorchRunner
    if name == "TrtRunner":
        from .tensorrt import TrtRunner

        return TrtRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
