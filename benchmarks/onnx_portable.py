"""ONNX export numbers for docs/ONNX.md: ONNX Runtime (CPU) vs PyTorch per export mode, fp16 through the ONNX
reference evaluator, and the standard-op CARAFE's peak memory and time on an FPN-size upsample.

    python benchmarks/onnx_portable.py            # parity + memory
    python benchmarks/onnx_portable.py --memory-only

Peak memory is measured in a fresh subprocess per form with ``carafe_deploy.bench.peak_rss_growth`` around one ONNX
Runtime run (the session is created, inputs allocated, before the first reading).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

import numpy as np

_MEMORY = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, onnx, onnx.inliner, onnxruntime as ort
    from onnx import helper
    from carafe_deploy.onnx import carafe_function
    form = sys.argv[1]
    node = helper.make_node("CARAFE", ["features", "kernels"], ["output"], domain="carafe",
                            kernel_size=5, group=1, scale_factor=2, mode="up")
    graph = helper.make_graph([node], "fpn_upsample",
        [helper.make_tensor_value_info("features", 1, ["N", "C", "H", "W"]),
         helper.make_tensor_value_info("kernels", 1, ["N", "K", "Ho", "Wo"])],
        [helper.make_tensor_value_info("output", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("carafe", 1)],
                              functions=[carafe_function(18)], ir_version=10)
    if form == "decomposed":
        model = onnx.inliner.inline_local_functions(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 256, 100, 168), dtype=np.float32)
    k = rng.random((1, 25, 200, 336), dtype=np.float32)
    so = ort.SessionOptions(); so.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    from carafe_deploy.bench import peak_rss_growth
    t0 = time.perf_counter()
    (y,), growth = peak_rss_growth(lambda: sess.run(None, {"features": x, "kernels": k}))
    t1 = time.perf_counter()
    print(json.dumps({"form": form, "growth_mb": growth, "output_mb": y.nbytes / 2**20, "seconds": t1 - t0}))
    """
)


def memory() -> list[dict]:
    rows = []
    for form in ("portable", "decomposed"):
        proc = subprocess.run([sys.executable, "-c", _MEMORY, form], capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def parity() -> list[dict]:
    import torch
    from onnx.reference import ReferenceEvaluator

    from carafe_deploy.models.tiny import TinyCarafeNet
    from carafe_deploy.nn import CARAFEDownsample, CARAFEUpsample
    from carafe_deploy.onnx import export
    from carafe_deploy.backends.onnxrt import run_onnxruntime

    torch.manual_seed(0)
    models = {
        "CARAFEUpsample(64, k=5, s=2)": (CARAFEUpsample(64), 64),
        "CARAFEDownsample(64, k=5, s=2)": (CARAFEDownsample(64), 64),
        "TinyCarafeNet (down + up)": (TinyCarafeNet(), 3),
    }
    for model, _ in models.values():
        for m in model.modules():  # random kernels, not the near-uniform init
            if isinstance(m, (CARAFEUpsample, CARAFEDownsample)):
                torch.nn.init.normal_(m.content_encoder.weight, std=0.3)
        model.eval()
    dyn = {"image": {0: "N", 2: "H", 3: "W"}}
    rows = []
    for name, (model, c) in models.items():
        export_x = torch.randn(1, c, 32, 48)
        x = torch.randn(2, c, 63, 95)  # another batch, odd sizes
        with torch.no_grad():
            ref = model(x).numpy()
        peak = np.abs(ref).max()
        for mode, fp16 in (("portable", False), ("decomposed", False), ("portable", True)):
            proto = export(model, (export_x,), None, mode=mode, input_names=["image"], dynamic_axes=dyn, fp16=fp16)
            if fp16:
                y = ReferenceEvaluator(proto).run(None, {"image": x.numpy()})[0]
                runtime = "onnx.reference (fp16)"
            else:
                y = next(iter(run_onnxruntime(proto, {"image": x.numpy()}).values()))
                runtime = "ONNX Runtime CPU"
            err = float(np.abs(y - ref).max())
            rows.append({"model": name, "mode": mode + (" fp16" if fp16 else ""), "runtime": runtime,
                         "max_abs": err, "max_rel": err / peak})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--memory-only", action="store_true")
    args = p.parse_args()
    if not args.memory_only:
        print("| model | mode | runtime | max abs | max rel (to max abs ref) |\n|---|---|---|---|---|")
        for r in parity():
            print(f"| {r['model']} | {r['mode']} | {r['runtime']} | {r['max_abs']:.2e} | {r['max_rel']:.2e} |")
        print()
    print("| form | ORT CPU peak growth | output size | time (2 threads) |\n|---|---|---|---|")
    for r in memory():
        print(f"| {r['form']} | {r['growth_mb']:.0f} MB | {r['output_mb']:.0f} MB | {r['seconds']:.2f} s |")


if __name__ == "__main__":
    main()
