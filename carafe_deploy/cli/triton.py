"""carafe-deploy triton: an exported model -> a Triton Inference Server model repository.

From MODEL.onnx (and a TensorRT engine with its sidecar, --engine) it writes NAME_python (the portable graph in ONNX
Runtime under Triton's Python backend: runs on the CPU, also in the PyPI server of carafe-deploy serve),
NAME_onnxruntime (Triton's ONNX Runtime backend), NAME_tensorrt (Triton's TensorRT backend, with the plugin library
beside it), for detectors and segmenters an ensemble that takes image bytes (NAME_detect: boxes, labels, masks;
NAME_segment: a label map), and tritonserver.sh, the command for a full Triton. docs/SERVING.md explains each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import HelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("triton", help="write a Triton model repository for an exported model", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("onnx", type=Path, metavar="MODEL.onnx", help="the exported model (any form: served portable)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="REPO", help="the repository folder to write")
    p.add_argument("--engine", type=Path, metavar="ENGINE",
                   help="also serve this TensorRT engine (built from MODEL.onnx; its sidecar ENGINE.json is read)")
    p.add_argument("--plugin", type=Path, metavar="LIB.so",
                   help="the plugin library the engine was built with (default: the one its sidecar names)")
    p.add_argument("--name", help="model name prefix (default: the export's model name, else the file's stem)")
    p.add_argument("--max-batch-size", type=int, default=8, metavar="N",
                   help="for a graph with a dynamic batch axis (the engine's comes from its profile)")
    p.add_argument("--instances", type=int, default=2, metavar="N",
                   help="CPU instances of the Python-backend network model")
    p.add_argument("--max-queue-delay-us", type=int, default=2000, metavar="US",
                   help="dynamic batching: how long a request may wait for others to batch with")
    p.add_argument("--ensemble-backend", choices=("python", "onnxruntime", "tensorrt"), default="python",
                   help="the network model a detector's or segmenter's ensemble runs")
    p.add_argument("--force", action="store_true", help="replace REPO if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import console, make_table
    from ..serving import RepositoryOptions, write_repository

    options = RepositoryOptions(output=args.output, engine=args.engine, name=args.name,
                                max_batch_size=args.max_batch_size, instances=args.instances,
                                queue_delay_us=args.max_queue_delay_us, plugin=args.plugin,
                                ensemble_backend=args.ensemble_backend, force=args.force)
    out = console()
    repo = write_repository(args.onnx, options)
    out.print(make_table(f"Triton repository {repo.path} ({repo.name}, {repo.task})", ("model", "what"),
                         list(repo.models.items()), repo.notes))
    out.print(f"serve it here (CPU, Triton from PyPI): carafe-deploy serve {repo.path}")
    out.print(f"full Triton (GPU, NVIDIA's container): {repo.path / 'tritonserver.sh'}; see docs/SERVING.md")
    return 0
