"""ONNX Runtime (CPU) time and peak memory of the standard-op CARAFE forms side by side, for docs/TENSORRT.md: the
generic function (``portable``: a ``Loop`` over the source rows; ``decomposed``: the same, inlined) and the per-node
unrolled form that engines are built from (carafe_deploy.onnx.unrolled). Interleaved runs, median per form; ratios
are what to read on a shared machine. Peak memory: one run in a fresh process per form, measured with
``carafe_deploy.bench.peak_rss_growth`` after the session is made and the inputs allocated.

    python benchmarks/standard_op_forms.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
from onnx import TensorProto, helper

import carafe_deploy.onnx  # noqa: F401 -- registers the schema
from carafe_deploy.onnx import carafe_function
from carafe_deploy.onnx.unrolled import unroll_carafe_nodes

# (label, features shape, kernel_size, group, scale, mode): an FPN level upsampled, a CARAFE++ backbone downsample
CASES = [("FPN up: 1x256x100x168, k5 s2", (1, 256, 100, 168), 5, 1, 2, "up"),
         ("CARAFE++ down: 1x256x128x128, k3 s2", (1, 256, 128, 128), 3, 1, 2, "down")]


def _model(k, g, s, mode):
    node = helper.make_node("CARAFE", ["features", "kernels"], ["output"], domain="carafe", kernel_size=k, group=g,
                            scale_factor=s, mode=mode)
    graph = helper.make_graph([node], "carafe",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", "C", "H", "W"]),
                               helper.make_tensor_value_info("kernels", TensorProto.FLOAT, ["N", "K", "Ho", "Wo"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None] * 4)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("carafe", 1)],
                             functions=[carafe_function(18)], ir_version=10)


def forms(k, g, s, mode) -> dict[str, tuple[onnx.ModelProto, str]]:
    """form -> (model, ONNX Runtime execution order). The unrolled graph's k² window Slices are all ready at once:
    ORT's default order runs them all first and holds every window; its priority-based order does not."""
    portable = _model(k, g, s, mode)
    unrolled = unroll_carafe_nodes(_model(k, g, s, mode))
    return {"portable (Loop function)": (portable, "DEFAULT"),
            "decomposed (Loop inlined)": (onnx.inliner.inline_local_functions(portable), "DEFAULT"),
            "unrolled (per node)": (unrolled, "DEFAULT"),
            "unrolled, PRIORITY_BASED order": (unrolled, "PRIORITY_BASED")}


def _session(model: onnx.ModelProto, order: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.execution_order = getattr(ort.ExecutionOrder, order)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _feeds(shape, k, g, s, mode):
    n, c, h, w = shape
    ho, wo = (h * s, w * s) if mode == "up" else (-(-h // s), -(-w // s))
    rng = np.random.default_rng(0)
    return {"features": rng.standard_normal(shape, dtype=np.float32),
            "kernels": rng.random((n, g * k * k, ho, wo), dtype=np.float32)}


def _peak_mb(case: int, form: str) -> float:
    """In this (fresh) process: the peak resident growth of one run of ``form`` on ``CASES[case]``."""
    from carafe_deploy.bench import peak_rss_growth

    _, shape, k, g, s, mode = CASES[case]
    sess = _session(*forms(k, g, s, mode)[form])
    feeds = _feeds(shape, k, g, s, mode)
    return peak_rss_growth(lambda: sess.run(None, feeds))[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--peak", nargs=2, metavar=("CASE", "FORM"), help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.peak:
        print(json.dumps(_peak_mb(int(args.peak[0]), args.peak[1])))
        return
    print(f"onnxruntime {ort.__version__}, CPUExecutionProvider, {args.repeat} interleaved runs per form\n")
    print("| case | form | median ms | vs portable | peak MB |\n|---|---|---|---|---|")
    for i, (label, shape, k, g, s, mode) in enumerate(CASES):
        feeds = _feeds(shape, k, g, s, mode)
        sessions = {name: _session(model, order) for name, (model, order) in forms(k, g, s, mode).items()}
        outs = {name: sess.run(None, feeds)[0] for name, sess in sessions.items()}  # warm-up, and the same answer
        ref = next(iter(outs.values()))
        assert all(np.allclose(o, ref, rtol=1e-5, atol=1e-5) for o in outs.values())
        times = {name: [] for name in sessions}
        for _ in range(args.repeat):
            for name, sess in sessions.items():
                t0 = time.perf_counter()
                sess.run(None, feeds)
                times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["portable (Loop function)"])
        for name, ts in times.items():
            med = statistics.median(ts)
            peak = json.loads(subprocess.run([sys.executable, __file__, "--peak", str(i), name], check=True,
                                             capture_output=True, text=True).stdout)
            print(f"| {label} | {name} | {med * 1e3:.1f} | {med / base:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
