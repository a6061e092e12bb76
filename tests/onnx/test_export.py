"""carafe_deploy.onnx.export in its three modes, on an up module, a down module and a network mixing both: structure,
checker and shape inference, ONNX Runtime (and the reference evaluator for plugin files) against PyTorch, dynamic and
odd sizes, fp16, the TorchScript fallback, and errors."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn

from carafe_deploy.models.tiny import TinyCarafeNet
from carafe_deploy.errors import DeployError
from carafe_deploy.nn import CARAFEDownsample, CARAFEUpsample
from carafe_deploy.onnx import carafe_nodes, export, to_decomposed, to_portable
from support.onnx_graphs import CarafeReferenceOp, rel_err

MODES = ("plugin", "portable", "decomposed")
DYNAMIC = {"image": {0: "N", 2: "H", 3: "W"}}


def _sharpen(model: nn.Module) -> nn.Module:
    # The modules start with near-uniform kernels (encoder std 0.001); random ones make the comparison meaningful.
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (CARAFEUpsample, CARAFEDownsample)):
            m.content_encoder.weight.data = torch.randn(m.content_encoder.weight.shape, generator=gen) * 0.3
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=gen)
            m.running_var.uniform_(0.5, 1.5, generator=gen)
    return model.eval()


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "up":
        return _sharpen(CARAFEUpsample(8, scale_factor=2, up_kernel=5, up_group=2, compressed_channels=4))
    if name == "down":
        return _sharpen(CARAFEDownsample(8, scale_factor=2, kernel_size=3, group=2, compressed_channels=4))
    return _sharpen(TinyCarafeNet(channels=8))


# (model name) -> (attrs of each CARAFE node in graph order), input channels
EXPECTED_NODES = {
    "up": ([dict(kernel_size=5, group=2, scale_factor=2, mode="up")], 8),
    "down": ([dict(kernel_size=3, group=2, scale_factor=2, mode="down")], 8),
    "mixed": ([dict(kernel_size=5, group=1, scale_factor=2, mode="down"),
               dict(kernel_size=5, group=1, scale_factor=2, mode="up")], 3),
}

_CACHE: dict = {}


def _exported(name: str, mode: str):
    if (name, mode) not in _CACHE:
        if name != "mixed" and mode != "plugin":
            # export() is plugin export + this post-processing; the mixed network goes through export() in every
            # mode, the single modules derive the other modes from their plugin export to save test time.
            model, plugin = _exported(name, "plugin")
            proto = (to_portable if mode == "portable" else to_decomposed)(copy.deepcopy(plugin))
        else:
            model = _build(name)
            channels = EXPECTED_NODES[name][1]
            x = torch.randn(1, channels, 10, 12)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                proto = export(model, (x,), None, mode=mode, input_names=["image"], output_names=["out"],
                               dynamic_axes=DYNAMIC)
            assert not [w for w in caught if "TorchScript exporter" in str(w.message)]  # the default exporter did it
        _CACHE[name, mode] = (model, proto)
    return _CACHE[name, mode]


def _torch(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _sizes(name):
    c = EXPECTED_NODES[name][1]
    rng = np.random.default_rng(3)
    # the export size, then another batch and odd sizes (ceil for "down")
    return [rng.standard_normal(s).astype(np.float32) for s in [(1, c, 10, 12), (2, c, 11, 7)]]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["up", "down", "mixed"])
def test_structure_checker_and_shape_inference(name, mode):
    _, proto = _exported(name, mode)
    expected, _ = EXPECTED_NODES[name]
    nodes = carafe_nodes(proto)
    imports = {i.domain: i.version for i in proto.opset_import}
    carafe_functions = [f for f in proto.functions if f.domain == "carafe"]
    if mode == "decomposed":
        assert nodes == [] and "carafe" not in imports and carafe_functions == []
        assert any(n.op_type == "Loop" for n in proto.graph.node)
    else:
        assert imports["carafe"] == 1
        got = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
        assert [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.items()} for g in got] == expected
        if mode == "plugin":
            assert carafe_functions == []
        else:
            assert [(f.name, list(f.attribute), [a.name for a in f.attribute_proto]) for f in carafe_functions] == [
                ("CARAFE", ["kernel_size"], ["group", "scale_factor", "mode"])  # the last three with defaults
            ]
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    shapes = {v.name: v.type.tensor_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for node in carafe_nodes(inferred):
        out = shapes[node.output[0]]
        assert out.elem_type == onnx.TensorProto.FLOAT and len(out.shape.dim) == 4
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "N" and dims[2] == "H" and dims[3] == "W"
    assert len(shapes["out"].shape.dim) == 4


@pytest.mark.parametrize("mode", ["portable", "decomposed"])
@pytest.mark.parametrize("name", ["up", "down", "mixed"])
def test_onnxruntime_matches_pytorch_at_dynamic_sizes(name, mode):
    model, proto = _exported(name, mode)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in _sizes(name):
        y = sess.run(None, {"image": x})[0]
        expected = _torch(model, x)
        assert y.shape == expected.shape
        assert rel_err(y, expected) <= 1e-5


@pytest.mark.parametrize("name", ["up", "down", "mixed"])
def test_plugin_graph_wiring_with_a_reference_carafe_kernel(name):
    # No runtime here has the plugin; onnx.reference with the float64 loop CARAFE checks everything around the nodes.
    model, proto = _exported(name, "plugin")
    evaluator = ReferenceEvaluator(proto, new_ops=[CarafeReferenceOp])
    x = _sizes(name)[1]
    assert rel_err(evaluator.run(None, {"image": x})[0], _torch(model, x)) <= 1e-5


@pytest.mark.parametrize("mode", ["portable", "decomposed"])
def test_fp16_weights_and_compute_checked_with_the_reference_evaluator(mode):
    model = _build("mixed")
    x = torch.randn(1, 3, 9, 13)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proto = export(model, (x,), None, mode=mode, fp16=True, input_names=["image"], output_names=["out"],
                       dynamic_axes=DYNAMIC)
    assert not [w for w in caught if "TorchScript exporter" in str(w.message)]
    float_inits = [i for i in proto.graph.initializer if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert float_inits and all(i.data_type == onnx.TensorProto.FLOAT16 for i in float_inits)
    # float32 in and out, with casts
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    if mode == "portable":
        nodes = carafe_nodes(inferred)
        assert len(nodes) == 2
        assert all(types[n.input[0]] == types[n.input[1]] == types[n.output[0]] == onnx.TensorProto.FLOAT16
                   for n in nodes)
    else:
        muls = [n for n in inferred.graph.node if n.op_type == "Conv"]
        assert all(types[n.output[0]] == onnx.TensorProto.FLOAT16 for n in muls)
    xs = np.random.default_rng(5).standard_normal((2, 3, 11, 7)).astype(np.float32)
    y = ReferenceEvaluator(proto).run(None, {"image": xs})[0]
    expected = _torch(model, xs)  # float32 PyTorch
    assert y.dtype == np.float32
    err = rel_err(y, expected)
    assert 0 < err <= 5e-3  # float16 rounding shows (so fp16 really ran), and stays small


def test_no_carafe_in_the_model_is_fine():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    for mode in MODES:
        proto = export(model, x, None, mode=mode)
        assert "carafe" not in {i.domain for i in proto.opset_import} and not proto.functions
    y = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {
        proto.graph.input[0].name: x.numpy()})[0]
    assert rel_err(y, _torch(model, x.numpy())) <= 1e-6


def test_other_opset_and_file_written(tmp_path):
    model = _build("up")
    x = torch.randn(1, 8, 6, 5)
    path = tmp_path / "up.onnx"
    export(model, (x,), path, mode="portable", opset=20)
    proto = onnx.load(path)
    assert {i.domain: i.version for i in proto.opset_import}[""] == 20
    assert {i.domain: i.version for i in proto.functions[0].opset_import}[""] == 20
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {
        proto.graph.input[0].name: x.numpy()})[0]
    assert rel_err(y, _torch(model, x.numpy())) <= 1e-5


def test_torchscript_module_falls_back_to_the_torchscript_exporter():
    model = _build("mixed")
    x = torch.randn(1, 3, 10, 12)
    traced = torch.jit.trace(model, (x,), check_trace=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proto = export(traced, (x,), None, mode="portable", input_names=["image"])
    assert any("trying the TorchScript exporter" in str(w.message) for w in caught)
    assert len(carafe_nodes(proto)) == 2
    onnx.checker.check_model(proto, full_check=True)
    y = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {
        "image": x.numpy()})[0]
    assert rel_err(y, _torch(model, x.numpy())) <= 1e-5


def test_exported_program(tmp_path):
    model = _build("down")
    x = torch.randn(1, 8, 9, 7)
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "down.pt2")
    program = torch.export.load(tmp_path / "down.pt2")
    proto = export(program, (x,), None, mode="decomposed")
    y = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {
        proto.graph.input[0].name: x.numpy()})[0]
    assert rel_err(y, _torch(model, x.numpy())) <= 1e-5


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(mode="tensorrt"), ValueError, "unknown export mode 'tensorrt'"),
        (dict(opset=11), ValueError, "opset 11 is not supported"),
        (dict(opset=99), ValueError, "opset 99 is not supported"),
        (dict(opset="18"), TypeError, "opset must be an int"),
    ],
)
def test_bad_arguments(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        export(_build("up"), torch.randn(1, 8, 4, 4), None, **kwargs)


def test_unwritable_paths(tmp_path):
    model, x = _build("up"), torch.randn(1, 8, 4, 4)
    with pytest.raises(DeployError, match="does not exist"):
        export(model, x, tmp_path / "missing" / "m.onnx")
    with pytest.raises(DeployError, match="is a directory"):
        export(model, x, tmp_path)
    with pytest.raises(TypeError, match="path must be"):
        export(model, x, 42)
    with pytest.raises(TypeError, match="model must be"):
        export("model.pt", x, None)
    with pytest.raises(TypeError, match="args must be"):
        export(model, [x], None)
