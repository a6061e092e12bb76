"""The Triton repository writer (carafe_deploy.serving.repository), without a server: what each config says, the
files beside it, refusals; and the one source of the pre- and post-processing (carafe_deploy.imaging)."""

import ast
import os
import shutil
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from support import REPO
from support.serving_graphs import standin_detector, standin_engine

from carafe_deploy.errors import DeployError

PACKAGE = REPO / "carafe_deploy"


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import (the file is copied out of the package)"
            names.add(node.module.split(".")[0])
    return names


def test_imaging_and_python_models_import_only_what_the_server_environment_has():
    # imaging.py is copied as it stands into repositories, where neither torch nor carafe_deploy exists
    assert _imports(PACKAGE / "imaging.py") <= {"__future__", "io", "numpy", "PIL"}
    allowed = {"ctypes", "json", "os", "numpy", "onnxruntime", "triton_python_backend_utils", "carafe_imaging"}
    for path in sorted((PACKAGE / "serving" / "python_models").glob("*.py")):
        assert _imports(path) <= allowed, path.name


def test_normalization_is_the_segmenters_own():
    import torch

    from carafe_deploy import imaging
    from carafe_deploy.models import detectors, segmenters

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 3, 7, 9)).astype(np.float32)
    np.testing.assert_array_equal(imaging.normalize(pixels),
                                  segmenters.normalize_image(torch.from_numpy(pixels)).numpy())
    assert detectors.MEAN is imaging.IMAGENET_MEAN and detectors.STD is imaging.IMAGENET_STD


def _generic_model(dynamic_batch: bool, path):
    """x (N, 4, H, W) -> y = 2x + 1, a stand-in for an element-wise model."""
    dims = ["N", 4, "H", "W"] if dynamic_batch else [2, 4, 8, 8]
    nodes = [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
                              [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
                               helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, path)
    return path


def _config(repo, model):
    from carafe_deploy.serving.config import read_config

    return read_config(repo / model)


def test_generic_model_with_a_dynamic_batch(tmp_path, tritonclient):
    from carafe_deploy.serving import RepositoryOptions, write_repository
    from tritonclient.grpc import model_config_pb2 as mc

    src = _generic_model(True, tmp_path / "double.onnx")
    repo = write_repository(src, RepositoryOptions(output=tmp_path / "repo", instances=3, queue_delay_us=500))
    assert repo.name == "double" and repo.task == "generic" and repo.ensemble is None
    assert sorted(repo.models) == ["double_onnxruntime", "double_python"]
    py = _config(repo.path, "double_python")
    assert (py.backend, py.max_batch_size) == ("python", 8)
    assert [(t.name, t.data_type, list(t.dims)) for t in py.input] == [("x", mc.TYPE_FP32, [4, -1, -1])]
    assert [(t.name, list(t.dims)) for t in py.output] == [("y", [4, -1, -1])]
    assert py.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.kind, g.count) for g in py.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 3)]
    assert py.parameters["ONNX_FILE"].string_value == "model.onnx"
    ort = _config(repo.path, "double_onnxruntime")
    assert (ort.platform, ort.max_batch_size, ort.HasField("dynamic_batching")) == ("onnxruntime_onnx", 8, True)
    a, b = repo.path / "double_python/1/model.onnx", repo.path / "double_onnxruntime/1/model.onnx"
    assert a.read_bytes() == b.read_bytes() == onnx.load(src).SerializeToString()
    assert (repo.path / "double_python/1/model.py").read_bytes() == \
        (PACKAGE / "serving/python_models/onnx_model.py").read_bytes()
    launcher = (repo.path / "tritonserver.sh").read_text()
    assert os.access(repo.path / "tritonserver.sh", os.X_OK) and "plugins=" not in launcher
    assert 'exec tritonserver --model-repository="$here" "$@"' in launcher


def test_static_batch_gives_full_shapes_and_no_batching(tmp_path, tritonclient):
    from carafe_deploy.serving import RepositoryOptions, write_repository

    repo = write_repository(_generic_model(False, tmp_path / "s.onnx"), RepositoryOptions(output=tmp_path / "r"))
    py = _config(repo.path, "s_python")
    assert py.max_batch_size == 0 and list(py.input[0].dims) == [2, 4, 8, 8]
    assert not py.HasField("dynamic_batching")


def test_detector_ensemble(tmp_path, tritonclient):
    from carafe_deploy import imaging
    from carafe_deploy.serving import RepositoryOptions, write_repository

    src = tmp_path / "det.onnx"
    onnx.save(standin_detector(), src)
    repo = write_repository(src, RepositoryOptions(output=tmp_path / "repo"))
    assert (repo.name, repo.task, repo.ensemble) == ("standin_det", "detection", "standin_det_detect")
    ens = _config(repo.path, "standin_det_detect")
    assert ens.platform == "ensemble" and ens.max_batch_size == 0
    assert [s.model_name for s in ens.ensemble_scheduling.step] == ["standin_det_pre", "standin_det_python",
                                                                    "standin_det_post"]
    assert [t.name for t in ens.output] == ["DETS", "LABELS", "MASKS"]
    assert list((repo.path / "standin_det_detect" / "1").iterdir()) == []  # an ensemble needs an empty version
    pre = _config(repo.path, "standin_det_pre")
    assert pre.parameters["CANVAS"].string_value == ""
    for model in ("standin_det_pre", "standin_det_post"):
        assert (repo.path / model / "1" / "carafe_imaging.py").read_bytes() == open(imaging.__file__, "rb").read()
    # every Python model has its model.py: Triton 2.51 waits for ever on one that lacks it
    from carafe_deploy.serving.server import python_models_without_model_py

    assert python_models_without_model_py(repo.path) == []

    onnx.save(standin_detector(canvas=(96, 128), masks=False), src)
    repo = write_repository(src, RepositoryOptions(output=tmp_path / "fixed", ensemble_backend="onnxruntime"))
    assert _config(repo.path, "standin_det_pre").parameters["CANVAS"].string_value == "96,128"
    assert [t.name for t in _config(repo.path, "standin_det_detect").output] == ["DETS", "LABELS"]
    assert _config(repo.path, "standin_det_detect").ensemble_scheduling.step[1].model_name == "standin_det_onnxruntime"


def test_an_ensemble_needs_a_graph_that_takes_one_image(tmp_path, tritonclient):
    from carafe_deploy.serving import RepositoryOptions, write_repository

    node = helper.make_node("Concat", ["image", "image"], ["logits"], axis=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 6, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    helper.set_model_props(model, {"carafe_deploy.task": "segmentation"})
    onnx.save(model, tmp_path / "seg2.onnx")
    with pytest.raises(DeployError, match="image has a fixed batch of 2: export with batch 1 or a dynamic batch"):
        write_repository(tmp_path / "seg2.onnx", RepositoryOptions(output=tmp_path / "repo"))
    assert not (tmp_path / "repo").exists()


def test_plugin_form_export_without_the_custom_op_library_is_served_portable(tmp_path, tritonclient, monkeypatch):
    from support.onnx_graphs import single_node_model
    from support.ort_library import without_library

    from carafe_deploy.serving import RepositoryOptions, write_repository

    without_library(monkeypatch, tmp_path)
    src = tmp_path / "plugin.onnx"
    onnx.save(single_node_model(3, 1, 2, "up", function=False), src)
    repo = write_repository(src, RepositoryOptions(output=tmp_path / "repo"))
    served = onnx.load(repo.path / "plugin_python/1/model.onnx")
    assert [(f.domain, f.name) for f in served.functions] == [("carafe", "CARAFE")]
    assert any("served as the portable form" in note for note in repo.notes)
    assert not list(repo.path.rglob("libcarafe_ort.so"))


def test_plugin_form_export_is_served_with_the_custom_op_library(tmp_path, tritonclient):
    from support.onnx_graphs import single_node_model
    from support.ort_library import library_or_skip

    from carafe_deploy.serving import RepositoryOptions, write_repository

    library_or_skip()
    src = tmp_path / "plugin.onnx"
    onnx.save(single_node_model(3, 1, 2, "up", function=False), src)
    repo = write_repository(src, RepositoryOptions(output=tmp_path / "repo"))
    served = onnx.load(repo.path / "plugin_python/1/model.onnx")
    assert not served.functions
    assert (repo.path / "plugin_python/1/libcarafe_ort.so").is_file()
    assert 'CUSTOM_OP_LIBRARY' in (repo.path / "plugin_python/config.pbtxt").read_text()


def test_refusals(tmp_path, tritonclient):
    from carafe_deploy.serving import RepositoryOptions, write_repository

    src = _generic_model(True, tmp_path / "m.onnx")
    out = tmp_path / "repo"
    write_repository(src, RepositoryOptions(output=out))
    with pytest.raises(DeployError, match="exists: choose a new folder, or --force"):
        write_repository(src, RepositoryOptions(output=out))
    (out / "stale").mkdir()
    write_repository(src, RepositoryOptions(output=out, force=True))
    assert not (out / "stale").exists() and (out / "m_python" / "1" / "model.onnx").is_file()
    inside = out / "m.onnx"
    shutil.copy(src, inside)
    with pytest.raises(DeployError, match="inside the repository"):
        write_repository(inside, RepositoryOptions(output=out, force=True))
    with pytest.raises(DeployError, match="needs --engine"):
        write_repository(src, RepositoryOptions(output=tmp_path / "x", ensemble_backend="tensorrt"))
    with pytest.raises(DeployError, match="model name"):
        write_repository(src, RepositoryOptions(output=tmp_path / "x", name="a b"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "repo"]  # no half-written folder left


def _engine_case(tmp_path, **kw):
    src = _generic_model(True, tmp_path / "net.onnx")
    profile = {"x": {"min": [1, 4, 8, 8], "opt": [2, 4, 16, 16], "max": [4, 4, 32, 32]}}
    profile.update(kw.pop("profile", {}))
    tensors = ([{"name": "x", "dtype": "float32", "shape": [-1, 4, -1, -1]}],
               [{"name": "y", "dtype": "float32", "shape": [-1, 4, -1, -1]}])
    engine, lib = standin_engine(tmp_path, src, *tensors, profile, **kw)
    return src, engine, lib


def test_tensorrt_model_from_an_engine_and_its_sidecar(tmp_path, tritonclient):
    from carafe_deploy.serving.repository import PLUGIN_FILE, RepositoryOptions, write_repository
    from tritonclient.grpc import model_config_pb2 as mc

    src, engine, lib = _engine_case(tmp_path)
    repo = write_repository(src, RepositoryOptions(output=tmp_path / "repo", engine=engine))
    trt = _config(repo.path, "net_tensorrt")
    assert (trt.platform, trt.max_batch_size) == ("tensorrt_plan", 4)  # the profile's largest batch
    assert list(trt.input[0].dims) == [4, -1, -1] and trt.HasField("dynamic_batching")
    assert [g.kind for g in trt.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert (repo.path / "net_tensorrt/1/model.plan").read_bytes() == engine.read_bytes()
    assert (repo.path / "net_tensorrt" / PLUGIN_FILE).read_bytes() == lib.read_bytes()
    assert (repo.path / "net_tensorrt/engine.json").is_file()
    launcher = (repo.path / "tritonserver.sh").read_text()
    assert f'--backend-config=tensorrt,plugins="$here/net_tensorrt/{PLUGIN_FILE}"' in launcher
    assert any("TensorRT is 11.1.0.0" in n for n in repo.notes)
    # the Python and ONNX Runtime models keep the --max-batch-size of the ONNX graph
    assert _config(repo.path, "net_python").max_batch_size == 8


def test_engine_refusals(tmp_path, tritonclient):
    from carafe_deploy.serving import RepositoryOptions, write_repository

    src, engine, lib = _engine_case(tmp_path)
    lib.write_bytes(b"another library\n")
    with pytest.raises(DeployError, match="is not the plugin library .* was built with"):
        write_repository(src, RepositoryOptions(output=tmp_path / "r", engine=engine))
    lib.unlink()
    with pytest.raises(DeployError, match="which is not there: give it with --plugin"):
        write_repository(src, RepositoryOptions(output=tmp_path / "r", engine=engine))
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"x")
    with pytest.raises(DeployError, match="has no sidecar bare.engine.json"):
        write_repository(src, RepositoryOptions(output=tmp_path / "r", engine=bare))
    sub = tmp_path / "b"
    sub.mkdir()
    src2, engine2, _ = _engine_case(sub, profile={"x": {"min": [2, 4, 8, 8], "opt": [2, 4, 8, 8],
                                                        "max": [4, 4, 8, 8]}})
    with pytest.raises(DeployError, match=r"smallest batch is \[2\]; Triton sends batches from 1"):
        write_repository(src2, RepositoryOptions(output=tmp_path / "r", engine=engine2))
    other = _generic_model(True, tmp_path / "other.onnx")
    m = onnx.load(other)
    m.graph.input[0].name = "z"
    m.graph.node[0].input[0] = "z"
    onnx.save(m, other)
    with pytest.raises(DeployError, match="give the engine built from this model"):
        write_repository(other, RepositoryOptions(output=tmp_path / "r", engine=engine2))
    rtx = tmp_path / "rtx"
    rtx.mkdir()
    src3, engine3, _ = _engine_case(rtx, plugin=False, runtime="tensorrt-rtx")
    with pytest.raises(DeployError, match=r"built by tensorrt-rtx 1\.7\.1\.116; Triton's TensorRT backend runs engines "
                                          r"of full TensorRT only: rebuild it with carafe-deploy build --backend tensorrt"):
        write_repository(src3, RepositoryOptions(output=tmp_path / "r", engine=engine3))
    assert not (tmp_path / "r").exists()


def test_serve_without_a_server_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    from carafe_deploy.cli import main

    monkeypatch.setenv("CARAFE_DEPLOY_TRITON_ENV", str(tmp_path / "nowhere"))
    (tmp_path / "repo").mkdir()
    assert main(["serve", str(tmp_path / "repo")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"carafe-deploy serve: error: no Triton server: {tmp_path / 'nowhere'} does not exist; "
                          "install it with carafe-deploy serve --install")


def test_commands_parse_without_heavy_imports():
    import subprocess

    code = ("import sys\nfrom carafe_deploy.cli import main\n"
            "for c in ('triton', 'serve'):\n"
            "    try:\n        main([c, '--help'])\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('torch', 'onnx', 'tritonclient', 'onnxruntime') if m in sys.modules]\n"
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--engine ENGINE" in proc.stdout and "--http-port" in proc.stdout
