"""A folder a test can point an output at and be sure the write fails, as root too."""

import os

import pytest


def unwritable_dir(tmp_path) -> str:
    """A directory in which creating a file fails for this process: a read-only folder, or (root ignores permission
    bits) sysfs, which refuses new files even to root. Skips the test where neither refuses."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    for d in (str(ro), "/sys"):
        try:
            fd = os.open(os.path.join(d, ".probe"), os.O_CREAT | os.O_WRONLY, 0o600)
        except OSError:
            return d
        os.close(fd)
        os.unlink(os.path.join(d, ".probe"))
    pytest.skip("no directory here refuses new files to this process")
