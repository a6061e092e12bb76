"""The plugin form in ONNX Runtime with the custom-op library (carafe_deploy.onnxruntime) against the PyTorch op
(carafe_deploy::carafe, its native CPU kernels) and the portable form (the standard-op function), on the FPN layers
of a Faster R-CNN at 800x1216 (k = 5, s = 2), side by side in one process, at 1 thread (and 2 with --threads 1 2).

    python benchmarks/ort_custom_op.py [--repeats 15] [--threads 1 2]

Each layer is first checked against the PyTorch op (max rel error <= 1e-5); then the three are timed in turn, round
after round (interleaved, so that a change in the machine's load hits all three alike), and the median of each is
reported with its ratio to PyTorch. The load average is printed with the table (the figures are noisy on a busy
machine; the ratios less so).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

# shared with benchmarks/onnx_portable.py: the same layers
FPN_LAYERS = [((1, 256, 25, 42), "up"), ((1, 256, 50, 84), "up"), ((1, 256, 100, 168), "up"),
              ((1, 256, 200, 336), "down")]


def _model(mode: str, function: bool):
    from onnx import helper

    from carafe_deploy.onnx import carafe_function

    node = helper.make_node("CARAFE", ["features", "kernels"], ["output"], domain="carafe", kernel_size=5, group=1,
                            scale_factor=2, mode=mode)
    graph = helper.make_graph([node], "carafe", [helper.make_tensor_value_info("features", 1, ["N", "C", "H", "W"]),
                                                 helper.make_tensor_value_info("kernels", 1, ["N", "K", "Ho", "Wo"])],
                              [helper.make_tensor_value_info("output", 1, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("carafe", 1)],
                             functions=[carafe_function(17)] if function else [], ir_version=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from carafe_deploy.onnxruntime import library_path
    from carafe_deploy.ops import _cpu, carafe

    library = library_path()
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, PyTorch op: {_cpu.status()}")
    print(f"custom-op library: {library}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rng = np.random.default_rng(0)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for shape, mode in FPN_LAYERS:
            n, c, h, w = shape
            ho, wo = (2 * h, 2 * w) if mode == "up" else ((h + 1) // 2, (w + 1) // 2)
            x = rng.standard_normal(shape, dtype=np.float32)
            kern = torch.softmax(torch.from_numpy(rng.standard_normal((n, 25, ho, wo), dtype=np.float32)), 1).numpy()
            tx, tk = torch.from_numpy(x), torch.from_numpy(kern)
            feeds = {"features": x, "kernels": kern}
            sessions = {}
            for form, function in (("plugin + library", False), ("portable", True)):
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                if not function:
                    options.register_custom_ops_library(library)
                sessions[form] = ort.InferenceSession(_model(mode, function).SerializeToString(), options,
                                                      providers=["CPUExecutionProvider"])
            runs = {"pytorch op": lambda: carafe(tx, tk, 5, 1, 2, mode)}
            runs.update({form: (lambda s=s: s.run(None, feeds)) for form, s in sessions.items()})
            with torch.no_grad():
                ref = runs["pytorch op"]().numpy()
                for form, session in sessions.items():
                    err = float(np.abs(session.run(None, feeds)[0] - ref).max() / np.abs(ref).max())
                    if err > 1e-5:
                        raise SystemExit(f"{form} {shape} {mode}: max rel error {err:.2e} against the PyTorch op")
                times = {name: [] for name in runs}
                for _ in range(args.repeats):
                    for name, fn in runs.items():
                        t0 = time.perf_counter()
                        fn()
                        times[name].append(time.perf_counter() - t0)
            base = statistics.median(times["pytorch op"])
            for name, ts in times.items():
                rows.append((f"{'x'.join(map(str, shape))} {mode}", threads, name, 1e3 * statistics.median(ts),
                             statistics.median(ts) / base))
    print(f"{'layer':<22} {'threads':>7} {'form':<18} {'median ms':>10} {'x PyTorch op':>13}")
    for layer, threads, name, ms, ratio in rows:
        print(f"{layer:<22} {threads:>7} {name:<18} {ms:>10.2f} {ratio:>13.2f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
