"""The repository stands alone: a fresh clone with nothing beside it runs its tests, and no file sends a reader (or a
test) to a folder outside the checkout."""

import re
import subprocess

from support import REPO

# paths that reach out of the checkout to the team's own folders, which a user's clone does not have
OUTSIDE = re.compile(r"\.\./shared|/work/shared|DESIGN\.md|team's shared folder")


def _tracked_text_files():
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, names):
        path = REPO / name.decode()
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if b"\0" not in data[:4096]:
                yield path, data.decode("utf-8", errors="replace")


def test_no_file_reaches_outside_the_checkout():
    this = __file__
    offenders = [f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
                 for path, text in _tracked_text_files() if str(path) != this
                 for m in OUTSIDE.finditer(text)]
    assert not offenders, "files that point outside the repository:\n" + "\n".join(offenders)


def test_the_contract_is_in_the_repository():
    contract = (REPO / "docs" / "CONTRACT.md").read_text()
    for section in ("## 1. The operator", "## 2. ONNX", "## 3. TensorRT plugin", "## 4. Layout"):
        assert section in contract
    cited = set()
    for _, text in _tracked_text_files():
        cited.update(re.findall(r"CONTRACT §(\d)", text))
    assert cited and cited <= {"1", "2", "3", "4"}, cited
