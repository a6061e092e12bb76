"""EngineRunner's binding logic against the stand-in ``tensorrt`` (tests/support/fake_tensorrt.py) on host buffers:
running an engine needs a GPU, which no machine here has (TensorRT-RTX builds engines here but cannot deserialize
them without one; its runtime checks are tested for real in tests/trt/test_tensorrt_rtx.py).

The fake engine computes the toy model from the addresses the runner binds; its outputs are compared with ONNX
Runtime running the same toy model (portable form). No real TensorRT runtime ran an engine here.
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from support.trt_toys import carafe_model, random_feeds

from support import fake_tensorrt
from carafe_deploy.errors import DeployError
from carafe_deploy.trt import runner as runner_mod
from carafe_deploy.trt.builder import BuildOptions, build_engine
from carafe_deploy.trt.runner import EngineRunner


@pytest.fixture
def engine(tmp_path, monkeypatch):
    trt = fake_tensorrt.make()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    backends = []

    def host_buffers(device, buffers):
        backends.append(fake_tensorrt.HostBuffers(device))
        return backends[-1]

    monkeypatch.setattr(runner_mod, "_buffers", host_buffers)
    path = tmp_path / "toy.onnx"
    onnx.save(carafe_model(function=True, dynamic=True), path)
    build_engine(BuildOptions(onnx_path=path, use_plugin=False, progress=False,
                              min_shapes={"features": (1, 4, 2, 2), "kernels": (1, 9, 4, 4)},
                              opt_shapes={"features": (2, 4, 6, 6), "kernels": (2, 9, 12, 12)},
                              max_shapes={"features": (3, 4, 8, 8), "kernels": (3, 9, 16, 16)}))
    return tmp_path / "toy.engine", path, trt, backends


def test_stand_in_runner_matches_onnxruntime_over_shapes_and_reuses_its_context(engine):
    engine_path, onnx_path, trt, backends = engine
    session = ort.InferenceSession(str(onnx_path))
    with EngineRunner(engine_path, plugin=False) as runner:
        assert [t.name for t in runner.inputs] == ["features", "kernels"]
        assert runner.inputs[0].profile.max == (3, 4, 8, 8)
        context = runner.context
        for batch, hw in ((1, 2), (3, 8), (2, 5)):
            feeds = random_feeds(batch, hw, seed=batch)
            out = runner.infer(feeds)
            want = session.run(None, feeds)[0]
            assert out["y"].shape == want.shape == (batch, 4, 2 * hw, 2 * hw)
            np.testing.assert_allclose(out["y"], want, rtol=1e-6, atol=1e-6)
            assert runner.context is context
    assert len(backends) == 1 and backends[0].synced == 3  # one stream per runner, synced once per run
    assert [e for e in trt.log if e[0] == "execute_async_v3"] == [("execute_async_v3", 1234)] * 3


def test_stand_in_run_engine_function(engine, monkeypatch):
    engine_path, onnx_path, _, _ = engine
    from carafe_deploy.trt import run_engine

    feeds = random_feeds(2, 4)
    out = run_engine(engine_path, feeds, plugin=False)
    np.testing.assert_allclose(out["y"], ort.InferenceSession(str(onnx_path)).run(None, feeds)[0], rtol=1e-6)


def test_stand_in_shapes_outside_the_profile_and_bad_feeds(engine):
    engine_path, _, _, _ = engine
    with EngineRunner(engine_path, plugin=False) as runner:
        with pytest.raises(ValueError, match=r"input 'features' shape 4x4x8x8 is outside the engine's optimization "
                                             r"profile \(min 1x4x2x2, opt 2x4x6x6, max 3x4x8x8\)"):
            runner.infer(random_feeds(4, 8))
        with pytest.raises(ValueError, match=r"engine inputs are features, kernels: missing 'kernels'; unknown 'k'"):
            runner.infer({"features": np.zeros((1, 4, 2, 2), np.float32), "k": np.zeros(1)})
        feeds = random_feeds(1, 2)
        feeds["kernels"] = feeds["kernels"].astype(np.int32)
        with pytest.raises(TypeError, match=r"input 'kernels' is int32, the engine wants float32"):
            runner.infer(feeds)
        with pytest.raises(TypeError, match="numpy array or torch tensor"):
            runner.infer({"features": [1, 2], "kernels": [3]})


def test_stand_in_float64_inputs_are_cast_to_the_engine_type(engine):
    engine_path, onnx_path, _, _ = engine
    feeds = random_feeds(1, 3)
    with EngineRunner(engine_path, plugin=False) as runner:
        out = runner.infer({k: v.astype(np.float64) for k, v in feeds.items()})
    assert out["y"].dtype == np.float32
    np.testing.assert_allclose(out["y"], ort.InferenceSession(str(onnx_path)).run(None, feeds)[0], rtol=1e-6)


def test_stand_in_bad_engine_file_and_missing_plugin(engine, tmp_path, monkeypatch):
    engine_path, _, _, _ = engine
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"garbage")
    with pytest.raises(DeployError, match=r"could not load .*bad.engine.*magic tag does not match"):
        EngineRunner(bad, plugin=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EngineRunner(tmp_path / "none.engine")
    # an engine whose sidecar says it needs the plugin: the plugin library lookup must succeed
    import json

    side = json.loads((tmp_path / "toy.engine.json").read_text())
    side["plugin"].update(used=True, library="/gone/libcarafe_trt_plugin.so", sha256="0" * 64)
    (tmp_path / "toy.engine.json").write_text(json.dumps(side))
    monkeypatch.setenv("CARAFE_DEPLOY_PLUGIN", str(tmp_path / "missing.so"))
    from carafe_deploy.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="does not name an existing file"):
        EngineRunner(engine_path)


def test_stand_in_torch_tensors_in_torch_tensors_out(engine):
    import torch

    engine_path, onnx_path, _, _ = engine
    feeds = random_feeds(2, 3)
    with EngineRunner(engine_path, plugin=False) as runner:
        out = runner.infer({k: torch.from_numpy(v) for k, v in feeds.items()})
        assert isinstance(out["y"], torch.Tensor)
        np.testing.assert_allclose(out["y"].numpy(), ort.InferenceSession(str(onnx_path)).run(None, feeds)[0],
                                   rtol=1e-6)
        with pytest.raises(TypeError, match=r"input 'features' is int64, the engine wants float32"):
            runner.infer({"features": torch.zeros(1, 4, 2, 2, dtype=torch.int64),
                          "kernels": torch.zeros(1, 9, 4, 4)})
