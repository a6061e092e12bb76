"""The deploy pipeline, one for every model: export to ONNX → compare ONNX Runtime with PyTorch at the level of the
task → build a TensorRT engine when TensorRT is here → compare the engine when it can run → report.

``carafe-deploy export``, ``export/*.py``, the demo and the samples all call :func:`deploy`; a task family
(:mod:`.base`, :mod:`.detection`, :mod:`.segmentation`) supplies what differs between model families.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import DeployError
from ..files import refuse_overwriting_inputs
from .base import Task
from .source import LoadedModel

__all__ = ["ExportOptions", "CheckOptions", "EngineOptions", "deploy", "output_paths", "task_for", "task_named",
           "file_task", "torch_reference", "TASKS", "TASK_METADATA"]


@dataclass
class ExportOptions:
    """How the model is written to ONNX (:func:`carafe_deploy.onnx.export`)."""

    output: Path
    mode: str = "portable"  # plugin / portable / decomposed
    opset: int | None = None
    fp16: bool = False
    input_shapes: list[tuple[int, ...]] | None = None  # example inputs (default: the source's)
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    # dynamic axes: None = the model's default (a registered model's own axes when it exports dynamic by default),
    # True = the model's registered axes, False = static; ``dynamic_axes`` adds or replaces axes per input name
    dynamic: bool | None = None
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    # detectors' NMS and RoI Align: "plugin" nodes, "standard" ONNX ops, or "auto" (detection_ops_for)
    detection_ops: str = "auto"


@dataclass
class CheckOptions:
    """Comparing ONNX Runtime (and the engine) with PyTorch."""

    enabled: bool = True
    shapes: list[tuple[int, ...]] | None = None  # inputs of the comparison (default: the task's)
    rtol: float | None = None  # element-wise tasks only (default 1e-4 fp32, 1e-2 fp16)
    atol: float | None = None
    save_reference: Path | None = None  # inputs + PyTorch outputs, for `carafe-deploy check --reference`


@dataclass
class EngineOptions:
    """The TensorRT engine built after export (only when ``path`` is given)."""

    path: Path | None = None
    min_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)  # default: the task's profile
    opt_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    max_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    # None: the plugin where its library is found, else unrolled (choose_plugin of carafe_deploy.trt)
    use_plugin: bool | None = None
    plugin_path: Path | None = None
    backend: str | None = None  # "tensorrt" or "tensorrt-rtx"; None: full TensorRT when installed, else TensorRT-RTX
    progress: bool = True


def _tasks() -> dict[str, type[Task]]:
    from .detection import DetectionTask
    from .segmentation import SegmentationTask

    return {"generic": Task, "detection": DetectionTask, "segmentation": SegmentationTask}


TASKS = ("generic", "detection", "segmentation")
TASK_METADATA = "carafe_deploy.task"  # the metadata_props key an export names its task family in


def file_task(model) -> str:
    """The task family an ONNX file's metadata names (``generic`` when it names none)."""
    return {p.key: p.value for p in model.metadata_props}.get(TASK_METADATA, "generic")


def task_for(loaded: LoadedModel) -> Task:
    """The task family of a loaded model: its registered spec's, else generic."""
    family = getattr(loaded.spec, "task", "generic") if loaded.spec is not None else "generic"
    return task_named(family, f"model {loaded.name!r}")


def task_named(family: str, where: str = "the model") -> Task:
    """The task family ``family``; ``where`` (a model, an ONNX file's ``carafe_deploy.task`` metadata) names it."""
    try:
        return _tasks()[family]()
    except KeyError:
        raise DeployError(f"{where} names an unknown task family {family!r} (known: {', '.join(TASKS)})") from None


def _names(given, count: int, stem: str) -> list[str]:
    if given:
        return list(given)
    return [stem] if count == 1 else [f"{stem}{i}" for i in range(count)]


def _dynamic_axes(loaded: LoadedModel, options: ExportOptions, input_names: list[str], example) -> dict:
    use_registered = loaded.dynamic_by_default if options.dynamic is None else options.dynamic
    axes = dict(loaded.dynamic_axes) if use_registered else {}
    if options.dynamic is True and not loaded.dynamic_axes:
        # a model with no registered axes (--python, --torchscript, ...): --dynamic alone means batch, height and
        # width of image-like (4-D) inputs, the batch of the others
        axes = {name: ({0: "batch", 2: "height", 3: "width"} if getattr(t, "ndim", 0) == 4 else {0: "batch"})
                for name, t in zip(input_names, example) if getattr(t, "ndim", 0) >= 1}
    for name, dims in options.dynamic_axes.items():
        if name not in input_names:
            raise DeployError(f"--dynamic names input {name!r}; the inputs are {', '.join(input_names)}")
        axes[name] = dims
    return axes


def _feeds(names: Sequence[str], tensors) -> dict:
    return {n: t.detach().cpu().numpy() for n, t in zip(names, tensors)}


def deploy(loaded: LoadedModel, export: ExportOptions, check: CheckOptions | None = None,
           engine: EngineOptions | None = None, *, task: Task | None = None, inputs: Sequence[object] = (),
           other_outputs: Mapping[str, object] | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the pipeline on ``loaded``; returns the report (``report["passed"]``: every gated check passed).

    ``inputs``: files the caller read; ``other_outputs``: files the caller will write (``{option: path}``). No output
    may overwrite an input or another output.
    Raises ``DeployError`` for user mistakes before any work is done where it can.
    """
    import onnx

    from ..onnx import carafe_nodes, export as onnx_export, to_portable
    from ..onnx.detection_nodes import detection_nodes
    from ..onnx.files import save_model, uses_external_data

    check = check or CheckOptions()
    engine = engine or EngineOptions()
    task = task or task_for(loaded)
    refuse_overwriting_inputs(output_paths(export, check, engine, other_outputs), inputs)
    example = task.example_inputs(loaded, export.input_shapes)
    task.prepare(loaded, example, log)
    input_names = _names(export.input_names or loaded.input_names, len(example), "input")
    if len(input_names) != len(example):
        raise DeployError(f"{len(input_names)} input names for {len(example)} inputs")
    axes = _dynamic_axes(loaded, export, input_names, example)
    dynamic = any(name in axes for name in input_names)
    # PyTorch's outputs first: a model that fails on its inputs (a channel mismatch, say) is one clear error here,
    # not the exporter's page about two exporters
    sets = task.check_inputs(loaded, example, check.shapes, dynamic) if check.enabled or check.save_reference else []
    references = [torch_reference(loaded, s) for s in sets]

    report: dict = {"model": loaded.description, "task": task.name, "weights": loaded.weights,
                    "onnx": {"path": str(export.output), "mode": export.mode, "fp16": export.fp16, "dynamic": dynamic,
                             "input_shapes": [list(t.shape) for t in example]},
                    "checks": [], "engine": None}
    t0 = time.perf_counter()
    detection_ops = detection_ops_for(export, engine)
    with task.exporting(loaded, detection_ops):
        proto = onnx_export(loaded.model, tuple(example), None, mode=export.mode, input_names=input_names,
                            output_names=export.output_names or loaded.output_names, dynamic_axes=axes or None,
                            opset=export.opset, fp16=export.fp16)
    # what produced the file, for the samples and for people: random weights must never pass for a trained model
    onnx.helper.set_model_props(proto, {"carafe_deploy.model": loaded.name, "carafe_deploy.weights": loaded.weights,
                                        TASK_METADATA: task.name, **task.metadata(loaded)})
    save_model(proto, export.output)
    output_names = [o.name for o in proto.graph.output]
    references = [_named(r, output_names) for r in references]
    detection = detection_nodes(proto)
    if task.name == "detection":
        report["onnx"]["detection_ops"] = "plugin" if detection else "standard"
    if detection:
        log(f"detectors' NMS and RoI Align as {len(detection)} plugin node(s) (carafe::BatchedNMS, "
            "carafe::MultiLevelRoIAlign)")
    report["onnx"].update(export_s=round(time.perf_counter() - t0, 2), carafe_nodes=len(carafe_nodes(proto)),
                          functions=len(proto.functions), opset=proto.opset_import[0].version,
                          inputs=input_names, outputs=output_names, ops=op_types(proto))
    log(f"wrote {export.output}: {len(carafe_nodes(proto))} carafe::CARAFE node(s), {len(proto.functions)} local "
        f"function(s), opset {proto.opset_import[0].version}, inputs {input_names}, outputs {output_names} "
        f"({report['onnx']['export_s']} s)")

    if check.save_reference:
        _save_reference(check.save_reference, _feeds(input_names, sets[0]), references[0])
        log(f"wrote {check.save_reference} (inputs and PyTorch outputs)")
    if check.enabled:
        from ..backends import OnnxrtRunner
        from ..onnxruntime import available as custom_op_library_available

        # a plugin-form graph runs as written with the custom-op library; where it cannot be built, with the
        # standard-op function attached (the same nodes)
        checked = proto
        if export.mode == "plugin" and not custom_op_library_available():
            checked = to_portable(_copy(proto))
        if uses_external_data(checked):  # over 2 GB: its weights went to the data file, ONNX Runtime reads it there
            checked = export.output
        runner = OnnxrtRunner(checked, name="onnxruntime")
        _check_backend(report, task, runner, input_names, sets, references, export.fp16, check, log)

    if engine.path is not None:
        _engine_step(report, task, loaded, export, engine, proto, input_names, example, dynamic, sets, references,
                     check, log)
    gated = [c for c in report["checks"] if c["gated"] and c["status"] != "skipped"]
    report["passed"] = all(c["status"] == "passed" for c in gated)
    return report


def detection_ops_for(export: ExportOptions, engine: EngineOptions) -> str:
    """How a detector's NMS and RoI Align are exported: ``export.detection_ops`` when it is "plugin" or "standard";
    "auto" is "plugin" when the plugin library is found and the engine may use it (the engine choice's rule: the
    plugin when its library is found), else "standard" (today's standard-op graph, for ONNX Runtime and full
    TensorRT)."""
    from ..trt.availability import choose_plugin

    if export.detection_ops not in ("auto", "plugin", "standard"):
        raise DeployError(f"detection ops must be auto, plugin or standard, got {export.detection_ops!r}")
    if export.detection_ops != "auto":
        return export.detection_ops
    if export.mode == "decomposed":
        return "standard"
    use_plugin, _ = choose_plugin(engine.use_plugin, engine.plugin_path, engine.backend)
    return "plugin" if use_plugin else "standard"


def op_types(proto) -> list[str]:
    """Sorted op types of a model's main graph, custom domains as ``domain::Op``."""
    return sorted({f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                   for n in proto.graph.node})


def _copy(proto):
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def output_paths(export: ExportOptions, check: CheckOptions, engine: EngineOptions,
                 other_outputs: Mapping[str, object] | None = None) -> dict:
    """``{option: path}`` of every file :func:`deploy` writes (the engine's sidecar too), for
    :func:`carafe_deploy.files.refuse_overwriting_inputs`."""
    paths = {"-o/--output": export.output, "--save-reference": check.save_reference, "--save-engine": engine.path}
    if engine.path is not None:
        from ..trt import sidecar_path

        paths["--save-engine (its sidecar)"] = sidecar_path(Path(engine.path))
    return {**paths, **(other_outputs or {})}


def torch_reference(loaded: LoadedModel, tensors) -> list:
    """PyTorch's outputs on ``tensors``; a model that cannot run on them is the user's to fix (``DeployError``)."""
    from ..backends.pytorch import torch_outputs

    try:
        return torch_outputs(loaded.model, tensors)
    except (MemoryError, DeployError):
        raise
    except Exception as exc:  # noqa: BLE001 -- whatever the user's model raises on these inputs
        shapes = ", ".join("x".join(map(str, t.shape)) for t in tensors)
        text = str(exc).strip().splitlines()
        raise DeployError(f"the PyTorch model fails on inputs of shape {shapes}: {type(exc).__name__}: "
                          f"{text[0] if text else ''}") from exc


def _named(outputs: list, output_names) -> dict:
    if len(outputs) != len(output_names):
        raise DeployError(f"PyTorch gave {len(outputs)} outputs, the ONNX model has {len(output_names)}")
    return dict(zip(output_names, outputs))


def _save_reference(path, inputs: dict, outputs: dict) -> None:
    import numpy as np

    from ..files import atomic_path

    arrays = {f"input/{k}": v for k, v in inputs.items()}
    arrays.update({f"output/{k}": v for k, v in outputs.items()})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _check_backend(report, task: Task, runner, input_names, sets, references, fp16: bool, check: CheckOptions,
                   log) -> None:
    from ..errors import MissingDependencyError

    try:
        runner.activate()
    except MissingDependencyError as exc:
        report["checks"].append({"backend": runner.name, "status": "skipped", "reason": str(exc), "gated": True})
        log(f"{runner.name}: skipped: {exc}")
        return
    try:
        for tensors, reference in zip(sets, references):
            feeds = _feeds(input_names, tensors)
            shapes = [list(t.shape) for t in tensors]
            try:
                actual = runner.infer(feeds)
            except Exception as exc:  # noqa: BLE001 -- e.g. an fp16 op ONNX Runtime's CPU provider lacks
                first = " ".join(str(exc).split())[:300]
                entry = {"backend": runner.name, "inputs": shapes, "status": "error",
                         "reason": f"{type(exc).__name__}: {first}", "gated": not fp16}
                report["checks"].append(entry)
                log(f"{runner.name} at {shapes}: error ({entry['reason']})")
                continue
            result = task.compare(reference, actual, fp16, check.rtol, check.atol)
            status = "passed" if result.passed else "failed"
            report["checks"].append({"backend": runner.name, "inputs": shapes, "status": status, "gated": result.gated,
                                     "summary": result.summary, "details": result.details})
            log(f"{runner.name} vs PyTorch at {shapes}: {status}: {result.summary}")
    finally:
        runner.deactivate()


def _engine_step(report, task: Task, loaded, export: ExportOptions, engine: EngineOptions, proto, input_names, example,
                 dynamic: bool, sets, references, check: CheckOptions, log) -> None:
    from ..errors import MissingDependencyError
    from ..onnx import carafe_nodes
    from ..trt.availability import build_unavailable, choose_plugin, run_unavailable

    from ..onnx.detection_nodes import detection_nodes

    use_plugin, fallback = choose_plugin(engine.use_plugin, engine.plugin_path, engine.backend)
    custom_nodes = bool(carafe_nodes(proto) or detection_nodes(proto))
    use_plugin = use_plugin and custom_nodes
    reason = build_unavailable(use_plugin, engine.backend)
    if reason is None and fallback and custom_nodes:
        log(f"TensorRT engine: {fallback}")
    if reason is None:
        from ..trt import BuildOptions, build_engine

        mins, opts, maxs = task.engine_profile(input_names, example, dynamic)
        try:
            result = build_engine(BuildOptions(
                onnx_path=export.output, engine_path=engine.path, min_shapes={**mins, **engine.min_shapes},
                opt_shapes={**opts, **engine.opt_shapes}, max_shapes={**maxs, **engine.max_shapes},
                use_plugin=use_plugin, plugin_path=engine.plugin_path, backend=engine.backend,
                progress=engine.progress))
        except MissingDependencyError as exc:  # e.g. an op the runtime at hand cannot build
            reason = str(exc)
    if reason is not None:
        report["engine"] = {"skipped": reason}
        log(f"TensorRT engine: skipped: {reason}")
        return
    report["engine"] = {"path": str(result.engine_path), "sidecar": str(result.sidecar_path),
                        "runtime": result.sidecar["runtime"], "carafe_form": result.sidecar["graph"]["carafe_form"],
                        **({"note": fallback} if fallback and carafe_nodes(proto) else {})}
    log(f"wrote {result.engine_path} and {result.sidecar_path}")
    if not check.enabled:
        return
    why_not = run_unavailable()
    if why_not is not None:
        report["checks"].append({"backend": "tensorrt", "status": "skipped", "reason": why_not, "gated": True})
        log(f"tensorrt: skipped: {why_not}")
        return
    from ..backends import TrtRunner

    runner = TrtRunner(result.engine_path, plugin=(engine.plugin_path or True) if use_plugin else False,
                       backend=engine.backend)
    _check_backend(report, task, runner, input_names, sets, references, export.fp16, check, log)
