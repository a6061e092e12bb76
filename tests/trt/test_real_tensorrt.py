"""Engine build and run on the real TensorRT runtime. Skipped (not passed) where TensorRT is not installed, which is
every machine this project has run on so far (DESIGN §5)."""

import numpy as np
import onnx
import pytest
from support.trt_toys import carafe_model, random_feeds

from carafe_deploy.trt import tensorrt_available

pytestmark = pytest.mark.tensorrt
if not tensorrt_available():
    pytest.skip("TensorRT runtime not installed", allow_module_level=True)


def _cuda_buffers_available() -> bool:
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        return False
    return True


needs_cuda = pytest.mark.skipif(not _cuda_buffers_available(), reason="needs CUDA torch or pycuda for device buffers")


@needs_cuda
def test_no_plugin_engine_matches_onnxruntime(tmp_path):
    import onnxruntime as ort

    from carafe_deploy.trt import run_engine
    from carafe_deploy.trt.builder import BuildOptions, build_engine
    from carafe_deploy.trt.sidecar import read_sidecar

    path = tmp_path / "toy.onnx"
    onnx.save(carafe_model(function=True, dynamic=True), path)
    build_engine(BuildOptions(onnx_path=path, use_plugin=False, progress=False,
                              min_shapes={"features": (1, 4, 2, 2), "kernels": (1, 9, 4, 4)},
                              opt_shapes={"features": (1, 4, 8, 8), "kernels": (1, 9, 16, 16)},
                              max_shapes={"features": (2, 4, 8, 8), "kernels": (2, 9, 16, 16)}))
    side = read_sidecar(tmp_path / "toy.engine")
    assert side["graph"]["carafe_function"] == "kept" and side["gpu"] is not None
    feeds = random_feeds(2, 5)
    got = run_engine(tmp_path / "toy.engine", feeds, plugin=False)["y"]
    np.testing.assert_allclose(got, ort.InferenceSession(str(path)).run(None, feeds)[0], rtol=1e-5, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("mode", ["up", "down"])
def test_plugin_engine_matches_the_pytorch_op(tmp_path, mode):
    import torch

    from carafe_deploy.ops import carafe
    from carafe_deploy.trt.plugin import plugin_library
    from carafe_deploy.trt import run_engine
    from carafe_deploy.trt.builder import BuildOptions, build_engine

    if plugin_library(required=False) is None:
        pytest.skip("plugin library not built")
    h, s = 7, 2
    ho = 2 * h if mode == "up" else (h + 1) // 2
    model = carafe_model(function=False, hw=h)
    node = model.graph.node[0]
    for attr in node.attribute:
        if attr.name == "mode":
            attr.s = mode.encode()
    model.graph.input[1].type.tensor_type.shape.dim[2].dim_value = ho
    model.graph.input[1].type.tensor_type.shape.dim[3].dim_value = ho
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_value = ho
    model.graph.output[0].type.tensor_type.shape.dim[3].dim_value = ho
    path = tmp_path / f"carafe_{mode}.onnx"
    onnx.save(model, path)
    build_engine(BuildOptions(onnx_path=path, progress=False))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, h, h)).astype(np.float32)
    k = torch.softmax(torch.from_numpy(rng.standard_normal((1, 9, ho, ho)).astype(np.float32)), dim=1)
    want = torch.relu(carafe(torch.from_numpy(x), k, 3, 1, s, mode)).numpy()
    got = run_engine(tmp_path / f"carafe_{mode}.engine", {"features": x, "kernels": k.numpy()})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
