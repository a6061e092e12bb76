"""--min/--opt/--max parsing and checking against the ONNX inputs (trtexec syntax)."""

import pytest

from carafe_deploy.trt.profiles import make_profile, parse_shape, parse_shape_specs

DYN = {"features": ["N", 4, "H", "W"], "kernels": ["N", 9, "H2", "W2"]}


def test_parse_shape_and_specs():
    assert parse_shape("1x3x224x224") == (1, 3, 224, 224)
    assert parse_shape_specs(["a:1x2,b:3x4", "c:5"]) == {"a": (1, 2), "b": (3, 4), "c": (5,)}
    assert parse_shape_specs(["scope/in:0:1x2"]) == {"scope/in:0": (1, 2)}  # name is up to the last ':'
    assert parse_shape_specs(None) == {}


@pytest.mark.parametrize("bad, match", [("1x3xAx4", "bad dimension 'a'"), ("", "empty shape"),
                                        ("1x-3", "bad dimension '-3'")])
def test_parse_shape_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_shape(bad)


def test_spec_errors():
    with pytest.raises(ValueError, match=r"--min '1x2': expected NAME:DxDxD"):
        parse_shape_specs(["1x2"], "--min")
    with pytest.raises(ValueError, match="given twice"):
        parse_shape_specs(["a:1", "a:2"])
    with pytest.raises(ValueError, match=r"--opt 'a:1xq'.*bad dimension"):
        parse_shape_specs(["a:1xq"], "--opt")


def test_full_profile():
    p = make_profile(DYN, {"features": (1, 4, 4, 4), "kernels": (1, 9, 8, 8)},
                     {"features": (2, 4, 8, 8), "kernels": (2, 9, 16, 16)},
                     {"features": (4, 4, 16, 16), "kernels": (4, 9, 32, 32)})
    assert p["features"].min == (1, 4, 4, 4) and p["features"].opt == (2, 4, 8, 8)
    assert p["kernels"].max == (4, 9, 32, 32)
    assert p["features"].contains((3, 4, 10, 10)) and not p["features"].contains((5, 4, 10, 10))
    assert not p["features"].contains((1, 4, 4))


def test_missing_bounds_are_filled_like_trtexec():
    p = make_profile(DYN, opt_shapes={"features": (2, 4, 8, 8), "kernels": (2, 9, 16, 16)})
    assert p["features"].min == p["features"].opt == p["features"].max == (2, 4, 8, 8)
    p = make_profile(DYN, min_shapes={"features": (1, 4, 4, 4), "kernels": (1, 9, 8, 8)},
                     max_shapes={"features": (2, 4, 8, 8), "kernels": (2, 9, 16, 16)})
    assert p["features"].opt == (2, 4, 8, 8)  # opt from max


def test_static_inputs_need_no_profile():
    p = make_profile({"x": [1, 3, 8, 8]})
    assert p["x"].min == p["x"].max == (1, 3, 8, 8)


@pytest.mark.parametrize("kwargs, match", [
    ({}, r"input 'features' has dynamic shape \?x4x\?x\?: give its profile .*--opt features:1x4x1x1"),
    ({"opt_shapes": {"features": (1, 4, 8), "kernels": (1, 9, 8, 8)}}, r"has rank 3.*has rank 4"),
    ({"opt_shapes": {"features": (1, 5, 8, 8), "kernels": (1, 9, 8, 8)}}, r"dimension 1 is fixed to 4"),
    ({"opt_shapes": {"features": (0, 4, 8, 8), "kernels": (1, 9, 8, 8)}}, r"dimension 0 must be >= 1"),
    ({"min_shapes": {"features": (1, 4, 8, 8)}, "opt_shapes": {"features": (1, 4, 4, 4), "kernels": (1, 9, 8, 8)}},
     r"input 'features' dimension 2: need min <= opt <= max, got 8, 4, 4"),
    ({"max_shapes": {"image": (1, 3, 8, 8)}}, r"--max: no input named 'image'; the model's inputs are features"),
])
def test_profile_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_profile(DYN, **kwargs)


def test_static_input_given_a_different_shape():
    with pytest.raises(ValueError, match="dimension 3 is fixed to 8"):
        make_profile({"x": [1, 3, 8, 8]}, opt_shapes={"x": (1, 3, 8, 9)})
