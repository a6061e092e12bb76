"""The main job: `carafe-deploy demo` runs on a machine with no GPU and no TensorRT (or only TensorRT-RTX)."""

import subprocess
import sys

from carafe_deploy.trt.plugin import plugin_library
from carafe_deploy.trt.runtime import build_unavailable


def test_demo_runs_and_reports(tmp_path):
    proc = subprocess.run(
        # a test-sized segmentation sample; the default (600 steps on 800 images) takes a few minutes
        [sys.executable, "-m", "carafe_deploy", "demo", "-o", str(tmp_path), "--sample-steps", "60",
         "--sample-size", "48", "--sample-images", "160", "16"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "CARAFEDownsample" in proc.stdout and "CARAFEUpsample" in proc.stdout
    # the demo exports a portable ONNX file and compares ONNX Runtime with PyTorch
    assert (tmp_path / "tiny_carafe_net.onnx").is_file()
    assert "backends vs PyTorch" in proc.stdout and "│ passed" in proc.stdout
    # the engine step: built by the TensorRT at hand (TensorRT-RTX in CI: its builder needs no GPU), with the plugin
    # when its library is built and usable, else from the unrolled standard ops; or skipped with the reason
    reason = build_unavailable(use_plugin=plugin_library(required=False) is not None)
    if reason is None:
        assert proc.stdout.count("TensorRT engine: wrote") == 1 and (tmp_path / "tiny_carafe_net.engine").is_file()
    else:
        assert proc.stdout.count("TensorRT engine: skipped (") == 1
        assert not (tmp_path / "tiny_carafe_net.engine").exists()
    # the segmentation sample ran: picture written, mIoU table for PyTorch and both ONNX forms
    assert (tmp_path / "segmentation" / "segmentation_sample.png").is_file()
    assert "mIoU per backend" in proc.stdout
    assert "portable" in proc.stdout and "decomposed" in proc.stdout


def test_cli_rejects_unknown_command():
    proc = subprocess.run([sys.executable, "-m", "carafe_deploy", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
