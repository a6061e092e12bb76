"""The carafe::CARAFE schema and its standard-op function, on single-node graphs, against the float64 loop reference
and mmcv's vectors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

import carafe_deploy.onnx  # noqa: F401 -- registers the schema
from carafe_deploy.onnx import register_schema
from support.onnx_graphs import random_case, rel_err, single_node_model
from support.reference import carafe_reference

CASES = [  # n, c, h, w, k, group, s, mode
    (2, 8, 7, 9, 5, 1, 2, "up"),
    (1, 8, 4, 6, 3, 4, 3, "up"),
    (2, 6, 7, 9, 3, 2, 2, "down"),
    (1, 4, 8, 5, 5, 2, 3, "down"),
    (1, 4, 1, 5, 3, 1, 2, "down"),  # one row: down and up differ only through s
    (1, 4, 3, 4, 1, 1, 1, "up"),
    (1, 4, 3, 4, 3, 1, 1, "down"),
    (1, 2, 2, 3, 7, 1, 2, "up"),  # kernel bigger than the image
]


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_function_matches_reference_in_onnxruntime(case):
    n, c, h, w, k, g, s, mode = case
    x, kern = random_case(*case)
    expected = carafe_reference(x, kern, k, g, s, mode)
    model = single_node_model(k, g, s, mode)
    portable = _ort(model, {"features": x, "kernels": kern})
    inlined = onnx.inliner.inline_local_functions(model)
    assert not any(nd.domain == "carafe" for nd in inlined.graph.node)
    decomposed = _ort(inlined, {"features": x, "kernels": kern})
    assert portable.shape == expected.shape
    assert rel_err(portable, expected) <= 1e-6
    assert rel_err(decomposed, expected) <= 1e-6


def test_function_matches_mmcv_vectors(mmcv_vectors_dir):
    d = mmcv_vectors_dir
    feat = np.fromfile(d / "carafe_feat.bin", np.float32).reshape(2, 64, 3, 3)
    mask = np.fromfile(d / "carafe_mask.bin", np.float32).reshape(2, 100, 6, 6)
    expected = np.fromfile(d / "carafe_output.bin", np.float32).reshape(2, 64, 6, 6)
    out = _ort(single_node_model(5, 4, 2, "up"), {"features": feat, "kernels": mask})
    assert np.abs(out - expected).max() <= 1e-5


def test_function_in_the_onnx_reference_evaluator_float16():
    x, kern = random_case(1, 4, 5, 6, 3, 2, 2, "up", dtype=np.float16)
    expected = carafe_reference(x, kern, 3, 2, 2, "up")
    model = single_node_model(3, 2, 2, "up", elem_type=onnx.TensorProto.FLOAT16)
    out = ReferenceEvaluator(model).run(None, {"features": x, "kernels": kern})[0]
    assert out.dtype == np.float16
    assert rel_err(out, expected) <= 2e-3  # fp16 inputs, fp16 products and sums


def test_schema_registered_and_idempotent():
    register_schema()
    register_schema()
    schema = onnx.defs.get_schema("CARAFE", 1, "carafe")
    assert [a for a in schema.attributes] == ["group", "kernel_size", "mode", "scale_factor"] or set(
        schema.attributes
    ) == {"kernel_size", "group", "scale_factor", "mode"}
    assert schema.attributes["kernel_size"].required


@pytest.mark.parametrize(
    "k, g, s, mode, fdims, kdims, expected",
    [
        (5, 1, 2, "up", [2, 8, 7, 9], [2, 25, 14, 18], [2, 8, 14, 18]),
        (3, 2, 2, "down", [1, 6, 7, 9], [1, 18, 4, 5], [1, 6, 4, 5]),
        (3, 1, 2, "down", ["N", 6, "H", "W"], ["N", 9, "Ho", "Wo"], ["N", 6, "Ho", "Wo"]),
        (3, 1, 3, "up", ["N", 6, 5, "W"], ["N", 9, None, None], ["N", 6, 15, None]),
    ],
)
def test_strict_shape_inference_and_full_check(k, g, s, mode, fdims, kdims, expected):
    for function in (False, True):
        model = single_node_model(k, g, s, mode, function=function, dims=(fdims, kdims))
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        out = inferred.graph.output[0].type.tensor_type
        assert out.elem_type == onnx.TensorProto.FLOAT
        assert len(out.shape.dim) == 4
        for dim, want in zip(out.shape.dim, expected):
            if isinstance(want, int):
                assert dim.dim_value == want
            elif want is None:  # unknown: no value (shape inference may name it)
                assert not dim.HasField("dim_value")
            else:
                assert dim.dim_param == want


@pytest.mark.parametrize(
    "attrs, kdims, words",
    [
        ({"kernel_size": 4}, [1, 16, 8, 8], "kernel_size must be an odd"),
        ({"kernel_size": 3, "mode": "sideways"}, [1, 9, 8, 8], "mode must be one of"),
        ({"kernel_size": 3}, [1, 25, 8, 8], "group*kernel_size^2 = 9"),
        ({"kernel_size": 3, "scale_factor": 2}, [1, 9, 9, 8], "kernels height is 9"),
        ({"kernel_size": 3, "group": 3}, [1, 27, 8, 8], "divisible by group"),
    ],
)
def test_shape_inference_rejects_bad_nodes(attrs, kdims, words):
    from onnx import helper

    node = helper.make_node("CARAFE", ["x", "k"], ["y"], domain="carafe", **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", 1, [1, 4, 4, 4]), helper.make_tensor_value_info("k", 1, kdims)],
        [helper.make_tensor_value_info("y", 1, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("carafe", 1)])
    with pytest.raises(onnx.shape_inference.InferenceError, match=None) as info:
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    assert words in str(info.value)


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, onnx, onnxruntime as ort
    sys.path[:0] = [sys.argv[1], sys.argv[1] + "/.."]
    from support.onnx_graphs import single_node_model
    inline = sys.argv[2] == "decomposed"
    model = single_node_model(5, 1, 2, "up")
    if inline:
        model = onnx.inliner.inline_local_functions(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 256, 100, 168), dtype=np.float32)
    k = rng.random((1, 25, 200, 336), dtype=np.float32)
    so = ort.SessionOptions(); so.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    from carafe_deploy.bench import peak_rss_growth
    (y,), growth = peak_rss_growth(lambda: sess.run(None, {"features": x, "kernels": k}))
    print(json.dumps({"growth_mb": growth, "output_mb": y.nbytes / 2**20, "shape": y.shape}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["portable"])  # decomposed is the same body inlined: benchmarks/onnx_portable.py
def test_fpn_size_peak_memory(form, tmp_path):
    # FPN-size upsample: 256 ch, 100x168 -> 200x336, k=5. A k²-times unfold alone is 25 x 66 MB = 1.7 GB.
    from support import TESTS

    script = tmp_path / "peak.py"
    script.write_text(_PEAK_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(TESTS), form], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1, 256, 200, 336]
    # the output alone (66 MB) must show up, so the measurement is not vacuous; the unfold form would need 1.7 GB
    assert result["output_mb"] < result["growth_mb"] < 800, result


def test_nodes_without_default_attributes():
    from carafe_deploy.onnx import to_portable

    x, kern = random_case(1, 4, 5, 6, 3, 1, 2, "up")
    expected = carafe_reference(x, kern, 3, 1, 2, "up")
    model = single_node_model(3, 1, 2, "up")
    node = model.graph.node[0]
    keep = [a for a in node.attribute if a.name == "kernel_size"]
    del node.attribute[:]
    node.attribute.extend(keep)
    onnx.checker.check_model(model, full_check=True)
    # the function's attribute defaults (group=1, scale_factor=2, mode="up") apply in ONNX Runtime
    assert rel_err(_ort(model, {"features": x, "kernels": kern}), expected) <= 1e-6
    # and the export post-processing writes them onto the node for plugin creators and onnx.reference
    completed = to_portable(model)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in completed.graph.node[0].attribute}
    assert attrs == {"kernel_size": 3, "group": 1, "scale_factor": 2, "mode": b"up"}
    out = ReferenceEvaluator(completed).run(None, {"features": x, "kernels": kern})[0]
    assert rel_err(out, expected) <= 1e-6
