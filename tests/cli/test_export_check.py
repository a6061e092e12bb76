"""`carafe-deploy export` and `carafe-deploy check` from the command line (in-process through cli.main)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
import pytest
import torch

from carafe_deploy import models
from carafe_deploy.cli import main
from carafe_deploy.onnx import carafe_nodes
from carafe_deploy.trt import tensorrt_available

MODEL_PY = textwrap.dedent(
    """
    import torch
    from carafe_deploy.nn import CARAFEDownsample, CARAFEUpsample

    class Net(torch.nn.Module):
        def __init__(self, channels=8):
            super().__init__()
            self.up = CARAFEUpsample(channels, compressed_channels=4)
            self.down = CARAFEDownsample(channels, compressed_channels=4)
            for m in (self.up, self.down):
                torch.nn.init.normal_(m.content_encoder.weight, std=0.3)

        def forward(self, x):
            up = self.up(x)
            return self.down(up), up
    """
)


@pytest.fixture()
def model_py(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(MODEL_PY)
    return path


def test_export_then_check_against_saved_reference(model_py, tmp_path, capsys):
    out, ref, report = tmp_path / "net.onnx", tmp_path / "ref.npz", tmp_path / "report.json"
    engine = tmp_path / "net.engine"
    rc = main(["export", "--python", str(model_py), "--class", "Net", "--kwargs", '{"channels": 8}',
               "--input-shape", "1,8,9,11", "--dynamic", "image:0=N,2=H,3=W", "--input-names", "image",
               "--output-names", "down", "up", "-o", str(out), "--save-reference", str(ref),
               "--save-engine", str(engine), "--no-plugin"])
    assert rc == 0
    # the engine step: built where a TensorRT runtime is installed (TensorRT-RTX in CI), else skipped
    assert engine.is_file() == tensorrt_available()
    proto = onnx.load(out)
    assert len(carafe_nodes(proto)) == 2 and [f.name for f in proto.functions] == ["CARAFE"]
    assert [o.name for o in proto.graph.output] == ["down", "up"]
    capsys.readouterr()

    rc = main(["check", str(out), "--reference", str(ref), "-o", str(report), "--engine", str(engine)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "down" in text and "up" in text and "skipped" in text
    data = json.loads(report.read_text())
    ort_result, trt_result = data["backends"]
    assert ort_result["status"] == "passed" and all(o["max_rel"] <= 1e-5 for o in ort_result["outputs"])
    assert trt_result["status"] == "skipped" and data["skipped"] == ["tensorrt"]

    # a reference that disagrees makes check fail
    saved = dict(np.load(ref))
    saved["output/up"] = saved["output/up"] + 0.01
    np.savez(tmp_path / "bad.npz", **saved)
    assert main(["check", str(out), "--reference", str(tmp_path / "bad.npz")]) == 1
    assert "no" in capsys.readouterr().out


def test_check_against_pytorch_with_other_sizes(model_py, tmp_path, capsys):
    out = tmp_path / "net.onnx"
    assert main(["export", "--python", str(model_py), "--class", "Net", "--input-shape", "1,8,6,6",
                 "--dynamic", "input:0,2,3", "--mode", "decomposed", "-o", str(out)]) == 0
    rc = main(["check", str(out), "--python", str(model_py), "--class", "Net", "--input-shape", "2,8,7,9"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "(2, 8, 7, 9)" in text.replace("\n", " ") or "(2, 8, 14, 18)" in text


def test_dynamic_alone_on_a_python_model(model_py, tmp_path, capsys):
    """--dynamic alone on a model with no registered axes: batch, height and width of its 4-D input."""
    out = tmp_path / "dyn.onnx"
    assert main(["export", "--python", str(model_py), "--class", "Net", "--input-shape", "1,8,6,6", "--dynamic",
                 "-o", str(out)]) == 0
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 8, "height", "width"]
    # and it runs at another size than the export's
    assert main(["check", str(out), "--python", str(model_py), "--class", "Net", "--input-shape", "2,8,5,7"]) == 0


def test_registered_model_and_fp16(tmp_path, capsys):
    from carafe_deploy.models.tiny import TinyCarafeNet

    models.register(models.ModelSpec(
        name="test-tiny", builder=lambda: TinyCarafeNet(channels=8), input_names=("image",),
        output_names=("logits",), default_input_shape=(1, 3, 12, 10), dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}},
    ))
    try:
        out = tmp_path / "tiny16.onnx"
        assert main(["export", "--model", "test-tiny", "--fp16", "-o", str(out)]) == 0
        proto = onnx.load(out)
        assert proto.graph.input[0].name == "image" and proto.graph.output[0].name == "logits"
        assert proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param == "H"
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
        capsys.readouterr()
        # ONNX Runtime's CPU provider lacks float16 kernels (Loop/Conv); the report says so instead of crashing
        rc = main(["check", str(out), "--model", "test-tiny", "--fp16", "--input-shape", "2,3,9,11"])
        text = capsys.readouterr().out
        print(text)
        assert rc == 0 and "(2, 4, 9, 11)" in text
    finally:
        models._REGISTRY.pop("test-tiny")


def test_plugin_file_without_the_custom_op_library_is_an_error_row_not_a_pass(model_py, tmp_path, capsys,
                                                                             monkeypatch):
    from support.ort_library import without_library

    out = tmp_path / "plugin.onnx"
    assert main(["export", "--python", str(model_py), "--class", "Net", "--input-shape", "1,8,6,6",
                 "--mode", "plugin", "-o", str(out)]) == 0
    without_library(monkeypatch, tmp_path)
    rc = main(["check", str(out), "--python", str(model_py), "--class", "Net"])
    text = " ".join(capsys.readouterr().out.split())
    assert rc == 1 and "without their function" in text and "--to portable" in text


def test_plugin_file_is_checked_with_the_custom_op_library(model_py, tmp_path, capsys):
    from support.ort_library import library_or_skip

    library_or_skip()
    out = tmp_path / "plugin.onnx"
    assert main(["export", "--python", str(model_py), "--class", "Net", "--input-shape", "1,8,6,6",
                 "--mode", "plugin", "-o", str(out)]) == 0
    assert main(["check", str(out), "--python", str(model_py), "--class", "Net"]) == 0
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["export", "--python", "nope.py", "--class", "Net", "-o", "x.onnx"], "no such file"),
        (["export", "--python", "{py}", "-o", "x.onnx", "--input-shape", "1,8,4,4"], "needs --class"),
        (["export", "--python", "{py}", "--class", "Missing", "-o", "x.onnx"], "defines no 'Missing'"),
        (["export", "--python", "{py}", "--class", "Net", "-o", "{tmp}/no/dir/x.onnx", "--input-shape", "1,8,4,4"],
         "does not exist"),
        (["export", "--python", "{py}", "--class", "Net", "-o", "x.onnx"], "--input-shape"),
        (["export", "--python", "{py}", "--class", "Net", "-o", "x.onnx", "--input-shape", "1,8,4,4",
          "--opset", "9"], "opset 9 is not supported"),
        (["export", "--model", "no-such-model", "-o", "x.onnx"], "unknown model 'no-such-model'"),
        (["check", "{tmp}/missing.onnx", "--reference", "r.npz"], "does not exist"),
    ],
)
def test_clear_errors(argv, words, model_py, tmp_path, capsys):
    argv = [a.format(py=model_py, tmp=tmp_path) for a in argv]
    assert main(argv) != 0
    assert words in capsys.readouterr().err


def test_check_needs_something_to_compare_with(model_py, tmp_path, capsys):
    out = tmp_path / "net.onnx"
    assert main(["export", "--python", str(model_py), "--class", "Net", "--input-shape", "1,8,4,4", "-o", str(out)]) == 0
    assert main(["check", str(out)]) == 1
    assert "nothing to compare with" in capsys.readouterr().err


def test_torchscript_and_exported_program_files(tmp_path, capsys):
    from carafe_deploy.nn import CARAFEDownsample

    torch.manual_seed(0)
    model = CARAFEDownsample(8, compressed_channels=4).eval()
    torch.nn.init.normal_(model.content_encoder.weight, std=0.3)
    x = torch.randn(1, 8, 9, 7)
    torch.jit.trace(model, (x,), check_trace=False).save(str(tmp_path / "down.ts"))
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "down.pt2")
    for flag, name in (("--torchscript", "down.ts"), ("--exported-program", "down.pt2")):
        out, ref = tmp_path / f"{name}.onnx", tmp_path / f"{name}.npz"
        assert main(["export", flag, str(tmp_path / name), "--input-shape", "1,8,9,7", "-o", str(out),
                     "--save-reference", str(ref)]) == 0
        assert len(carafe_nodes(onnx.load(out))) == 1
        with torch.no_grad():  # the saved reference is the original module's output
            np.testing.assert_allclose(np.load(ref)["output/" + onnx.load(out).graph.output[0].name],
                                       model(torch.from_numpy(np.load(ref)["input/input"])).numpy(), rtol=1e-6)
        assert main(["check", str(out), "--reference", str(ref)]) == 0, capsys.readouterr().out
