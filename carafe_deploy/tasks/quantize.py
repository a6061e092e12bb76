"""Post-training INT8 quantization with explicit Q/DQ nodes (``carafe-deploy quantize``), for TensorRT / TensorRT-RTX
(strongly typed: the engine computes in the types the file gives) and ONNX Runtime.

ONNX Runtime's quantizer (``onnxruntime.quantization.quantize_static``, QDQ format) calibrates and places the nodes;
it is already a dependency and runs the portable CARAFE function while it calibrates, on any CPU. (NVIDIA ModelOpt,
the other tool of the field, was tried: docs/QUANTIZATION.md says why it is not the one used.) The placement is
TensorRT's explicit-quantization pattern:

* INT8 inputs (activation per tensor, weights per output channel), symmetric (zero point 0: TensorRT takes no other),
  on the layers TensorRT runs in INT8: ``Conv``, ``ConvTranspose``, ``MatMul``, ``Gemm`` (``op_types``); outputs are
  not quantized for their own sake (a tensor is quantized where an INT8 layer reads it); biases stay float
  (TensorRT-RTX refuses an INT32 ``DequantizeLinear``: "input has type Int32 but must have type FP8, FP4, Int4, Int8,
  or UInt8");
* ``carafe::CARAFE`` stays floating point: ``DequantizeLinear`` -> CARAFE where its features are an INT8 layer's
  input too, CARAFE -> ``QuantizeLinear`` where an INT8 layer reads its output;
* its kernels are never quantized: the nodes from each CARAFE node's kernels input back to the Softmax that
  normalises them are excluded (:func:`carafe_deploy.onnx.quantized.kernel_path`), whatever ``op_types`` says, and
  the result is checked (:func:`~carafe_deploy.onnx.quantized.carafe_placements`) before it is written.

A ``plugin`` file is calibrated in its portable form (ONNX Runtime runs the CARAFE function) and written back in the
plugin form; ONNX Runtime's "pre-processing" (its graph optimizer) is not run: it would inline the CARAFE function,
and the exports are already folded (BatchNorm into Conv).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import DeployError
from ..files import refuse_overwriting_inputs

__all__ = ["QuantizeOptions", "quantize", "default_output", "int8_layers", "METHODS", "DEFAULT_OP_TYPES"]

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# ranges (or histograms) are merged every this many feeds: ONNX Runtime holds every tensor of each feed until then.
# (Not its CalibMaxIntermediateOutputs: in onnxruntime 1.32 that drops each chunk's data instead of merging it.)
_CHUNK = 4


@dataclass
class QuantizeOptions:
    """What :func:`quantize` does; the command line parses into this."""

    model: Path
    output: Path | None = None  # default: MODEL_int8.onnx beside the model
    calibration_images: Path | None = None  # a folder of images, through the model's own preprocessing
    calibration_random: int | None = None  # or this many random images (a quick look)
    calibration_count: int = 64  # at most this many images of the folder
    input_shapes: list[tuple[int, ...]] | None = None  # sizes for dynamic dims, once per input
    task: str | None = None  # segmentation / detection / generic; default: the file's metadata, else generic
    method: str = "minmax"
    per_channel: bool = True
    op_types: Sequence[str] = DEFAULT_OP_TYPES
    exclude: Sequence[str] = field(default_factory=tuple)  # node names left in float
    seed: int = 0
    progress: bool = True


def default_output(model: Path) -> Path:
    return Path(model).with_name(f"{Path(model).stem}_int8.onnx")


def _check_options(options: QuantizeOptions) -> None:
    if options.method not in METHODS:
        raise ValueError(f"unknown calibration method {options.method!r}; use {', '.join(METHODS)}")
    if (options.calibration_images is None) == (options.calibration_random is None):
        raise DeployError("give the calibration data: --calibration-images DIR (through the model's preprocessing) "
                          "or --calibration-random N (random images: a quick look, not a calibration)")
    if options.calibration_random is not None and options.calibration_random < 1:
        raise ValueError(f"--calibration-random must be >= 1, got {options.calibration_random}")
    if options.calibration_count < 1:
        raise ValueError(f"--calibration-count must be >= 1, got {options.calibration_count}")
    if not options.op_types:
        raise ValueError("--op-types needs at least one op type")


def _float_model(model, path: Path):
    """The float model to calibrate: refused when it is mmcv's, already quantized, or not fp32."""
    from ..onnx.mmcv import MMCV_DOMAIN
    from ..onnx.quantized import quantized_precision
    from ..trt.graph import precision_mode

    if any(n.domain == MMCV_DOMAIN for n in model.graph.node):
        raise DeployError(f"{path} has mmcv::MMCVCARAFE nodes: convert it first (carafe-deploy convert {path} --to "
                          "portable -o OUT.onnx) and quantize that")
    quantized = quantized_precision(model)
    if quantized:
        raise DeployError(f"{path} is already quantized ({quantized}: it has QuantizeLinear/DequantizeLinear nodes); "
                          "quantize the float export")
    mode = precision_mode(model)
    if mode != "fp32":
        raise DeployError(f"{path} is a {mode} file; quantize the fp32 export (the layers left in floating point "
                          "keep the file's float type, and the quantizer calibrates float32 graphs)")


def _task(options: QuantizeOptions, model) -> str:
    from .pipeline import file_task

    return options.task or file_task(model)


def _input_specs(model):
    from ..backends.onnxrt import input_specs
    from .calibration import InputSpec

    return [InputSpec(name, tuple(d if isinstance(d, int) and d > 0 else None for d in dims), dtype.type)
            for name, dims, dtype in input_specs(model)]


def _reader(data, progress: bool):
    """An ONNX Runtime ``CalibrationDataReader`` over ``data`` with a progress bar, read in ranges
    (``set_range``): the quantizer then merges the ranges of each few feeds and forgets their tensors, instead of
    holding every tensor of every feed until the end."""
    from onnxruntime.quantization import CalibrationDataReader
    from tqdm import tqdm

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(data)
            self.left = len(data)
            unit = "image" if data.task != "generic" else "feed"
            self.bar = tqdm(total=data.count, desc="calibrating", unit=unit, disable=not progress, dynamic_ncols=True)

        def __len__(self) -> int:
            return len(data)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.left = end_index - start_index  # ranges come in order: the next feeds of the one stream

        def get_next(self):
            if self.left <= 0:
                return None
            self.left -= 1
            feed = next(self.feeds, None)
            if feed is not None:
                self.bar.update(data.batch)
            if self.bar.n >= data.count:
                self.bar.close()
            return feed

    return Reader()


def _stride(feeds: int) -> int:
    """Feeds per range (``CalibStridedMinMax``): at most ``_CHUNK``, and a divisor of ``feeds`` as ONNX Runtime
    requires."""
    return next(d for d in range(min(_CHUNK, feeds), 0, -1) if feeds % d == 0)


def _run_quantizer(src: Path, dst: Path, reader, options: QuantizeOptions, exclude: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[options.method]
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "OpTypesToExcludeOutputQuantization": list(options.op_types), "CalibStridedMinMax": _stride(len(reader))}
    # the quantizer logs "consider pre-processing" (not run on purpose: see the module docstring) and prints its
    # histogram steps; its errors are exceptions
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            per_channel=options.per_channel, reduce_range=False, calibrate_method=method,
                            op_types_to_quantize=list(options.op_types), nodes_to_exclude=exclude,
                            extra_options=extra)
    except DeployError:
        raise
    except Exception as exc:  # noqa: BLE001 -- ONNX Runtime raises its own types while it calibrates
        text = " ".join(str(exc).split())[:400]
        raise DeployError(f"ONNX Runtime's quantizer failed on {options.model}: {type(exc).__name__}: {text}") from exc
    finally:
        logging.disable(logging.NOTSET)


def int8_layers(model, op_types: Sequence[str]) -> dict[str, int]:
    """``{op type: count}`` of the ``op_types`` nodes that read a ``DequantizeLinear`` output: the layers that run in
    INT8 (others that read one, CARAFE among them, compute in float on the dequantized values)."""
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in op_types and node.domain in ("", "ai.onnx") and any(i in dq_outputs for i in node.input):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def quantize(options: QuantizeOptions, log: Callable[[str], None] = print) -> dict:
    """Quantize ``options.model`` to INT8 and write ``options.output`` (atomically; never over the input).

    Returns the report: files, form, task, calibration (source, count, method, seconds), Q/DQ counts, the layers
    that run in INT8, and per CARAFE node its placement (:class:`~carafe_deploy.onnx.quantized.CarafePlacement`).
    """
    import onnx

    from ..onnx import carafe_nodes, to_plugin, to_portable
    from ..onnx.convert import ir_version_needed
    from ..onnx.files import load_model, save_model
    from ..onnx.quantized import carafe_placements, name_unnamed_nodes, qdq_counts, quantized_precision
    from ..onnx.validate import validate_carafe_nodes
    from .calibration import CalibrationData, image_files

    _check_options(options)
    output = Path(options.output) if options.output else default_output(options.model)
    refuse_overwriting_inputs({"-o/--output": output}, [options.model])
    model = load_model(options.model)
    validate_carafe_nodes(model)
    _float_model(model, options.model)
    nodes = carafe_nodes(model)
    has_function = any(f.domain == "carafe" and f.name == "CARAFE" for f in model.functions)
    form = "none" if not nodes else ("portable" if has_function else "plugin")

    work = onnx.ModelProto()
    work.CopyFrom(model)
    if form == "plugin":
        to_portable(work)  # ONNX Runtime calibrates through the standard-op function
    name_unnamed_nodes(work)
    names = {n.name for n in work.graph.node}
    unknown = [n for n in options.exclude if n not in names]
    if unknown:
        raise DeployError(f"--exclude names no node of the model: {', '.join(unknown)}")
    before = carafe_placements(work)
    kernel_nodes = sorted({label for p in before for label in p.kernel_path})
    no_softmax = [p.node for p in before if p.softmax is None]
    if no_softmax:
        log(f"note: the kernels of {len(no_softmax)} CARAFE node(s) ({', '.join(no_softmax[:3])}"
            f"{', ...' if len(no_softmax) > 3 else ''}) do not come from a Softmax through layout ops; the nodes "
            "found on their way stay in float, and their sum is whatever the model makes it")
    exclude = sorted(set(options.exclude) | set(kernel_nodes))

    task = _task(options, model)
    images = (image_files(options.calibration_images, options.calibration_count)
              if options.calibration_images is not None else ())
    data = CalibrationData(task, _input_specs(work), images=images, random=options.calibration_random or 0,
                           input_shapes=options.input_shapes, seed=options.seed)
    source = (f"{data.count} image(s) of {options.calibration_images}" if images else
              f"{data.count} random {'image(s)' if task != 'generic' else 'input set(s)'}")
    log(f"quantizing {options.model} ({form} form, {task} task) to INT8: {source}, {options.method} calibration, "
        f"{', '.join(options.op_types)} in INT8; {len(nodes)} CARAFE node(s) and their kernels stay in float")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="carafe_quantize_") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(work, str(src))
        _run_quantizer(src, dst, _reader(data, options.progress), options, exclude)
        quantized = onnx.load(str(dst))
    seconds = time.perf_counter() - t0

    placements = carafe_placements(quantized)
    broken = [p.node for p in placements if p.quantized_on_kernel_path]
    if broken:  # the exclusion above makes this a bug, never a user's doing
        raise RuntimeError(f"the quantizer put Q/DQ nodes on the kernels of CARAFE node(s) {', '.join(broken)}")
    if form == "plugin":
        to_plugin(quantized)
    quantized.ir_version = ir_version_needed(quantized)  # the quantizer writes 10; ONNX Runtime 1.16 reads 9
    props = {p.key: p.value for p in model.metadata_props}
    summary = {"precision": quantized_precision(quantized), "tool": "onnxruntime.quantization.quantize_static (QDQ)",
               "calibration": source, "method": options.method, "per_channel": options.per_channel,
               "op_types": list(options.op_types)}
    onnx.helper.set_model_props(quantized, {**props, "carafe_deploy.quantization": json.dumps(summary)})
    save_model(quantized, output)

    counts = qdq_counts(quantized)
    layers = int8_layers(quantized, options.op_types)
    log(f"wrote {output}: {counts['QuantizeLinear']} QuantizeLinear, {counts['DequantizeLinear']} DequantizeLinear; "
        f"INT8 layers: {', '.join(f'{v} {k}' for k, v in layers.items()) or 'none'} ({seconds:.1f} s)")
    return {"input": str(options.model), "output": str(output), "form": form, "task": task,
            "precision": summary["precision"],
            "calibration": {"source": source, "count": data.count, "method": options.method,
                            "seconds": round(seconds, 2)},
            "qdq": counts, "int8_layers": layers, "excluded": exclude,
            "carafe": [p.as_dict() for p in placements]}
