"""Issue 13, the command line: every case a careless or hostile user tried, with its exact behaviour now. A user
mistake is one line on stderr naming the problem and a non-zero exit (1: DeployError, 2: a bad value), before any
work where it can be; no output overwrites an input; a failed write leaves the previous file; `check` passes only what
it compared; a traceback only with --debug, or for a bug (exit 70, and it says so)."""

import hashlib
import runpy
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from carafe_deploy.cli import main
from support import REPO
from support.onnx_graphs import single_node_model
from support.unwritable import unwritable_dir

NET_PY = textwrap.dedent("""
    import torch
    from carafe_deploy.nn import CARAFEUpsample

    class Net(torch.nn.Module):
        def __init__(self, channels=8):
            super().__init__()
            self.up = CARAFEUpsample(channels, compressed_channels=4)

        def forward(self, x):
            return self.up(x)
""")
NET = ["--python", "{dir}/net.py", "--class", "Net", "--input-shape", "1,8,6,6"]
PRECIOUS = "the user's previous file\n" * 200


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def files(tmp_path):
    """A small workspace: net.py, an empty file, random bytes, a checkpoint, CARAFE graphs, an identity graph."""
    (tmp_path / "net.py").write_text(NET_PY)
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "junk.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save({"state_dict": {}}, tmp_path / "w.pth")
    (tmp_path / "syntax.py").write_text("import torch\nclass Net(torch.nn.Module)\n    pass\n")
    (tmp_path / "plain.py").write_text("class Net:\n    pass\n")
    (tmp_path / "raises.py").write_text("class Net(__import__('torch').nn.Module):\n    def __init__(self):\n"
                                        "        raise RuntimeError('no GPU here')\n")
    static = ([1, 4, 5, 5], [1, 25, 10, 10])
    onnx.save(single_node_model(5, 1, 2, "up", dims=static), tmp_path / "good.onnx")
    onnx.save(single_node_model(5, 1, 2, "sideways", dims=static), tmp_path / "sideways.onnx")
    onnx.save(single_node_model(5, 1, 2, "down", dims=static), tmp_path / "down_on_up.onnx")
    onnx.save(single_node_model(4, 1, 2, "up", dims=([1, 4, 5, 5], [1, 16, 10, 10])), tmp_path / "k4.onnx")
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "C"])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10),
              tmp_path / "identity.onnx")
    for name, value in (("nan", np.full((2, 3), np.nan)), ("inf", np.full((2, 3), np.inf)),
                        ("empty", np.zeros((0, 3)))):
        np.savez(tmp_path / f"{name}.npz", **{"input/x": value.astype(np.float32), "output/y": value.astype(np.float32)})
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    return tmp_path


def _run(argv, d, capsys):
    code = main([a.format(dir=d) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


# (argv, exit status, words of the one error line); every one is refused before any model is loaded or run
CASES = [
    # check: the node is validated before anything runs (ONNX Runtime ignores `mode`: these "passed")
    (["check", "{dir}/sideways.onnx", "--reference", "{dir}/x.npy"], 1,
     "node '(unnamed)' (carafe::CARAFE): mode must be one of 'up', 'down', got 'sideways'"),
    (["check", "{dir}/down_on_up.onnx", "--reference", "{dir}/x.npy"], 1,
     "kernels height is 10, but mode='down' with scale_factor=2 gives 3"),
    (["check", "{dir}/k4.onnx", "--reference", "{dir}/x.npy"], 1, "kernel_size must be an odd int >= 1, got 4"),
    (["check", "{dir}/empty.onnx", "--reference", "{dir}/x.npy"], 1, "empty.onnx is empty (0 bytes), not an ONNX model"),
    (["check", "{dir}/good.onnx", "--reference", "{dir}/x.npy", "--providers", "CUDAExecutionProvider"], 1,
     "ONNX Runtime provider(s) CUDAExecutionProvider not available"),
    (["check", "{dir}/good.onnx", "--reference", "{dir}/x.npy"], 1, "is not an .npz written by `carafe-deploy export"),
    (["check", "{dir}/good.onnx", "--reference", "{dir}/empty.onnx"], 1, "--reference: '"),
    (["check", "{dir}/good.onnx", "--reference", "{dir}/nan.npz", "-o", "{dir}/good.onnx"], 1,
     "-o/--output '{dir}/good.onnx' would overwrite an input file"),
    (["check", "{dir}/good.onnx", "--reference", "{dir}/nan.npz", "-o", "{dir}/nan.npz"], 1, "would overwrite an input"),
    (["check", "{dir}/good.onnx", "--reference", "{dir}/nan.npz", "-o", "{dir}/no/r.json"], 1,
     "-o/--output cannot write '{dir}/no/r.json': directory '{dir}/no' does not exist"),
    (["check", "{dir}/good.onnx", "--reference", "{dir}/nan.npz", "-o", "{dir}"], 1, "it is a directory"),
    # export: outputs against inputs, before the model is loaded
    (["export", *NET, "-o", "{dir}/net.py"], 1, "-o/--output '{dir}/net.py' would overwrite an input file"),
    (["export", *NET, "--checkpoint", "{dir}/w.pth", "-o", "{dir}/w.pth"], 1, "would overwrite an input file"),
    (["export", *NET, "-o", "{dir}/x.onnx", "--save-reference", "{dir}/x.onnx"], 1,
     "--save-reference and -o/--output both write"),
    (["export", *NET, "-o", "{dir}/x.onnx", "--save-engine", "{dir}/x.engine", "--save-report", "{dir}/x.engine.json"],
     1, "--save-report and --save-engine (its sidecar) both write"),
    (["export", *NET, "-o", "{dir}/no/x.onnx"], 1, "-o/--output cannot write '{dir}/no/x.onnx': directory"),
    (["export", *NET, "-o", "{dir}/x.onnx", "--save-reference", "{dir}/no/r.npz"], 1,
     "--save-reference cannot write '{dir}/no/r.npz'"),
    (["export", *NET, "--checkpoint", "{dir}/empty.onnx", "-o", "{dir}/x.onnx"], 1,
     "--checkpoint: '{dir}/empty.onnx' is empty (0 bytes)"),
    # export: model sources that are not what they say
    (["export", "--torchscript", "{dir}/junk.pt", "--input-shape", "1,3,8,8", "-o", "{dir}/x.onnx"], 1,
     "--torchscript {dir}/junk.pt: not a TorchScript file (torch.jit.save): RuntimeError: "),
    (["export", "--exported-program", "{dir}/junk.pt", "-o", "{dir}/x.onnx"], 1,
     "--exported-program {dir}/junk.pt: not an ExportedProgram file (torch.export.save): "),
    (["export", "--python", "{dir}/syntax.py", "--class", "Net", "-o", "{dir}/x.onnx"], 1,
     "--python {dir}/syntax.py: syntax error at line 2: expected ':'"),
    (["export", "--python", "{dir}/plain.py", "--class", "Net", "-o", "{dir}/x.onnx"], 1,
     "--class Net: {dir}/plain.py's Net() made an object of type Net, not a torch.nn.Module"),
    (["export", "--python", "{dir}/raises.py", "--class", "Net", "-o", "{dir}/x.onnx"], 1,
     "--class Net --kwargs {{}}: the constructor failed: RuntimeError: no GPU here"),
    (["export", *NET[:-2], "--kwargs", '{{"nope": 1}}', "--input-shape", "1,8,6,6", "-o", "{dir}/x.onnx"], 1,
     "the constructor failed: TypeError: Net.__init__() got an unexpected keyword argument 'nope'"),
    # export: inputs the model cannot take, found by running PyTorch before the exporter
    (["export", *NET[:-1], "1,3,6,6", "-o", "{dir}/x.onnx"], 1,
     "the PyTorch model fails on inputs of shape 1x3x6x6: RuntimeError: Given groups=1, weight of size [4, 8, 1, 1]"),
    (["export", *NET[:-1], "100000,8,100000,1000", "-o", "{dir}/x.onnx"], 1,
     "--input-shape 100000,8,100000,1000: the inputs alone need"),
    (["export", *NET, "--dynamic", "image:0", "-o", "{dir}/x.onnx"], 1, "--dynamic names input 'image'"),
    # demo and bench
    (["demo", "--batch", "-1"], 1, "--batch and --size must be >= 1, got -1"),
    (["demo", "--size", "0", "0"], 1, "--batch and --size must be >= 1, got 2 and [0, 0]"),
    (["demo", "-o", "{dir}/empty.onnx"], 1, "-o/--output '{dir}/empty.onnx' exists and is not a directory"),
    (["bench", "{dir}/good.onnx", "-o", "{dir}/good.onnx"], 1, "would overwrite an input file"),
    (["bench", "{dir}/good.onnx", "--batch", "0"], 2, "batch sizes must be >= 1, got [0]"),
]


@pytest.mark.parametrize("argv, code, words", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_one_line_and_nothing_written(argv, code, words, files, capsys):
    before = {p.name: _digest(p) for p in files.iterdir() if p.is_file()}
    status, err = _run(argv, files, capsys)
    assert status == code, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"carafe-deploy {argv[0]}: error: ")
    assert words.format(dir=files) in err[0], err
    assert {p.name: _digest(p) for p in files.iterdir() if p.is_file()} == before  # no file written or changed


def test_unwritable_folders_are_found_before_the_work(files, tmp_path, capsys):
    ro = unwritable_dir(tmp_path)
    for argv, words in (
        (["check", "{dir}/good.onnx", "--reference", "{dir}/nan.npz", "-o", f"{ro}/r.json"], "-o/--output cannot write"),
        (["export", *NET, "-o", "{dir}/x.onnx", "--save-report", f"{ro}/r.json"], "--save-report cannot write"),
        (["demo", "-o", f"{ro}/demo"], "-o/--output cannot"),
    ):
        status, err = _run(argv, files, capsys)
        assert status == 1 and len(err) == 1 and words in err[0], err
    assert not (files / "x.onnx").exists()


@pytest.mark.parametrize("reference, problem", [
    ("nan", "the reference has 6 NaN/Inf of 6 values: nothing to compare them with"),
    ("inf", "the reference has 6 NaN/Inf of 6 values: nothing to compare them with"),
    ("empty", "empty output (0 elements): nothing was compared"),
])
def test_check_does_not_pass_what_it_did_not_compare(reference, problem, files, capsys):
    report = files / "report.json"
    assert main(["check", str(files / "identity.onnx"), "--reference", str(files / f"{reference}.npz"),
                 "-o", str(report)]) == 1
    assert problem in capsys.readouterr().out
    import json

    data = json.loads(report.read_text())
    assert data["passed"] is False and data["backends"][0]["outputs"][0]["problem"] == problem


def test_debug_shows_the_traceback_and_a_bug_says_it_is_one(files, capsys, monkeypatch):
    monkeypatch.delenv("CARAFE_DEPLOY_DEBUG", raising=False)
    argv = ["check", str(files / "k4.onnx"), "--reference", str(files / "x.npy")]
    for debug_argv in (["--debug", *argv], [*argv, "--debug"]):
        assert main(debug_argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "validate_carafe_nodes" in err
        assert err.strip().splitlines()[-1].startswith("carafe-deploy check: error: node")

    import carafe_deploy.cli.check as check

    def broken(args):
        return {}["a bug"]

    monkeypatch.setattr(check, "run", broken)
    assert main(argv) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "This is a bug in carafe-deploy" in err.strip().splitlines()[-1]


def test_the_export_scripts_use_the_same_boundary(files, capsys, monkeypatch):
    for script in ("detector.py", "segmenter.py"):
        monkeypatch.setattr(sys, "argv", [script, "--model", "upernet_r50_carafe", "--tiny",
                                          "-o", str(files / "no" / "s.onnx")])
        with pytest.raises(SystemExit) as info:
            runpy.run_path(str(REPO / "export" / script), run_name="__main__")
        assert info.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"carafe-deploy export: error: -o/--output cannot write '{files}/no/s.onnx': directory "
                       f"'{files}/no' does not exist"]


_UNDER_LIMIT = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
    sys.argv = ["carafe-deploy", *sys.argv[2:]]
    from carafe_deploy.cli import main
    sys.exit(main())
""")


@pytest.mark.parametrize("command", ["check", "export"])
def test_a_failed_write_keeps_the_previous_file(command, files):
    """`ulimit -f` (the file-size limit) as the disk that fills up half-way through the write."""
    target = files / ("keep.json" if command == "check" else "keep.onnx")
    target.write_text(PRECIOUS)
    if command == "check":
        argv = ["check", str(files / "identity.onnx"), "--reference", str(files / "nan.npz"), "-o", str(target)]
        limit = 400  # the report is ~1 kB
    else:
        argv = ["export", *[a.format(dir=files) for a in NET], "--no-check", "-o", str(target)]
        limit = 20_000  # the ONNX file is ~60 kB; the previous one is 5 kB
    p = subprocess.run([sys.executable, "-c", _UNDER_LIMIT, str(limit), *argv], capture_output=True, text=True,
                       timeout=600, cwd=files)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 1, p.stderr
    assert err[-1] == f"carafe-deploy {command}: error: cannot write '{target}': File too large"
    assert "Traceback" not in p.stderr
    assert target.read_text() == PRECIOUS
    assert not [q for q in files.iterdir() if q.name.startswith(f".{target.name}.")]  # no temporary left


def test_check_holds_a_dynamic_export_at_the_shapes_it_runs_with(tmp_path, capsys):
    """The default export is dynamic (N, 3, H, W) and its kernels pass through Reshapes of run-time shapes, so shape
    inference cannot see a mode edited the wrong way; check measures the CARAFE inputs' shapes in a run and refuses.
    (ONNX Runtime itself computes the right numbers from the shapes: only the plugin would be wrong.)"""
    good = tmp_path / "tiny.onnx"
    assert main(["export", "--model", "tiny_carafe_net", "-o", str(good)]) == 0
    model = onnx.load(good)
    carafes = [n for n in model.graph.node if n.op_type == "CARAFE"]
    assert any(d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim)  # dynamic by default
    for node in carafes:
        for a in node.attribute:
            if a.name == "mode":
                a.s = b"down" if a.s == b"up" else b"up"
    flipped = tmp_path / "flipped.onnx"
    onnx.save(model, flipped)
    capsys.readouterr()
    assert main(["check", str(flipped), "--model", "tiny_carafe_net"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("carafe-deploy check: error: node 'node_carafe' (carafe::CARAFE): "
                                               "kernels height is"), err
    assert main(["check", str(good), "--model", "tiny_carafe_net"]) == 0
