"""Every public name of mmcv's ``mmcv.ops.carafe`` (1.x and 2.x) is in carafe_deploy.compat.mmcv, and the helpers do
what mmcv's / mmengine's do: the weight-init functions (compared with mmengine's own where it is installed), the
compiled ops' CARAFE entry points (against mmcv's test vectors), the registry CARAFEPack is built from. The stand-in
``mmcv`` carries mmcv 1.x's ``mmcv.cnn`` weight-init helpers and ``mmcv.utils``' device flags."""

from __future__ import annotations

import ast
import importlib.machinery
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from carafe_deploy.compat import mmcv as compat
from support import REPO

# module-level public names of mmcv/ops/carafe.py at v1.7.2 (mmcv 1.x's last release; read from GitHub). mmcv 2.x's
# (v2.2.0) differ by MODELS in place of UPSAMPLE_LAYERS; they are read from mmcv-lite's file where it is installed.
MMCV1_NAMES = ["CARAFE", "CARAFEFunction", "CARAFENaive", "CARAFENaiveFunction", "CARAFEPack", "F", "Function",
               "Module", "Tensor", "Tuple", "UPSAMPLE_LAYERS", "carafe", "carafe_naive", "ext_loader", "ext_module",
               "nn", "normal_init", "torch", "xavier_init"]
MMCV2_NAMES = [n for n in MMCV1_NAMES if n != "UPSAMPLE_LAYERS"] + ["MODELS"]
# mmcv 1.7.2's mmcv.cnn weight-init helpers (mmcv/cnn/__init__.py __all__)
MMCV1_CNN_INIT = ["constant_init", "xavier_init", "normal_init", "trunc_normal_init", "uniform_init", "kaiming_init",
                  "caffe2_xavier_init", "bias_init_with_prob"]


def _public_names(path: Path) -> list[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return sorted(n for n in names if not n.startswith("_"))


def test_every_public_name_of_mmcv_ops_carafe():
    spec = importlib.machinery.PathFinder.find_spec("mmcv")  # an installed mmcv, never the stand-in
    installed = Path(spec.submodule_search_locations[0]) / "ops" / "carafe.py" if spec and \
        spec.submodule_search_locations else None
    mmcv2 = _public_names(installed) if installed and installed.is_file() else MMCV2_NAMES
    if installed and installed.is_file():
        assert mmcv2 == sorted(MMCV2_NAMES)  # mmcv-lite's own file says the same
    for names in (MMCV1_NAMES, mmcv2):
        missing = [n for n in names if not hasattr(compat, n)]
        assert not missing, missing
    assert compat.UPSAMPLE_LAYERS is compat.MODELS and compat.MODELS.get("carafe") is compat.CARAFEPack
    pack = compat.MODELS.build(dict(type="carafe", channels=8, scale_factor=2, compressed_channels=4))
    assert isinstance(pack, compat.CARAFEPack) and pack(torch.randn(1, 8, 3, 4)).shape == (1, 8, 6, 8)


@pytest.mark.parametrize("name", MMCV1_CNN_INIT[:-1])
def test_weight_init_helpers_match_mmengine(name):
    mmengine_model = pytest.importorskip("mmengine.model", reason="mmengine is not installed (pip install -e '.[mm]')")
    kwargs = {"constant_init": dict(val=0.3, bias=0.1), "xavier_init": dict(gain=2, bias=0.2, distribution="uniform"),
              "normal_init": dict(mean=1, std=0.5, bias=-1), "trunc_normal_init": dict(std=0.2, a=-0.1, b=0.3),
              "uniform_init": dict(a=-2, b=3, bias=4), "kaiming_init": dict(mode="fan_in", distribution="uniform"),
              "caffe2_xavier_init": dict(bias=0.5)}[name]
    results = []
    for fn in (getattr(compat_init(), name), getattr(mmengine_model, name)):
        torch.manual_seed(3)
        conv = torch.nn.Conv2d(4, 6, 3)
        fn(conv, **kwargs)
        results.append((conv.weight.detach().clone(), conv.bias.detach().clone()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert compat_init().bias_init_with_prob(0.01) == mmengine_model.bias_init_with_prob(0.01)
    with pytest.raises(ValueError, match="distribution must be"):
        compat.xavier_init(torch.nn.Conv2d(1, 1, 1), distribution="fancy")


def compat_init():
    from carafe_deploy.compat import weight_init

    return weight_init


def test_ext_module_entry_points_against_mmcv_vectors(mmcv_vectors_dir):
    d = mmcv_vectors_dir
    feat = torch.from_numpy(np.fromfile(d / "carafe_feat.bin", np.float32).reshape(2, 64, 3, 3))
    mask = torch.from_numpy(np.fromfile(d / "carafe_mask.bin", np.float32).reshape(2, 100, 6, 6))
    want = np.fromfile(d / "carafe_output.bin", np.float32).reshape(2, 64, 6, 6)
    want_gf = np.fromfile(d / "carafe_feat_grad.bin", np.float32).reshape(2, 64, 3, 3)
    want_gm = np.fromfile(d / "carafe_mask_grad.bin", np.float32).reshape(2, 100, 6, 6)
    ext = compat.ext_loader.load_ext("_ext", ["carafe_forward", "carafe_backward", "carafe_naive_forward",
                                              "carafe_naive_backward"])
    out, rfeat = torch.zeros(2, 64, 6, 6), torch.zeros_like(feat)
    ext.carafe_forward(feat, mask, rfeat, torch.zeros_like(out), torch.zeros_like(mask), out, kernel_size=5,
                       group_size=4, scale_factor=2)
    naive = torch.zeros_like(out)
    compat.ext_module.carafe_naive_forward(feat, mask, naive, kernel_size=5, group_size=4, scale_factor=2)
    for got in (out, naive):
        assert np.abs(got.numpy() - want).max() <= 1e-5
    ones = torch.ones_like(out)
    for backward, features in ((ext.carafe_backward, rfeat), (ext.carafe_naive_backward, feat)):
        gf, gm = torch.zeros_like(feat), torch.zeros_like(mask)
        if backward is ext.carafe_backward:
            backward(ones, features, mask, torch.zeros_like(out), torch.zeros_like(out), torch.zeros_like(feat),
                     torch.zeros_like(mask), gf, gm, kernel_size=5, group_size=4, scale_factor=2)
        else:
            backward(ones, features, mask, gf, gm, kernel_size=5, group_size=4, scale_factor=2)
        assert np.abs(gf.numpy() - want_gf).max() <= 1e-3 and np.abs(gm.numpy() - want_gm).max() <= 1e-3
    with pytest.raises(AttributeError, match="provides only the CARAFE functions of mmcv's compiled ops, not nms"):
        compat.ext_loader.load_ext("_ext", ["nms"])


def test_the_stand_in_carries_mmcv1_cnn_init_helpers_and_utils():
    """mmcv absent (hidden even where mmcv-lite is installed): code written for mmcv 1.x imports."""
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["mmcv"] = None
        import carafe_deploy.compat.mmcv as compat, carafe_deploy.compat.weight_init as init
        from mmcv.cnn import {", ".join(MMCV1_CNN_INIT)}, UPSAMPLE_LAYERS
        from mmcv.ops.carafe import normal_init as n2, xavier_init as x2, carafe
        from mmcv.utils import IS_CUDA_AVAILABLE, IS_MLU_AVAILABLE, IS_MPS_AVAILABLE, IS_NPU_AVAILABLE
        import mmcv.cnn
        try:
            from mmcv.cnn import ConvModule
        except ImportError as exc:
            other = str(exc)
        print(json.dumps({{"state": compat.MMCV_STATE, "same": xavier_init is init.xavier_init is x2,
                          "carafe": UPSAMPLE_LAYERS.get("carafe") is compat.CARAFEPack, "cuda": IS_CUDA_AVAILABLE,
                          "other": other}}))
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["state"] == "absent" and report["same"] and report["carafe"] and report["cuda"] is False
    assert "cannot import name 'ConvModule' from 'mmcv.cnn'" in report["other"]



def test_the_stand_in_answers_find_spec():
    """importlib.util.find_spec("mmcv") raised ValueError (``mmcv.__spec__ is None``) once the stand-in was in
    sys.modules: code asking whether mmcv is there must get an answer. In a child process where no mmcv can be
    imported (a finder refuses it, as in an environment without mmcv-lite)."""
    code = textwrap.dedent("""
        import importlib.util, sys

        class NoMmcv:
            def find_spec(self, name, path=None, target=None):
                if name == "mmcv" or name.startswith("mmcv."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, NoMmcv())
        import carafe_deploy.compat.mmcv
        for name in ("mmcv", "mmcv.ops", "mmcv.ops.carafe", "mmcv.cnn", "mmcv.utils"):
            assert importlib.util.find_spec(name) is not None, name
        assert sys.modules["mmcv"].__carafe_deploy__
        from mmcv.ops.carafe import carafe, normal_init, xavier_init
        print("ok")
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
