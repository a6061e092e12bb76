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
import json
import shlex
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
    try:  # what the sample wrote: its files, its training settings and the evaluate command of its table
        results = json.loads((out / "results.json").read_text())
        files, cfg, command = results["files"], results["config"], shlex.split(results["command"])
    except (OSError, ValueError, KeyError) as exc:
        ap.error(f"{out} is not a detection sample's output ({exc}); run python samples/detection/synthetic.py -o DIR")

    from PIL import Image

    from carafe_deploy import onnxruntime as ort_library
    from carafe_deploy.tasks.synthetic_shapes import make_scenes

    calibration = out / "calibration"
    calibration.mkdir(exist_ok=True)
    # the first scenes of the training stream: the sample draws its training set from make_scenes(seed=cfg["seed"])
    for i, scene in enumerate(make_scenes(CALIBRATION_IMAGES, cfg["size"], seed=cfg["seed"])):
        Image.fromarray(scene.image).save(calibration / f"train_{i:03d}.png")

    sources = [files["onnx_portable"]]
    if "onnx_plugin" not in files:
        print("the sample wrote no plugin-form file: its INT8 row is left out")
    elif not ort_library.available():
        # calibrating the plugin form runs it in ONNX Runtime, which needs the custom-op library
        print(f"the plugin form's INT8 row is left out: {ort_library.status()}")
    else:
        sources.append(files["onnx_plugin"])
    quantized = []
    for src in sources:
        dst = str(Path(src).with_name(Path(src).stem + "_int8.onnx"))
        _carafe_deploy("quantize", src, "-o", dst, "--calibration-images", str(calibration), "--quiet")
        quantized.append(dst)
    # the sample's own evaluate command, with the INT8 files added, the engine (built, not run here) left out and the
    # report written beside the sample's
    evaluate = [t for t in command[1:] if t != files.get("engine")]
    evaluate[evaluate.index("-o") + 1] = str(out / "quantized_report.json")
    options = next(i for i, t in enumerate(evaluate) if t.startswith("-"))  # after the sample's files
    _carafe_deploy(*evaluate[:options], *quantized, *evaluate[options:])
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
