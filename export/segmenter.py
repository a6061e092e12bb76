#!/usr/bin/env python3
"""Export a UperNet-CARAFE segmenter: checkpoint -> ONNX -> parity (logits, argmax) -> TensorRT engine.

    python export/segmenter.py --model upernet_r50_carafe --checkpoint upernet.pth -o upernet.onnx --save-engine upernet.engine

The same as `carafe-deploy export` (same options; --help lists them). See docs/SEGMENTATION.md.
"""

import sys

from carafe_deploy.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
