"""Engines built and run on a GPU, compared with the float64 loop reference: the unrolled form and the plugin, both
modes, fp32 and fp16. Skipped (not passed) without a TensorRT runtime and CUDA buffers (torch with CUDA, or pycuda):
no machine this project has run on so far had both (docs/TENSORRT.md)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from support.onnx_graphs import random_case, rel_err, single_node_model
from support.reference import carafe_reference, output_size

from carafe_deploy.trt import tensorrt_available
from carafe_deploy.trt.runtime import run_unavailable

pytestmark = [pytest.mark.tensorrt, pytest.mark.cuda]
if not tensorrt_available():
    pytest.skip("no TensorRT runtime installed", allow_module_level=True)
if run_unavailable() is not None:
    pytest.skip(f"cannot run engines here: {run_unavailable()}", allow_module_level=True)


def _plugin_or_skip():
    from carafe_deploy.trt.plugin import plugin_library
    from carafe_deploy.trt.rtx import plugin_unusable
    from carafe_deploy.trt.runtime import import_tensorrt

    if plugin_library(required=False) is None:
        pytest.skip("plugin library not built (cmake -DTensorRT_INCLUDE_DIR=...)")
    reason = plugin_unusable(import_tensorrt())
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("use_plugin", [False, True], ids=["unrolled", "plugin"])
@pytest.mark.parametrize("mode", ["up", "down"])
@pytest.mark.parametrize("elem", [TensorProto.FLOAT, TensorProto.FLOAT16], ids=["fp32", "fp16"])
def test_engine_matches_the_reference(tmp_path, use_plugin, mode, elem):
    from carafe_deploy.trt import run_engine
    from carafe_deploy.trt.builder import BuildOptions, build_engine

    if use_plugin:
        _plugin_or_skip()
    k, g, s = 5, 2, 2
    path = tmp_path / "m.onnx"
    onnx.save(single_node_model(k, g, s, mode, elem_type=elem, dims=(["N", 8, "H", "W"], ["N", 50, "Ho", "Wo"])),
              path)
    lo, hi = (1, 8, 3, 3), (2, 8, 16, 16)
    kern = lambda f: (f[0], 50, *output_size(f[2], f[3], s, mode))  # noqa: E731
    build_engine(BuildOptions(onnx_path=path, use_plugin=use_plugin, progress=False,
                              min_shapes={"features": lo, "kernels": kern(lo)},
                              opt_shapes={"features": hi, "kernels": kern(hi)},
                              max_shapes={"features": hi, "kernels": kern(hi)}))
    dtype = np.float32 if elem == TensorProto.FLOAT else np.float16
    for h, w in ((16, 16), (5, 7)):
        x, kn = random_case(2, 8, h, w, k, g, s, mode, dtype=dtype)
        got = run_engine(tmp_path / "m.engine", {"features": x, "kernels": kn}, plugin=use_plugin)["output"]
        assert rel_err(got, carafe_reference(x, kn, k, g, s, mode)) <= (1e-5 if dtype == np.float32 else 3e-3)
