"""Q/DQ around CARAFE nodes in graph terms (carafe_deploy.onnx.quantized), and the portable function under a
DequantizeLinear in ONNX Runtime: onnxruntime 1.24 and 1.32 moved the DQ through the function's first Reshape and
Transpose into the tensor its Loop body reads and aborted the process (an index assertion) until the function
flattened the features first. The runs are in child processes, so that such an abort is a failed test, not a dead
pytest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from carafe_deploy.onnx import to_decomposed
from carafe_deploy.onnx.quantized import carafe_placements, kernel_path, name_unnamed_nodes, quantized_precision
from support.onnx_graphs import random_case, single_node_model
from support.reference import carafe_reference

SCALE = 0.02


def _with_qdq(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """Q -> DQ (int8, symmetric) between the graph input ``tensor`` and its readers."""
    graph = model.graph
    for node in graph.node:
        node.input[:] = [f"{tensor}_dq" if i == tensor else i for i in node.input]
    graph.initializer.extend([numpy_helper.from_array(np.array(SCALE, np.float32), f"{tensor}_scale"),
                              numpy_helper.from_array(np.array(0, np.int8), f"{tensor}_zero")])
    qdq = [helper.make_node("QuantizeLinear", [tensor, f"{tensor}_scale", f"{tensor}_zero"], [f"{tensor}_q"]),
           helper.make_node("DequantizeLinear", [f"{tensor}_q", f"{tensor}_scale", f"{tensor}_zero"],
                            [f"{tensor}_dq"])]
    nodes = qdq + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _dequantized(x: np.ndarray) -> np.ndarray:
    return (np.clip(np.round(x / SCALE), -128, 127) * SCALE).astype(np.float32)


_RUN = """
import json, sys
import numpy as np
import onnxruntime as ort
data = np.load(sys.argv[2])
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])  # default: every optimization
out = session.run(None, {"features": data["features"], "kernels": data["kernels"]})[0]
np.save(sys.argv[3], out)
print(json.dumps({"version": ort.__version__}))
"""


@pytest.mark.parametrize("form", ["portable", "decomposed"])
@pytest.mark.parametrize("mode, k, group, s", [("up", 5, 1, 2), ("up", 3, 2, 3), ("down", 3, 1, 2)])
@pytest.mark.parametrize("where", [("features",), ("features", "kernels")], ids=["dq_features", "dq_both"])
def test_dequantized_inputs_run_in_onnxruntime(tmp_path, form, mode, k, group, s, where):
    model = single_node_model(k, group, s, mode)
    model.ir_version = 9
    for tensor in where:
        _with_qdq(model, tensor)
    if form == "decomposed":
        model = to_decomposed(model)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    x, kern = random_case(1, 4, 6, 7, k, group, s, mode, seed=3)
    np.savez(tmp_path / "in.npz", features=x, kernels=kern)
    proc = subprocess.run([sys.executable, "-c", _RUN, str(path), str(tmp_path / "in.npz"), str(tmp_path / "out.npy")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]  # an abort is -6
    got = np.load(tmp_path / "out.npy")
    feats = _dequantized(x)
    kerns = _dequantized(kern) if "kernels" in where else kern
    want = carafe_reference(feats, kerns, k, group, s, mode)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def _carafe_graph(kernel_qdq: bool = False, softmax: bool = True) -> onnx.ModelProto:
    """x -> Conv -> Q/DQ -> CARAFE(features); Conv -> Softmax -> DepthToSpace -> [Q/DQ] -> CARAFE(kernels);
    CARAFE -> Q/DQ -> Conv -> y: what an INT8 CARAFEUpsample looks like."""
    n = helper.make_node
    init = [numpy_helper.from_array(np.zeros((4, 4, 1, 1), np.float32), "w1"),
            numpy_helper.from_array(np.zeros((36, 4, 3, 3), np.float32), "w_enc"),
            numpy_helper.from_array(np.zeros((4, 4, 1, 1), np.float32), "w2"),
            numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [n("Conv", ["x", "w1"], ["f"], name="conv_in"),
             n("QuantizeLinear", ["f", "s", "z"], ["f_q"], name="f_q"),
             n("DequantizeLinear", ["f_q", "s", "z"], ["f_dq"], name="f_dq"),
             n("Conv", ["f", "w_enc"], ["logits"], pads=[1, 1, 1, 1], name="encoder"),
             n("Softmax" if softmax else "Sigmoid", ["logits"], ["prob"], name="norm", **({"axis": 1} if softmax else {})),
             n("DepthToSpace", ["prob"], ["kern"], blocksize=2, name="shuffle")]
    kernels = "kern"
    if kernel_qdq:
        nodes += [n("QuantizeLinear", ["kern", "s", "z"], ["k_q"], name="k_q"),
                  n("DequantizeLinear", ["k_q", "s", "z"], ["k_dq"], name="k_dq")]
        kernels = "k_dq"
    nodes += [n("CARAFE", ["f_dq", kernels], ["up"], domain="carafe", kernel_size=3, group=1, scale_factor=2,
                mode="up", name="carafe"),
              n("QuantizeLinear", ["up", "s", "z"], ["up_q"], name="up_q"),
              n("DequantizeLinear", ["up_q", "s", "z"], ["up_dq"], name="up_dq"),
              n("Conv", ["up_dq", "w2"], ["y"], name="conv_out")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("carafe", 1)])


def test_placement_of_an_int8_carafe():
    (p,) = carafe_placements(_carafe_graph())
    assert (p.node, p.features, p.output, p.kernels, p.softmax) == ("carafe", "dequantized", "quantized", "float", "norm")
    assert p.kernel_path == ["norm", "shuffle"] and p.kernels_sum_kept
    assert quantized_precision(_carafe_graph()) == "int8"


def test_quantized_kernels_are_seen():
    (p,) = carafe_placements(_carafe_graph(kernel_qdq=True))
    assert p.kernels == "quantized" and not p.kernels_sum_kept
    assert p.kernel_path == ["norm", "shuffle", "k_q", "k_dq"] and p.quantized_on_kernel_path == ["k_q", "k_dq"]


def test_kernels_without_a_softmax_are_said_so():
    model = _carafe_graph(softmax=False)
    path, softmax = kernel_path(model, next(n for n in model.graph.node if n.op_type == "CARAFE"))
    assert softmax is None and path == ["shuffle"]  # stopped at the Sigmoid: not a normalisation it can vouch for
    (p,) = carafe_placements(model)
    assert not p.kernels_sum_kept


def test_float_files_have_no_quantized_precision():
    assert quantized_precision(single_node_model(3, 1, 2, "up")) is None
    fp8 = _carafe_graph()
    for init in fp8.graph.initializer:
        if init.name == "z":
            init.CopyFrom(helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0.0]))
    assert quantized_precision(fp8) == "fp8"


def test_unnamed_nodes_get_unique_names():
    model = _carafe_graph()
    model.graph.node[0].name = ""
    model.graph.node[3].name = ""
    model.graph.node[4].name = "Conv_0"  # a name the first would be given
    assert name_unnamed_nodes(model) == 2
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == len(names)


def test_json_of_a_placement():
    (p,) = carafe_placements(_carafe_graph())
    assert json.loads(json.dumps(p.as_dict()))["kernels_sum_kept"] is True
