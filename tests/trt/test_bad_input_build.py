"""Issue 13, engines: `build` (its dry run too) validates every CARAFE node before TensorRT is touched, mmcv's
MMCVCARAFENaive included, with the plugin's limits when the plugin builds it; no output (engine, sidecar, prepared
ONNX) overwrites the input; `run` refuses to write an output over one of its input files (stand-in tensorrt)."""

import hashlib
import sys

import numpy as np
import onnx
import pytest
from onnx import helper
from support import fake_tensorrt
from support.onnx_graphs import single_node_model
from support.trt_toys import carafe_model, random_feeds

from carafe_deploy.cli import main
from carafe_deploy.errors import DeployError
from carafe_deploy.trt import runner as runner_mod
from carafe_deploy.trt.graph import prepare_onnx

UP_STATIC = ([1, 4, 5, 5], [1, 25, 10, 10])


@pytest.fixture
def plugin_lib(tmp_path):
    lib = tmp_path / "libcarafe_trt_plugin.so"
    lib.write_bytes(b"not loaded in a dry run")
    return lib


def _save(model, path):
    onnx.save(model, path)
    return path


def _mmcv(op, **attrs):
    model = carafe_model(function=False, mmcv=True)
    node = model.graph.node[0]
    node.op_type = op
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    return model


@pytest.mark.parametrize("model, words", [
    (single_node_model(5, 1, 2, "sideways", dims=UP_STATIC), "mode must be one of 'up', 'down', got 'sideways'"),
    (single_node_model(5, 1, 2, "down", dims=UP_STATIC), "kernels height is 10, but mode='down'"),
    (single_node_model(4, 1, 2, "up", dims=([1, 4, 5, 5], [1, 16, 10, 10])), "kernel_size must be an odd int"),
    (single_node_model(5, 0, 2, "up", dims=UP_STATIC), "group must be >= 1, got 0"),
    (single_node_model(65, 1, 2, "up"), "kernel_size 65 is above the TensorRT plugin's limit of 63"),
    (_mmcv("MMCVCARAFE", kernel_size=5.7, group_size=1, scale_factor=2.0),
     "(mmcv::MMCVCARAFE): attribute 'kernel_size' must be an int, got float (5.7)"),
    (_mmcv("MMCVCARAFENaive", kernel_size=4, group_size=1, scale_factor=2.0),
     "(mmcv::MMCVCARAFENaive): kernel_size must be an odd int >= 1, got 4"),
    (_mmcv("MMCVCARAFE", kernel_size=3, group_size=0, scale_factor=2.0), "group_size must be >= 1, got 0"),
])
def test_dry_run_refuses_nodes_outside_the_contract(model, words, tmp_path, plugin_lib, capsys):
    path = _save(model, tmp_path / "m.onnx")
    assert main(["build", str(path), "--dry-run", "--plugin", str(plugin_lib)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("carafe-deploy build: error: node ") and words in err[-1], err
    assert not any("ready to build" in line for line in err)
    with pytest.raises(DeployError, match="node "):
        prepare_onnx(model, use_plugin=True)


def test_the_plugin_limits_apply_only_to_the_plugin():
    prepare_onnx(single_node_model(65, 1, 2, "up"), use_plugin=False)  # built from the standard-op function


def test_mmcv_naive_is_converted_like_mmcv(tmp_path, plugin_lib, capsys):
    path = _save(_mmcv("MMCVCARAFENaive", kernel_size=3, group_size=1, scale_factor=2.0), tmp_path / "n.onnx")
    assert main(["build", str(path), "--dry-run", "--plugin", str(plugin_lib)]) == 0
    err = capsys.readouterr().err
    assert "converted 1 mmcv::MMCVCARAFE node(s) to carafe::CARAFE" in err and "ready to build" in err
    prepared = prepare_onnx(onnx.load(path))
    assert [(n.domain, n.op_type) for n in prepared.model.graph.node][0] == ("carafe", "CARAFE")


def test_empty_file(tmp_path, capsys):
    (tmp_path / "e.onnx").write_bytes(b"")
    assert main(["build", str(tmp_path / "e.onnx"), "--dry-run"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"carafe-deploy build: error: {tmp_path / 'e.onnx'} is empty (0 bytes), not an ONNX model"]


@pytest.mark.parametrize("extra, words", [
    (["-o", "{onnx}"], "-o/--output '{onnx}' would overwrite an input file"),
    (["--save-prepared", "{onnx}"], "--save-prepared '{onnx}' would overwrite an input file"),
    (["-o", "{dir}/e.engine", "--save-prepared", "{dir}/e.engine.json"],
     "-o/--output (its sidecar) and --save-prepared both write"),
    (["--save-prepared", "{dir}/no/p.onnx"], "--save-prepared cannot write '{dir}/no/p.onnx': directory"),
])
def test_outputs_never_overwrite_the_input(extra, words, tmp_path, capsys):
    path = _save(carafe_model(function=True, hw=4), tmp_path / "toy.onnx")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    argv = ["build", str(path), "--no-plugin", "--dry-run", *[a.format(onnx=path, dir=tmp_path) for a in extra]]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words.format(onnx=path, dir=tmp_path) in err[0], err
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_run_refuses_to_write_an_output_over_an_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt.make())
    monkeypatch.setattr(runner_mod, "_buffers", lambda device, backend: fake_tensorrt.HostBuffers(device))
    dyn = _save(carafe_model(function=True, dynamic=True), tmp_path / "dyn.onnx")
    engine = tmp_path / "toy.engine"
    assert main(["build", str(dyn), "--no-plugin", "-o", str(engine), "--no-progress",
                 "--min", "features:1x4x2x2,kernels:1x9x4x4", "--opt", "features:1x4x4x4,kernels:1x9x8x8",
                 "--max", "features:2x4x8x8,kernels:2x9x16x16"]) == 0
    feeds = random_feeds(1, 4)
    out_dir = tmp_path / "outs"
    out_dir.mkdir()
    np.save(out_dir / "y.npy", feeds["features"])  # an input file named like the engine's output "y"
    np.save(tmp_path / "k.npy", feeds["kernels"])
    capsys.readouterr()
    argv = ["run", str(engine), "-i", f"features={out_dir / 'y.npy'}", "-i", f"kernels={tmp_path / 'k.npy'}",
            "-o", str(out_dir)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"carafe-deploy run: error: output 'y' '{out_dir / 'y.npy'}' would overwrite an input file; " \
                      "choose another path"
    np.testing.assert_array_equal(np.load(out_dir / "y.npy"), feeds["features"])
    # an -o that is a file is refused before the engine runs
    assert main(["run", str(engine), "-i", f"features={out_dir / 'y.npy'}", "-i", f"kernels={tmp_path / 'k.npy'}",
                 "-o", str(tmp_path / "k.npy")]) == 1
    assert "exists and is not a directory" in capsys.readouterr().err
