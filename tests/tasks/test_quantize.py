"""carafe_deploy.tasks.quantize: INT8 with explicit Q/DQ, where every CARAFE node stays float between a
DequantizeLinear and a QuantizeLinear and its kernels are never quantized (their sum measured in the written file),
calibration through the task's preprocessing, the plugin form, the file in ONNX Runtime (1.32, and 1.16 where
CARAFE_DEPLOY_ORT_LOWER_PYTHON names one), and TensorRT-RTX engines from it, with and without the plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from carafe_deploy.backends.onnxrt import run_onnxruntime, tensor_values
from carafe_deploy.errors import DeployError
from carafe_deploy.imaging import fit_to_canvas, image_tensor, segmentation_input
from carafe_deploy.nn import CARAFEDownsample, CARAFEUpsample
from carafe_deploy.onnx import carafe_nodes, export, to_portable
from carafe_deploy.onnx.files import save_model
from carafe_deploy.onnx.quantized import carafe_placements, qdq_counts, quantized_precision
from carafe_deploy.tasks.calibration import CalibrationData, InputSpec
from carafe_deploy.tasks.quantize import QuantizeOptions, quantize
from carafe_deploy.trt import tensorrt_available
from support.reference import carafe_reference

QUIET = dict(progress=False)
SHAPE = (1, 3, 12, 10)


class Net(torch.nn.Module):
    """conv -> CARAFE++ down -> conv -> CARAFE up -> conv: each CARAFE between INT8 layers."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, c, 3, padding=1)
        self.down = CARAFEDownsample(c, compressed_channels=8)
        self.mid = torch.nn.Conv2d(c, c, 3, padding=1)
        self.up = CARAFEUpsample(c, compressed_channels=8)
        self.head = torch.nn.Conv2d(c, 4, 1)

    def forward(self, image):
        x = torch.relu(self.stem(image))
        x = torch.relu(self.mid(self.down(x)))
        return self.head(self.up(x))


def _export(path, mode="portable", task=None, fp16=False):
    torch.manual_seed(0)
    model = Net().eval()
    proto = export(model, (torch.randn(2, 3, 12, 10),), None, mode=mode, input_names=["image"], output_names=["out"],
                   dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}}, fp16=fp16)
    if task:
        onnx.helper.set_model_props(proto, {"carafe_deploy.task": task})
    return save_model(proto, path), model


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    folder = tmp_path_factory.mktemp("q")
    src, model = _export(folder / "net.onnx")
    report = quantize(QuantizeOptions(src, calibration_random=8, input_shapes=[SHAPE], **QUIET), log=lambda _m: None)
    return src, folder / "net_int8.onnx", report, model


def _carafe_io(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str, str, str]]:
    return [(n, n.input[0], n.input[1], n.output[0]) for n in carafe_nodes(model)]


def test_every_carafe_node_is_float_between_dq_and_q(quantized):
    _, out, report, _ = quantized
    model = onnx.load(str(out))
    assert quantized_precision(model) == "int8" and report["precision"] == "int8"
    assert report["int8_layers"]["Conv"] >= 3 and qdq_counts(model)["QuantizeLinear"] > 0
    placements = carafe_placements(model)
    assert len(placements) == 2
    for p in placements:  # the features are an INT8 conv's input too; an INT8 conv reads the output
        assert (p.features, p.output, p.kernels) == ("dequantized", "quantized", "float"), p
        assert p.softmax is not None and p.kernels_sum_kept
    assert [c["kernels_sum_kept"] for c in report["carafe"]] == [True, True]
    # the CARAFE node's own inputs and output are float tensors (no integer type reaches it)
    producers = {o: n for n in model.graph.node for o in n.output}
    for node, feats, _, _ in _carafe_io(model):
        assert producers[feats].op_type == "DequantizeLinear"


def test_kernels_keep_their_sum_and_carafe_computes_in_float(quantized):
    """Measured in the written file: each pixel's k² kernel weights sum to 1 (float rounding), and each CARAFE
    output is the float64 reference on the (dequantized) features and kernels the node received."""
    _, out, _, _ = quantized
    model = onnx.load(str(out))
    x = np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)
    names = [t for _, f, k, o in _carafe_io(model) for t in (f, k, o)]
    values = tensor_values(model, {"image": x}, names)
    for node, feats, kerns, output in _carafe_io(model):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        k, g = attrs["kernel_size"], attrs.get("group", 1)
        kv = values[kerns]
        sums = kv.reshape(kv.shape[0], g, k * k, *kv.shape[2:]).astype(np.float64).sum(2)
        assert np.abs(sums - 1).max() <= 1e-5
        mode = attrs.get("mode", b"up")
        want = carafe_reference(values[feats], kv, k, g, attrs.get("scale_factor", 2),
                                mode.decode() if isinstance(mode, bytes) else mode)
        assert np.abs(values[output] - want).max() <= 1e-5 * np.abs(want).max()


def test_quantized_kernels_would_be_caught(quantized):
    """The measurement above can fail: ONNX Runtime's quantizer with its defaults (every op type it knows, Softmax
    included) rounds the kernels to INT8 steps, and their sums leave 1 by far more than float rounding."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    src, _, _, _ = quantized
    feeds = iter([{"image": np.random.default_rng(i).standard_normal(SHAPE).astype(np.float32)} for i in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    default = src.with_name("default_int8.onnx")
    quantize_static(str(src), str(default), Reader(), quant_format=QuantFormat.QDQ)
    model = onnx.load(str(default))
    assert not all(p.kernels_sum_kept for p in carafe_placements(model))
    kerns = [k for _, _, k, _ in _carafe_io(model)]
    values = tensor_values(model, {"image": np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)}, kerns)
    worst = max(np.abs(v.reshape(v.shape[0], 1, -1, *v.shape[2:]).astype(np.float64).sum(2) - 1).max()
                for v in values.values())
    assert worst > 1e-3


_RUN = """
import sys
import numpy as np
import onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
np.save(sys.argv[3], s.run(None, {"image": np.load(sys.argv[2])})[0])
"""


def _run_in(python: str, path, x, tmp_path) -> np.ndarray:
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([python, "-c", _RUN, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.load(tmp_path / "y.npy")


def test_the_file_runs_in_onnxruntime_with_every_optimization(quantized, tmp_path):
    """A child process (an abort would not pass for a failure of this test only) with ONNX Runtime's defaults; the
    INT8 output stays near the fp32 model's (an element-wise limit says little for INT8: the tasks' checks are in
    tests/cli/test_quantize.py)."""
    src, out, _, model = quantized
    x = np.random.default_rng(7).standard_normal((2, 3, 16, 14)).astype(np.float32)  # another size than calibrated
    got = _run_in(sys.executable, out, x, tmp_path)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 0.1 * np.abs(want).max()
    lower = os.environ.get("CARAFE_DEPLOY_ORT_LOWER_PYTHON")
    if lower:  # the oldest ONNX Runtime the files are for (IR version 9)
        assert onnx.load(str(out)).ir_version == 9
        old = _run_in(lower, out, x, tmp_path)
        assert np.abs(old - want).max() <= 0.1 * np.abs(want).max()
        # the two runtimes fuse Q/DQ into integer kernels differently: values one rounding step apart here and there
        assert np.abs(old - got).max() <= 1e-2 * np.abs(got).max()


def test_plugin_form_in_plugin_form_out(tmp_path, quantized):
    """A plugin file is calibrated through the function and written back as plugin nodes; with the function put
    back it is the portable file's quantization, node for node."""
    _, portable_int8, _, _ = quantized
    src, _ = _export(tmp_path / "net_plugin.onnx", mode="plugin")
    report = quantize(QuantizeOptions(src, calibration_random=8, input_shapes=[SHAPE], **QUIET), log=lambda _m: None)
    out = onnx.load(report["output"])
    assert report["form"] == "plugin" and not out.functions and len(carafe_nodes(out)) == 2
    assert all(p.kernels_sum_kept and p.features == "dequantized" for p in carafe_placements(out))
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    np.testing.assert_allclose(run_onnxruntime(to_portable(out), {"image": x})["out"],
                               run_onnxruntime(str(portable_int8), {"image": x})["out"], rtol=1e-5, atol=1e-6)


def test_op_types_that_reach_the_kernels_leave_them_float(tmp_path):
    """Softmax, DepthToSpace and Reshape asked for in INT8: the nodes on the kernels' way are left out anyway."""
    src, _ = _export(tmp_path / "net.onnx")
    report = quantize(QuantizeOptions(src, calibration_random=4, input_shapes=[SHAPE],
                                      op_types=("Conv", "Softmax", "DepthToSpace", "Reshape", "Transpose"), **QUIET),
                      log=lambda _m: None)
    assert all(c["kernels_sum_kept"] for c in report["carafe"])
    assert any(name.startswith("node_softmax") or "softmax" in name for name in report["excluded"])


# ------------------------------------------------------------------------------------------------------------------
# calibration data


def _images(folder, sizes):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return sorted(folder.glob("*.png"))


def test_segmentation_images_through_their_preprocessing(tmp_path):
    files = _images(tmp_path / "img", [(20, 30), (12, 10)])
    dynamic = CalibrationData("segmentation", [InputSpec("image", (None, 3, None, None))], images=files)
    feeds = list(dynamic)
    assert len(feeds) == 2
    for feed, f in zip(feeds, files):  # a dynamic segmenter: each image at its own size, normalised
        with Image.open(f) as img:
            np.testing.assert_array_equal(feed["image"], segmentation_input(img.convert("RGB")))
    fixed = list(CalibrationData("segmentation", [InputSpec("image", (2, 3, 16, 16))], images=files))
    assert len(fixed) == 1 and fixed[0]["image"].shape == (2, 3, 16, 16)  # a fixed batch of 2: both images, resized
    with pytest.raises(DeployError, match="takes batches of 3 images; --calibration-images has 2"):
        CalibrationData("segmentation", [InputSpec("image", (3, 3, 16, 16))], images=files)


def test_detection_images_fitted_into_a_fixed_canvas(tmp_path):
    files = _images(tmp_path / "img", [(20, 30)])
    (feed,) = CalibrationData("detection", [InputSpec("image", (1, 3, 32, 32))], images=files)
    with Image.open(files[0]) as img:
        canvas, _ = fit_to_canvas(img.convert("RGB"), 32, 32)
    np.testing.assert_array_equal(feed["image"], image_tensor(canvas))  # 0..255, padded with the mean colour


def test_random_calibration_of_a_generic_model_needs_its_dynamic_dims():
    data = CalibrationData("generic", [InputSpec("x", (None, 4, None, None))], random=3)
    with pytest.raises(DeployError, match="--input-shape"):
        list(data)
    data = CalibrationData("generic", [InputSpec("x", (None, 4, None, None))], random=3, input_shapes=[(2, 4, 5, 6)])
    assert [f["x"].shape for f in data] == [(2, 4, 5, 6)] * 3


def test_quantize_from_an_image_folder(tmp_path):
    src, _ = _export(tmp_path / "seg.onnx", task="segmentation")
    files = _images(tmp_path / "img", [(12, 10), (16, 14), (12, 12)])
    report = quantize(QuantizeOptions(src, calibration_images=files[0].parent, calibration_count=2, **QUIET),
                      log=lambda _m: None)
    assert report["task"] == "segmentation" and report["calibration"]["count"] == 2
    assert "2 image(s)" in report["calibration"]["source"]
    meta = {p.key: p.value for p in onnx.load(report["output"]).metadata_props}
    assert meta["carafe_deploy.task"] == "segmentation" and json.loads(meta["carafe_deploy.quantization"])["precision"] == "int8"


@pytest.mark.parametrize("case, words", [
    ("no_data", "give the calibration data"),
    ("both", "give the calibration data"),
    ("fp16", "is a fp16 file; quantize the fp32 export"),
    ("quantized", "is already quantized (int8"),
    ("same_output", "would overwrite an input"),
    ("unknown_exclude", "--exclude names no node of the model: nope"),
    ("generic_images", "names no task family"),
    ("empty_folder", "holds no images"),
    ("bad_method", "unknown calibration method 'kl'"),
])
def test_clear_errors(tmp_path, quantized, case, words):
    src, int8, _, _ = quantized
    folder = tmp_path / "empty"
    folder.mkdir()
    opts = dict(calibration_random=2, input_shapes=[SHAPE], **QUIET)
    if case == "no_data":
        opts.pop("calibration_random")
    elif case == "both":
        opts["calibration_images"] = folder
    elif case == "fp16":
        src, _ = _export(tmp_path / "half.onnx", fp16=True)
    elif case == "quantized":
        src = int8
    elif case == "same_output":
        opts["output"] = src
    elif case == "unknown_exclude":
        opts["exclude"] = ("nope",)
    elif case == "generic_images":
        opts.pop("calibration_random")
        _images(tmp_path / "img", [(8, 8)])
        opts["calibration_images"] = tmp_path / "img"
    elif case == "empty_folder":
        opts.pop("calibration_random")
        opts["calibration_images"] = folder
        opts["task"] = "segmentation"
    elif case == "bad_method":
        opts["method"] = "kl"
    with pytest.raises((DeployError, ValueError), match=words.replace("(", r"\(")):
        quantize(QuantizeOptions(src, output=opts.pop("output", tmp_path / "o.onnx"), **opts), log=lambda _m: None)
    assert not (tmp_path / "o.onnx").exists()


# ------------------------------------------------------------------------------------------------------------------
# TensorRT-RTX engines from the quantized file (built without a GPU; none can run here)

RTX = pytest.mark.skipif(not tensorrt_available("tensorrt-rtx"),
                         reason="TensorRT-RTX is not installed (pip install -e '.[test]' installs it)")
PROFILE = {"min_shapes": {"image": (1, 3, 8, 8)}, "opt_shapes": {"image": SHAPE}, "max_shapes": {"image": (2, 3, 32, 32)}}


@pytest.mark.tensorrt
@RTX
def test_unrolled_int8_engine(quantized, tmp_path):
    from carafe_deploy.trt.builder import BuildOptions, build_engine

    _, out, _, _ = quantized
    result = build_engine(BuildOptions(onnx_path=out, engine_path=tmp_path / "int8.engine", use_plugin=False,
                                       backend="tensorrt-rtx", progress=False, **PROFILE))
    side = result.sidecar
    assert result.engine_path.read_bytes()[:4] == b"vtrt"
    assert side["graph"]["carafe_form"] == "unrolled" and side["precision"]["mode"] == "int8"
    assert side["precision"]["strongly_typed"] and side["inputs"][0]["dtype"] == "float32"


@pytest.mark.tensorrt
@RTX
def test_plugin_int8_engine(quantized, tmp_path):
    """DequantizeLinear -> CARAFE plugin (float) -> QuantizeLinear, strongly typed. In a child process that starts
    with the libtensorrt_rtx.so link on LD_LIBRARY_PATH (plugins/tensorrt/README.md)."""
    from carafe_deploy.trt import rtx
    from carafe_deploy.trt.plugin import plugin_library
    from carafe_deploy.trt.runtime import import_tensorrt

    lib = plugin_library(required=False)
    if lib is None:
        pytest.skip("libcarafe_trt_plugin.so is not built here (it needs the TensorRT headers, which CI does not "
                    "have): cmake -S . -B build/trt -DTensorRT_INCLUDE_DIR=<TensorRT 11 include>")
    src, _ = _export(tmp_path / "net_plugin.onnx", mode="plugin")
    report = quantize(QuantizeOptions(src, calibration_random=4, input_shapes=[SHAPE], **QUIET), log=lambda _m: None)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / rtx.CORE_LIBRARY).symlink_to(rtx._parser_folder(import_tensorrt("tensorrt-rtx")) / f"{rtx.CORE_LIBRARY}.1")
    code = f"""
        import json
        from carafe_deploy.trt.builder import BuildOptions, build_engine
        r = build_engine(BuildOptions(onnx_path={report['output']!r}, plugin_path={str(lib)!r}, backend="tensorrt-rtx",
                                      progress=False, **{PROFILE!r}))
        print(json.dumps(r.sidecar))
        """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LD_LIBRARY_PATH": str(shim)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    side = json.loads(proc.stdout.strip().splitlines()[-1])
    assert side["graph"]["carafe_form"] == "plugin" and side["plugin"]["used"] and side["precision"]["mode"] == "int8"
    engine = (tmp_path / "net_plugin_int8.engine").read_bytes()
    assert engine[:4] == b"vtrt" and b"CARAFE" in engine
