"""Third-party code that only GitHub has (not PyPI), run unchanged by tests/compat: where each working copy is
expected, the commit it was checked at, how to fetch it, and the skip message when it is absent. None of it is
committed here, and CI (which reaches PyPI only) skips these tests saying so.

    python tests/support/third_party.py          # clones each into $CARAFE_DEPLOY_THIRD_PARTY

``CARAFE_DEPLOY_THIRD_PARTY`` (default ``~/.cache/carafe-deploy/third_party``) holds one folder per project.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(os.environ.get("CARAFE_DEPLOY_THIRD_PARTY", Path.home() / ".cache" / "carafe-deploy" / "third_party"))

# folder -> (repository, revision checked, the file the tests run)
SOURCES = {
    "mmcv": ("https://github.com/open-mmlab/mmcv", "v2.2.0", "tests/test_ops/test_carafe.py"),
    "fade": ("https://github.com/poppinace/fade", "e4de4dbc85304d659807656fc909207282b1bc25", "FADE_L2H.py"),
    "FreqFusion": ("https://github.com/Linwei-Chen/FreqFusion", "3fb0c70637a3c194fb74294d3ce4681958b26241",
                   "FreqFusion.py"),
}


def source_file(name: str) -> Path | None:
    path = ROOT / name / SOURCES[name][2]
    return path if path.is_file() else None


def skip_reason(name: str) -> str:
    url, rev, file = SOURCES[name]
    return (f"{name}'s {file} is not here ({ROOT / name}): it is on GitHub only, so CI skips this; fetch it with "
            f"`python tests/support/third_party.py` ({url} at {rev}) or set CARAFE_DEPLOY_THIRD_PARTY")


def fetch() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    for name, (url, rev, _) in SOURCES.items():
        target = ROOT / name
        if not target.exists():
            subprocess.run(["git", "clone", "--quiet", url, str(target)], check=True)
        subprocess.run(["git", "-C", str(target), "-c", "advice.detachedHead=false", "checkout", "--quiet", rev],
                       check=True)
        print(f"{name}: {target} at {rev}")


if __name__ == "__main__":
    fetch()
    sys.exit(0)
