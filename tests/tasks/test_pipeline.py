"""The generic pipeline (element-wise parity): options, outputs that must not overwrite inputs, saved references."""

import numpy as np
import onnx
import pytest

from carafe_deploy.errors import DeployError
from carafe_deploy.tasks import CheckOptions, EngineOptions, ExportOptions, ModelSource, deploy


@pytest.fixture(scope="module")
def tiny():
    return ModelSource(model="tiny_carafe_net", tiny=True).load()


def test_generic_parity_and_reference(tiny, tmp_path):
    ref = tmp_path / "ref.npz"
    report = deploy(tiny, ExportOptions(output=tmp_path / "t.onnx", input_shapes=[(2, 3, 17, 23)]),
                    CheckOptions(save_reference=ref), log=lambda *_: None)
    (check,) = report["checks"]
    assert check["status"] == "passed" and check["details"]["outputs"][0]["max_rel"] < 1e-5
    saved = np.load(ref)
    assert sorted(saved.files) == ["input/image", "output/logits"] and saved["output/logits"].shape == (2, 4, 17, 23)
    assert report["onnx"]["dynamic"]  # the tiny net's registered axes, by default


def test_tolerance_makes_a_check_fail(tiny, tmp_path):
    report = deploy(tiny, ExportOptions(output=tmp_path / "t.onnx", input_shapes=[(1, 3, 9, 9)]),
                    CheckOptions(rtol=0.0, atol=0.0), log=lambda *_: None)
    # ONNX Runtime's float32 sums round differently from PyTorch's: bit-exact equality is not what we get
    assert report["checks"][0]["status"] == "failed" and not report["passed"]


def test_static_and_named_dynamic_axes(tiny, tmp_path):
    deploy(tiny, ExportOptions(output=tmp_path / "s.onnx", input_shapes=[(1, 3, 8, 8)], dynamic=False),
           CheckOptions(enabled=False), log=lambda *_: None)
    dims = onnx.load(str(tmp_path / "s.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 8, 8]
    with pytest.raises(DeployError, match="--dynamic names input 'x'; the inputs are image"):
        deploy(tiny, ExportOptions(output=tmp_path / "d.onnx", dynamic_axes={"x": {0: "N"}}), log=lambda *_: None)


def test_outputs_never_overwrite_inputs_or_each_other(tiny, tmp_path):
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"weights")
    with pytest.raises(DeployError, match="would overwrite an input file"):
        deploy(tiny, ExportOptions(output=ckpt), inputs=[ckpt], log=lambda *_: None)
    assert ckpt.read_bytes() == b"weights"
    with pytest.raises(DeployError, match="both write"):
        deploy(tiny, ExportOptions(output=tmp_path / "a.onnx"), CheckOptions(save_reference=tmp_path / "a.onnx"),
               log=lambda *_: None)
    with pytest.raises(DeployError, match="both write"):
        deploy(tiny, ExportOptions(output=tmp_path / "a.onnx"), engine=EngineOptions(path=tmp_path / "a.onnx"),
               log=lambda *_: None)
    assert not (tmp_path / "a.onnx").exists()
