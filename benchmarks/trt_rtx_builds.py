"""Build every engine this machine can build with TensorRT-RTX and print the table of docs/TENSORRT.md: runtime,
version, model, export form, how CARAFE was built, precision, engine size, build time (``build_engine`` alone, not
the export: wall seconds, and CPU seconds of all threads, which a shared machine inflates less). Engines cannot run
without a GPU; this measures building only.

    python benchmarks/trt_rtx_builds.py -o /tmp/rtx_builds              # the op, TinyCarafeNet, --tiny models
    python benchmarks/trt_rtx_builds.py -o /tmp/rtx_builds --full       # the full-width models instead (~3 GB)
    python benchmarks/trt_rtx_builds.py -o /tmp/rtx_builds --plugin     # plugin engines too (needs the plugin built),
                                                                        # the whole detectors among them

With ``--plugin`` the script makes the ``libtensorrt_rtx.so`` link TensorRT-RTX's parser needs in ``OUT/rtx-link``
and restarts itself with that folder on LD_LIBRARY_PATH (plugins/tensorrt/README.md), as a user would.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

RTX = "tensorrt-rtx"
C = 16
OP_PROFILE = {"min_shapes": {"x": (1, C, 4, 4)}, "opt_shapes": {"x": (1, C, 8, 8)}, "max_shapes": {"x": (2, C, 32, 32)}}


def _build(onnx_path: Path, engine: Path, use_plugin: bool, **profile) -> dict:
    from carafe_deploy.errors import MissingDependencyError
    from carafe_deploy.trt.builder import BuildOptions, build_engine

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        result = build_engine(BuildOptions(onnx_path=onnx_path, engine_path=engine, use_plugin=use_plugin,
                                           backend=RTX, progress=False, **profile))
    except MissingDependencyError as exc:
        return {"refused": str(exc)}
    side = result.sidecar
    return {"runtime": f"{side['runtime']['name']} {side['runtime']['version']}", "carafe": side["graph"]["carafe_form"],
            "precision": side["precision"]["mode"], "bytes": side["engine"]["bytes"],
            "build_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - c0, 2)}


def op_rows(out: Path, plugin: bool):
    from carafe_deploy.nn import CARAFEDownsample, CARAFEUpsample
    from carafe_deploy.onnx import export
    from carafe_deploy.onnx.files import save_model

    torch.manual_seed(0)
    for name, module in (("CARAFEUpsample(16)", CARAFEUpsample(C)), ("CARAFEDownsample(16)", CARAFEDownsample(C))):
        for form in ("plugin", "portable"):
            for fp16 in (False, True):
                path = out / f"{name[5:9].lower()}_{form}{'_fp16' if fp16 else ''}.onnx"
                save_model(export(module.eval(), (torch.randn(1, C, 8, 8),), None, mode=form, input_names=["x"],
                                  output_names=["y"], dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}}, fp16=fp16), path)
                for use_plugin in ((False, True) if plugin and form == "plugin" else (False,)):
                    engine = path.with_suffix(".plugin.engine" if use_plugin else ".engine")
                    yield {"model": f"{name}, dynamic 4..8..32", "export": form + (" fp16" if fp16 else ""),
                           **_build(path, engine, use_plugin, **OP_PROFILE)}


def model_rows(out: Path, name: str, tiny: bool, plugin: bool, mode: str = "portable", detection_ops: str = "standard"):
    """``detection_ops="plugin"``: a detector's NMS and RoI Align as the plugin library's nodes, built with the plugin
    only (the whole detector in one engine)."""
    from carafe_deploy.tasks import CheckOptions, ExportOptions, ModelSource, deploy
    from carafe_deploy.tasks.pipeline import task_for

    loaded = ModelSource(model=name, tiny=tiny).load()
    task = task_for(loaded)
    whole = detection_ops == "plugin"
    path = out / f"{name}{'_tiny' if tiny else ''}{'_whole' if whole else ''}.onnx"
    report = deploy(loaded, ExportOptions(output=path, mode=mode, detection_ops=detection_ops),
                    CheckOptions(enabled=False), log=lambda _m: None)
    example = task.example_inputs(loaded, None)
    mins, opts, maxs = task.engine_profile(report["onnx"]["inputs"], example, report["onnx"]["dynamic"])
    shape = "x".join(map(str, report["onnx"]["input_shapes"][0]))
    label = f"{name}{' --tiny' if tiny else ''}, {'dynamic' if report['onnx']['dynamic'] else 'static'} {shape}"
    if whole:
        label = f"{label}, whole detector (NMS, RoIAlign: plugin nodes)"
    for use_plugin in ((True,) if whole else (False, True) if plugin else (False,)):
        engine = path.with_suffix(".plugin.engine" if use_plugin else ".engine")
        yield {"model": label, "export": mode, **_build(path, engine, use_plugin, min_shapes=mins, opt_shapes=opts,
                                                         max_shapes=maxs)}


def features_rows(out: Path, tiny: bool):
    """The detectors' feature network (backbone + FPN_CARAFE): what TensorRT-RTX can build of them."""
    from carafe_deploy import models
    from carafe_deploy.models.detectors import TINY, FeatureNetwork
    from carafe_deploy.onnx import export
    from carafe_deploy.onnx.files import save_model

    features = FeatureNetwork(models.build("faster_rcnn_r50_fpn_carafe", **(TINY if tiny else {}))).eval()
    size = (320, 320) if tiny else (800, 1216)
    path = out / f"detector_features{'_tiny' if tiny else ''}.onnx"
    save_model(export(features, (torch.rand(1, 3, *size) * 255,), None, mode="plugin",
                      input_names=["image"], output_names=[f"p{i}" for i in range(2, 7)]), path)
    yield {"model": f"Faster/Mask R-CNN backbone + FPN_CARAFE{' --tiny' if tiny else ''}, static {size[0]}x{size[1]}",
           "export": "plugin", **_build(path, path.with_suffix(".engine"), False)}


def _restart_with_link(out: Path) -> None:
    """Make the libtensorrt_rtx.so link and restart with it on LD_LIBRARY_PATH (the loader reads it at start)."""
    from carafe_deploy.trt import rtx
    from carafe_deploy.trt.runtime import import_tensorrt

    trt = import_tensorrt(RTX)
    if rtx.plugin_unusable(trt) is None:
        return
    link_dir = out / "rtx-link"
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / rtx.CORE_LIBRARY
    if not link.exists():
        link.symlink_to(rtx._parser_folder(trt) / f"{rtx.CORE_LIBRARY}.1")
    env = {**os.environ, "LD_LIBRARY_PATH": f"{link_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, required=True, help="folder for the ONNX files and engines")
    ap.add_argument("--full", action="store_true", help="the full-width UperNets and detectors instead of the small set")
    ap.add_argument("--plugin", action="store_true", help="also plugin engines (needs libcarafe_trt_plugin.so)")
    ap.add_argument("--only", metavar="TEXT", help="only the rows whose group name contains TEXT (op, tiny_carafe_net, "
                                                   "upernet, features, faster, mask, whole)")
    args = ap.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    if args.plugin:
        from carafe_deploy.trt.plugin import plugin_library

        plugin_library(required=True)
        _restart_with_link(args.output)
    rows = []
    load = os.getloadavg()[0]
    tiny = not args.full
    # (name, rows): the generators export and build only when iterated
    groups = [] if args.full else [("op", op_rows(args.output, args.plugin)),
                                   ("tiny_carafe_net", model_rows(args.output, "tiny_carafe_net", False, args.plugin))]
    groups += [(n, model_rows(args.output, n, tiny, args.plugin)) for n in ("upernet_r50_carafe", "upernet_r50_carafe_pp")]
    groups += [("faster_rcnn_r50_fpn_carafe", model_rows(args.output, "faster_rcnn_r50_fpn_carafe", tiny, False)),
               ("detector features", features_rows(args.output, tiny))]
    if args.plugin:
        groups += [(f"{n} whole", model_rows(args.output, n, tiny, True, detection_ops="plugin"))
                   for n in ("faster_rcnn_r50_fpn_carafe", "mask_rcnn_r50_fpn_carafe")]
    groups = [rows for name, rows in groups if not args.only or args.only in name]
    for group in groups:
        for row in group:
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nload average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores)\n")
    print("| runtime | model | export | CARAFE | precision | engine | build (wall / CPU) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if "refused" in r:
            print(f"| {RTX} | {r['model']} | {r['export']} | refused before parsing: {r['refused']} | | | |")
        else:
            print(f"| {r['runtime']} | {r['model']} | {r['export']} | {r['carafe']} | {r['precision']} | "
                  f"{r['bytes'] / 2**20:.2f} MiB | {r['build_s']:.1f} s / {r['cpu_s']:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
