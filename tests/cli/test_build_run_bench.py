"""``carafe-deploy build | run | bench``: error paths, dry runs, builds with the real TensorRT-RTX, and running an
engine with the stand-in tensorrt (running needs a GPU, which no machine here has)."""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image
from support import trt_toys
from support.trt_toys import carafe_model, random_feeds

from support import fake_tensorrt
from carafe_deploy.cli import main
from carafe_deploy.trt import runner as runner_mod
from carafe_deploy.trt import tensorrt_available

needs_rtx = pytest.mark.skipif(not tensorrt_available("tensorrt-rtx"),
                               reason="TensorRT-RTX is not installed (pip install -e '.[test]' installs it)")


@pytest.fixture
def no_trt(monkeypatch):
    """Neither TensorRT nor TensorRT-RTX importable, whatever is installed."""
    for module in ("tensorrt", "tensorrt_rtx"):
        monkeypatch.setitem(sys.modules, module, None)


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "toy.onnx"
    onnx.save(carafe_model(function=True, hw=4), path)
    return path


@pytest.fixture
def dyn(tmp_path):
    path = tmp_path / "dyn.onnx"
    onnx.save(carafe_model(function=True, dynamic=True), path)
    return path


def _err(capsys):
    return capsys.readouterr().err.strip().splitlines()


def test_build_without_tensorrt_is_one_line(toy, capsys, no_trt):
    assert main(["build", str(toy), "--no-plugin"]) == 1
    lines = _err(capsys)
    # the notes of graph preparation, then exactly one error line
    errors = [line for line in lines if "error" in line.lower()]
    assert errors == [lines[-1]]
    assert lines[-1].startswith("carafe-deploy build: error: TensorRT is not installed: pip install tensorrt")
    assert not toy.with_suffix(".engine").exists()


def test_run_without_tensorrt_is_one_line(tmp_path, capsys, no_trt):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 4, 4), np.float32))
    assert main(["run", str(engine), "--input", str(tmp_path / "x.npy")]) == 1
    lines = _err(capsys)
    assert len(lines) == 1 and "TensorRT is not installed: pip install tensorrt" in lines[0]
    assert 'or pip install "tensorrt-rtx-cu13==1.7.1.116"' in lines[0]


@pytest.mark.parametrize("argv, code, message", [
    (["build", "missing.onnx"], 2, "ONNX model missing.onnx does not exist"),
    (["build", "{dyn}", "--no-plugin"], 2, "input 'features' has dynamic shape ?x4x?x?: give its profile"),
    (["build", "{dyn}", "--no-plugin", "--opt", "features:1x4x8x8", "--opt", "kernels:1x9x16"], 2, "has rank 3"),
    (["build", "{dyn}", "--no-plugin", "--min", "feat:1x4x8x8"], 2, "--min: no input named 'feat'"),
    (["build", "{dyn}", "--no-plugin", "--opt", "features"], 2, "--opt 'features': expected NAME:DxDxD"),
    (["build", "{toy}", "--no-plugin", "--workspace", "lots"], 2, "bad size 'lots'"),
    (["build", "{toy}", "--no-plugin", "--exclude-lean-runtime"], 2, "only applies to --version-compatible"),
    (["build", "{toy}", "--plugin", "nowhere.so"], 2, "plugin library nowhere.so does not exist"),
    (["run", "none.engine", "--input", "x.npy"], 2, "engine none.engine does not exist"),
    (["bench"], 2, "nothing to benchmark"),
    (["bench", "{dyn}"], 2, "give them with --input-shape N,C,H,W (once per input: features, kernels)"),
    (["bench", "{dyn}", "--input-shape", "1,4,4,4"], 2, "1 --input-shape for 2 inputs (features, kernels)"),
])
def test_error_paths(argv, code, message, toy, dyn, capsys):
    argv = [a.format(toy=toy, dyn=dyn) for a in argv]
    assert main(argv) == code
    lines = _err(capsys)
    assert message in lines[-1], lines


def test_build_without_tensorrt_or_plugin_names_tensorrt_first(toy, capsys, monkeypatch, tmp_path, no_trt):
    monkeypatch.setenv("CARAFE_DEPLOY_PLUGIN", str(tmp_path / "gone.so"))
    assert main(["build", str(toy)]) == 1
    lines = _err(capsys)
    # the most fundamental missing piece, once: installing TensorRT comes before building its plugin
    assert lines[-1].startswith("carafe-deploy build: error: TensorRT is not installed")
    assert not any("CARAFE_DEPLOY_PLUGIN" in line for line in lines)


def test_build_without_a_plugin_library_builds_unrolled_and_says_so(toy, fake_trt, capsys, monkeypatch, tmp_path):
    """The one engine choice: no library found (and none named) -> the unrolled form, in one line; --plugin forces
    the plugin and then stops on the missing library."""
    from carafe_deploy.trt import plugin

    monkeypatch.delenv("CARAFE_DEPLOY_PLUGIN", raising=False)
    monkeypatch.setattr(plugin, "_candidates", lambda: [tmp_path / "nowhere.so"])
    assert main(["build", str(toy), "-o", str(tmp_path / "auto.engine")]) == 0
    lines = _err(capsys)
    assert sum("CARAFE built from standard ops (unrolled)" in line for line in lines) == 1
    assert json.loads((tmp_path / "auto.engine.json").read_text())["graph"]["carafe_form"] == "unrolled"
    assert main(["build", str(toy), "--plugin", "-o", str(tmp_path / "forced.engine")]) == 1
    assert "libcarafe_trt_plugin.so not found" in _err(capsys)[-1]


def test_build_with_tensorrt_but_no_plugin_library(toy, fake_trt, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CARAFE_DEPLOY_PLUGIN", str(tmp_path / "gone.so"))
    assert main(["build", str(toy)]) == 1
    assert f"CARAFE_DEPLOY_PLUGIN={tmp_path / 'gone.so'} does not name an existing file" in _err(capsys)[-1]
    assert not toy.with_suffix(".engine").exists()


def test_dry_run_never_imports_tensorrt_and_notes_what_a_build_lacks(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CARAFE_DEPLOY_PLUGIN", str(tmp_path / "gone.so"))
    for module in ("tensorrt", "tensorrt_rtx"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    # a TensorRT that is importable must still not be imported by a dry run
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: object() if name == "tensorrt" else real(name, *a, **k))
    assert main(["build", str(toy), "--dry-run"]) == 0
    assert "tensorrt" not in sys.modules and "tensorrt_rtx" not in sys.modules
    err = " ".join(capsys.readouterr().err.split())
    assert "dry run:" in err and "ready to build" in err
    assert "missing for a real build here: CARAFE_DEPLOY_PLUGIN=" in err and "TensorRT is not installed" not in err


def test_dry_run_without_tensorrt_names_it_first(toy, tmp_path, monkeypatch, capsys, no_trt):
    monkeypatch.setenv("CARAFE_DEPLOY_PLUGIN", str(tmp_path / "gone.so"))
    assert main(["build", str(toy), "--dry-run"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("missing for a real build")]
    assert len(notes) == 2
    assert "TensorRT is not installed" in notes[0] and "CARAFE_DEPLOY_PLUGIN=" in notes[1]


def test_build_no_plugin_unrolls_a_plugin_export(tmp_path, capsys):
    path = tmp_path / "plugin_only.onnx"
    onnx.save(carafe_model(function=False, hw=4), path)
    assert main(["build", str(path), "--no-plugin", "--dry-run"]) == 0
    assert "unrolled 1 carafe::CARAFE node(s) into standard ops" in capsys.readouterr().err


@needs_rtx
def test_build_no_plugin_with_only_tensorrt_rtx_writes_an_engine(tmp_path):
    """The issue's "done": `carafe-deploy build MODEL.onnx --no-plugin`, no --backend, TensorRT-RTX the only runtime."""
    import subprocess

    if tensorrt_available("tensorrt"):
        pytest.skip("full TensorRT is installed here: the automatic choice would take it")
    path = tmp_path / "m.onnx"
    onnx.save(carafe_model(function=False, hw=4), path)
    proc = subprocess.run([sys.executable, "-m", "carafe_deploy", "build", str(path), "--no-plugin"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "TensorRT-RTX 1.7.1.116, fp32, CARAFE unrolled" in proc.stderr.splitlines()[-1]
    side = json.loads((tmp_path / "m.engine.json").read_text())
    assert side["runtime"]["name"] == "tensorrt-rtx" and (tmp_path / "m.engine").read_bytes()[:4] == b"vtrt"


@pytest.fixture
def rtx_engine(tmp_path):
    if not tensorrt_available("tensorrt-rtx"):
        pytest.skip("TensorRT-RTX is not installed")
    path = tmp_path / "rtx.onnx"
    onnx.save(carafe_model(function=True, hw=4), path)
    assert main(["build", str(path), "--no-plugin", "--backend", "tensorrt-rtx", "--no-progress"]) == 0
    return tmp_path / "rtx.engine"


def test_run_check_bench_refuse_an_engine_of_the_other_runtime(rtx_engine, tmp_path, capsys):
    capsys.readouterr()
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 4, 4), np.float32))
    assert main(["run", str(rtx_engine), "-i", f"features={tmp_path / 'x.npy'}", "--backend", "tensorrt"]) == 1
    lines = _err(capsys)
    assert len(lines) == 1 and lines[0].startswith(
        f"carafe-deploy run: error: {rtx_engine} was built by TensorRT-RTX (its sidecar says tensorrt-rtx 1.7.1.116); "
        "an engine runs only on the runtime that built it, not on TensorRT")

    onnx_path = tmp_path / "rtx.onnx"
    report = tmp_path / "check.json"
    assert main(["check", str(onnx_path), "--python", trt_toys.__file__, "--class", "TorchToy", "--input-shape",
                 "1,4,4,4", "--input-shape", "1,9,8,8", "--engine", str(rtx_engine), "--backend", "tensorrt",
                 "-o", str(report)]) == 1
    trt_row = json.loads(report.read_text())["backends"][1]
    assert trt_row["status"] == "error" and "built by TensorRT-RTX" in trt_row["reason"]

    out = tmp_path / "b.json"
    assert main(["bench", "--engine", str(rtx_engine), "--backend", "tensorrt", "--iters", "1", "--warmup", "0",
                 "--batch", "1", "-o", str(out), "--plot", str(tmp_path / "b.png")]) == 1
    assert "built by TensorRT-RTX" in json.loads(out.read_text())["skipped"]["tensorrt"]


def test_check_reports_a_tensorrt_rtx_engine_as_skipped_without_a_gpu(rtx_engine, tmp_path):
    from carafe_deploy.trt.availability import run_unavailable

    if run_unavailable() is None:
        pytest.skip("this machine can run engines")
    report = tmp_path / "check.json"
    assert main(["check", str(tmp_path / "rtx.onnx"), "--python", trt_toys.__file__, "--class", "TorchToy",
                 "--input-shape", "1,4,4,4", "--input-shape", "1,9,8,8", "--engine", str(rtx_engine),
                 "-o", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["backends"][0]["status"] == "passed"  # ONNX Runtime vs PyTorch on the toy's stand-in body
    assert data["skipped"] == ["tensorrt"] and "no CUDA device" in data["backends"][1]["reason"]


def test_dry_run_writes_the_prepared_graph(toy, tmp_path, monkeypatch, capsys):
    lib = tmp_path / "libcarafe_trt_plugin.so"
    lib.write_bytes(b"x")
    monkeypatch.setenv("CARAFE_DEPLOY_PLUGIN", str(lib))
    prepared = tmp_path / "prepared.onnx"
    assert main(["build", str(toy), "--dry-run", "--save-prepared", str(prepared)]) == 0
    err = capsys.readouterr().err
    assert "dropped the model-local function carafe::CARAFE" in err and "dry run" in err
    assert list(onnx.load(str(prepared)).functions) == []


@pytest.fixture
def fake_trt(monkeypatch):
    trt = fake_tensorrt.make()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(runner_mod, "_buffers", lambda device, backend: fake_tensorrt.HostBuffers(device))
    return trt


def test_stand_in_build_and_run(dyn, tmp_path, fake_trt, capsys):
    engine = tmp_path / "e" / "toy.engine"
    assert main(["build", str(dyn), "--no-plugin", "-o", str(engine), "--no-progress",
                 "--min", "features:1x4x2x2,kernels:1x9x4x4", "--opt", "features:1x4x4x4,kernels:1x9x8x8",
                 "--max", "features:2x4x8x8,kernels:2x9x16x16"]) == 0
    assert "wrote" in capsys.readouterr().err
    assert json.loads((tmp_path / "e" / "toy.engine.json").read_text())["profiles"][0]["kernels"]["max"] == [2, 9, 16, 16]

    feeds = random_feeds(2, 3)
    np.savez(tmp_path / "in.npz", **feeds)
    out_dir = tmp_path / "outs"
    assert main(["run", str(engine), "--input", str(tmp_path / "in.npz"), "-o", str(out_dir)]) == 0
    want = ort.InferenceSession(str(dyn)).run(None, feeds)[0]
    np.testing.assert_allclose(np.load(out_dir / "y.npy"), want, rtol=1e-6)

    np.save(tmp_path / "f.npy", feeds["features"])
    np.save(tmp_path / "k.npy", feeds["kernels"])
    assert main(["run", str(engine), "-i", f"features={tmp_path / 'f.npy'}", "-i", f"kernels={tmp_path / 'k.npy'}"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "e" / "toy_outputs" / "y.npy"), want, rtol=1e-6)

    assert main(["run", str(engine), "-i", str(tmp_path / "f.npy")]) == 2
    assert "name each input as NAME=FILE" in _err(capsys)[-1]
    assert main(["run", str(engine), "-i", f"features={tmp_path / 'f.npy'}"]) == 2
    assert "missing 'kernels'" in _err(capsys)[-1]


@needs_rtx
def test_build_fp16_flag_on_tensorrt_rtx(toy, capsys):
    assert main(["build", str(toy), "--no-plugin", "--fp16", "--backend", "tensorrt-rtx"]) == 1
    assert "--fp16: TensorRT-RTX 1.7.1.116 is strongly typed and has no FP16 builder flag" in _err(capsys)[-1]


def test_bench_runs_onnxruntime_and_pytorch(dyn, tmp_path, capsys):
    engine = tmp_path / "toy.engine"
    with_rtx = tensorrt_available("tensorrt-rtx")
    if with_rtx:  # a real engine, which cannot run without a GPU: skipped with the reason
        assert main(["build", str(dyn), "--no-plugin", "--backend", "tensorrt-rtx", "-o", str(engine),
                     "--opt", "features:1x4x4x4,kernels:1x9x8x8", "--no-progress"]) == 0
    else:
        engine.write_bytes(b"not an engine")
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    argv = ["bench", str(dyn), "--python", trt_toys.__file__, "--class", "TorchToy", "--batch", "1", "2",
            "--input-shape", "1,4,4,4", "--input-shape", "1,9,8,8", "--engine", str(engine),
            "--warmup", "1", "--iters", "3", "-o", str(out_json), "--plot", str(out_png)]
    assert main(argv) == 0
    report = json.loads(out_json.read_text())
    got = sorted((r["backend"], r["batch"]) for r in report["rows"])
    assert got == [("onnxruntime", 1), ("onnxruntime", 2), ("pytorch", 1), ("pytorch", 2)]
    for row in report["rows"]:
        assert 0 < row["median_ms"] <= row["p90_ms"] and row["iters"] == 3
        assert row["throughput"] == pytest.approx(row["batch"] / row["median_ms"] * 1e3)
    skipped = report["skipped"]["tensorrt"]
    assert ("no CUDA device" in skipped) if with_rtx else skipped.startswith("TensorRT is not installed")
    assert report["shapes"] == {"features": [1, 4, 4, 4], "kernels": [1, 9, 8, 8]}
    with Image.open(out_png) as im:
        assert im.format == "PNG" and im.size[0] > 600
    assert "onnxruntime" in capsys.readouterr().out


def test_bench_with_nothing_runnable_fails(tmp_path, capsys, monkeypatch):
    from support.ort_library import without_library

    without_library(monkeypatch, tmp_path)  # a plugin-form file then has nothing to run on
    path = tmp_path / "plugin_only.onnx"
    onnx.save(carafe_model(function=False, hw=4), path)
    out_json = tmp_path / "b.json"
    assert main(["bench", str(path), "-o", str(out_json), "--plot", str(tmp_path / "b.png"),
                 "--iters", "1", "--warmup", "0", "--batch", "1"]) == 1  # the file's batch is fixed to 1
    assert "no backend produced a timing" in _err(capsys)[-1]
    skipped = json.loads(out_json.read_text())["skipped"]["onnxruntime"]
    assert "without their function" in skipped and "--to portable" in skipped


def test_bench_runs_a_plugin_form_file_with_the_custom_op_library(tmp_path, capsys):
    from support.ort_library import library_or_skip

    library_or_skip()
    path = tmp_path / "plugin_only.onnx"
    onnx.save(carafe_model(function=False, hw=4), path)
    out_json = tmp_path / "b.json"
    assert main(["bench", str(path), "-o", str(out_json), "--plot", str(tmp_path / "b.png"),
                 "--iters", "2", "--warmup", "0", "--batch", "1"]) == 0
    rows = json.loads(out_json.read_text())["rows"]
    assert [(r["backend"], r["batch"]) for r in rows] == [("onnxruntime", 1)] and rows[0]["median_ms"] > 0


def test_run_engine_without_tensorrt_raises_missing_dependency(tmp_path, no_trt):
    from carafe_deploy.errors import MissingDependencyError
    from carafe_deploy.trt import run_engine

    # what `check --engine` relies on to report TensorRT as skipped rather than failed
    with pytest.raises(MissingDependencyError, match="^TensorRT is not installed"):
        run_engine(tmp_path / "any.engine", {"x": np.zeros(1, np.float32)})
