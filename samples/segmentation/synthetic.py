"""Train a small UperNet-CARAFE (CARAFE + CARAFE++) on synthetic shapes on CPU, export it to ONNX, and compare mIoU
of PyTorch, ONNX Runtime (portable and decomposed exports) and TensorRT (when present); writes a PNG and a table.

    python samples/segmentation/synthetic.py -o seg_out        # about 2 minutes on 2 idle CPU cores

The work is done by carafe_deploy.tasks.segmentation_sample (run(out_dir, ...) returns the results dict), which
`carafe-deploy demo` calls too.
"""

import sys

from carafe_deploy.tasks.segmentation_sample import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
