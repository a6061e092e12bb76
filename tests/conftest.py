import hashlib
import sys
from pathlib import Path

import pytest

# tests/ on sys.path so that every test imports its helpers as `support.<module>` (tests mirror the package;
# pytest runs them with --import-mode=importlib, so test files in different folders may share a name)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import DATA  # noqa: E402


# the vectors travel with the repository (tests/data/mmcv_carafe/README.md: origin, licence, hashes)
MMCV_VECTORS = {
    "carafe_feat.bin": "49ec1fff2795cf1231cf117e1570d882fc1787b7679ebc8f72c9b5098adc0f99",
    "carafe_mask.bin": "b11adf9f2035dbd14a92e624a5f491999a8f38a1b4f7419c9a32fce0fb9be43c",
    "carafe_output.bin": "4e187868bf0181e50c5b9b69519bdb267b68f8725e53379c76fd2338129195c8",
    "carafe_feat_grad.bin": "2171eaf16d312d37c4c93f94b8049f73e4ea6649ff606137e6918eaedc1b0d9f",
    "carafe_mask_grad.bin": "0b26b0e62937564cfa6511df27180502d76ce1162e061b013e71af7e95d32758",
}


@pytest.fixture(scope="session")
def mmcv_vectors_dir() -> Path:
    d = DATA / "mmcv_carafe"
    for name, digest in MMCV_VECTORS.items():
        f = d / name
        if not f.is_file():
            pytest.fail(f"mmcv test vector {f} is missing from the checkout")
        if hashlib.sha256(f.read_bytes()).hexdigest() != digest:
            pytest.fail(f"mmcv test vector {f} is not mmcv's file (sha256 differs)")
    return d
