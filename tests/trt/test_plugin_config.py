"""plugins/tensorrt/CARAFE_PluginConfig.yaml, the plugin's machine-readable contract, against the other places that
state parts of it: the ONNX schema (carafe_deploy/onnx/schema.py), the creators' field names and types
(carafePluginCreator.cpp) and the limits (plugins/common/carafe_params.cpp)."""

import re

import onnx.defs
import pytest
import yaml

from carafe_deploy.onnx import schema
from support import REPO

PLUGIN_DIR = REPO / "plugins" / "tensorrt"


@pytest.fixture(scope="module")
def configs():
    docs = list(yaml.safe_load_all((PLUGIN_DIR / "CARAFE_PluginConfig.yaml").read_text()))
    return {d["name"]: d for d in docs}


def _creator_fields() -> dict[str, list[tuple[str, str]]]:
    """{"carafe": [(name, type)], "mmcv": [...]} from the creator's getFieldNames list."""
    src = (PLUGIN_DIR / "carafePluginCreator.cpp").read_text()
    body = src[src.index("CarafePluginCreator::CarafePluginCreator"):src.index("IPluginV3* CarafePluginCreator::")]
    common, carafe_part, mmcv_part = re.split(r"if \(fieldSet == FieldSet::kCarafe\)|\belse\b", body, maxsplit=2)
    field = re.compile(r'emplace_back\("(\w+)", nullptr, PluginFieldType::k(\w+)')
    kinds = {"INT32": "int32", "FLOAT32": "float32", "CHAR": "char"}
    parse = lambda text: [(n, kinds[t]) for n, t in field.findall(text)]  # noqa: E731
    return {"carafe": parse(common) + parse(carafe_part), "mmcv": parse(common) + parse(mmcv_part)}


def test_the_onnx_schema_says_the_same(configs):
    v1 = configs["CARAFE"]["versions"]["1"]
    s = onnx.defs.get_schema(schema.OP_TYPE, schema.OPSET_VERSION, schema.DOMAIN)
    assert configs["CARAFE"]["onnx_node"] == f"{schema.DOMAIN}::{schema.OP_TYPE}"
    assert [i.name for i in s.inputs] == v1["inputs"] and [o.name for o in s.outputs] == v1["outputs"]
    assert sorted(s.attributes) == sorted(v1["attributes"])
    assert sorted(n for n, a in s.attributes.items() if a.required) == sorted(v1["attributes_required"])
    for name, default in v1["attribute_defaults"].items():
        value = onnx.helper.get_attribute_value(s.attributes[name].default_value)
        assert (value.decode() if isinstance(value, bytes) else value) == default, name
    assert v1["attribute_options"]["mode"] == list(schema.MODES)
    onnx_types = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16"}
    # the plugin computes the float types TensorRT has; the ONNX node also allows double (for ONNX Runtime)
    assert set(v1["input_types"]) == {onnx_types[t] for t in schema.TENSOR_TYPES if t in onnx_types}


@pytest.mark.parametrize("plugin, field_set", [("CARAFE", "carafe"), ("MMCVCARAFE", "mmcv")])
def test_the_creators_declare_these_fields(configs, plugin, field_set):
    v1 = configs[plugin]["versions"]["1"]
    assert _creator_fields()[field_set] == [(a, v1["attribute_types"][a]) for a in v1["attributes"]]


def test_the_limits_are_the_native_ones(configs):
    src = (REPO / "plugins" / "common" / "carafe_params.cpp").read_text()

    def constant(name):
        value = re.search(rf"constexpr int32_t {name} = ([^;]+);", src).group(1)
        return eval(value, {})  # "63", "1 << 16": C++ integer literals that are Python too

    for plugin, group in (("CARAFE", "group"), ("MMCVCARAFE", "group_size")):
        options = configs[plugin]["versions"]["1"]["attribute_options"]
        assert options["kernel_size"]["max"] == constant("kMaxKernelSize")
        assert options["scale_factor"]["max"] == constant("kMaxScale")
        assert options[group]["max"] == constant("kMaxGroup")


def test_the_onnx_validation_holds_the_plugin_to_the_same_limits(configs):
    from carafe_deploy.onnx.validate import PLUGIN_LIMITS

    options = configs["CARAFE"]["versions"]["1"]["attribute_options"]
    assert PLUGIN_LIMITS == {name: options[name]["max"] for name in ("kernel_size", "group", "scale_factor")}
