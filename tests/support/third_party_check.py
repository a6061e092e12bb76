"""Third-party code that uses CARAFE through mmcv, run unchanged on this project's op in a child process set up as a
user's would be, printing a JSON line of what it found (tests/compat/test_third_party.py reads it):

- ``imports``: the third-party module imports (``"ok"`` or the exception);
- ``ours``: the ``carafe`` it calls is ``carafe_deploy.compat.mmcv``'s, and ``calls`` the number of
  ``carafe_deploy::carafe`` dispatches in one forward (counted by a TorchDispatchMode);
- ``ref_err``: max |float32 forward − float64 reference| / max |reference|, the reference being the module in float64
  with every CARAFE computed by the float64 loops of tests/support/reference.py (an independent implementation);
- ``nodes``: the ``carafe::CARAFE`` nodes of a plain ``torch.onnx.export`` (torch's default exporter) of the module,
  ``ort_err``: ONNX Runtime (the file converted to the portable form) against the float32 forward.

``mmcv`` is either hidden (``sys.modules['mmcv'] = None``: the stand-in package of carafe_deploy.compat.mmcv then
serves ``mmcv``, ``mmcv.ops``, ``mmcv.cnn``, ``mmcv.utils``), even where mmcv-lite is installed, or mmcv-lite itself
(the real package without compiled ops; compat supplies ``mmcv.ops``).

    python tests/support/third_party_check.py {mmcv_tests,fade,freqfusion,fpn_carafe} {stand-in,mmcv-lite} FILE OUT_DIR
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import traceback
import types
import warnings
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _setup(variant: str):
    if variant == "stand-in":
        sys.modules["mmcv"] = None  # plays "mmcv is not installed", whatever this environment has
    elif variant == "mmcv-lite":
        if importlib.util.find_spec("mmcv") is None or importlib.util.find_spec("mmcv._ext") is not None:
            return None
    else:
        raise SystemExit(f"unknown variant {variant}")
    import carafe_deploy.compat.mmcv as compat

    return compat


def _load(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _reference_carafe(features, masks, kernel_size, group_size, scale_factor):
    import torch

    sys.path.insert(0, str(TESTS))
    from support.reference import carafe_reference

    out = carafe_reference(features.detach().numpy(), masks.detach().numpy(), kernel_size, group_size, scale_factor,
                           "up")
    return torch.from_numpy(out)


class _Patched:
    """Within the block, ``holder.<name>`` is the float64 reference."""

    def __init__(self, holder, name: str):
        self.holder, self.name = holder, name

    def __enter__(self):
        self.saved = getattr(self.holder, self.name)
        setattr(self.holder, self.name, _reference_carafe)

    def __exit__(self, *exc):
        setattr(self.holder, self.name, self.saved)


def _counting():
    """A context counting the ``carafe_deploy::carafe`` dispatches inside it: ``with _counting() as n: ...``."""
    import contextlib

    from torch.utils._python_dispatch import TorchDispatchMode

    count = {"calls": 0}

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
            if func.name().startswith("carafe_deploy::carafe"):
                count["calls"] += 1
            return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def block():
        with Count():
            yield count

    return block()


def _check(module, inputs: tuple, holder, name: str, out_dir: Path) -> dict:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from carafe_deploy.onnx.convert import convert

    def flat(out):
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().double().numpy() for o in outs]

    module = module.eval()
    report = {}
    with torch.no_grad():
        with _counting() as count:
            ours = flat(module(*inputs))
        report["calls"] = count["calls"]
        with _Patched(holder, name):
            ref = flat(copy.deepcopy(module).double()(*(x.double() for x in inputs)))
    report["ref_err"] = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(ours, ref))
    path = out_dir / "plain.onnx"
    names = [f"x{i}" for i in range(len(inputs))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(path), input_names=names)  # plain: torch's default exporter
    written = onnx.load(str(path))
    report["nodes"] = sum(n.domain == "carafe" and n.op_type == "CARAFE" for n in written.graph.node)
    portable = convert(written, "portable").model
    session = ort.InferenceSession(portable.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})
    report["ort_err"] = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(got, ours))
    return report


def _far_from_uniform(module) -> None:
    """Kernel encoders far from their near-zero init, so a wrong tap or a wrong reassembly shows."""
    import torch

    torch.manual_seed(1)
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Conv2d) and "content_encoder" in name:
            torch.nn.init.normal_(m.weight, std=0.5)


def _mmcv_tests(file: Path, out_dir: Path) -> dict:
    """mmcv's tests/test_ops/test_carafe.py, unchanged: collected and run by pytest as it stands (its CUDA/MLU cases
    skip and its gradchecks return early without CUDA), then each test function called on the CPU: the comparison
    with mmcv's vectors with ``device='cpu'``, and the gradchecks with their ``device='cuda'`` tensors made on the
    CPU (a TorchFunctionMode rewrites the device; ``torch.cuda.is_available`` answers True inside)."""
    import os
    import shutil
    from unittest import mock

    import pytest
    import torch
    from torch.overrides import TorchFunctionMode

    data = out_dir / "tests" / "data" / "for_carafe"  # the relative paths mmcv's test reads, from its repo root
    data.mkdir(parents=True, exist_ok=True)
    for f in (TESTS / "data" / "mmcv_carafe").glob("carafe_*.bin"):
        shutil.copy(f, data / f.name)
    os.chdir(out_dir)

    class Outcomes:
        def __init__(self):
            self.seen = {}

        def pytest_runtest_logreport(self, report):
            if report.when == "call" or report.outcome != "passed":
                self.seen[report.nodeid.split("::", 1)[1]] = report.outcome

    outcomes = Outcomes()
    code = pytest.main([str(file), "-q", "-p", "no:cacheprovider", "--rootdir", str(out_dir),
                        "--import-mode=importlib"], plugins=[outcomes])
    result = {"pytest_exit": int(code), "pytest": outcomes.seen}

    module = _load(file, "mmcv_test_carafe")
    case = module.TestCarafe()

    class OnCPU(TorchFunctionMode):
        def __torch_function__(self, func, types_, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if str(kwargs.get("device", "")).startswith("cuda"):
                kwargs["device"] = "cpu"
            return func(*args, **kwargs)

    cpu = {}
    for name, call in [("test_carafe_allclose[cpu]", lambda: case.test_carafe_allclose("cpu")),
                       ("test_carafe_gradcheck[cuda->cpu]", case.test_carafe_gradcheck),
                       ("test_carafe_naive_gradcheck[cuda->cpu]", case.test_carafe_naive_gradcheck)]:
        try:
            with mock.patch.object(torch.cuda, "is_available", lambda: True), OnCPU(), _counting() as count:
                call()
            cpu[name] = f"passed ({count['calls']} calls of carafe_deploy::carafe)"
        except Exception as exc:  # noqa: BLE001 -- reported per test
            cpu[name] = f"failed: {type(exc).__name__}: {exc}"[:300]
    result["cpu"] = cpu
    return result


def run(kind: str, variant: str, file: Path, out_dir: Path) -> dict:
    compat = _setup(variant)
    if compat is None:
        return {"skip": "mmcv-lite is not installed here (pip install -e '.[mm]')"}
    import torch

    report = {"state": compat.MMCV_STATE}
    if kind == "mmcv_tests":
        report.update(_mmcv_tests(file, out_dir))
        return report
    try:
        if kind == "fpn_carafe":  # mmdet's package __init__ demands an mmcv version: load the module file alone
            package = types.ModuleType("mmdet")
            package.__path__ = [str(file.parents[2])]  # .../mmdet: `import mmdet.registry` reads registry.py only
            sys.modules["mmdet"] = package
            module = _load(file, "mmdet.models.necks.fpn_carafe")
        else:
            module = _load(file, {"fade": "FADE_L2H", "freqfusion": "FreqFusion"}[kind])
    except Exception as exc:  # noqa: BLE001 -- reported, not raised: the test states what failed
        report["imports"] = f"{type(exc).__name__}: {exc}"
        return report
    report["imports"] = "ok"
    torch.manual_seed(0)
    if kind == "fpn_carafe":
        import logging

        logging.getLogger("mmengine").setLevel(logging.ERROR)
        report["ours"] = sys.modules["mmcv.ops.carafe"].CARAFEPack is compat.CARAFEPack
        net = module.FPN_CARAFE([8, 16, 32, 64], 16, 5, upsample_cfg=dict(
            type="carafe", up_kernel=5, up_group=2, encoder_kernel=3, encoder_dilation=1, compressed_channels=8))
        net.init_weights()
        _far_from_uniform(net)
        inputs = tuple(torch.randn(1, c, 16 // 2**i, 24 // 2**i) for i, c in enumerate([8, 16, 32, 64]))

        class Wrapped(torch.nn.Module):  # FPN_CARAFE takes one list of levels
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, *levels):
                return self.net(list(levels))

        report.update(_check(Wrapped(), inputs, compat, "carafe", out_dir))
        report["mmdet_vs_ours"] = _against_our_neck(net, inputs)
    elif kind == "fade":
        report["ours"] = module.carafe is compat.carafe
        net = module.FADE(8, 8, scale=2, up_kernel_size=5)
        _far_from_uniform(net)
        inputs = (torch.randn(1, 8, 12, 16), torch.randn(1, 8, 6, 8))  # (encoder, decoder) features
        report.update(_check(net, inputs, module, "carafe", out_dir))
    elif kind == "freqfusion":
        report["ours"] = module.carafe is compat.carafe and module.xavier_init is compat.xavier_init
        net = module.FreqFusion(hr_channels=8, lr_channels=8, compressed_channels=8)
        _far_from_uniform(net)
        inputs = (torch.randn(1, 8, 12, 16), torch.randn(1, 8, 6, 8))  # (high-res, low-res) features
        report.update(_check(net, inputs, module, "carafe", out_dir))
    return report


def _against_our_neck(theirs, inputs) -> float:
    """mmdet's FPN_CARAFE weights in this project's FPNCARAFE (the detectors' neck): max relative difference."""
    import torch

    from carafe_deploy.models.detection_parts import FPNCARAFE

    ours = FPNCARAFE([8, 16, 32, 64], 16, num_outs=5, upsample_cfg=dict(up_kernel=5, up_group=2, encoder_kernel=3,
                                                                        encoder_dilation=1, compressed_channels=8))
    ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        pairs = zip(ours.eval()(list(inputs)), theirs.eval()(list(inputs)))
        return max(float((a - b).abs().max() / b.abs().max()) for a, b in pairs)


if __name__ == "__main__":
    kind, variant, file, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    try:
        result = run(kind, variant, file, out_dir)
    except Exception:  # noqa: BLE001 -- the whole traceback for the test to show
        result = {"error": traceback.format_exc()}
    print(json.dumps(result))
