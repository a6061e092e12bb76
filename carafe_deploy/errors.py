"""Exceptions whose message is meant for the user as it stands (the CLI prints it as one line, no traceback)."""


class DeployError(RuntimeError):
    """Something the user must fix: a bad file, a bad option, an incompatible model."""


class MissingDependencyError(DeployError):
    """An optional dependency (TensorRT, pycuda, the plugin library) is not installed; the message says how to get it."""
