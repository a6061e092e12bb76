"""Serving with NVIDIA's Triton Inference Server: a model repository from an exported model
(:func:`write_repository`), and a real Triton server from PyPI to run it on this machine (:mod:`.server`).
docs/SERVING.md has the commands, the container route for GPUs and what has been verified where."""

from .repository import BACKENDS, Repository, RepositoryOptions, write_repository
from .server import ServerInstall, TritonServer, default_env, find_server, install_server

__all__ = ["write_repository", "RepositoryOptions", "Repository", "BACKENDS", "TritonServer", "ServerInstall",
           "find_server", "install_server", "default_env"]
