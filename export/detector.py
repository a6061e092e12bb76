#!/usr/bin/env python3
"""Export a CARAFE detector (mmdetection checkpoint) to one ONNX graph, check it, build an engine.

    python export/detector.py --model mask_rcnn_r50_fpn_carafe --checkpoint mask_rcnn_carafe.pth -o mask.onnx
    python export/detector.py --model faster_rcnn_r50_fpn_carafe -o faster.onnx --dynamic --save-engine faster.plan

The same as `carafe-deploy export` (same options; --help lists them). Image in (`image`: N×3×H×W RGB, 0..255),
detections out (`dets`, `labels`, `masks`). See docs/DETECTION.md.
"""

import sys

from carafe_deploy.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
