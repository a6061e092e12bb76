import sys
from pathlib import Path

import pytest

# tests/ on sys.path so that every test imports its helpers as `support.<module>` (tests mirror the package;
# pytest runs them with --import-mode=importlib, so test files in different folders may share a name)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import SHARED  # noqa: E402


@pytest.fixture(scope="session")
def mmcv_vectors_dir() -> Path:
    d = SHARED / "testdata" / "mmcv_carafe"
    if not d.is_dir():
        pytest.fail(f"mmcv test vectors not found at {d} (the shared folder must sit beside the checkout)")
    return d
