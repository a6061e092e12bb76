"""The main job: `carafe-deploy demo` runs on a machine with no GPU and no TensorRT (or only TensorRT-RTX)."""

import re
import subprocess
import sys

from carafe_deploy.trt.availability import build_unavailable, choose_plugin


def test_demo_runs_and_reports(tmp_path):
    proc = subprocess.run(
        # a test-sized segmentation sample; the default (400 steps on 800 images) takes minutes (README)
        [sys.executable, "-m", "carafe_deploy", "demo", "-o", str(tmp_path), "--sample-steps", "60",
         "--sample-size", "48", "--sample-images", "160", "16", "--detection-steps", "10", "--detection-size", "64",
         "--detection-images", "16", "4"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "CARAFEDownsample" in proc.stdout and "CARAFEUpsample" in proc.stdout
    # the demo exports a portable ONNX file and compares ONNX Runtime with PyTorch
    assert (tmp_path / "tiny_carafe_net.onnx").is_file()
    assert "backends vs PyTorch" in proc.stdout and "│ passed" in proc.stdout
    # and says how to serve it (tests/serving runs those commands' code)
    assert f"carafe-deploy triton {tmp_path / 'tiny_carafe_net.onnx'} -o {tmp_path / 'triton'}" in proc.stdout
    # the threads it chose, and why
    assert "CPU threads: " in proc.stdout and "--threads N to choose" in proc.stdout
    # an estimate of the training time before the bar runs its course (one per sample)
    assert proc.stdout.count("training time estimate: ") == 2
    # the engine step: built by the TensorRT at hand (TensorRT-RTX in CI: its builder needs no GPU), with the plugin
    # when its library is built and usable, else from the unrolled standard ops, said in one line; or skipped with
    # the reason, said once (the sample refers back to it)
    use_plugin, fallback = choose_plugin(None)
    reason = build_unavailable(use_plugin)
    if reason is None:
        assert proc.stdout.count("TensorRT engine: wrote") == 1 and (tmp_path / "tiny_carafe_net.engine").is_file()
        assert f"CARAFE {'plugin' if use_plugin else 'unrolled'})" in proc.stdout
        assert proc.stdout.count("CARAFE built from standard ops (unrolled)") == (1 if fallback else 0)
    else:
        assert proc.stdout.count("TensorRT engine: skipped: ") == 1
        assert proc.stdout.count(reason.split(":")[0]) == 1
        assert proc.stdout.count("TensorRT (engine) fp32: skipped: the reason above") == 2  # one per sample
        assert not (tmp_path / "tiny_carafe_net.engine").exists()
        if "is not installed" in reason:
            # the URL on one line, followed by a space: copied whole
            assert re.search(r"installing-tensorrt/installing\.html(\s|$)", proc.stdout, re.M), proc.stdout
    # the segmentation sample ran: picture written, evaluate's mIoU table for PyTorch and the ONNX files
    assert (tmp_path / "segmentation" / "segmentation_sample.png").is_file()
    assert "segmentation metrics (percent) per backend" in proc.stdout
    assert "ONNX Runtime (portable)" in proc.stdout and "ONNX Runtime (decomposed)" in proc.stdout
    # and the detection sample: its box AP table, a picture, and the evaluate command that gives the same table
    assert (tmp_path / "detection" / "detection_sample.png").is_file()
    assert "detection metrics (COCO AP, 0..1) per backend" in proc.stdout and "bbox_mAP_50" in proc.stdout
    assert f"carafe-deploy evaluate {tmp_path / 'detection' / 'detector.onnx'}" in proc.stdout


def test_cli_rejects_unknown_command():
    proc = subprocess.run([sys.executable, "-m", "carafe_deploy", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_demo_defaults_are_the_samples():
    """The demo's options repeat the sample's defaults (its --help must not import torch to read them)."""
    from carafe_deploy.cli import build_parser
    from carafe_deploy.tasks.segmentation_sample import TrainConfig

    args = build_parser().parse_args(["demo"])
    cfg = TrainConfig()
    assert (args.sample_steps, args.sample_size, tuple(args.sample_images)) == (cfg.steps, cfg.size,
                                                                                 (cfg.train_count, cfg.test_count))
