"""A user's own torch.onnx.export (issue 12): after `import carafe_deploy`, both exporters at opsets 11/17/18 and
their default write carafe::CARAFE nodes, and `convert --to portable` makes every one of those files run in ONNX
Runtime, matching PyTorch to 1e-5 relative. Registration does not depend on import or call order."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

import carafe_deploy  # noqa: F401  -- all a user imports
from carafe_deploy.nn import CARAFEDownsample, CARAFEUpsample
from carafe_deploy.onnx.convert import convert
from carafe_deploy.onnx.function import MIN_OPSET
from carafe_deploy.onnx.opsets import ORT_LOWEST_MAX_OPSET, lowest_opset
from support import REPO, tools
from support.onnx_graphs import rel_err


class UserNet(torch.nn.Module):
    """A model a user writes: CARAFE++ down (group 2) and CARAFE up, odd input sizes."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.down = CARAFEDownsample(8, kernel_size=3, group=2, compressed_channels=4)
        self.up = CARAFEUpsample(8, up_kernel=5, compressed_channels=4)
        self.head = torch.nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.up(self.down(self.stem(x))))


@pytest.fixture(scope="module")
def user_net():
    torch.manual_seed(0)
    model = UserNet().eval()
    for m in (model.down, model.up):  # kernels far from uniform, so a wrong tap shows
        torch.nn.init.normal_(m.content_encoder.weight, std=0.5)
    x = torch.randn(1, 3, 13, 18)
    with torch.no_grad():
        ref = model(x).numpy()
    return model, x, ref


def _plain_export(model, x, path, dynamo: bool, opset):
    kwargs = {} if opset is None else {"opset_version": opset}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own deprecation / opset notes
        torch.onnx.export(model, (x,), str(path), dynamo=dynamo, input_names=["x"], output_names=["y"], **kwargs)
    return onnx.load(str(path))


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("opset", [11, 17, 18, None], ids=["opset11", "opset17", "opset18", "default"])
def test_plain_export_then_convert_runs_in_onnxruntime(user_net, tmp_path, dynamo, opset):
    model, x, ref = user_net
    written = _plain_export(model, x, tmp_path / "user.onnx", dynamo, opset)
    nodes = [n for n in written.graph.node if n.domain == "carafe"]
    assert [n.op_type for n in nodes] == ["CARAFE", "CARAFE"]
    assert [_attrs(n) for n in nodes] == [
        {"kernel_size": 3, "group": 2, "scale_factor": 2, "mode": b"down"},
        {"kernel_size": 5, "group": 1, "scale_factor": 2, "mode": b"up"},
    ]
    assert ("carafe", 1) in {(i.domain, i.version) for i in written.opset_import}
    written_opset = next(i.version for i in written.opset_import if i.domain == "")

    # as written: both exporters add the function where the opset allows, so ONNX Runtime runs it
    if written_opset >= MIN_OPSET:
        assert [(f.domain, f.name) for f in written.functions] == [("carafe", "CARAFE")]
        assert rel_err(_run_ort(written, x.numpy()), ref) < 1e-5
    else:
        assert not written.functions

    result = convert(written, "portable")
    portable = result.model
    assert portable.ir_version == 9
    # the lowest opset that holds the graph and the function (15), never above what ONNX Runtime 1.16 reads (19)
    out_opset = next(i.version for i in portable.opset_import if i.domain == "")
    assert out_opset == max(MIN_OPSET, lowest_opset(written) or 0) or out_opset == MIN_OPSET
    assert MIN_OPSET <= out_opset <= min(max(written_opset, MIN_OPSET), ORT_LOWEST_MAX_OPSET)
    assert any(f"opset {written_opset} -> {out_opset}" in note for note in result.notes) == (written_opset != out_opset)
    onnx.checker.check_model(portable, full_check=True)
    assert rel_err(_run_ort(portable, x.numpy()), ref) < 1e-5


TORCHSCRIPT_OPSETS = list(range(11, 21))
DYNAMO_OPSETS = [11, 18, 19, 20, 21, 22, 23]  # dynamo writes 18 at least: 11 stands for every lower request


@pytest.mark.parametrize("dynamo, opset", [(False, o) for o in TORCHSCRIPT_OPSETS] + [(True, o) for o in DYNAMO_OPSETS],
                         ids=lambda v: {False: "torchscript", True: "dynamo"}.get(v, f"opset{v}"))
def test_plain_export_runs_in_onnxruntime_as_written_at_every_opset(user_net, tmp_path, dynamo, opset):
    """Every opset from 11: the file as written runs in a plain ONNX Runtime session where its opset holds the
    function; below that the export warns naming what runs it, and it runs with the custom-op library (which is
    also what carafe-deploy's own sessions do with such a file)."""
    from support.ort_library import library_or_skip

    from carafe_deploy.backends.onnxrt import make_session

    model, x, ref = user_net
    path = tmp_path / "user.onnx"
    kwargs = {"opset_version": opset}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(model, (x,), str(path), dynamo=dynamo, input_names=["x"], output_names=["y"], **kwargs)
    written = onnx.load(str(path))
    written_opset = next(i.version for i in written.opset_import if i.domain == "")
    ours = [str(w.message) for w in caught if str(w.message).startswith("carafe_deploy")]
    if written_opset >= MIN_OPSET:
        assert not ours and [(f.domain, f.name) for f in written.functions] == [("carafe", "CARAFE")]
        assert rel_err(_run_ort(written, x.numpy()), ref) < 1e-5
        return
    assert not written.functions
    assert len(ours) <= 1 and all("carafe-deploy convert FILE.onnx --to portable" in w and "library_path()" in w
                                  for w in ours)
    with pytest.raises(Exception, match="carafe:CARAFE"):
        _run_ort(written, x.numpy())
    library_or_skip()
    session = make_session(written)
    assert rel_err(session.run(None, {"x": x.numpy()})[0], ref) < 1e-5


def test_low_opset_torchscript_export_warns(user_net, tmp_path):
    from carafe_deploy.onnx import symbolic

    model, x, _ = user_net
    symbolic._warned_opsets.discard(12)
    with pytest.warns(UserWarning, match=r"opset 12 cannot hold the standard-op function .* --to portable"):
        torch.onnx.export(model, (x,), str(tmp_path / "u.onnx"), dynamo=False, opset_version=12)


def test_carafe_deploy_export_leaves_plain_exports_alone(user_net, tmp_path):
    """carafe_deploy.onnx.export (either exporter inside) registers nothing per opset: a plain TorchScript export
    at another opset afterwards writes the same nodes as before."""
    from carafe_deploy.onnx import export

    model, x, _ = user_net
    before = _plain_export(model, x, tmp_path / "a.onnx", False, 16)
    export(model, (x,), tmp_path / "ours.onnx", opset=18)
    after = _plain_export(model, x, tmp_path / "b.onnx", False, 16)
    assert [_attrs(n) for n in before.graph.node if n.domain == "carafe"] == \
        [_attrs(n) for n in after.graph.node if n.domain == "carafe"]
    assert len(after.functions) == len(before.functions) == 1


_ORDER_SCRIPT = """
import sys, warnings
{first}
import torch
from carafe_deploy.nn import CARAFEUpsample
assert "onnx" not in sys.modules or "{first}" != "import carafe_deploy", "import carafe_deploy pulled in onnx"
m = CARAFEUpsample(4, compressed_channels=4).eval()
x = torch.randn(1, 4, 5, 6)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.onnx.export(m, (x,), sys.argv[1] + "/ts.onnx", dynamo=False, opset_version=13)
    torch.onnx.export(m, (x,), sys.argv[1] + "/dy.onnx", dynamo=True)
import onnx
for name in ("ts", "dy"):
    p = onnx.load(sys.argv[1] + "/" + name + ".onnx")
    assert [n.op_type for n in p.graph.node if n.domain == "carafe"] == ["CARAFE"], name
print("ok")
"""


@pytest.mark.parametrize("first", [
    "import carafe_deploy",  # before torch: the import hook registers after torch, torch.onnx, onnxscript load
    "import torch, torch.onnx, onnxscript.function_libs.torch_lib.registration; import carafe_deploy",  # after
], ids=["package-first", "torch-first"])
def test_registration_does_not_depend_on_import_order(tmp_path, first):
    proc = subprocess.run([sys.executable, "-c", _ORDER_SCRIPT.format(first=first), str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_package_import_stays_light():
    code = ("import sys, carafe_deploy\n"
            "heavy = [m for m in ('torch', 'onnx', 'onnxscript') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert any(type(f).__name__ == '_AfterImportFinder' for f in sys.meta_path)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


_LOWER_SCRIPT = """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[1])
for path in sys.argv[2:]:
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.save(path + ".npy", y)
print("onnxruntime", ort.__version__)
"""


@pytest.mark.skipif(not __import__("os").environ.get("CARAFE_DEPLOY_ORT_LOWER_PYTHON"),
                    reason="set CARAFE_DEPLOY_ORT_LOWER_PYTHON to a Python with onnxruntime 1.16 (.ci/run makes one)")
def test_convert_output_of_plain_exports_runs_in_onnxruntime_1_16(user_net, tmp_path):
    """convert writes IR 9 at the lowest opset that holds the graph: dynamo files (opset 20, 23) and an opset-11
    TorchScript file come out as files ONNX Runtime 1.16 runs, as portable and as decomposed."""
    import os

    model, x, ref = user_net
    paths = []
    for dynamo, opset in ((True, 20), (True, 23), (False, 11)):
        written = _plain_export(model, x, tmp_path / f"in_{opset}.onnx", dynamo, opset)
        for form in ("portable", "decomposed"):
            out = convert(written, form).model
            assert out.ir_version == 9
            assert next(i.version for i in out.opset_import if i.domain == "") <= ORT_LOWEST_MAX_OPSET
            path = tmp_path / f"{form}_{opset}.onnx"
            onnx.save(out, path)
            paths.append(path)
    np.save(tmp_path / "x.npy", x.numpy())
    proc = subprocess.run([os.environ["CARAFE_DEPLOY_ORT_LOWER_PYTHON"], "-c", _LOWER_SCRIPT, str(tmp_path / "x.npy"),
                           *map(str, paths)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("onnxruntime 1.16")
    for path in paths:
        assert rel_err(np.load(f"{path}.npy"), ref) < 1e-5, path.name


def test_polygraphy_onnxrt_runs_a_plain_dynamo_export(user_net, tmp_path):
    """`polygraphy run FILE --onnxrt` (which takes no custom-op library) on a user's plain default export: it carries
    the function, so polygraphy's ONNX Runtime session runs it."""
    model, x, _ = user_net
    path = tmp_path / "user.onnx"
    _plain_export(model, x, path, True, None)
    proc = subprocess.run([tools.polygraphy(), "run", str(path), "--onnxrt", "--input-shapes", f"x:{list(x.shape)}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "PASSED" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
