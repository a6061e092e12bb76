"""Train a small Faster R-CNN with FPN-CARAFE on synthetic scenes on CPU, write the held-out scenes as a COCO dataset,
export the model to ONNX (portable, fp16, plugin form; a TensorRT engine where one can be built) and evaluate box AP
with each backend (carafe-deploy evaluate); writes a picture, a chart and a table.

    python samples/detection/synthetic.py -o det_out        # about 3 minutes on 2 idle CPU cores

The work is done by carafe_deploy.tasks.detection_sample (run(out_dir, ...) returns the results dict), which
`carafe-deploy demo` calls too.
"""

import sys

from carafe_deploy.tasks.detection_sample import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
