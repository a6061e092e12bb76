"""Write a Triton model repository from an exported model: the ONNX file (and a TensorRT engine with its sidecar).

For a model named ``NAME`` (the export's ``carafe_deploy.model``, or the file's stem) the repository holds:

* ``NAME_python``: Triton's Python backend running the portable graph in ONNX Runtime on the CPU (what the
  ``nvidia-pytriton`` wheel's server can run: it has no other backend);
* ``NAME_onnxruntime``: the same graph for Triton's ONNX Runtime backend (``onnxruntime_onnx``);
* ``NAME_tensorrt`` (with ``--engine``): the engine for Triton's TensorRT backend (``tensorrt_plan``), with the
  plugin library beside it when the engine uses it;
* detectors (``NAME_detect``) and segmenters (``NAME_segment``): an ensemble that takes encoded image bytes and runs
  the pipeline's own pre- and post-processing (:mod:`carafe_deploy.imaging`) around one of the above
  (``NAME_pre`` -> network -> ``NAME_post``);
* ``tritonserver.sh``: the command that starts a full Triton (NVIDIA's container) on the repository, with the
  plugin library loaded.

Batching: a graph whose inputs and outputs all have a dynamic first axis gets ``max_batch_size`` (the option; for
the engine, its profile's largest batch) and dynamic batching; otherwise ``max_batch_size: 0`` and full shapes.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DeployError
from ..files import atomic_write_text, check_writable, replace_dir, staging_dir
from ..tasks.pipeline import file_task
from .config import TensorSpec, ensemble_config, model_config, model_config_module, onnx_tensor_specs, write_config

__all__ = ["RepositoryOptions", "Repository", "write_repository", "BACKENDS", "PLUGIN_FILE"]

PYTHON_MODELS = Path(__file__).resolve().parent / "python_models"
IMAGING_MODULE = "carafe_imaging.py"  # carafe_deploy/imaging.py, as the Python models import it
BACKENDS = ("python", "onnxruntime", "tensorrt")
PLUGIN_FILE = "libcarafe_trt_plugin.so"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class RepositoryOptions:
    """What :func:`write_repository` writes (``carafe-deploy triton``'s options)."""

    output: Path  # the repository folder; must not exist unless ``force``
    engine: Path | None = None  # a TensorRT engine with its sidecar (ENGINE.json)
    name: str | None = None  # default: the export's model name, else the ONNX file's stem
    max_batch_size: int = 8  # for graphs with a dynamic batch axis
    instances: int = 2  # CPU instances of each Python-backend network model
    queue_delay_us: int = 2000  # dynamic batching: how long a request may wait for others
    plugin: Path | None = None  # the plugin library the engine uses (default: the one its sidecar names)
    ensemble_backend: str = "python"  # the network model the task ensemble runs: python, onnxruntime or tensorrt
    force: bool = False  # replace an existing repository folder


@dataclass
class Repository:
    """What was written: the folder, the model name and task, each Triton model with what it is."""

    path: Path
    name: str
    task: str
    models: dict[str, str]  # Triton model -> one line for people
    ensemble: str | None = None
    notes: list[str] = field(default_factory=list)


def write_repository(onnx_path, options: RepositoryOptions) -> Repository:
    """Write the repository (into a temporary folder beside ``options.output``, renamed into place when complete).

    ``DeployError`` for a model or engine that cannot be served as asked, before anything is written."""
    from ..backends.onnxrt import make_session, needs_custom_op_library
    from ..onnx import load_model, to_portable

    onnx_path = Path(onnx_path)
    out = Path(options.output)
    model_config_module()  # tritonclient (the serve extra) before any work
    _check_options(options, onnx_path, out)
    model = load_model(onnx_path)
    library, notes = None, []
    if needs_custom_op_library(model):  # a plugin-form export: served as it is, with the custom-op library
        from ..errors import MissingDependencyError
        from ..onnxruntime import library_path

        try:
            library = Path(library_path())
        except MissingDependencyError as exc:  # else with the nodes' standard-op function
            model = to_portable(model)
            notes.append(f"the plugin-form graph is served as the portable form: {exc}")
    make_session(model)  # the graph must load in ONNX Runtime here before it is served by it
    props = {p.key: p.value for p in model.metadata_props}
    task = file_task(model)
    name = options.name or props.get("carafe_deploy.model") or onnx_path.stem
    if not _NAME.match(name):
        raise DeployError(f"model name {name!r}: use letters, digits, '_', '.', '-' (give one with --name)")
    inputs, outputs = onnx_tensor_specs(model)
    engine = _engine_plan(options, inputs, outputs) if options.engine else None
    if options.ensemble_backend == "tensorrt" and engine is None:
        raise DeployError("--ensemble-backend tensorrt needs --engine")

    result = Repository(out, name, task, {}, notes=notes)
    # written in a hidden folder beside REPO and swapped into place when complete (a killed run's folder is removed
    # by the next one: carafe_deploy.files)
    with staging_dir(out) as staging:
        tmp = staging / out.name
        tmp.mkdir(mode=0o755)  # the server (e.g. in a container) must read it
        _write_onnx_models(tmp, name, model, inputs, outputs, options, result, library, out)
        if engine is not None:
            _write_tensorrt_model(tmp, name, engine, options, result)
        if task in ("detection", "segmentation"):
            _write_ensemble(tmp, name, task, inputs, outputs, options, result)
        elif task != "generic":
            result.notes.append(f"task {task!r} has no ensemble here; the network models serve tensors")
        _write_launcher(tmp, result, engine)
        if out.exists() and not options.force:  # appeared meanwhile
            raise DeployError(f"{out} exists: choose a new folder, or --force to replace it")
        replace_dir(tmp, out)  # the old repository, if any, is now at tmp and goes with the staging folder
    return result


def _check_options(options: RepositoryOptions, onnx_path: Path, out: Path) -> None:
    if options.max_batch_size < 1 or options.instances < 1 or options.queue_delay_us < 0:
        raise DeployError("--max-batch-size and --instances must be >= 1, --max-queue-delay-us >= 0")
    if options.ensemble_backend not in BACKENDS:
        raise DeployError(f"--ensemble-backend must be one of {', '.join(BACKENDS)}")
    if not out.parent.is_dir():
        raise DeployError(f"cannot write {str(out)!r}: directory {str(out.parent)!r} does not exist")
    if out.exists() and not options.force:
        raise DeployError(f"{out} exists: choose a new folder, or --force to replace it")
    if out.exists() and not out.is_dir():
        raise DeployError(f"{out} exists and is not a folder")
    inputs = [p for p in (onnx_path, options.engine, options.plugin) if p]
    for p in inputs:  # replacing the folder would delete an input inside it (or the input itself)
        if Path(os.path.realpath(p)).is_relative_to(os.path.realpath(out)):
            raise DeployError(f"{p} is inside the repository {out} that would be replaced; choose another folder")
    # the repository is made beside its final place, then renamed: its folder must take new entries
    check_writable(out.with_name(f".{out.name}.probe"), "-o/--output")


def _batching(inputs, outputs) -> bool:
    return all(len(t.shape) >= 1 and t.shape[0] == -1 for t in (*inputs, *outputs))


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # one copy on disk for the two models that run the same graph
    except OSError:
        shutil.copyfile(src, dst)


def _python_model(dst: Path, source: str, with_imaging: bool) -> None:
    """A Python-backend model's version folder: always its model.py (Triton 2.51 hangs on a Python model without
    one), and the imaging module the pre- and post-processing import."""
    version = dst / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PYTHON_MODELS / source, version / "model.py")
    if with_imaging:
        from .. import imaging

        shutil.copyfile(imaging.__file__, version / IMAGING_MODULE)


def _write_onnx_models(root: Path, name: str, model, inputs, outputs, options, result: Repository,
                       library: Path | None = None, final: Path | None = None) -> None:
    """The Python-backend and ONNX Runtime-backend models of the graph; a plugin-form graph with the custom-op
    library (``library``) copied into each version folder: the Python model registers it by name, the ONNX Runtime
    backend through ``model_operations`` by its absolute path in the final repository (``final``)."""
    from ..onnx.files import save_model

    batch = options.max_batch_size if _batching(inputs, outputs) else 0
    delay = options.queue_delay_us if batch else None
    py = root / f"{name}_python"
    _python_model(py, "onnx_model.py", with_imaging=False)
    save_model(model, py / "1" / "model.onnx")
    params = {"ONNX_FILE": "model.onnx", "ORT_THREADS": "1"}
    if library is not None:
        _link_or_copy(library, py / "1" / library.name)
        params["CUSTOM_OP_LIBRARY"] = library.name
    write_config(py, model_config(py.name, inputs=inputs, outputs=outputs, max_batch_size=batch, backend="python",
                                  instance_kind="KIND_CPU", instance_count=options.instances, queue_delay_us=delay,
                                  parameters=params))
    ort = root / f"{name}_onnxruntime"
    _link_or_copy(py / "1" / "model.onnx", ort / "1" / "model.onnx")
    for extra in (py / "1").glob("model.onnx.data"):  # weights over 2 GB live beside the graph
        _link_or_copy(extra, ort / "1" / extra.name)
    config = model_config(ort.name, inputs=inputs, outputs=outputs, max_batch_size=batch,
                          platform="onnxruntime_onnx", instance_kind="KIND_AUTO", queue_delay_us=delay)
    if library is not None:
        _link_or_copy(library, ort / "1" / library.name)
        config.model_operations.op_library_filename.append(
            str(Path(os.path.realpath(final or root)) / ort.name / "1" / library.name))
        result.notes.append(f"{ort.name} names its custom-op library by absolute path (Triton's model_operations): "
                            "move the repository and it must be written again")
    write_config(ort, config)
    what = f"max_batch_size {batch}" + (", dynamic batching" if batch else "")
    form = "the plugin-form graph with the custom-op library" if library is not None else "the portable graph"
    result.models[py.name] = f"Python backend: {form} in ONNX Runtime (CPU x{options.instances}), {what}"
    result.models[ort.name] = f"ONNX Runtime backend (onnxruntime_onnx), {what}" + (
        ", custom-op library" if library is not None else "")


@dataclass
class _Engine:
    path: Path
    sidecar: dict
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int
    plugin: Path | None


def _engine_plan(options: RepositoryOptions, onnx_inputs, onnx_outputs) -> _Engine:
    from ..trt import sidecar as engine_sidecar

    path = Path(options.engine)
    if not path.is_file():
        raise DeployError(f"--engine: no such file {str(path)!r}")
    sidecar = engine_sidecar.read_sidecar(path)
    if sidecar is None:
        raise DeployError(f"{path} has no sidecar {path.name}.json (carafe-deploy build writes it): its tensors, "
                          "types and profile make the Triton configuration")
    if sidecar["runtime"]["name"] != "tensorrt":
        raise DeployError(f"{path} was built by {sidecar['runtime']['name']} {sidecar['runtime']['version']}; "
                          "Triton's TensorRT backend runs engines of full TensorRT only: rebuild it with "
                          "carafe-deploy build --backend tensorrt")
    inputs = [TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in sidecar["inputs"]]
    outputs = [TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in sidecar["outputs"]]
    if [t.name for t in inputs] != [t.name for t in onnx_inputs] or \
            sorted(t.name for t in outputs) != sorted(t.name for t in onnx_outputs):
        raise DeployError(f"{path} has inputs {[t.name for t in inputs]} and outputs {[t.name for t in outputs]}, "
                          f"the ONNX model {[t.name for t in onnx_inputs]} and {[t.name for t in onnx_outputs]}: "
                          "give the engine built from this model")
    batch = 0
    if _batching(inputs, outputs):
        profile = sidecar["profiles"][0]
        lows = {profile[t.name]["min"][0] for t in inputs}
        if lows != {1}:
            raise DeployError(f"{path}: the profile's smallest batch is {sorted(lows)}; Triton sends batches from 1 "
                              "(rebuild with --min NAME:1x...)")
        batch = min(profile[t.name]["max"][0] for t in inputs)
    plugin = None
    info = sidecar["plugin"]
    if info["used"] and not info["serialized_in_engine"]:
        plugin = Path(options.plugin or info["library"])
        if not plugin.is_file():
            raise DeployError(f"{path} was built with the plugin library {plugin}, which is not there: give it with "
                              "--plugin LIB.so")
        if engine_sidecar.sha256_file(plugin) != info["sha256"]:
            raise DeployError(f"{plugin} is not the plugin library {path} was built with (its sha256 differs from "
                              "the sidecar's): give that one with --plugin LIB.so")
    elif options.plugin:
        raise DeployError(f"--plugin: {path} does not load a plugin library"
                          + (" (it is serialized in the engine)" if info["used"] else ""))
    return _Engine(path, sidecar, inputs, outputs, batch, plugin)


def _write_tensorrt_model(root: Path, name: str, engine: _Engine, options, result: Repository) -> None:
    import json

    model_dir = root / f"{name}_tensorrt"
    (model_dir / "1").mkdir(parents=True)
    shutil.copyfile(engine.path, model_dir / "1" / "model.plan")
    atomic_write_text(model_dir / "engine.json", json.dumps(engine.sidecar, indent=2) + "\n")
    if engine.plugin is not None:
        shutil.copyfile(engine.plugin, model_dir / PLUGIN_FILE)
    delay = options.queue_delay_us if engine.max_batch_size else None
    write_config(model_dir, model_config(model_dir.name, inputs=engine.inputs, outputs=engine.outputs,
                                   max_batch_size=engine.max_batch_size, platform="tensorrt_plan",
                                   instance_kind="KIND_GPU", queue_delay_us=delay))
    side = engine.sidecar
    gpu = side["gpu"]["name"] if side["gpu"] else "an unrecorded GPU"
    result.models[model_dir.name] = (f"TensorRT backend (tensorrt_plan), max_batch_size {engine.max_batch_size}: "
                                     f"built with TensorRT {side['runtime']['version']} on {gpu}"
                                     + ("; loads the plugin library beside it" if engine.plugin else ""))
    if engine.plugin is not None:
        result.notes.append(f"{model_dir.name} loads the plugin library beside it (tritonserver.sh passes it to "
                            "the TensorRT backend, whose dlopen registers the creators); not run here: no GPU "
                            "(docs/SERVING.md)")
    result.notes.append(f"{model_dir.name} runs only in a Triton whose TensorRT is {side['runtime']['version']}"
                        + (" or later (version-compatible engine)" if side["version_compatible"] else "")
                        + ", on a GPU like the one it was built on")


def _write_ensemble(root: Path, name: str, task: str, inputs, outputs, options, result: Repository) -> None:
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3:
        raise DeployError(f"a {task} model takes one N,3,H,W image; this one has inputs "
                          f"{[(t.name, t.shape) for t in inputs]}")
    image = inputs[0]
    if image.shape[0] not in (-1, 1):
        raise DeployError(f"the {task} ensemble sends one image per request; {image.name} has a fixed batch of "
                          f"{image.shape[0]}: export with batch 1 or a dynamic batch")
    net = f"{name}_{options.ensemble_backend}"
    by_name = {t.name: t for t in outputs}
    raw = TensorSpec("IMAGE", "object", (1,))
    pre_tensor = TensorSpec("image", "float32", (1, 3, -1, -1) if image.shape[2] == -1 or image.shape[3] == -1
                            else (1, 3, image.shape[2], image.shape[3]))
    pre, post = root / f"{name}_pre", root / f"{name}_post"

    def one(t: TensorSpec) -> TensorSpec:  # a network output for one image (batch 1)
        return TensorSpec(t.name, t.dtype, (1, *t.shape[1:]))

    if task == "detection":
        missing = {"dets", "labels"} - set(by_name)
        if missing:
            raise DeployError(f"a detector has outputs dets, labels (masks); this one lacks {sorted(missing)}")
        fixed = image.shape[2] != -1 and image.shape[3] != -1
        factor, size = TensorSpec("factor", "float32", (1,)), TensorSpec("size", "int32", (2,))
        _python_model(pre, "detection_pre.py", with_imaging=True)
        write_config(pre, model_config(pre.name, inputs=[raw], outputs=[pre_tensor, factor, size], max_batch_size=0,
                                       backend="python", instance_kind="KIND_CPU",
                                       parameters={"CANVAS": f"{image.shape[2]},{image.shape[3]}" if fixed else "",
                                                   "SCALE": "1333,800"}))
        net_outputs = [one(by_name[n]) for n in ("dets", "labels", "masks") if n in by_name]
        k = by_name["dets"].shape[1]
        final = [TensorSpec("DETS", "float32", (k, 5)), TensorSpec("LABELS", by_name["labels"].dtype, (k,))]
        if "masks" in by_name:
            final.append(TensorSpec("MASKS", by_name["masks"].dtype, (k, *by_name["masks"].shape[2:])))
        _python_model(post, "detection_post.py", with_imaging=True)
        write_config(post, model_config(post.name, inputs=[*net_outputs, factor, size], outputs=final,
                                        max_batch_size=0, backend="python", instance_kind="KIND_CPU"))
        ensemble = f"{name}_detect"
        steps = [(pre.name, {"IMAGE": "IMAGE"}, {"image": "pre_image", "factor": "pre_factor", "size": "pre_size"}),
                 (net, {image.name: "pre_image"}, {t.name: f"net_{t.name}" for t in net_outputs}),
                 (post.name, {**{t.name: f"net_{t.name}" for t in net_outputs}, "factor": "pre_factor",
                              "size": "pre_size"}, {t.name: t.name for t in final})]
        what = "image bytes -> DETS (K, 5) in the image's pixels, LABELS (K,)" + (", MASKS" if "masks" in by_name
                                                                                  else "")
    else:
        if len(outputs) != 1 or len(outputs[0].shape) != 4:
            raise DeployError(f"a segmenter has one N,K,H,W logits output; this one has {[t.name for t in outputs]}")
        logits = outputs[0]
        _python_model(pre, "segmentation_pre.py", with_imaging=True)
        fixed = image.shape[2] != -1 and image.shape[3] != -1
        write_config(pre, model_config(pre.name, inputs=[raw], outputs=[pre_tensor], max_batch_size=0,
                                       backend="python", instance_kind="KIND_CPU",
                                       parameters={"SIZE": f"{image.shape[2]},{image.shape[3]}" if fixed else ""}))
        labels = TensorSpec("LABEL_MAP", "int64", (-1, -1))
        _python_model(post, "segmentation_post.py", with_imaging=True)
        write_config(post, model_config(post.name, inputs=[TensorSpec("logits", logits.dtype, (1, *logits.shape[1:]))],
                                        outputs=[labels], max_batch_size=0, backend="python",
                                        instance_kind="KIND_CPU"))
        ensemble = f"{name}_segment"
        steps = [(pre.name, {"IMAGE": "IMAGE"}, {"image": "pre_image"}),
                 (net, {image.name: "pre_image"}, {logits.name: "net_logits"}),
                 (post.name, {"logits": "net_logits"}, {"LABEL_MAP": "LABEL_MAP"})]
        final = [labels]
        what = "image bytes -> LABEL_MAP (H, W), the per-pixel class"
    ens = root / ensemble
    (ens / "1").mkdir(parents=True)  # an ensemble needs a version folder, empty
    write_config(ens, ensemble_config(ensemble, inputs=[raw], outputs=final, steps=steps))
    result.models[pre.name] = f"Python backend: {task} pre-processing (carafe_deploy.imaging)"
    result.models[post.name] = f"Python backend: {task} post-processing (carafe_deploy.imaging)"
    result.models[ensemble] = f"ensemble: {what}, through {net}"
    result.ensemble = ensemble


def _write_launcher(root: Path, result: Repository, engine: _Engine | None) -> None:
    """tritonserver.sh: a full Triton (NVIDIA's container) on this repository, with the plugin library loaded."""
    lines = ["#!/bin/sh",
             "# Start a full Triton Inference Server (NVIDIA's container, or any tritonserver with the ONNX Runtime",
             "# and TensorRT backends) on this repository; extra arguments go to tritonserver. Written by",
             "# carafe-deploy triton; docs/SERVING.md has the docker command. CPU, from PyPI: carafe-deploy serve DIR",
             'here=$(cd "$(dirname "$0")" && pwd)']
    args = ['--model-repository="$here"']
    if engine is not None and engine.plugin is not None:
        lines += [f"# {result.name}_tensorrt needs the CARAFE plugin library beside it. Triton's TensorRT backend "
                  "dlopens the",
                  "# libraries named here, and libcarafe_trt_plugin.so registers its creators when it is loaded",
                  "# (docs/SERVING.md says what has and has not run)."]
        args.append(f'--backend-config=tensorrt,plugins="$here/{result.name}_tensorrt/{PLUGIN_FILE}"')
    if engine is not None and engine.sidecar["version_compatible"]:
        args.append("--backend-config=tensorrt,version-compatible=true")
    lines.append("exec tritonserver " + " ".join(args) + ' "$@"')
    path = root / "tritonserver.sh"
    atomic_write_text(path, "\n".join(lines) + "\n")
    path.chmod(0o755)
