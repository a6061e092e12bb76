"""``carafe-deploy convert``: every form to every other, old opsets raised, files without CARAFE unchanged, and the
usual one-line errors. Results are checked against the float64 loop reference in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from carafe_deploy.cli import main
from support.onnx_graphs import random_case, rel_err, single_node_model
from support.reference import carafe_reference

CASE = (1, 4, 5, 7, 3, 2, 2)  # n, c, h, w, k, group, s


def _plugin_file(tmp_path, mode="up", opset=11, mmcv=False):
    n, c, h, w, k, g, s = CASE
    model = single_node_model(k, g, s, mode, opset=opset, function=False)
    model.ir_version = 6
    if mmcv:  # as mmcv's symbolic writes it: group_size, float scale_factor
        (node,) = model.graph.node
        node.domain, node.op_type = "mmcv", "MMCVCARAFE"
        del node.attribute[:]
        node.attribute.extend([helper.make_attribute("kernel_size", k), helper.make_attribute("group_size", g),
                               helper.make_attribute("scale_factor", float(s))])
        del model.opset_import[:]
        model.opset_import.extend([helper.make_opsetid("", opset), helper.make_opsetid("mmcv", 1)])
    path = tmp_path / f"in_{mode}_{opset}{'_mmcv' if mmcv else ''}.onnx"
    onnx.save(model, path)
    return path


def _ort_matches_reference(path, mode):
    n, c, h, w, k, g, s = CASE
    x, kern = random_case(n, c, h, w, k, g, s, mode)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"features": x, "kernels": kern})[0]
    return rel_err(y, carafe_reference(x.astype(np.float64), kern.astype(np.float64), k, g, s, mode))


@pytest.mark.parametrize("mode", ["up", "down"])
@pytest.mark.parametrize("form", ["portable", "decomposed"])
def test_opset11_plugin_file_to_runnable_form(tmp_path, capsys, mode, form):
    src, out = _plugin_file(tmp_path, mode), tmp_path / "out.onnx"
    assert main(["convert", str(src), "--to", form, "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "ONNX opset 11 -> 15" in err and "IR version 9" in err
    model = onnx.load(out)
    assert model.ir_version == 9
    assert next(i.version for i in model.opset_import if i.domain == "") == 15
    assert bool([n for n in model.graph.node if n.domain == "carafe"]) == (form == "portable")
    assert _ort_matches_reference(out, mode) < 1e-5


def test_mmcv_file_round_trip(tmp_path):
    src = _plugin_file(tmp_path, mmcv=True)
    portable, back, again = tmp_path / "p.onnx", tmp_path / "m.onnx", tmp_path / "p2.onnx"
    assert main(["convert", str(src), "--to", "portable", "-o", str(portable)]) == 0
    assert _ort_matches_reference(portable, "up") < 1e-5
    assert main(["convert", str(portable), "--to", "mmcv", "-o", str(back)]) == 0
    (node,) = onnx.load(back).graph.node
    assert (node.domain, node.op_type) == ("mmcv", "MMCVCARAFE")
    assert {a.name: helper.get_attribute_value(a) for a in node.attribute} == \
        {"kernel_size": 3, "group_size": 2, "scale_factor": 2.0}
    assert not onnx.load(back).functions
    assert main(["convert", str(back), "--to", "plugin", "-o", str(again)]) == 0
    (node,) = onnx.load(again).graph.node
    assert (node.domain, node.op_type) == ("carafe", "CARAFE") and not onnx.load(again).functions


def test_opset_option_and_portable_to_plugin(tmp_path):
    src, mid, out = _plugin_file(tmp_path, "down", opset=17), tmp_path / "p.onnx", tmp_path / "q.onnx"
    assert main(["convert", str(src), "--to", "portable", "--opset", "18", "-o", str(mid)]) == 0
    m = onnx.load(mid)
    assert [(i.domain, i.version) for i in m.opset_import if i.domain == ""] == [("", 18)]
    assert [(f.name, f.opset_import[0].version) for f in m.functions] == [("CARAFE", 18)]
    assert main(["convert", str(mid), "--to", "plugin", "-o", str(out)]) == 0
    assert not onnx.load(out).functions


def test_graph_without_carafe_passes_through(tmp_path, capsys):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", 1, [2])], [helper.make_tensor_value_info("y", 1, [2])])
    src, out = tmp_path / "relu.onnx", tmp_path / "out.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7), src)
    assert main(["convert", str(src), "--to", "portable", "-o", str(out)]) == 0
    assert "the model is unchanged" in capsys.readouterr().err
    assert onnx.load(out) == onnx.load(src)


def test_errors_are_one_line(tmp_path, capsys):
    src = _plugin_file(tmp_path, "down")
    assert main(["convert", str(src), "--to", "mmcv", "-o", str(tmp_path / "m.onnx")]) == 1
    assert "only up-samples" in capsys.readouterr().err
    assert main(["convert", str(src), "--to", "portable", "-o", str(src)]) == 1
    assert "would overwrite an input" in capsys.readouterr().err
    assert main(["convert", str(src), "--to", "portable", "--opset", "13", "-o", str(tmp_path / "o.onnx")]) == 1
    assert "needs ONNX opset >= 15" in capsys.readouterr().err
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert main(["convert", str(tmp_path / "junk.onnx"), "--to", "plugin", "-o", str(tmp_path / "o.onnx")]) == 1
    assert "not a readable ONNX model" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()


def test_bad_node_is_named(tmp_path, capsys):
    model = single_node_model(3, 1, 2, "up", function=False)
    next(a for a in model.graph.node[0].attribute if a.name == "kernel_size").i = 4  # even
    onnx.save(model, tmp_path / "bad.onnx")
    assert main(["convert", str(tmp_path / "bad.onnx"), "--to", "portable", "-o", str(tmp_path / "o.onnx")]) == 1
    assert "kernel_size must be an odd int >= 1, got 4" in capsys.readouterr().err
