"""ONNX export numbers for docs/ONNX.md: ONNX Runtime (CPU) vs PyTorch per export mode, fp16 through the ONNX
reference evaluator, and the standard-op CARAFE's peak memory and time on FPN-size layers.

    python benchmarks/onnx_portable.py            # parity + memory
    python benchmarks/onnx_portable.py --memory-only
    python benchmarks/onnx_portable.py --timing [--before REV]   # the function's time per FPN layer, 1 and 2 threads
    python benchmarks/onnx_portable.py --plain [--all-opsets]   # plain torch.onnx.export x opsets, convert, vs PyTorch

Peak memory is measured in a fresh subprocess per form with ``carafe_deploy.bench.peak_rss_growth`` around one ONNX
Runtime run (the session is created, inputs allocated, before the first reading). ``--timing`` runs single-node
graphs in one process, side by side: this checkout's function and, with ``--before REV``, the function of
``carafe_deploy/onnx/function.py`` at git revision REV (read with ``git show``), each checked against PyTorch first.
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
    if len(sys.argv) > 2:  # the function at a git revision
        sys.path.insert(0, sys.argv[3])
        from onnx_portable import _function_at
        carafe_function = _function_at(sys.argv[2])
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


def memory(before: str | None = None) -> list[dict]:
    from pathlib import Path

    rows = []
    for rev in ([before] if before else []) + [None]:
        for form in ("portable", "decomposed"):
            extra = [rev, str(Path(__file__).resolve().parent)] if rev else []
            proc = subprocess.run([sys.executable, "-c", _MEMORY, form, *extra], capture_output=True, text=True,
                                  check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["form"] += f" (at {rev})" if rev else ""
            rows.append(row)
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


# the FPN layers of a Faster R-CNN at 800x1216 (k = 5, s = 2): three up-samplings and one CARAFE++ down-sampling
FPN_LAYERS = [((1, 256, 25, 42), "up"), ((1, 256, 50, 84), "up"), ((1, 256, 100, 168), "up"), ((1, 256, 200, 336), "down")]


def _function_at(rev: str):
    """``carafe_function`` as carafe_deploy/onnx/function.py defines it at git revision ``rev``."""
    import types
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{rev}:carafe_deploy/onnx/function.py"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"function_{rev}")
    module.__package__ = "carafe_deploy.onnx"  # its relative imports (.schema) resolve in this checkout
    exec(compile(source, f"{rev}:function.py", "exec"), module.__dict__)
    return module.carafe_function


def _single_node(function, k: int, s: int, mode: str):
    from onnx import helper

    node = helper.make_node("CARAFE", ["features", "kernels"], ["output"], domain="carafe",
                            kernel_size=k, group=1, scale_factor=s, mode=mode)
    graph = helper.make_graph([node], "carafe", [helper.make_tensor_value_info("features", 1, ["N", "C", "H", "W"]),
                                                 helper.make_tensor_value_info("kernels", 1, ["N", "K", "Ho", "Wo"])],
                              [helper.make_tensor_value_info("output", 1, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("carafe", 1)],
                             functions=[function(18)], ir_version=9)


def timing(before: str | None, repeats: int) -> list[dict]:
    import time

    import onnxruntime as ort
    import torch

    from carafe_deploy.onnx.function import carafe_function
    from carafe_deploy.ops import carafe

    functions = {"this checkout": carafe_function}
    if before:
        functions = {f"at {before}": _function_at(before), **functions}
    rows = []
    rng = np.random.default_rng(0)
    for shape, mode in FPN_LAYERS:
        n, c, h, w = shape
        ho, wo = (2 * h, 2 * w) if mode == "up" else ((h + 1) // 2, (w + 1) // 2)
        x = rng.standard_normal(shape, dtype=np.float32)
        logits = rng.standard_normal((n, 25, ho, wo)).astype(np.float32)
        kern = torch.softmax(torch.from_numpy(logits), 1).numpy()
        ref = carafe(torch.from_numpy(x), torch.from_numpy(kern), 5, 1, 2, mode).numpy()
        for threads in (1, 2):
            for label, function in functions.items():
                so = ort.SessionOptions()
                so.intra_op_num_threads = threads
                sess = ort.InferenceSession(_single_node(function, 5, 2, mode).SerializeToString(), so,
                                            providers=["CPUExecutionProvider"])
                feeds = {"features": x, "kernels": kern}
                y = sess.run(None, feeds)[0]  # warm-up, and the check
                err = float(np.abs(y - ref).max() / np.abs(ref).max())
                if err > 1e-5:
                    raise SystemExit(f"{label}: {shape} {mode}: max rel error {err:.2e} against PyTorch")
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    sess.run(None, feeds)
                    times.append(time.perf_counter() - t0)
                rows.append({"layer": f"{'x'.join(map(str, shape))} {mode}", "threads": threads, "function": label,
                             "ms": 1e3 * min(times), "max_rel": err})
    return rows


def plain(all_opsets: bool = False) -> list[dict]:
    """A user's plain torch.onnx.export (both exporters, opsets 11/17/18/default) of TinyCarafeNet (CARAFE++ down and
    CARAFE up), then convert --to portable, in ONNX Runtime against PyTorch."""
    import tempfile
    import warnings

    import onnx
    import onnxruntime as ort
    import torch

    import carafe_deploy  # noqa: F401
    from carafe_deploy.models.tiny import TinyCarafeNet
    from carafe_deploy.nn import CARAFEDownsample, CARAFEUpsample
    from carafe_deploy.onnx.convert import convert

    torch.manual_seed(0)
    model = TinyCarafeNet(channels=8).eval()
    for m in model.modules():
        if isinstance(m, (CARAFEUpsample, CARAFEDownsample)):
            torch.nn.init.normal_(m.content_encoder.weight, std=0.5)
    x = torch.randn(1, 3, 13, 18)
    with torch.no_grad():
        ref = model(x).numpy()

    def run(proto):
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x.numpy()})[0]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dynamo in (False, True):
            # torch 2.13: the TorchScript exporter writes opsets up to 20, the dynamo one 18 to 23
            opsets = (range(11, 21) if not dynamo else range(18, 24)) if all_opsets else (11, 17, 18, None)
            for opset in opsets:
                path = f"{tmp}/m.onnx"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(model, (x,), path, dynamo=dynamo, input_names=["x"],
                                      **({} if opset is None else {"opset_version": opset}))
                written = onnx.load(path)
                as_written = "portable" if written.functions else "plugin"
                try:
                    direct = float(np.abs(run(written) - ref).max() / np.abs(ref).max())
                except Exception:  # noqa: BLE001 -- the plugin form has no kernel in ONNX Runtime
                    direct = None
                result = convert(written, "portable")
                err = float(np.abs(run(result.model) - ref).max() / np.abs(ref).max())
                rows.append({"exporter": "dynamo" if dynamo else "TorchScript", "opset": opset or "default",
                             "written": f"{as_written}, opset {next(i.version for i in written.opset_import if not i.domain)}, IR {written.ir_version}",
                             "direct": direct, "converted": f"opset {result.opset}, IR {result.model.ir_version}",
                             "max_rel": err})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--memory-only", action="store_true")
    p.add_argument("--timing", action="store_true", help="only the function's time on the FPN layers")
    p.add_argument("--before", metavar="REV", help="also time / measure the function at this git revision")
    p.add_argument("--repeats", type=int, default=5, help="with --timing: runs per layer (the fastest is shown)")
    p.add_argument("--plain", action="store_true", help="only plain torch.onnx.export x opsets -> convert")
    p.add_argument("--all-opsets", action="store_true", help="with --plain: every opset each exporter writes")
    args = p.parse_args()
    if args.plain:
        print("| exporter | opset asked | as written | ORT as written (max rel) | after convert --to portable | max rel |")
        print("|---|---|---|---|---|---|")
        for r in plain(args.all_opsets):
            direct = "cannot run (no kernel)" if r["direct"] is None else f"{r['direct']:.2e}"
            print(f"| {r['exporter']} | {r['opset']} | {r['written']} | {direct} | {r['converted']} | {r['max_rel']:.2e} |")
        return
    if args.timing:
        rows = timing(args.before, args.repeats)
        labels = list(dict.fromkeys(r["function"] for r in rows))
        print("| layer (k=5, s=2) | threads | " + " | ".join(f"{lb} (ms)" for lb in labels)
              + (" | speed-up |" if len(labels) == 2 else " |"))
        print("|---|---|" + "---|" * (len(labels) + (len(labels) == 2)))
        for i in range(0, len(rows), len(labels)):
            group = rows[i: i + len(labels)]
            cells = " | ".join(f"{r['ms']:.1f}" for r in group)
            ratio = f" | {group[0]['ms'] / group[1]['ms']:.1f}x" if len(group) == 2 else ""
            print(f"| {group[0]['layer']} | {group[0]['threads']} | {cells}{ratio} |")
        return
    if not args.memory_only:
        print("| model | mode | runtime | max abs | max rel (to max abs ref) |\n|---|---|---|---|---|")
        for r in parity():
            print(f"| {r['model']} | {r['mode']} | {r['runtime']} | {r['max_abs']:.2e} | {r['max_rel']:.2e} |")
        print()
    print("| form | ORT CPU peak growth | output size | time (2 threads) |\n|---|---|---|---|")
    for r in memory(args.before):
        print(f"| {r['form']} | {r['growth_mb']:.0f} MB | {r['output_mb']:.0f} MB | {r['seconds']:.2f} s |")


if __name__ == "__main__":
    main()
