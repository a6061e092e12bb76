"""CARAFE's cost in whole models: each detector/segmenter against its nearest-resampling twin, PyTorch and ONNX Runtime.

    python benchmarks/model_overhead.py                                   # UperNet 256×256, Faster R-CNN 800×1216
    python benchmarks/model_overhead.py --models upernet_r50_carafe:2,3,512,512 --threads 2 --repeat 5
    python benchmarks/model_overhead.py --onnx-mode decomposed            # the standard-op form inlined
    python benchmarks/model_overhead.py --before cac7fb6 --no-onnx         # another commit's CPU kernels as well

The twin is ``models.build(name, resampling="nearest")`` with every other parameter copied from the CARAFE model (so
backbone, heads and post-processing are the same network; detectors get their random classifier calibrated once,
before the copy, so both produce detections). Each pair runs alternately in one process, median of --repeat, at one
intra-op thread count (torch.set_num_threads and ONNX Runtime's intra_op_num_threads). The ONNX files come from
``carafe_deploy.onnx.export`` (--onnx-mode, default "portable": ONNX Runtime runs the CARAFE function in standard ops),
so the ONNX Runtime column follows whatever standard-op form the tree has: re-run after changing it.
The "... in the forward" columns are the profiler's CPU time inside carafe_deploy::carafe and ::roi_align (their
kernels included) in one forward of the CARAFE model. With --before, the CARAFE model also runs on the CPU kernels of
that commit (benchmarks/kernels_at.py), alternating with the other two in the same process, and the minor page faults
of one forward of each are counted (getrusage): the fresh pages of large outputs, which every op of the network pays
alike unless its allocator reuses memory (THP_MEM_ALLOC_ENABLE=1 makes torch back large CPU tensors with huge pages,
for the whole process).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from carafe_deploy import models
from carafe_deploy.bench import paired_medians
from carafe_deploy.ops import _cpu

DEFAULT_MODELS = ("upernet_r50_carafe:1,3,256,256", "faster_rcnn_r50_fpn_carafe:1,3,800,1216")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def build_pair(name: str, image: torch.Tensor):
    torch.manual_seed(0)
    carafe_model = models.build(name)
    if "rcnn" in name:
        from carafe_deploy.models.detectors import calibrate_random_heads

        calibrate_random_heads(carafe_model, image)
    twin = models.build(name, resampling="nearest")
    twin.load_state_dict({k: v for k, v in carafe_model.state_dict().items() if k in twin.state_dict()})
    return carafe_model.eval(), twin.eval()


def op_share(model, image, op_names=("carafe_deploy::carafe", "carafe_deploy::roi_align")) -> dict:
    """Seconds spent inside each op (the profiler's CPU total, its kernels included) in one forward, and "total":
    that profiled forward's wall time (the percentages compare the two)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof, torch.inference_mode():
        t0 = time.perf_counter()
        model(image)
        total = time.perf_counter() - t0
    totals = {e.key: e.cpu_time_total for e in prof.key_averages()}
    return {**{op: totals.get(op, 0.0) / 1e6 for op in op_names}, "total": total}


def onnx_session(model, image, mode: str, threads: int, folder: Path, tag: str):
    import onnxruntime as ort

    from carafe_deploy.onnx import export

    path = folder / f"{tag}.onnx"
    spec = models.spec(model_name_of(tag))
    output_names = list(getattr(model, "output_names", spec.output_names))
    export(model, (image,), path, mode=mode, input_names=list(spec.input_names), output_names=output_names)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = {sess.get_inputs()[0].name: image.numpy()}
    return lambda: sess.run(None, feeds)


def model_name_of(tag: str) -> str:
    return tag.rsplit("-", 1)[0]


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def minor_faults(fn) -> int:
    """Minor page faults of one call of fn (after one warm-up call)."""
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def run(entries, threads: int, repeat: int, onnx_mode: str, skip_onnx: bool, clock: str = "wall",
        before: str | None = None):
    from kernels_at import build, kernels_in_use

    torch.set_num_threads(threads)
    before_ops = build(before) if before else None
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"torch {torch.__version__}, CPU kernels: {_cpu.status()}, {threads} thread(s), median of {repeat}, "
          f"clock {clock}, ONNX mode {onnx_mode!r}, before: {before or '–'}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '')!r}; load average {load}\n")

    def paired(fns):
        return paired_medians(fns, repeat, CLOCKS[clock])

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in entries:
            image = torch.rand(*shape) * (255.0 if "rcnn" in name else 1.0)
            carafe_model, twin = build_pair(name, image)

            def on_before(fn):
                def call():
                    with kernels_in_use(before_ops):
                        return fn()
                return call

            fns = {"carafe": lambda: carafe_model(image), "twin": lambda: twin(image)}
            if before_ops is not None:
                fns["before"] = on_before(fns["carafe"])
            with torch.inference_mode():
                t = paired(fns)
                faults = {key: minor_faults(fn) for key, fn in fns.items()}
            share = op_share(carafe_model, image)
            row = dict(name=name, shape=shape, pt=t, share=share, faults=faults)
            if before_ops is not None:
                row["share_before"] = on_before(lambda: op_share(carafe_model, image))()
            if not skip_onnx:
                ort_fns = {"carafe": onnx_session(carafe_model, image, onnx_mode, threads, Path(tmp), f"{name}-carafe"),
                           "twin": onnx_session(twin, image, onnx_mode, threads, Path(tmp), f"{name}-twin")}
                row["ort"] = paired(ort_fns)
            rows.append(row)
            print(f"{name} {tuple(shape)}: PyTorch " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in t.items())
                  + (f"; ONNX Runtime {row['ort']['carafe'] * 1e3:.0f} ms vs {row['ort']['twin'] * 1e3:.0f} ms"
                     if "ort" in row else ""), flush=True)
    print()
    has_before = before_ops is not None
    head = ["model", "input", *(["PyTorch CARAFE, before"] if has_before else []), "PyTorch CARAFE",
            "PyTorch nearest", "overhead", "carafe op in the forward", "roi_align in the forward",
            "page faults per forward (" + ("before, " if has_before else "") + "CARAFE, nearest)",
            "ONNX Runtime CARAFE", "ONNX Runtime nearest", "overhead"]
    print("| " + " | ".join(head) + " |")
    # the op's share is the profiler's time inside carafe_deploy::carafe over the same forward's profiled total
    print("|" + " --- |" * len(head))
    for r in rows:
        pt, share = r["pt"], r["share"]

        def op(name, share=share):
            return f"{share[name] * 1e3:.0f} ms ({100 * share[name] / share['total']:.1f} %)" if share[name] else "–"

        def overhead(key):
            return f"{100 * (pt[key] / pt['twin'] - 1):+.1f} %"

        carafe_op = op("carafe_deploy::carafe")
        if has_before:
            carafe_op = f"{op('carafe_deploy::carafe', r['share_before'])} → {carafe_op}"
        cells = [r["name"], "×".join(map(str, r["shape"])),
                 *([f"{pt['before'] * 1e3:.0f} ms"] if has_before else []), f"{pt['carafe'] * 1e3:.0f} ms",
                 f"{pt['twin'] * 1e3:.0f} ms",
                 (f"{overhead('before')} → " if has_before else "") + overhead("carafe"), carafe_op,
                 op("carafe_deploy::roi_align"),
                 ", ".join(str(r["faults"][k]) for k in (("before",) if has_before else ()) + ("carafe", "twin"))]
        if "ort" in r:
            ort = r["ort"]
            cells += [f"{ort['carafe'] * 1e3:.0f} ms", f"{ort['twin'] * 1e3:.0f} ms",
                      f"{100 * (ort['carafe'] / ort['twin'] - 1):+.1f} %"]
        else:
            cells += ["–", "–", "–"]
        print("| " + " | ".join(cells) + " |")


def parse_entry(text: str):
    name, _, dims = text.partition(":")
    if name not in models.available():
        raise SystemExit(f"unknown model {name!r}; available: {', '.join(models.available())}")
    shape = tuple(int(v) for v in dims.split(",")) if dims else models.spec(name).default_input_shape
    if len(shape) != 4:
        raise SystemExit(f"{text}: the input shape needs 4 numbers (N,C,H,W)")
    return name, shape


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME[:N,C,H,W]")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--onnx-mode", default="portable", choices=("portable", "decomposed"))
    p.add_argument("--no-onnx", action="store_true", help="PyTorch only")
    p.add_argument("--before", metavar="COMMIT", help="also run the CARAFE model on this commit's CPU kernels")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="cpu: this process's CPU time, which a busy machine disturbs less (with --threads 1 only)")
    a = p.parse_args()
    if a.clock == "cpu" and a.threads > 1:
        raise SystemExit("--clock cpu measures one thread's speed only: use it with --threads 1")
    np.random.seed(0)
    run([parse_entry(e) for e in a.models], a.threads, a.repeat, a.onnx_mode, a.no_onnx, a.clock, a.before)


if __name__ == "__main__":
    main()
