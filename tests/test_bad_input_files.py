"""Issue 13, files and the error boundary (carafe_deploy/files.py, errors.py): writes are atomic for real (a write that
fails on the file-size limit leaves the previous file and no temporary behind), outputs that would overwrite an input
or land in a folder that cannot take a file are refused before work, and every entry point's boundary turns a user
mistake into one line with the right exit status (a traceback only with --debug, or for a bug, which it says)."""

import os
import subprocess
import sys
import textwrap

import pytest

from carafe_deploy.errors import DeployError, run_guarded
from carafe_deploy.files import (atomic_path, atomic_write_bytes, check_writable, make_dir, refuse_overwriting_inputs,
                                 require_file)
from support import REPO
from support.unwritable import unwritable_dir

PRECIOUS = b"the previous file, which a failed write must leave as it was\n" * 100


def test_an_exception_half_way_leaves_the_previous_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(PRECIOUS)
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a mod")
            raise RuntimeError("half-way")
    assert target.read_bytes() == PRECIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


_WRITE_UNDER_LIMIT = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, sys.argv[1])
    from carafe_deploy.errors import DeployError
    from carafe_deploy.files import atomic_write_bytes
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # CPython ignores SIGXFSZ: write() fails with EFBIG
    try:
        atomic_write_bytes(sys.argv[2], b"x" * 100_000)
    except DeployError as exc:
        print(exc)
        sys.exit(3)
""")


def test_a_write_over_the_file_size_limit_leaves_the_previous_file(tmp_path):
    target = tmp_path / "keep.bin"
    target.write_bytes(PRECIOUS)
    p = subprocess.run([sys.executable, "-c", _WRITE_UNDER_LIMIT, str(REPO), str(target)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 3, p.stderr
    assert "cannot write" in p.stdout and "File too large" in p.stdout
    assert target.read_bytes() == PRECIOUS
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.bin"]  # no temporary left behind


def test_a_symlinked_output_replaces_its_target_not_the_link(tmp_path):
    real = tmp_path / "real.json"
    real.write_bytes(b"old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_devices_and_directories_are_never_replaced(tmp_path):
    with pytest.raises(DeployError, match="not a regular file"):
        atomic_write_bytes("/dev/null", b"x")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    with pytest.raises(DeployError, match="is a directory"):
        atomic_write_bytes(tmp_path, b"x")
    with pytest.raises(DeployError, match="directory .*nowhere.* does not exist"):
        atomic_write_bytes(tmp_path / "nowhere" / "x.json", b"x")


def test_outputs_are_checked_before_any_work(tmp_path):
    src = tmp_path / "net.py"
    src.write_text("x = 1\n")
    with pytest.raises(DeployError, match=r"-o/--output '.*net.py' would overwrite an input file"):
        refuse_overwriting_inputs({"-o/--output": src}, [src])
    link = tmp_path / "alias.py"
    link.symlink_to(src)
    with pytest.raises(DeployError, match="would overwrite an input file"):
        refuse_overwriting_inputs({"-o/--output": link}, [src])
    with pytest.raises(DeployError, match="--save-reference and -o/--output both write"):
        refuse_overwriting_inputs({"-o/--output": tmp_path / "a", "--save-reference": tmp_path / "a"}, [])
    with pytest.raises(DeployError, match=r"--save-report cannot write .*directory .* does not exist"):
        refuse_overwriting_inputs({"--save-report": tmp_path / "no" / "r.json"}, [])
    ro = unwritable_dir(tmp_path)
    with pytest.raises(DeployError, match=r"-o/--output cannot write .*(Permission denied|Read-only)"):
        refuse_overwriting_inputs({"-o/--output": os.path.join(ro, "r.json")}, [])
    refuse_overwriting_inputs({"-o/--output": tmp_path / "fine.json", "--plot": None}, [src])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.py", "net.py", "ro"]  # the probes are gone


def test_output_folders(tmp_path):
    assert make_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DeployError, match="exists and is not a directory"):
        make_dir(tmp_path / "file", "-o/--output")
    ro = unwritable_dir(tmp_path)
    with pytest.raises(DeployError, match=r"^demo -o cannot (create directory|write)"):
        make_dir(os.path.join(ro, "out"), "demo -o")
    with pytest.raises(DeployError, match="cannot write"):
        check_writable(os.path.join(ro, "x"))


def test_inputs_must_be_non_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="--checkpoint: no such file"):
        require_file(tmp_path / "w.pth", "--checkpoint")
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(DeployError, match=r"--checkpoint: .*w.pth' is empty \(0 bytes\)"):
        require_file(tmp_path / "w.pth", "--checkpoint")
    with pytest.raises(DeployError, match="is a directory, not a file"):
        require_file(tmp_path, "--reference")


@pytest.mark.parametrize("exc, status, words", [
    (DeployError("bad file x.onnx"), 1, "prog: error: bad file x.onnx"),
    (ValueError("batch sizes must be >= 1"), 2, "prog: error: batch sizes must be >= 1"),
    (FileNotFoundError("no x"), 2, "prog: error: no x"),
    (PermissionError(13, "Permission denied", "/x/y.json"), 1, "prog: error: /x/y.json: Permission denied"),
    (MemoryError("Unable to allocate 447. TiB"), 1, "prog: error: out of memory (Unable to allocate 447. TiB)"),
])
def test_the_boundary_gives_one_line(exc, status, words, capsys, monkeypatch):
    monkeypatch.delenv("CARAFE_DEPLOY_DEBUG", raising=False)

    def fail():
        raise exc

    assert run_guarded("prog", fail) == status
    err = capsys.readouterr().err
    assert err.startswith(words)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_boundary_shows_tracebacks_for_debug_and_bugs(capsys, monkeypatch):
    monkeypatch.delenv("CARAFE_DEPLOY_DEBUG", raising=False)

    def mistake():
        raise DeployError("a user mistake")

    assert run_guarded("prog", mistake, debug=True) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == "prog: error: a user mistake"
    monkeypatch.setenv("CARAFE_DEPLOY_DEBUG", "1")
    assert run_guarded("prog", mistake) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.delenv("CARAFE_DEPLOY_DEBUG")

    def bug():
        return {}["missing"]

    assert run_guarded("prog", bug) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err
    assert "This is a bug in carafe-deploy" in err.strip().splitlines()[-1]

    def interrupted():
        raise KeyboardInterrupt

    assert run_guarded("prog", interrupted) == 130
    assert capsys.readouterr().err.strip() == "prog: interrupted"
