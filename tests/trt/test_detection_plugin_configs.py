"""The detection plugins' machine-readable contracts (MultiLevelRoIAlign_PluginConfig.yaml, BatchedNMS_PluginConfig.yaml)
against the other places that state parts of them: the ONNX schemas (carafe_deploy/onnx/detection_nodes.py), the
creators' field lists (fieldNames() in the plugin sources) and the limits (the params headers)."""

import re

import onnx.defs
import pytest
import yaml

from carafe_deploy.onnx.detection_nodes import NODE_TYPES
from support import REPO

PLUGINS = REPO / "plugins" / "tensorrt"
CASES = {
    "MultiLevelRoIAlign": (PLUGINS / "multiLevelRoIAlignPlugin", "multiLevelRoIAlignPlugin.cpp", "roiAlignParams.h"),
    "BatchedNMS": (PLUGINS / "batchedNMSPlugin", "batchedNMSPlugin.cpp", "batchedNMSParams.h"),
}
KINDS = {"INT32": "int32", "FLOAT32": "float32", "CHAR": "char"}


def _config(name):
    folder = CASES[name][0]
    (doc,) = yaml.safe_load_all((folder / f"{name}_PluginConfig.yaml").read_text())
    return doc


@pytest.mark.parametrize("name", list(CASES))
def test_the_onnx_schema_says_the_same(name):
    config = _config(name)
    v1 = config["versions"]["1"]
    assert config["onnx_node"] == f"carafe::{name}" and config["namespace"] == "" and name in NODE_TYPES
    schema = onnx.defs.get_schema(name, 1, "carafe")
    assert [i.name for i in schema.inputs] == v1["inputs"]
    assert [o.name for o in schema.outputs] == v1["outputs"]
    assert sorted(schema.attributes) == sorted(v1["attributes"])
    assert sorted(n for n, a in schema.attributes.items() if a.required) == sorted(v1["attributes_required"])
    for attr, default in v1["attribute_defaults"].items():
        value = onnx.helper.get_attribute_value(schema.attributes[attr].default_value)
        assert (value.decode() if isinstance(value, bytes) else value) == default, attr
    floats = {"tensor(float)": "float32", "tensor(float16)": "float16"}
    t = next(c for c in schema.type_constraints if c.type_param_str == "T")
    assert sorted(floats[x] for x in t.allowed_type_strs) == sorted(v1["input_types"])


@pytest.mark.parametrize("name", list(CASES))
def test_the_creator_declares_these_fields(name):
    folder, source, _ = CASES[name]
    v1 = _config(name)["versions"]["1"]
    text = (folder / source).read_text()
    body = text[text.index("::fieldNames()"):]
    body = body[: body.index("}")]
    fields = re.findall(r'PluginField\("(\w+)", nullptr, PluginFieldType::k(\w+), (\d+)\)', body)
    assert sorted((n, KINDS[k], int(length)) for n, k, length in fields) == sorted(
        (a, v1["attribute_types"][a], v1["attribute_length"][a]) for a in v1["attributes"])


def test_the_limits_are_the_native_ones():
    def constant(header, name):
        text = (CASES[header][0] / CASES[header][2]).read_text()
        return eval(re.search(rf"constexpr int32_t {name} = ([^;]+);", text).group(1), {})  # "1 << 20": Python too

    roi = _config("MultiLevelRoIAlign")["versions"]["1"]["attribute_options"]
    assert roi["output_height"]["max"] == roi["output_width"]["max"] == constant("MultiLevelRoIAlign", "kMaxOutputSize")
    assert roi["sampling_ratio"]["max"] == constant("MultiLevelRoIAlign", "kMaxSamplingRatio")
    assert roi["featmap_strides"]["max_count"] == constant("MultiLevelRoIAlign", "kMaxLevels")
    assert roi["coordinate_transformation_mode"] == ["half_pixel", "output_half_pixel"]
    nms = _config("BatchedNMS")["versions"]["1"]["attribute_options"]
    assert nms["max_per_image"]["max"] == constant("BatchedNMS", "kMaxPerImage")

