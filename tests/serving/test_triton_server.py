"""A real Triton Inference Server (tritonserver 2.51.0 from the nvidia-pytriton wheel, in its own server
environment) on repositories written by carafe_deploy.serving: a CARAFE model (tiny_carafe_net) and a task model
(UperNet-CARAFE, narrow variant, with its ensemble), compared with PyTorch over HTTP and gRPC; malformed requests;
a bounded load test with dynamic batching; the detection ensemble on a stand-in detector graph; the ONNX Runtime and
TensorRT models as far as this server goes (it has neither backend); and `carafe-deploy serve` itself."""

import copy
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from support import REPO
from support.terminal import at_a_terminal
from support.serving_graphs import BOX_FRACTIONS, LABELS, standin_detector, standin_engine

pytestmark = pytest.mark.slow

TINY, SEG = "tiny_carafe_net", "upernet_r50_carafe"


def _export(tmp, model: str, shape, tiny: bool = False):
    from carafe_deploy.tasks import CheckOptions, ExportOptions, ModelSource, deploy

    loaded = ModelSource(model=model, tiny=tiny).load()
    path = tmp / f"{model}.onnx"
    deploy(loaded, ExportOptions(output=path, input_shapes=[shape], dynamic=True), CheckOptions(enabled=False),
           log=lambda _m: None)
    return loaded.model, path


@pytest.fixture(scope="module")
def served(tmp_path_factory, triton_install):
    """One server on the repositories of: tiny_carafe_net (+ a stand-in engine), UperNet-CARAFE (tiny), the
    stand-in detector (dynamic size) and the stand-in detector with a fixed 96x128 input."""
    from carafe_deploy.serving import RepositoryOptions, TritonServer, write_repository
    from carafe_deploy.serving.config import onnx_tensor_specs

    tmp = tmp_path_factory.mktemp("serving")
    t0 = time.perf_counter()
    tiny_model, tiny_onnx = _export(tmp, TINY, (2, 3, 32, 32))
    seg_model, seg_onnx = _export(tmp, SEG, (1, 3, 64, 64), tiny=True)
    exported = time.perf_counter() - t0
    inputs, outputs = onnx_tensor_specs(onnx.load(tiny_onnx))
    as_json = lambda specs: [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in specs]  # noqa: E731
    engine, _ = standin_engine(tmp, tiny_onnx, as_json(inputs), as_json(outputs),
                               {"image": {"min": [1, 3, 16, 16], "opt": [2, 3, 32, 32], "max": [4, 3, 64, 64]}})
    repos = [write_repository(tiny_onnx, RepositoryOptions(output=tmp / "repo_tiny", engine=engine)),
             write_repository(seg_onnx, RepositoryOptions(output=tmp / "repo_seg", instances=1))]
    for name, canvas in (("standin_det", None), ("standin_fixed", (96, 128))):
        path = tmp / f"{name}.onnx"
        onnx.save(standin_detector(canvas, masks=canvas is None, name=name), path)
        repos.append(write_repository(path, RepositoryOptions(output=tmp / f"repo_{name}", instances=1)))
    models = [f"{TINY}_python", f"{SEG}_segment", f"{SEG}_python", "standin_det_detect", "standin_fixed_detect"]
    plugin_repo = _plugin_form_repository(tmp, tiny_onnx)
    if plugin_repo is not None:
        repos.append(plugin_repo)
        models.append(f"{plugin_repo.name}_python")
    t1 = time.perf_counter()
    with TritonServer([r.path for r in repos], install=triton_install, models=models, timeout=180) as server:
        print(f"\nexports {exported:.1f} s; server ready in {time.perf_counter() - t1:.1f} s "
              f"(Triton {server.version()}, {len(models)} models requested)")
        yield {"server": server, "tiny": tiny_model, "tiny_onnx": tiny_onnx, "seg": seg_model, "seg_onnx": seg_onnx,
               "repos": {r.name: r for r in repos}, "tmp": tmp}
        t2 = time.perf_counter()
    print(f"server stopped in {time.perf_counter() - t2:.1f} s")


def _plugin_form_repository(tmp, portable_onnx):
    """The tiny net in the plugin form, served with the ONNX Runtime custom-op library; None where the library
    cannot be built here (test_plugin_form_with_the_custom_op_library says why)."""
    from carafe_deploy import onnxruntime as custom_ops
    from carafe_deploy.errors import MissingDependencyError
    from carafe_deploy.onnx.convert import convert
    from carafe_deploy.serving import RepositoryOptions, write_repository

    try:
        custom_ops.library_path()
    except MissingDependencyError:
        return None
    path = tmp / f"{TINY}_plugin.onnx"
    onnx.save(convert(portable_onnx, "plugin").model, path)
    return write_repository(path, RepositoryOptions(output=tmp / "repo_plugin", name=f"{TINY}_plugin", instances=1))


def _clients(server):
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    return (http, http.InferenceServerClient(server.http_url)), (grpc, grpc.InferenceServerClient(server.grpc_url))


def _infer(module, client, model, feeds, outputs):
    from tritonclient.utils import np_to_triton_dtype

    tensors = []
    for name, array in feeds.items():
        t = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        t.set_data_from_numpy(array)
        tensors.append(t)
    result = client.infer(model, tensors)
    return {n: result.as_numpy(n) for n in outputs}


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_carafe_model_over_http_and_grpc_matches_pytorch(served):
    model = served["tiny"]
    x = np.random.default_rng(1).uniform(-2, 2, (3, 3, 21, 34)).astype(np.float32)
    with torch.no_grad():
        ref32 = model(torch.from_numpy(x)).numpy()
        ref64 = copy.deepcopy(model).double()(torch.from_numpy(x).double()).numpy()
    got = {}
    for module, client in _clients(served["server"]):
        with client:
            got[module.__name__] = _infer(module, client, f"{TINY}_python", {"image": x}, ["logits"])["logits"]
    http, grpc = got["tritonclient.http"], got["tritonclient.grpc"]
    assert http.shape == ref32.shape and http.dtype == np.float32
    np.testing.assert_array_equal(http, grpc)
    diff32, diff64 = float(np.abs(http - ref32).max()), float(np.abs(http - ref64).max())
    scale = float(np.abs(ref64).max())
    print(f"\n{TINY} {x.shape} -> {http.shape} via Triton (HTTP == gRPC bitwise): max |diff| vs PyTorch fp32 "
          f"{diff32:.3e}, vs PyTorch fp64 {diff64:.3e} (max |ref| {scale:.3f})")
    np.testing.assert_allclose(http, ref32, rtol=1e-4, atol=1e-5)  # the generic task's fp32 tolerance
    assert diff64 <= 1e-5 * max(scale, 1.0)


def test_plugin_form_with_the_custom_op_library(served):
    """The plugin form (carafe::CARAFE nodes, no function) in Triton's Python backend, computed by the custom-op
    library copied into the repository; the ONNX Runtime backend's config names the same library
    (model_operations), which this Triton cannot load (no ONNX Runtime backend): parsed, not run."""
    from support.ort_library import library_or_skip

    from carafe_deploy.serving.config import read_config

    library_or_skip()
    repo = served["repos"][f"{TINY}_plugin"]
    folder = repo.path / f"{TINY}_plugin_python" / "1"
    model = onnx.load(folder / "model.onnx")
    assert not model.functions and any(n.domain == "carafe" for n in model.graph.node)
    assert (folder / "libcarafe_ort.so").is_file()
    ort_config = read_config(repo.path / f"{TINY}_plugin_onnxruntime")
    assert list(ort_config.model_operations.op_library_filename) == [
        str(repo.path.resolve() / f"{TINY}_plugin_onnxruntime" / "1" / "libcarafe_ort.so")]
    x = np.random.default_rng(2).uniform(-2, 2, (2, 3, 19, 30)).astype(np.float32)
    with torch.no_grad():
        ref = served["tiny"](torch.from_numpy(x)).numpy()
    (http, client), _ = _clients(served["server"])
    with client:
        got = _infer(http, client, f"{TINY}_plugin_python", {"image": x}, ["logits"])["logits"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_malformed_requests_get_triton_errors_and_the_server_keeps_serving(served):
    from tritonclient.utils import InferenceServerException

    m = f"{TINY}_python"
    good = np.ones((1, 3, 8, 8), np.float32)
    cases = [
        ({"image": np.ones((1, 5, 8, 8), np.float32)}, f"unexpected shape for input 'image' for model '{m}'. "
                                                        "Expected [-1,3,-1,-1], got [1,5,8,8]"),
        ({"image": good.astype(np.float64)}, f"inference input 'image' data-type is 'FP64', but model '{m}' expects "
                                             "'FP32'"),
        ({"x": good}, f"unexpected inference input 'x' for model '{m}'"),
        ({"image": np.ones((9, 3, 8, 8), np.float32)}, f"inference request batch-size must be <= 8 for '{m}'"),
        ({"image": np.ones((1, 3, 0, 0), np.float32)}, "ONNXRuntimeError"),  # reaches the model: its own message
    ]
    for module, client in _clients(served["server"]):
        with client:
            for feeds, message in cases:
                with pytest.raises(InferenceServerException) as err:
                    _infer(module, client, m, feeds, ["logits"])
                assert message in err.value.message(), (module.__name__, err.value.message())
            with pytest.raises(InferenceServerException, match="Request for unknown model: 'nosuch' is not found"):
                _infer(module, client, "nosuch", {"image": good}, ["logits"])
            out = _infer(module, client, m, {"image": good}, ["logits"])["logits"]
            with torch.no_grad():
                np.testing.assert_allclose(out, served["tiny"](torch.from_numpy(good)).numpy(), rtol=1e-4, atol=1e-5)
            assert client.is_server_live() and client.is_model_ready(m)
    assert served["server"].alive()


def test_bounded_load_with_dynamic_batching(served):
    from carafe_deploy.serving.load import run_load

    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    result = run_load(served["server"].http_url, f"{TINY}_python", {"image": x}, clients=8, seconds=4.0)
    print("\n" + result.summary())
    assert result.failures == 0, result.first_error
    assert result.requests > 0
    assert any(size > 1 for size in result.batches), f"no batch larger than 1 formed: {result.batches}"
    assert sum(size * n for size, n in result.batches.items()) == result.requests  # every request in one batch


def _seg_images():
    from carafe_deploy.tasks.synthetic_shapes import make_set

    square, _ = make_set(1, 64, seed=5)
    wide, _ = make_set(1, 80, seed=6)
    return [square[0], np.ascontiguousarray(wide[0][:56])]  # 64x64 and 56x80: the graph takes any size


def test_segmenter_ensemble_serves_the_pipelines_label_map(served):
    from carafe_deploy import imaging
    from carafe_deploy.backends import OnnxrtRunner
    from carafe_deploy.models.segmenters import normalize_image
    from carafe_deploy.tasks.segmentation import logits_parity

    server, model = served["server"], served["seg"]
    for pixels in _seg_images():
        png = _png(pixels)
        served_maps = []
        for module, client in _clients(server):
            with client:
                out = _infer(module, client, f"{SEG}_segment", {"IMAGE": np.array([png], dtype=object)},
                             ["LABEL_MAP"])
                served_maps.append(out["LABEL_MAP"])
                logits = _infer(module, client, f"{SEG}_python",
                                {"image": imaging.segmentation_input(Image.open(io.BytesIO(png)))}, ["logits"])
        assert served_maps[0].shape == pixels.shape[:2] and served_maps[0].dtype == np.int64
        np.testing.assert_array_equal(served_maps[0], served_maps[1])
        # the pipeline's own: imaging's input, ONNX Runtime here, imaging's label map
        with OnnxrtRunner(str(served["seg_onnx"])) as runner:
            own = runner.infer({"image": imaging.segmentation_input(Image.fromarray(pixels))})["logits"]
        own_agree = float((imaging.label_map(own)[0] == served_maps[0]).mean())
        # PyTorch, normalizing with the model's own torch function
        with torch.no_grad():
            ref = model(normalize_image(torch.from_numpy(pixels).permute(2, 0, 1)[None].float())).numpy()
        torch_agree = float((ref.argmax(1)[0] == served_maps[0]).mean())
        p = logits_parity(ref, logits["logits"])
        print(f"\n{SEG} (tiny) {pixels.shape[:2]}: served LABEL_MAP vs pipeline (ONNX Runtime here) {own_agree:.2%}, "
              f"vs PyTorch argmax {torch_agree:.2%}; served logits vs PyTorch max |diff| {p['max_abs']:.3e}, "
              f"max rel {p['max_rel']:.3e}")
        assert own_agree == 1.0
        assert torch_agree >= 0.999 and p["max_rel"] <= 1e-4  # the segmentation task's fp32 thresholds


def test_detection_ensemble_is_the_pipelines_detect(served):
    """On the stand-in detector graphs (the detectors' interface, not their network): image bytes in, the served
    DETS / LABELS / MASKS equal carafe_deploy.tasks.detection.detect() on the same graph in ONNX Runtime here."""
    from carafe_deploy.backends import OnnxrtRunner
    from carafe_deploy.tasks.detection import detect

    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (150, 220, 3), dtype=np.uint8)
    png = _png(pixels)
    image = Image.fromarray(pixels)
    for name, canvas in (("standin_det", None), ("standin_fixed", (96, 128))):
        outputs = ["DETS", "LABELS"] + (["MASKS"] if canvas is None else [])
        got = []
        for module, client in _clients(served["server"]):
            with client:
                got.append(_infer(module, client, f"{name}_detect", {"IMAGE": np.array([png], dtype=object)},
                                  outputs))
        for key in outputs:
            np.testing.assert_array_equal(got[0][key], got[1][key])
        src = served["repos"][name].path / f"{name}_python" / "1" / "model.onnx"
        own = detect(OnnxrtRunner(str(src)), image)
        np.testing.assert_allclose(got[0]["DETS"], own["dets"], rtol=1e-6, atol=1e-4)
        np.testing.assert_array_equal(got[0]["LABELS"], own["labels"])
        if canvas is None:
            np.testing.assert_allclose(got[0]["MASKS"], own["masks"], rtol=1e-6, atol=1e-7)
        # independently: mmdet's keep-ratio rule (or the canvas fit), then the boxes back in the image's pixels
        h, w = pixels.shape[:2]
        f = min(1333 / max(h, w), 800 / min(h, w)) if canvas is None else min(canvas[1] / w, canvas[0] / h)
        rw, rh = (int(w * f + 0.5), int(h * f + 0.5)) if canvas is None else (canvas[1], canvas[0])
        boxes = BOX_FRACTIONS * np.array([rw, rh, rw, rh], np.float32) / f
        boxes = np.stack([boxes[:, 0].clip(0, w), boxes[:, 1].clip(0, h), boxes[:, 2].clip(0, w),
                          boxes[:, 3].clip(0, h)], 1)
        np.testing.assert_allclose(got[0]["DETS"][:, :4], boxes, rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(got[0]["LABELS"], LABELS[0])
        print(f"\n{name}_detect {pixels.shape[:2]} -> DETS {got[0]['DETS'].shape}: max |Δ| vs detect() "
              f"{np.abs(got[0]['DETS'] - own['dets']).max():.2e}")


def test_bad_image_bytes_fail_that_request_only(served):
    from tritonclient.utils import InferenceServerException

    (module, client), _ = _clients(served["server"])
    with client:
        with pytest.raises(InferenceServerException, match=r"cannot decode image \(11 bytes\)"):
            _infer(module, client, f"{SEG}_segment", {"IMAGE": np.array([b"not a png!!"], dtype=object)},
                   ["LABEL_MAP"])
        out = _infer(module, client, f"{SEG}_segment", {"IMAGE": np.array([_png(_seg_images()[0])], dtype=object)},
                     ["LABEL_MAP"])
        assert out["LABEL_MAP"].shape == (64, 64)


def _post(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"{}"), timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_onnxruntime_and_tensorrt_configs_parse_and_reach_the_backend_lookup(served):
    """This server has neither backend: their configs parse (a config that does not parse fails differently, shown
    with a broken copy) and the server stops at the missing backend library, exactly as follows."""
    base = f"http://{served['server'].http_url}/v2/repository/models"
    for model, backend in ((f"{TINY}_onnxruntime", "onnxruntime"), (f"{TINY}_tensorrt", "tensorrt")):
        status, body = _post(f"{base}/{model}/load")
        assert status == 400
        assert json.loads(body)["error"] == (
            f"load failed for model '{model}': version 1 is at UNAVAILABLE state: Invalid argument: unable to find "
            f"backend library for backend '{backend}', try specifying runtime on the model configuration.;\n")
    index = {m["name"]: m for m in served["server"].models()}
    assert index[f"{TINY}_tensorrt"]["state"] == "UNAVAILABLE"
    assert served["server"].alive()


def test_a_config_that_does_not_parse_fails_before_the_backend_lookup(triton_install, tmp_path):
    from carafe_deploy.serving import TritonServer

    bad = tmp_path / "bad_onnxruntime"
    (bad / "1").mkdir(parents=True)
    (bad / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
                                      'input { name: "x" data_type: TYPE_FOO dims: 3 }\n')
    with TritonServer(tmp_path, install=triton_install, models=[]) as server:
        status, body = _post(f"http://{server.http_url}/v2/repository/models/bad_onnxruntime/load")
        log = server.log_path.read_text()
    assert (status, json.loads(body)) == (500, {"error": "failed to load 'bad_onnxruntime', failed to poll from "
                                                         "model repository"})
    assert 'Unknown enumeration value of "TYPE_FOO" for field "data_type"' in log


def test_a_taken_port_is_a_clear_error(triton_install, tmp_path):
    import socket

    from carafe_deploy.errors import DeployError
    from carafe_deploy.serving import TritonServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # one line, before the server starts (Triton would say it in its log only)
        with pytest.raises(DeployError, match=rf"^the HTTP port {port} cannot be used on 127.0.0.1 \(Address already "
                                              r"in use; another server\?\): choose another port$"):
            TritonServer(tmp_path, install=triton_install, models=[], http_port=port).start()


def test_a_python_model_without_model_py_is_refused_before_the_server_starts(triton_install, tmp_path):
    from carafe_deploy.errors import DeployError
    from carafe_deploy.serving import TritonServer

    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 0\n')
    with pytest.raises(DeployError, match=r"Python model\(s\) m lack a version folder with model.py"):
        TritonServer(tmp_path, install=triton_install).start()


def test_serve_command_starts_prints_the_endpoints_and_stops_on_ctrl_c(served, triton_install):
    from carafe_deploy.serving.server import free_ports

    http, grpc, metrics = free_ports(3)
    env = {**os.environ, "CARAFE_DEPLOY_TRITON_ENV": str(triton_install.env)}
    repo = served["repos"][TINY].path
    proc = subprocess.Popen([sys.executable, "-m", "carafe_deploy", "serve", str(repo), "--load-model", f"{TINY}_python",
                             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=at_a_terminal)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops the server." in line:
                break
        text = "".join(lines)
        assert "Ctrl-C stops the server." in text, text
        assert f"HTTP     http://127.0.0.1:{http}" in text and f"gRPC     127.0.0.1:{grpc}" in text
        assert f"metrics  http://127.0.0.1:{metrics}/metrics" in text and "READY" in text
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/{TINY}_python/ready", timeout=10) as r:
            assert r.status == 200
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        print(f"\ncarafe-deploy serve: stopped {time.perf_counter() - t0:.1f} s after SIGINT")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, text + rest
    assert "stopped (exit status 0)" in rest
    with pytest.raises(OSError):  # the port is closed again
        urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/live", timeout=2)
