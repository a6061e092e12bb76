"""The main job: `carafe-deploy demo` runs on a machine with no GPU and no TensorRT."""

import subprocess
import sys


def test_demo_runs_and_reports():
    proc = subprocess.run([sys.executable, "-m", "carafe_deploy", "demo"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "CARAFEDownsample" in proc.stdout and "CARAFEUpsample" in proc.stdout


def test_cli_rejects_unknown_command():
    proc = subprocess.run([sys.executable, "-m", "carafe_deploy", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
