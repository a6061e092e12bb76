"""The ONNX Runtime custom-op library in tests: the real one (built on first use), or none at all."""

from __future__ import annotations

import os

import pytest


def library_or_skip() -> str:
    """Its path; a skip with the reason where it cannot be built, a failure where CI requires it."""
    from carafe_deploy import onnxruntime as custom_ops
    from carafe_deploy.errors import MissingDependencyError

    try:
        return custom_ops.library_path()
    except MissingDependencyError as exc:
        if os.environ.get("CARAFE_DEPLOY_REQUIRE_ORT_LIBRARY") == "1":
            pytest.fail(f"the custom-op library is required here: {exc}")
        pytest.skip(str(exc))


def without_library(monkeypatch, empty_dir) -> None:
    """As on a machine with no onnxruntime_c_api.h: library_path() raises MissingDependencyError."""
    from carafe_deploy import onnxruntime as custom_ops

    monkeypatch.setattr(custom_ops, "_built", {})
    monkeypatch.setattr(custom_ops, "_SYSTEM_INCLUDES", ())
    monkeypatch.setenv(custom_ops.INCLUDE_ENV, str(empty_dir))
