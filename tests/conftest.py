import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

REPO = TESTS.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def mmcv_vectors_dir() -> Path:
    d = SHARED / "testdata" / "mmcv_carafe"
    if not d.is_dir():
        pytest.fail(f"mmcv test vectors not found at {d} (the shared folder must sit beside the checkout)")
    return d
