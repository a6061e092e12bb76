"""Time inside carafe_deploy::roi_align and ::carafe in profiled forwards of a model (1 thread by default).

    python benchmarks/op_share.py                                    # Faster R-CNN R50-FPN-CARAFE at 800×1216
    PYTHONPATH=/path/to/other/checkout python benchmarks/op_share.py # the same for another tree (a before)

Median of --repeat profiled forwards (wall time of each forward; the profiler's CPU total inside each op). Detectors
get their random classifier calibrated first, as benchmarks/model_overhead.py does, so they produce detections and
RoIs. Uses only what main had before issue 14 too (``models.build``, ``calibrate_random_heads``), so a before can be
measured from an older checkout with PYTHONPATH.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from carafe_deploy import models

OPS = ("carafe_deploy::roi_align", "carafe_deploy::carafe")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="faster_rcnn_r50_fpn_carafe")
    p.add_argument("--shape", type=int, nargs=4, default=[1, 3, 800, 1216], metavar=("N", "C", "H", "W"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    image = torch.rand(*a.shape) * (255.0 if "rcnn" in a.model else 1.0)
    model = models.build(a.model)
    if "rcnn" in a.model:
        from carafe_deploy.models.detectors import calibrate_random_heads

        calibrate_random_heads(model, image)
    model.eval()
    with torch.inference_mode():
        model(image)  # warm-up
    runs = []
    for _ in range(a.repeat):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof, torch.inference_mode():
            t0 = time.perf_counter()
            model(image)
            total = time.perf_counter() - t0
        inside = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages()}
        runs.append((total, *(inside.get(op, 0.0) for op in OPS)))
    total, *ops = (statistics.median(r[i] for r in runs) for i in range(len(OPS) + 1))
    cells = "; ".join(f"{op.split('::')[1]} {t * 1e3:.0f} ms ({100 * t / total:.1f} %)" for op, t in zip(OPS, ops))
    print(f"{models.__file__}\n{a.model} {tuple(a.shape)}, {a.threads} thread(s): forward {total * 1e3:.0f} ms; "
          f"{cells} [median of {a.repeat} profiled forwards]")


if __name__ == "__main__":
    main()
