"""Issue 22, the command line: the cases a careless or hostile user still got wrong. A bad value is one line on stderr
(no usage block), any mistake is one line naming the problem (never raw library text or a traceback), nothing that
was not compared passes, and a command that fails writes nothing, not even an empty folder."""

import copy
import json
import os
import textwrap

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from support.onnx_graphs import random_case, single_node_model
from support.reference import carafe_reference
from support.trt_toys import carafe_model

from carafe_deploy.cli import main
from carafe_deploy.errors import DeployError

STATIC = ([1, 4, 5, 5], [1, 25, 10, 10])

NET_PY = textwrap.dedent("""
    import torch
    from carafe_deploy.nn import CARAFEUpsample

    class Net(torch.nn.Module):
        def __init__(self, channels=8, scale=1.0):
            super().__init__()
            self.up = CARAFEUpsample(channels, compressed_channels=4)
            self.scale = scale

        def forward(self, x):
            return self.up(x) * self.scale
""")


def _lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def files(tmp_path):
    """net.py; a good static CARAFE graph and its reference (float64 loops); broken variants of it."""
    (tmp_path / "net.py").write_text(NET_PY)
    good = single_node_model(5, 1, 2, "up", dims=STATIC)
    onnx.save(good, tmp_path / "good.onnx")
    x, k = random_case(1, 4, 5, 5, 5, 1, 2, "up")
    np.savez(tmp_path / "ref.npz", **{"input/features": x, "input/kernels": k,
                                      "output/output": carafe_reference(x, k, 5, 1, 2, "up").astype(np.float32)})
    declared = copy.deepcopy(good)  # the graph output declares a shape the graph does not compute
    dims = declared.graph.output[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (1, 4, 99, 14)):
        d.Clear()
        d.dim_value = v
    onnx.save(declared, tmp_path / "declared.onnx")
    v2 = copy.deepcopy(good)
    next(imp for imp in v2.opset_import if imp.domain == "carafe").version = 2
    onnx.save(v2, tmp_path / "carafe_v2.onnx")
    cased = single_node_model(5, 1, 2, "up", dims=STATIC, function=False)
    cased.graph.node[0].domain = "Carafe"
    cased.opset_import.append(helper.make_opsetid("Carafe", 1))
    onnx.save(cased, tmp_path / "cased.onnx")
    edited = copy.deepcopy(good)  # a body ONNX Runtime refuses: a node reads a tensor nothing makes
    next(n for n in edited.functions[0].node if n.input).input[0] = "no_such_tensor"
    onnx.save(edited, tmp_path / "edited.onnx")
    low = copy.deepcopy(good)  # the model says opset 11, its function uses opset-15 ops
    next(imp for imp in low.opset_import if imp.domain == "").version = 11
    onnx.save(low, tmp_path / "opset11.onnx")
    for name, scale in (("nan", float("nan")), ("inf", float("inf"))):
        m = carafe_model(mmcv=True)
        next(a for a in m.graph.node[0].attribute if a.name == "scale_factor").f = scale
        onnx.save(m, tmp_path / f"mmcv_{name}.onnx")
    onnx.save(carafe_model(hw=4), tmp_path / "static_batch.onnx")
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 5, 5), np.float32))
    os.symlink(tmp_path / "loop_b.onnx", tmp_path / "loop_a.onnx")
    os.symlink(tmp_path / "loop_a.onnx", tmp_path / "loop_b.onnx")
    os.mkfifo(tmp_path / "fifo.onnx")
    os.mkdir(tmp_path / "folder.onnx")
    return tmp_path


# (argv, exit status, words of the one line): item 2's bad values (exit 2, no usage block), item 11's raw texts and
# wrong words, item 8's and 9's silent passes now refused
CASES = [
    (["export", "--model", "tiny_carafe_net", "--input-shape", "1,3,0,224"], 2,
     "carafe-deploy export: error: argument --input-shape: bad shape '1,3,0,224'"),
    (["check", "{d}/good.onnx", "--reference", "{d}/ref.npz", "--rtol", "-1"], 2,
     "argument --rtol: '-1': a tolerance must be a finite number >= 0"),
    (["check", "{d}/good.onnx", "--reference", "{d}/ref.npz", "--atol", "nan"], 2, "argument --atol: 'nan'"),
    (["check", "{d}/good.onnx", "--reference", "{d}/ref.npz", "--rtol", "inf"], 2, "argument --rtol: 'inf'"),
    (["build", "{d}/good.onnx", "--dry-run", "--workspace", "-1G"], 2, "argument --workspace: expected one argument"),
    (["build", "{d}/good.onnx", "--dry-run", "--workspace=-1G"], 2, "bad size '-1G': must be at least 1 byte"),
    (["demo", "--batch", "two"], 2, "argument --batch: invalid int value: 'two'"),
    (["export", "--model", "tiny_carafe_net", "--frobnicate"], 2, "unrecognized arguments: --frobnicate"),
    (["bench", "{d}/good.onnx", "-o", "{d}/b.json", "--plot", "{d}/plot.txt"], 2, "--plot {d}/plot.txt: the plot is a PNG image"),
    (["bench", "{d}/static_batch.onnx", "-o", "{d}/b.json"], 2, "fixes the batch of input 'features' to 1, so --batch 2 4 8 cannot run"),
    (["demo", "-o", "{d}/demo", "--sample-steps", "0"], 2, "--sample-steps must be >= 1, got 0"),
    (["demo", "-o", "{d}/demo", "--sample-images", "10", "1"], 2, "--sample-images TEST must be >= 2, got 1"),
    # files that are not files: said what they are, never opened (a FIFO would block, /dev/zero never end)
    (["check", "{d}/loop_a.onnx", "--reference", "{d}/ref.npz"], 1, "loop_a.onnx' is a loop of symbolic links"),
    (["check", "{d}/fifo.onnx", "--reference", "{d}/ref.npz"], 1, "fifo.onnx' is a named pipe (FIFO)"),
    (["check", "/dev/zero", "--reference", "{d}/ref.npz"], 1, "'/dev/zero' is a character device, not a regular file"),
    (["convert", "{d}/folder.onnx", "--to", "plugin", "-o", "{d}/x.onnx"], 1, "folder.onnx' is a directory"),
    (["check", "{d}/good.onnx", "--reference", "{d}/fifo.onnx"], 1, "--reference: '{d}/fifo.onnx' is a named pipe"),
    # a bad --set value, mmcv's scale_factor nan/inf
    (["check", "{d}/good.onnx", "--model", "faster_rcnn_r50_fpn_carafe", "--tiny", "--set", "score_thr=abc"], 2,
     "score_thr must be a finite number (default 0.05), got 'abc'"),
    (["convert", "{d}/mmcv_nan.onnx", "--to", "portable", "-o", "{d}/x.onnx"], 1,
     "scale_factor nan is not a positive integer"),
    (["check", "{d}/mmcv_inf.onnx", "--reference", "{d}/ref.npz"], 1, "scale_factor inf is not a positive integer"),
    # silent passes
    (["check", "{d}/carafe_v2.onnx", "--reference", "{d}/ref.npz"], 1,
     "the model imports domain 'carafe' at version 2; carafe::CARAFE is defined at version 1 only"),
    (["build", "{d}/cased.onnx", "--dry-run"], 1,
     "(Carafe::CARAFE): ONNX domains and op types are case-sensitive, so this is not carafe::CARAFE"),
    (["check", "{d}/good.onnx", "--model", "tiny_carafe_net", "--class", "Net"], 1,
     "--class and --kwargs apply to --python FILE"),
    (["export", "--python", "{d}/net.py", "--class", "Net", "--input-shape", "1,8,6,6", "-o", "{d}/x.onnx",
      "--output-names", "up", "extra"], 1, "2 output_names (up, extra) for a model with 1 output(s)"),
    # a PyTorch model that cannot take the inputs is the user's to fix, not a bug (was: traceback, exit 70)
    (["check", "{d}/good.onnx", "--model", "upernet_r50_carafe", "--tiny", "--input-shape", "1,4,5,5",
      "--input-shape", "1,25,10,10"], 1, "the PyTorch model fails on inputs of shape 1x4x5x5, 1x25x10x10: TypeError"),
]


@pytest.mark.parametrize("argv, code, words", CASES, ids=[" ".join(c[0][:3]) + f" [{i}]" for i, c in enumerate(CASES)])
def test_one_line(argv, code, words, files, capsys):
    argv = [a.format(d=files) for a in argv]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    err = _lines(capsys)
    assert status == code and len(err) == 1, err
    assert words.format(d=files) in err[0], err
    assert not (files / "x.onnx").exists() and not (files / "demo").exists()


def test_a_pytorch_model_that_rejects_the_check_inputs_is_one_line_not_a_bug(tmp_path, capsys):
    # the case: a dynamic one-input file, the tiny UperNet given 8 channels
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["logits"])], "id",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", "C", "H", "W"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "C", "H", "W"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "id.onnx")
    assert main(["check", str(tmp_path / "id.onnx"), "--model", "upernet_r50_carafe", "--tiny",
                 "--input-shape", "1,8,6,7"]) == 1
    err = _lines(capsys)
    assert len(err) == 1 and "the PyTorch model fails on inputs of shape 1x8x6x7: RuntimeError: Given groups=1" in err[0]


@pytest.mark.parametrize("name, words", [
    ("declared.onnx", "output 'output' has shape [1, 4, 10, 10], but the file declares [1, 4, 99, 14]"),
    ("edited.onnx", "the model's carafe::CARAFE function differs from the one this package writes for opset 18"),
    ("opset11.onnx", "the model imports ONNX opset 11, its carafe::CARAFE function is written for opset 18"),
])
def test_what_onnx_runtime_cannot_or_should_not_run_fails_in_words(name, words, files, capsys):
    report = files / "r.json"
    assert main(["check", str(files / name), "--reference", str(files / "ref.npz"), "-o", str(report)]) == 1
    (backend,) = json.loads(report.read_text())["backends"]
    assert backend["status"] == "error" and words in backend["reason"], backend
    assert "[ONNXRuntimeError]" not in backend["reason"] and len(backend["reason"]) < 700


def test_an_engine_nothing_can_identify_is_refused_not_skipped(files, capsys):
    from carafe_deploy.trt.availability import run_unavailable

    status = main(["check", str(files / "good.onnx"), "--reference", str(files / "ref.npz"),
                   "--engine", str(files / "random.pth")])
    out = capsys.readouterr()
    assert status == 1
    if run_unavailable():  # no GPU: nothing here could read it, so nothing says it is an engine
        assert "--engine " + str(files / "random.pth") + ": nothing here says it is a TensorRT engine" in out.err
    else:  # TensorRT was here to try it, and refused it
        assert "tensorrt" in out.out and "error" in out.out


def test_without_a_gpu_nothing_advises_installing_pycuda(files, capsys):
    from carafe_deploy.trt.runtime import cuda_device_count

    if cuda_device_count():
        pytest.skip("this machine has a GPU")
    out_dir = files / "outs"
    assert main(["run", str(files / "random.pth"), "-i", str(files / "x.npy"), "-o", str(out_dir)]) == 1
    err = _lines(capsys)
    assert len(err) == 1 and "pycuda" not in err[0], err
    assert not out_dir.exists()  # made before the engine ran, removed again: nothing was written in it


def test_the_python_api_refuses_a_dynamic_axis_the_model_fixes_and_extra_names():
    from carafe_deploy.nn import CARAFEUpsample
    from carafe_deploy.onnx import export

    model = CARAFEUpsample(8, compressed_channels=4).eval()
    x = torch.randn(1, 8, 6, 6)
    with pytest.raises(DeployError, match=r"dynamic_axes makes axis 1 of input 'x' dynamic, but the model fixes it "
                                          r"to 8"):
        export(model, (x,), None, input_names=["x"], dynamic_axes={"x": {1: "C", 2: "H"}})
    with pytest.raises(DeployError, match=r"2 input_names \(x, y\) for a model with 1 input\(s\)"):
        export(model, (x,), None, input_names=["x", "y"])
    proto = export(model, (x,), None, input_names=["x"], dynamic_axes={"x": {0: "N", 2: "H"}})  # these are free
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 8, "H", 6]


def test_file_checks_never_open_what_would_block(tmp_path):
    from carafe_deploy.files import require_file

    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(DeployError, match="is a named pipe"):
        require_file(tmp_path / "pipe", "x")  # opening a FIFO for reading would wait for a writer for ever
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    with pytest.raises(DeployError, match="is a symbolic link to .*nowhere.*, which does not exist"):
        require_file(tmp_path / "dangling", "x")
