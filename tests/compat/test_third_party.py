"""Third-party code that uses CARAFE through mmcv, unchanged, on this project's op (tests/support/third_party_check.py
runs each in a child process and says what it found):

- mmcv's own tests/test_ops/test_carafe.py (GitHub only), against the stand-in mmcv and against mmcv-lite;
- mmdetection's FPN_CARAFE, the source PyPI's mmdet wheel ships, with mmcv-lite and mmengine installed (mmdet's
  package __init__ refuses mmcv 2.2, so the module file is loaded alone: ``mmdet`` is a bare package whose path is
  the wheel's folder, so ``import mmdet.registry`` reads that one file and nothing else of mmdet runs);
- FADE (poppinace/fade, GitHub only; ``from mmcv.ops.carafe import carafe`` and ``from mmcv.cnn import
  xavier_init``: mmcv 1.x code);
- FreqFusion (Linwei-Chen/FreqFusion, GitHub only; ``from mmcv.ops.carafe import normal_init, xavier_init, carafe``
  in a try/except that falls back to its own unfold version).

Each must import, call this project's op (``carafe_deploy::carafe`` dispatches counted), match a float64 reference
(the module in float64 with CARAFE computed by independent loops) to 1e-5, export with plain torch.onnx.export to
``carafe::CARAFE`` nodes, and run in ONNX Runtime to 1e-5. Code that only GitHub has is skipped, saying so, where it
is absent (CI); tests/support/third_party.py fetches it.
"""

from __future__ import annotations

import importlib.machinery
import json
import subprocess
import sys

import pytest

from support import REPO, TESTS, openmmlab, third_party

CHECK = TESTS / "support" / "third_party_check.py"
# an mmcv installed on sys.path (not the stand-in that an earlier test may have put in sys.modules)
MMCV_LITE = importlib.machinery.PathFinder.find_spec("mmcv") is not None


def _run(kind: str, variant: str, file, tmp_path) -> dict:
    if variant == "mmcv-lite" and not MMCV_LITE:
        pytest.skip("mmcv-lite is not installed (pip install -e '.[mm]')")
    proc = subprocess.run([sys.executable, str(CHECK), kind, variant, str(file), str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in report, report["error"]
    return report


def _github(name: str):
    path = third_party.source_file(name)
    if path is None:
        pytest.skip(third_party.skip_reason(name))
    return path


def _runs_on_our_op(report: dict, calls: int) -> None:
    assert report["imports"] == "ok" and report["ours"], report
    assert report["calls"] == calls, report  # each of its CARAFE calls is carafe_deploy::carafe
    assert report["ref_err"] <= 1e-5, report
    assert report["nodes"] == calls, report  # plain torch.onnx.export writes carafe::CARAFE
    assert report["ort_err"] <= 1e-5, report


@pytest.mark.parametrize("variant", ["stand-in", "mmcv-lite"])
def test_mmcv_own_carafe_tests(variant, tmp_path):
    report = _run("mmcv_tests", variant, _github("mmcv"), tmp_path)
    assert report["state"] == {"stand-in": "absent", "mmcv-lite": "no-ops"}[variant]
    # as it stands: it collects and runs (its CUDA/MLU comparisons skip, its gradchecks return without CUDA) ...
    assert report["pytest_exit"] == 0
    assert report["pytest"] == {"TestCarafe::test_carafe_naive_gradcheck": "passed",
                                "TestCarafe::test_carafe_gradcheck": "passed",
                                "TestCarafe::test_carafe_allclose[cuda]": "skipped",
                                "TestCarafe::test_carafe_allclose[mlu]": "skipped"}
    # ... and each of its tests on the CPU, on this project's op
    assert list(report["cpu"]) == ["test_carafe_allclose[cpu]", "test_carafe_gradcheck[cuda->cpu]",
                                   "test_carafe_naive_gradcheck[cuda->cpu]"]
    assert all(v.startswith("passed (") for v in report["cpu"].values()), report["cpu"]


def test_mmdet_fpn_carafe(tmp_path):
    openmmlab.require_mmengine()
    source = openmmlab.package("mmdet3") / "models" / "necks" / "fpn_carafe.py"
    report = _run("fpn_carafe", "mmcv-lite", source, tmp_path)
    _runs_on_our_op(report, calls=4)
    assert report["mmdet_vs_ours"] == 0.0  # mmdet's weights in this project's FPNCARAFE: the detectors' neck


@pytest.mark.parametrize("variant", ["stand-in", "mmcv-lite"])
def test_freqfusion(variant, tmp_path):
    report = _run("freqfusion", variant, _github("FreqFusion"), tmp_path)
    _runs_on_our_op(report, calls=5)  # not its unfold/reflect-padding fallback


def test_fade_on_the_stand_in(tmp_path):
    _runs_on_our_op(_run("fade", "stand-in", _github("fade"), tmp_path), calls=1)


def test_fade_with_mmcv_lite_fails_as_with_mmcv_2(tmp_path):
    """FADE is mmcv 1.x code: mmcv 2.x moved xavier_init out of mmcv.cnn (to mmengine.model), and with a real
    mmcv 2.x installed compat.mmcv leaves mmcv.cnn as it is. Recorded so that a change of either shows."""
    report = _run("fade", "mmcv-lite", _github("fade"), tmp_path)
    assert report["imports"].startswith("ImportError: cannot import name 'xavier_init' from 'mmcv.cnn'"), report
