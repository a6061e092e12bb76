"""carafe_deploy.trt.plugin.plugin_library(): where the TensorRT plugin library built by CMake is found."""

from __future__ import annotations

import pytest

from carafe_deploy.trt import plugin
from carafe_deploy.errors import MissingDependencyError


@pytest.fixture
def fake_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv(plugin.ENV_VAR, raising=False)
    monkeypatch.setattr(plugin, "_SOURCE_ROOT", tmp_path)
    monkeypatch.setattr(plugin, "_PACKAGE_DIR", tmp_path / "carafe_deploy")
    return tmp_path


def test_finds_the_cmake_build_folder_layout(fake_checkout):
    # `cmake -S . -B build/trt -DTensorRT_INCLUDE_DIR=...` puts the library at build/trt/libcarafe_trt_plugin.so.
    lib = fake_checkout / "build" / "trt" / plugin.LIBRARY_NAME
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"")
    assert plugin.plugin_library() == lib


def test_environment_variable_wins(fake_checkout, monkeypatch):
    (fake_checkout / "build").mkdir()
    (fake_checkout / "build" / plugin.LIBRARY_NAME).write_bytes(b"")
    chosen = fake_checkout / "elsewhere.so"
    chosen.write_bytes(b"")
    monkeypatch.setenv(plugin.ENV_VAR, str(chosen))
    assert plugin.plugin_library() == chosen


def test_missing_library_is_a_clear_error(fake_checkout, monkeypatch):
    assert plugin.plugin_library(required=False) is None
    with pytest.raises(MissingDependencyError, match="TensorRT_INCLUDE_DIR"):
        plugin.plugin_library()
    monkeypatch.setenv(plugin.ENV_VAR, str(fake_checkout / "nope.so"))
    with pytest.raises(MissingDependencyError, match="does not name an existing file"):
        plugin.plugin_library()
