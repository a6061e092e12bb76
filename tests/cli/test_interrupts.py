"""Issue 22: Ctrl-C and kill -9 in the middle of the work, on real `carafe-deploy` processes. An interrupt always ends
the command (exit 130) and keeps the previous output byte for byte, even where a library turns the interrupt into an
error of its own; an interrupted command that wrote nothing leaves no empty folder; what a killed process leaves
behind is hidden, and the next run removes it and works."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support import REPO
from support.terminal import at_a_terminal

pytestmark = pytest.mark.slow

PRECIOUS = b"the user's previous ONNX file\n" * 100

# A model whose forward, while torch's default (dynamo) exporter traces it, stops for the test to send SIGINT. With
# SWALLOW set, it turns the KeyboardInterrupt into an AttributeError, as torch itself does when Ctrl-C lands in its
# lazy import of torch._dynamo ("module 'torch._dynamo' has no attribute 'exc'"): the exporter then reports a failure
# of its own, and the other capture strategies trace the forward again, successfully.
NET_PY = textwrap.dedent("""
    import os
    import time

    import torch
    from carafe_deploy.nn import CARAFEUpsample

    MARK = os.environ["CARAFE_TEST_MARK"]


    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = CARAFEUpsample(8, compressed_channels=4)

        def forward(self, x):
            if torch.compiler.is_exporting() and not os.path.exists(MARK):
                open(MARK, "w").close()
                try:
                    time.sleep(300)
                except KeyboardInterrupt:
                    if os.environ.get("CARAFE_TEST_SWALLOW"):
                        raise AttributeError("module 'torch._dynamo' has no attribute 'exc'") from None
                    raise
            return self.up(x)
""")


def _cli(*argv, env=None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "carafe_deploy", *map(str, argv)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=at_a_terminal,
                            **kwargs)


def _wait_for(condition, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the command ended ({proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.02)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("swallowed", [False, True], ids=["interrupt", "interrupt-turned-into-an-error"])
def test_ctrl_c_during_the_dynamo_export_ends_export_and_keeps_the_old_file(swallowed, tmp_path):
    (tmp_path / "net.py").write_text(NET_PY)
    out = tmp_path / "net.onnx"
    out.write_bytes(PRECIOUS)
    mark = tmp_path / "exporting"
    env = {**os.environ, "CARAFE_TEST_MARK": str(mark), **({"CARAFE_TEST_SWALLOW": "1"} if swallowed else {})}
    proc = _cli("export", "--python", tmp_path / "net.py", "--class", "Net", "--input-shape", "1,8,6,6", "-o", out,
                env=env)
    _wait_for(mark.exists, proc, 240, "the dynamo exporter running the forward")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert stderr.strip().splitlines()[-1] == "carafe-deploy export: interrupted", stderr
    assert "TorchScript exporter" not in stderr  # no fallback after the user's Ctrl-C
    assert out.read_bytes() == PRECIOUS
    assert _hidden(tmp_path) == []  # no temporary file left either


def test_an_interrupt_caught_after_a_c_extension_saw_it_still_exits_130(tmp_path):
    # Ctrl-C inside a PyRun_* call of a C extension (torch's import runs some) sets a flag in CPython that survives the
    # catch, and a `python -m` process then dies by SIGINT (-2) at exit; the CLI's boundary clears it (errors.py)
    (tmp_path / "interrupted_in_c.py").write_text(textwrap.dedent("""
        import ctypes
        import sys

        from carafe_deploy.errors import run_guarded


        def work():
            ctypes.pythonapi.PyRun_SimpleStringFlags(b"raise KeyboardInterrupt", None)  # as if inside an extension
            raise KeyboardInterrupt


        sys.exit(run_guarded("carafe-deploy test", work))
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "interrupted_in_c"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "carafe-deploy test: interrupted"


def test_an_interrupted_demo_leaves_no_empty_folder(tmp_path):
    out = tmp_path / "demo"
    proc = _cli("demo", "-o", out, "--no-sample")
    _wait_for(out.exists, proc, 120, "the demo's output folder")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert not out.exists()
