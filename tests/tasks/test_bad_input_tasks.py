"""Issue 13, the pipeline and the samples: model sources that are not what they claim, inputs the model cannot take
or this machine cannot hold, a non-detector given to the detection sample, and the samples' own error boundary (one
line, exit status, no traceback), each before the work where it can be."""

import importlib.util
import os

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from carafe_deploy.backends import OnnxrtRunner
from carafe_deploy.errors import DeployError
from carafe_deploy.tasks import ExportOptions, deploy
from carafe_deploy.tasks.base import random_inputs
from carafe_deploy.tasks.detection import detect
from carafe_deploy.tasks.source import ModelSource
from support import REPO
from support.unwritable import unwritable_dir


def test_model_sources_that_are_not_what_they_claim(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "boom.py").write_text("raise ImportError('needs mmcv')\n")
    (tmp_path / "fn.py").write_text("def Net():\n    return 1\n")
    (tmp_path / "const.py").write_text("Net = 3\n")
    cases = [
        (ModelSource(torchscript=str(tmp_path / "junk.pt")), "--torchscript .*junk.pt: not a TorchScript file"),
        (ModelSource(exported_program=str(tmp_path / "junk.pt")), "not an ExportedProgram file"),
        (ModelSource(torchscript=str(tmp_path / "empty.pt")), r"--torchscript: .*empty.pt' is empty \(0 bytes\)"),
        (ModelSource(torchscript=str(tmp_path / "nope.pt")), "--torchscript: no such file"),
        (ModelSource(python=str(tmp_path / "boom.py"), class_name="Net"),
         "boom.py failed while it was imported: ImportError: needs mmcv"),
        (ModelSource(python=str(tmp_path / "fn.py"), class_name="Net"), r"fn.py's Net\(\) made an object of type int, not a torch.nn.Module"),
        (ModelSource(python=str(tmp_path / "const.py"), class_name="Net"), "defines it as an object of type int, not a torch.nn.Module class"),
        (ModelSource(model="tiny_carafe_net", checkpoint=str(tmp_path / "empty.pt")), "--checkpoint: .*is empty"),
    ]
    for source, words in cases:
        with pytest.raises(DeployError, match=words):
            source.load()


def test_inputs_this_machine_cannot_hold_are_refused_before_allocating():
    with pytest.raises(DeployError, match=r"--input-shape 100000,3,100000,1000: the inputs alone need 1.12e\+05 GiB"):
        random_inputs([(100000, 3, 100000, 1000)], seed=0, option="--input-shape")
    (x,) = random_inputs([(1, 2, 3, 4)], seed=0, option="--input-shape")
    assert x.shape == (1, 2, 3, 4) and x.dtype == torch.float32


def test_a_model_that_fails_on_its_inputs_is_one_error_before_export(tmp_path):
    loaded = ModelSource(model="tiny_carafe_net").load()
    out = tmp_path / "t.onnx"
    with pytest.raises(DeployError, match=r"^the PyTorch model fails on inputs of shape 1x5x16x16: RuntimeError: "
                                          r"Given groups=1, weight of size \[\d+, 3, 3, 3\]"):
        deploy(loaded, ExportOptions(output=out, input_shapes=[(1, 5, 16, 16)]), log=lambda m: None)
    assert not out.exists()


def _not_a_detector(shape=(1, 3, 64, 64)):
    g = helper.make_graph([helper.make_node("Identity", ["image"], ["logits"])], "seg",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(shape))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_detect_names_what_a_detector_must_output():
    from PIL import Image

    with pytest.raises(DeployError, match="the model's outputs are logits; a detector export has dets and labels"):
        detect(OnnxrtRunner(_not_a_detector()), Image.new("RGB", (64, 64)))
    # a 2-D input: said before ONNX Runtime is handed an image it cannot take
    with pytest.raises(DeployError, match=r"a detector takes one \(N, 3, H, W\) image; this model's input image has "
                                          r"shape \[64, 64\]"):
        detect(OnnxrtRunner(_not_a_detector((64, 64))), Image.new("RGB", (64, 64)))


def _detect_sample():
    spec = importlib.util.spec_from_file_location("detect_sample", REPO / "samples" / "detect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_detect_sample_errors_are_one_line(tmp_path, capsys):
    sample = _detect_sample()
    (tmp_path / "junk.onnx").write_bytes(b"\x12\x34garbage")
    onnx.save(_not_a_detector(), tmp_path / "seg.onnx")
    ro = unwritable_dir(tmp_path)
    cases = [
        (["--onnx", str(tmp_path / "junk.onnx"), "-o", str(tmp_path / "d.png")], 1, "junk.onnx is not a readable ONNX"),
        (["--onnx", str(tmp_path / "seg.onnx"), "-o", str(tmp_path / "d.png")], 1, "a detector export has dets"),
        (["--onnx", str(tmp_path / "seg.onnx"), "-o", os.path.join(ro, "d.png")], 1, "-o/--output cannot write"),
        (["--onnx", str(tmp_path / "seg.onnx"), "-o", str(tmp_path / "seg.onnx")], 1, "would overwrite an input file"),
        ([str(tmp_path / "nope.png")], 1, "image not found"),
        ([str(tmp_path)], 1, "image: '" + str(tmp_path) + "' is a directory, not a file"),
        (["--scale", "0", "0"], 2, "--scale must be positive"),
    ]
    for argv, code, words in cases:
        assert sample.main(argv) == code, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("detect.py: error: ") and words in err[0], err
    assert not (tmp_path / "d.png").exists()


def test_segmentation_sample_errors_are_one_line(tmp_path, capsys):
    from carafe_deploy.tasks.segmentation_sample import main

    ro = unwritable_dir(tmp_path)
    cases = [
        (["--out", str(tmp_path / "a"), "--steps", "0"], 2, "steps must be >= 1, got 0"),
        (["--out", str(tmp_path / "a"), "--size", "0"], 2, "size must be >= 8, got 0"),
        (["--out", str(tmp_path / "a"), "--threads", "-2"], 2, "threads must be >= 1, got -2"),
        (["--out", os.path.join(ro, "seg"), "--steps", "1"], 1, "output folder cannot"),
    ]
    for argv, code, words in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ": error: " in err[0] and words in err[0], err
    assert not (tmp_path / "a").exists()  # refused before the output folder is made
