"""The detector rows of docs/QUANTIZATION.md: box AP of the trained detector sample in fp32, fp16 and INT8.

    python samples/detection/synthetic.py -o det_out --threads 1          # the sample: model.pth, exports, COCO set
    python benchmarks/detection_quantization.py det_out                   # INT8 files, then one evaluate table

The sample (carafe_deploy.tasks.detection_sample) trains a small Faster R-CNN with FPN-CARAFE on synthetic scenes and
writes its exports (portable fp32 and fp16, plugin form) and the 64 held-out scenes as a COCO dataset. Here the
first 64 scenes of its training stream (the same seed, so images the model was trained on, never the held-out ones)
are written as PNG files, ``carafe-deploy quantize --calibration-images`` makes an INT8 file of the portable and of
the plugin-form export, and ``carafe-deploy evaluate`` runs PyTorch and every file over the held-out set: bbox mAP /
AP50 / AP75 per backend and precision, the difference to PyTorch, and a JSON report (DET_OUT/quantized_report.json)
with its chart. The plugin-form rows need the custom-op library (carafe_deploy.onnxruntime); where it cannot be
built, evaluate says so in those rows.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

CALIBRATION_IMAGES = 64


def _carafe_deploy(*args: str) -> None:
    command = [sys.executable, "-m", "carafe_deploy", *args]
    print("$ carafe-deploy " + " ".join(args), flush=True)
    rc = subprocess.run(command, check=False).returncode
    if rc != 0:  # the command has said why, in one line
        raise SystemExit(f"carafe-deploy {args[0]} exited with {rc}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sample", type=Path, help="the output folder of samples/detection/synthetic.py")
    args = ap.parse_args()
    out = args.sample
    required = [out / name for name in ("model.pth", "detector.onnx", "detector_fp16.onnx", "coco/instances.json")]
    missing = [str(p) for p in required if not p.exists()]
    if missing:
        ap.error(f"{out} is not a detection sample's output (missing {', '.join(missing)}); "
                 "run python samples/detection/synthetic.py -o DIR first")

    from PIL import Image

    from carafe_deploy.tasks.detection_sample import TrainConfig
    from carafe_deploy.tasks.synthetic_shapes import make_scenes

    cfg = TrainConfig()
    calibration = out / "calibration"
    calibration.mkdir(exist_ok=True)
    # the training stream's first scenes: detection_sample.run draws its training set from seed cfg.seed
    for i, scene in enumerate(make_scenes(CALIBRATION_IMAGES, cfg.size, seed=cfg.seed)):
        Image.fromarray(scene.image).save(calibration / f"train_{i:03d}.png")

    from carafe_deploy import onnxruntime as ort_library

    files = [out / "detector.onnx", out / "detector_fp16.onnx"]
    pairs = [(out / "detector.onnx", out / "detector_int8.onnx")]
    if not (out / "detector_plugin.onnx").exists():
        print("no detector_plugin.onnx in the sample's output: the plugin-form rows are left out")
    elif not ort_library.available():
        # calibrating the plugin form runs it in ONNX Runtime, which needs the custom-op library
        print(f"the plugin-form rows are left out: {ort_library.status()}")
        files.append(out / "detector_plugin.onnx")  # evaluate's row says why it cannot run
    else:
        files.append(out / "detector_plugin.onnx")
        pairs.append((out / "detector_plugin.onnx", out / "detector_plugin_int8.onnx"))
    for src, dst in pairs:
        _carafe_deploy("quantize", str(src), "-o", str(dst), "--calibration-images", str(calibration), "--quiet")
        files.append(dst)
    size = f"{cfg.size},{cfg.size}"
    _carafe_deploy("evaluate", *map(str, files), "--model", "faster_rcnn_r50_fpn_carafe", "--tiny",
                   "--set", "num_classes=4", "--checkpoint", str(out / "model.pth"),
                   "--images", str(out / "coco" / "images"), "--annotations", str(out / "coco" / "instances.json"),
                   "--scale", size, "-o", str(out / "quantized_report.json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
