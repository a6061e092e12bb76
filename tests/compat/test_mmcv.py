"""carafe_deploy.compat.mmcv: code written for mmcv's CARAFE (it imports the mmcv names) runs on this project's op
and exports as carafe::CARAFE -- with mmcv absent, with an mmcv that has no compiled ops, and (not replaced) with a
whole mmcv. Each case runs in its own process, as a user's script would; mmcv's presence is played by stand-in
packages (tests/support writes them; named so). "mmcv absent" hides any installed mmcv (mmcv-lite, from the mm
extra) with sys.modules["mmcv"] = None, as an environment without it would be."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from support import REPO

# A user's script written for mmcv: only mmcv's names, mmcv's test vectors, then a plain export.
USER_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    sys.path[:0] = [p for p in sys.argv[3:]]  # where a (stand-in) mmcv is installed, if any
    if len(sys.argv) == 3:
        sys.modules["mmcv"] = None  # mmcv absent, even where mmcv-lite is installed
    import numpy as np, torch
    import carafe_deploy.compat.mmcv as compat
    from mmcv.ops.carafe import carafe, carafe_naive, CARAFE, CARAFENaive, CARAFEPack, CARAFEFunction
    from mmcv.ops import CARAFEPack as ops_pack
    report = {"state": compat.MMCV_STATE, "same_pack": ops_pack is CARAFEPack}
    d, out_dir = sys.argv[1], sys.argv[2]
    feat = torch.from_numpy(np.fromfile(d + "/carafe_feat.bin", np.float32).reshape(2, 64, 3, 3))
    mask = torch.from_numpy(np.fromfile(d + "/carafe_mask.bin", np.float32).reshape(2, 100, 6, 6))
    expected = np.fromfile(d + "/carafe_output.bin", np.float32).reshape(2, 64, 6, 6)
    outs = {"carafe": carafe(feat, mask, 5, 4, 2), "carafe_naive": carafe_naive(feat, mask, 5, 4, 2),
            "CARAFE": CARAFE(5, 4, 2)(feat, mask), "CARAFENaive": CARAFENaive(5, 4, 2)(feat, mask),
            "CARAFEFunction.apply": CARAFEFunction.apply(feat, mask, 5, 4, 2)}
    report["vector_err"] = {k: float(np.abs(v.numpy() - expected).max()) for k, v in outs.items()}
    torch.manual_seed(0)
    pack = CARAFEPack(16, 2, compressed_channels=8).eval()
    report["state_dict"] = sorted(pack.state_dict())
    torch.nn.init.normal_(pack.content_encoder.weight, std=0.5)
    x = torch.randn(1, 16, 5, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(pack, (x,), out_dir + "/pack.onnx", dynamo=False, opset_version=11, input_names=["x"])
    import onnx, onnxruntime as ort
    from carafe_deploy.onnx.convert import convert
    written = onnx.load(out_dir + "/pack.onnx")
    report["nodes"] = [f"{n.domain}::{n.op_type}" for n in written.graph.node if n.domain]
    portable = convert(written, "portable").model
    y = ort.InferenceSession(portable.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy()})[0]
    ref = pack(x).detach().numpy()
    report["export_rel_err"] = float(np.abs(y - ref).max() / np.abs(ref).max())
    import mmcv
    report["mmcv_stand_in_of_ours"] = bool(getattr(mmcv, "__carafe_deploy__", False))
    try:
        import mmcv.ops
        mmcv.ops.nms
    except AttributeError as exc:
        report["other_op"] = str(exc)
    else:
        report["other_op"] = "available"
    if len(sys.argv) > 3:
        import mmcv.cnn  # the real package's pure-Python parts stay importable
        report["mmcv_cnn"] = mmcv.cnn.MARK
        from mmcv.ops.carafe import carafe as theirs
        report["their_carafe_is_ours"] = theirs is compat.carafe
    print(json.dumps(report))
    """
)


def _stand_in_mmcv(root, whole: bool):
    """A stand-in mmcv package: a pure-Python part (mmcv.cnn) and an mmcv.ops that, like mmcv-lite's, fails to
    import without the compiled mmcv._ext -- or, with ``whole``, an _ext and its own mmcv.ops.carafe."""
    pkg = root / "mmcv"
    (pkg / "cnn").mkdir(parents=True)
    (pkg / "ops").mkdir()
    (pkg / "__init__.py").write_text("__version__ = '2.2.0'  # stand-in for tests\n")
    (pkg / "cnn" / "__init__.py").write_text("MARK = 'stand-in mmcv.cnn'\n")
    if whole:
        (pkg / "_ext.py").write_text("")
        (pkg / "ops" / "__init__.py").write_text("from .carafe import carafe, CARAFEPack\n")
        (pkg / "ops" / "carafe.py").write_text("def carafe(*args):\n    return \"mmcv's own\"\n\n"
                                               "class CARAFEPack:\n    pass\n")
    else:
        (pkg / "ops" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'mmcv._ext'\")\n")
    return root


def _run_user_script(mmcv_vectors_dir, tmp_path, *extra_path):
    proc = subprocess.run([sys.executable, "-c", USER_SCRIPT, str(mmcv_vectors_dir), str(tmp_path), *map(str, extra_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_ours(report):
    assert report["same_pack"]
    assert max(report["vector_err"].values()) <= 1e-5, report["vector_err"]
    # an mmcv/mmdet checkpoint's keys
    assert report["state_dict"] == ["channel_compressor.bias", "channel_compressor.weight", "content_encoder.bias",
                                    "content_encoder.weight"]
    assert report["nodes"] == ["carafe::CARAFE"]
    assert report["export_rel_err"] < 1e-5
    assert "carafe_deploy.compat.mmcv provides only the CARAFE ops" in report["other_op"]


def test_mmcv_absent(mmcv_vectors_dir, tmp_path):
    report = _run_user_script(mmcv_vectors_dir, tmp_path)
    assert report["state"] == "absent" and report["mmcv_stand_in_of_ours"]
    _check_ours(report)
    assert "mmcv is not installed" in report["other_op"]


def test_mmcv_without_compiled_ops(mmcv_vectors_dir, tmp_path):
    report = _run_user_script(mmcv_vectors_dir, tmp_path, _stand_in_mmcv(tmp_path / "site", whole=False))
    assert report["state"] == "no-ops" and not report["mmcv_stand_in_of_ours"]
    _check_ours(report)
    assert "without its compiled ops" in report["other_op"]
    assert report["mmcv_cnn"] == "stand-in mmcv.cnn" and report["their_carafe_is_ours"]


def test_whole_mmcv_is_left_alone(tmp_path):
    site = _stand_in_mmcv(tmp_path / "site", whole=True)
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "import carafe_deploy.compat.mmcv as compat, torch\n"
            "from mmcv.ops.carafe import carafe as theirs\n"
            "assert compat.MMCV_STATE == 'whole', compat.MMCV_STATE\n"
            "assert theirs() == \"mmcv's own\"\n"
            "x = torch.rand(1, 4, 3, 3); m = torch.softmax(torch.rand(1, 9, 6, 6), 1)\n"
            "assert compat.carafe(x, m, 3, 1, 2).shape == (1, 4, 6, 6)\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code, str(site)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_in_process_names_and_errors():
    import torch

    from carafe_deploy.compat import mmcv as compat

    with pytest.raises(TypeError, match="kernel_size must be an int"):
        compat.CARAFE(5.0, 1, 2)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        compat.CARAFENaive(5, 0, 2)
    pack = compat.CARAFEPack(8, 2, compressed_channels=4)
    calls = []

    class Traced(compat.CARAFEPack):  # mmcv code overrides feature_reassemble
        def feature_reassemble(self, x, mask):
            calls.append(mask.shape)
            return super().feature_reassemble(x, mask)

    traced = Traced(8, 2, compressed_channels=4)
    traced.load_state_dict(pack.state_dict())
    x = torch.randn(1, 8, 4, 5)
    assert torch.equal(traced(x), pack(x)) and calls == [torch.Size([1, 25, 8, 10])]
