#!/usr/bin/env python3
"""Serve a CARAFE detector with Triton and check what it serves: export -> repository -> a real Triton server ->
image bytes in, detections out -> compared with the pipeline's detect() in ONNX Runtime and in PyTorch -> a PNG.

    python samples/serve_detector.py --tiny -o served_det                 # narrow variant, random weights (minutes)
    python samples/serve_detector.py --checkpoint mask_rcnn_carafe.pth street.jpg -o served_det

Needs the serve extra and the server environment (`pip install -e ".[serve]" && carafe-deploy serve --install`).
The graph is exported with a dynamic size, so the ensemble resizes as mmdet does (keep ratio, within 1333x800).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    from carafe_deploy.errors import ArgumentParser
    from carafe_deploy.models.detectors import DETECTORS

    p = ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("image", nargs="?", default=str(HERE / "data" / "scene.png"), help="the image to send")
    p.add_argument("--model", default=DETECTORS[1], choices=DETECTORS)
    p.add_argument("--checkpoint", help="mmdetection checkpoint; without it the weights are random")
    p.add_argument("--tiny", action="store_true", help="the narrow variant (random weights): quick")
    p.add_argument("--export-size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"),
                   help="size the graph is traced at (it stays dynamic)")
    p.add_argument("-o", "--output", type=Path, default=Path("served_detector"), help="folder for everything written")
    args = p.parse_args(argv)

    import numpy as np
    import tritonclient.http as http
    from PIL import Image

    from carafe_deploy.backends import OnnxrtRunner, TorchRunner
    from carafe_deploy.files import atomic_path
    from carafe_deploy.models.detectors import COCO_CLASSES
    from carafe_deploy.serving import RepositoryOptions, TritonServer, write_repository
    from carafe_deploy.tasks import CheckOptions, ExportOptions, ModelSource, deploy
    from carafe_deploy.tasks.detection import RANDOM_WEIGHTS_BANNER, detect
    from carafe_deploy.tasks.detection_parity import compare_detections
    from carafe_deploy.tasks.drawing import draw_detections

    args.output.mkdir(parents=True, exist_ok=True)
    loaded = ModelSource(model=args.model, checkpoint=args.checkpoint, tiny=args.tiny).load()
    onnx_path = args.output / f"{args.model}.onnx"
    t0 = time.perf_counter()
    deploy(loaded, ExportOptions(output=onnx_path, input_shapes=[(1, 3, *args.export_size)], dynamic=True),
           CheckOptions(enabled=False), log=lambda _m: None)  # also calibrates random heads, as the export does
    print(f"exported {onnx_path} in {time.perf_counter() - t0:.0f} s")
    repo = write_repository(onnx_path, RepositoryOptions(output=args.output / "repo", instances=1, force=True))
    image = Image.open(args.image).convert("RGB")
    png = io.BytesIO()
    image.save(png, format="PNG")
    with TritonServer(repo.path, models=[repo.ensemble], timeout=300) as server:
        client = http.InferenceServerClient(server.http_url)
        request = http.InferInput("IMAGE", [1], "BYTES")
        request.set_data_from_numpy(np.array([png.getvalue()], dtype=object))
        t0 = time.perf_counter()
        result = client.infer(repo.ensemble, [request])
        print(f"Triton {server.version()}: {repo.ensemble} answered in {time.perf_counter() - t0:.2f} s")
        client.close()
    served = {"dets": result.as_numpy("DETS"), "labels": result.as_numpy("LABELS"),
              "masks": result.as_numpy("MASKS") if args.model == DETECTORS[1] else None}
    names = ["dets", "labels"] + (["masks"] if served["masks"] is not None else [])
    ok = True
    for label, runner in (("the pipeline in ONNX Runtime", OnnxrtRunner(str(onnx_path))),
                          ("PyTorch", TorchRunner(loaded.model, ["image"], names))):
        own = detect(runner, image)
        parity = compare_detections([own[n][None] for n in names], [served[n][None] for n in names])
        ok &= parity.passed()
        print(f"served vs {label}: {parity.summary()}")
    banner = RANDOM_WEIGHTS_BANNER if loaded.weights == "random" else None
    picture = draw_detections(image, served["dets"], served["labels"], served["masks"], COCO_CLASSES, 0.3, banner)
    out = args.output / "served.png"
    with atomic_path(out) as tmp:
        picture.save(tmp, format="PNG")
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
