#!/usr/bin/env python3
"""Export a UperNet-CARAFE segmenter: checkpoint -> ONNX -> parity report -> TensorRT engine (when available).

    python export/segmenter.py --model upernet_r50_carafe --checkpoint upernet.pth --out build/seg [--engine]

Same as ``carafe-deploy export --model upernet_r50_carafe ...``; ``--help`` lists the options. See docs/SEGMENTATION.md.
"""

import sys

from carafe_deploy.models.segmenter_export import main

if __name__ == "__main__":
    sys.exit(main())
