"""ONNX -> serialized TensorRT engine (+ JSON sidecar), with full TensorRT (10, 11) or TensorRT-RTX.

Written against the TensorRT 10 and 11 Python APIs (names checked with tools/trt-api-check against the 11.4 bindings);
TensorRT-RTX 1.7 has the same names for everything used here (builds tested for real, tests/trt/). TensorRT 11 and
TensorRT-RTX networks are always strongly typed: precision follows the ONNX types, so an fp16 engine needs an fp16
export. TensorRT 10 also has the FP16/BF16 builder flags; ``fp16=True`` uses them there and is refused elsewhere.
What TensorRT-RTX cannot build is refused before parsing (:mod:`.rtx`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .. import __version__
from ..errors import DeployError, MissingDependencyError
from ..files import atomic_path, atomic_write_bytes
from . import rtx
from .graph import (PreparedGraph, all_nodes, load_onnx, onnx_float_types, onnx_input_dims, precision_mode,
                    prepare_onnx)
from .profiles import InputProfile, make_profile
from .runtime import (check_backend, dtype_name, import_tensorrt, is_rtx, make_logger, runtime_label, runtime_name,
                      trt_major)
from .sidecar import SCHEMA_ID, gpu_info, now_iso, sha256_file, write_sidecar

__all__ = ["BuildOptions", "BuildPlan", "BuildResult", "plan_build", "build_engine", "format_parser_errors",
           "parse_size"]

def parse_size(text: str) -> int:
    """``"512M"``, ``"4G"``, ``"1048576"`` -> bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in units and t[-1:] else ""
    number = t[: len(t) - len(unit)]
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"bad size {text!r}: write e.g. 512M, 4G or a number of bytes") from None
    if value < 1:
        raise ValueError(f"bad size {text!r}: must be at least 1 byte")
    return int(value)


@dataclass
class BuildOptions:
    onnx_path: Path
    engine_path: Path | None = None  # default: the ONNX path with suffix .engine
    min_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    opt_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    max_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    use_plugin: bool | None = None  # None: the plugin where its library is found, else unrolled (choose_plugin)
    plugin_path: Path | None = None  # default: carafe_deploy.trt.plugin.plugin_library()
    backend: str | None = None  # "tensorrt" or "tensorrt-rtx"; None: full TensorRT when installed, else TensorRT-RTX
    fp16: bool = False  # TensorRT 10 builder flag; TensorRT 11 and TensorRT-RTX build what the ONNX types say
    bf16: bool = False
    workspace_bytes: int | None = None
    timing_cache: Path | None = None
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    optimization_level: int | None = None
    progress: bool = True
    verbose: bool = False
    save_prepared: Path | None = None  # write the prepared ONNX here (e.g. for trtexec)


@dataclass
class BuildPlan:
    """Everything decided before TensorRT is imported: the prepared graph, the profile, the plugin library."""

    options: BuildOptions
    engine_path: Path
    prepared: PreparedGraph
    profile: dict[str, InputProfile]
    plugin_path: Path | None
    onnx_float_types: list[str]  # float types of inputs/outputs and weights together
    precision_mode: str  # fp32 / fp16 / bf16 / mixed from the ONNX types, int8 with Q/DQ (flags may override)
    # why the plugin library the graph needs was not found: the build stops on it, after saying whether TensorRT
    # itself is missing (the more fundamental piece); a dry run shows it as a note
    plugin_missing: str | None = None


@dataclass
class BuildResult:
    engine_path: Path
    sidecar_path: Path
    sidecar: dict
    warnings: list[str]


def plan_build(options: BuildOptions) -> BuildPlan:
    """Validate the inputs and prepare the graph; needs no TensorRT. Raises ``ValueError``/``DeployError``; a
    plugin library that is not found is recorded in ``plugin_missing`` (an explicit ``plugin_path`` that does not
    exist is an error)."""
    onnx_path = Path(options.onnx_path)
    check_backend(options.backend)
    model = load_onnx(onnx_path)
    from .availability import choose_plugin

    use_plugin, fallback = choose_plugin(options.use_plugin, options.plugin_path, options.backend)
    prepared = prepare_onnx(model, use_plugin=use_plugin)
    if fallback and (prepared.carafe_nodes or prepared.detection_nodes):
        prepared.notes.insert(0, fallback)
    profile = make_profile(onnx_input_dims(prepared.model), options.min_shapes, options.opt_shapes,
                           options.max_shapes)
    plugin_path = plugin_missing = None
    if use_plugin and (prepared.carafe_nodes or prepared.detection_nodes):
        if options.plugin_path is not None:
            plugin_path = Path(options.plugin_path)
            if not plugin_path.is_file():
                raise FileNotFoundError(f"plugin library {plugin_path} does not exist")
        else:
            from .plugin import plugin_library

            try:
                plugin_path = plugin_library(required=True)
            except MissingDependencyError as exc:
                plugin_missing = str(exc)
    if options.exclude_lean_runtime and not options.version_compatible:
        raise ValueError("--exclude-lean-runtime only applies to --version-compatible engines")
    if options.optimization_level is not None and not 0 <= options.optimization_level <= 5:
        raise ValueError(f"--opt-level must be 0..5, got {options.optimization_level}")
    # the ONNX as given: graph preparation may add float32 constants (Resize scales) to an fp16 model
    io_types, weight_types = onnx_float_types(model)
    floats = sorted(set(io_types) | set(weight_types))
    mode = precision_mode(model)
    engine_path = Path(options.engine_path) if options.engine_path else onnx_path.with_suffix(".engine")
    if options.save_prepared:
        import onnx

        with atomic_path(options.save_prepared) as tmp:
            onnx.save(prepared.model, str(tmp))
    return BuildPlan(options, engine_path, prepared, profile, plugin_path, floats, mode, plugin_missing)


def format_parser_errors(parser) -> str:
    """The ONNX parser's errors, one per line: node index, name and op, then TensorRT's description."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node, name, op = err.node(), err.node_name(), err.node_operator()
        where = f"node #{node}" if node >= 0 else "model"
        if name:
            where += f" {name!r}"
        if op:
            where += f" (op {op})"
        stack = ""
        try:
            depth = err.local_function_stack_size()
            if depth:
                stack = " in local function " + " > ".join(err.local_function_stack())
        except AttributeError:  # older bindings have no local-function stack
            pass
        code = getattr(err.code(), "name", str(err.code()))
        lines.append(f"  {where}{stack}: {err.desc()} [{code}]")
    return "\n".join(lines)


def _make_progress_monitor(trt):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class RichProgressMonitor(trt.IProgressMonitor):
        """TensorRT's build phases as nested rich progress bars. TensorRT calls it from several threads."""

        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._tasks: dict[str, int] = {}
            self._depth: dict[str, int] = {}
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), transient=True)

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self._lock:
                depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
                self._depth[phase_name] = depth
                self._tasks[phase_name] = self.progress.add_task("  " * depth + phase_name, total=num_steps)

        def step_complete(self, phase_name, step):
            with self._lock:
                if phase_name in self._tasks:
                    self.progress.update(self._tasks[phase_name], completed=step + 1)
            return True  # never cancel the build

        def phase_finish(self, phase_name):
            with self._lock:
                task = self._tasks.pop(phase_name, None)
                self._depth.pop(phase_name, None)
                if task is not None:
                    self.progress.remove_task(task)

    return RichProgressMonitor()


def _build_hint(plan: BuildPlan, logger) -> str:
    """A line after TensorRT's errors where the cause is known."""
    if any("makeScopeNodesContiguous" in m for m in logger.errors) and any(
            n.op_type == "Loop" for n in all_nodes(plan.prepared.model)):
        return ("\n  (a Loop whose body slices at offsets computed from the iteration number cannot be built by "
                "TensorRT: an earlier carafe-deploy's decomposed CARAFE export (its function looped over the k² taps) "
                "has one; re-export it, or build a portable or plugin export, whose CARAFE nodes are unrolled with "
                "--no-plugin)")
    return ""


def _tensor_info(tensor) -> dict:
    return {"name": tensor.name, "dtype": dtype_name(tensor.dtype), "shape": [int(d) for d in tensor.shape]}


def build_engine(options: BuildOptions, plan: BuildPlan | None = None) -> BuildResult:
    """Build and write the engine and its sidecar. ``MissingDependencyError`` without TensorRT; ``DeployError`` with
    the parser's / builder's own messages when they fail."""
    plan = plan or plan_build(options)
    trt = import_tensorrt(options.backend)
    label = runtime_label(trt)
    # TensorRT 11 and TensorRT-RTX networks are strongly typed whatever the flags; TensorRT 10 may be weakly typed
    strongly_typed_only = is_rtx(trt) or trt_major(trt) >= 11
    if plan.plugin_missing:
        raise MissingDependencyError(plan.plugin_missing)
    logger = make_logger(trt, options.verbose)
    onnx_path = Path(options.onnx_path)

    refusal = rtx.options_unsupported(trt, version_compatible=options.version_compatible,
                                      timing_cache=bool(options.timing_cache))
    if refusal:
        raise DeployError(refusal)
    for reason in (rtx.graph_unbuildable(plan.prepared.model, trt),
                   rtx.plugin_unusable(trt) if plan.plugin_path is not None else None):
        if reason:
            raise MissingDependencyError(reason)

    # TensorRT's own plugins (ROIAlign_TRT for RoiAlign, ...), as trtexec and polygraphy register them
    try:
        if not trt.init_libnvinfer_plugins(logger, ""):
            logger.warnings.append("init_libnvinfer_plugins failed: TensorRT's own plugins are not registered")
    except Exception as exc:  # noqa: BLE001 -- bindings without libnvinfer_plugin raise; the parser says what it missed
        logger.warnings.append(f"init_libnvinfer_plugins failed: {exc}")

    if plan.plugin_path is not None:
        from .plugin import load_plugin_library

        load_plugin_library(trt, plan.plugin_path, logger)

    builder_flags: list[str] = []
    weak_precision_flags = []
    for wanted, flag_name in ((options.fp16, "FP16"), (options.bf16, "BF16")):
        if not wanted:
            continue
        # FP16/BF16 builder flags exist in TensorRT 10 only
        flag = None if strongly_typed_only else getattr(trt.BuilderFlag, flag_name, None)
        if flag is None:
            raise DeployError(
                f"--{flag_name.lower()}: {label} is strongly typed and has no {flag_name} builder "
                f"flag; export a {flag_name.lower()} ONNX instead (carafe-deploy export --{flag_name.lower()})"
            )
        weak_precision_flags.append(flag)
        builder_flags.append(flag_name)
    strongly_typed = strongly_typed_only or not weak_precision_flags

    builder = trt.Builder(logger)
    network_flags = 0
    if not strongly_typed_only and strongly_typed:
        # TensorRT 10: opt in to strong typing so the engine computes in the ONNX types, as 11 always does.
        network_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(plan.prepared.model.SerializeToString(), str(onnx_path)):
        raise DeployError(f"{label}'s ONNX parser rejected {onnx_path}:\n{format_parser_errors(parser)}")

    config = builder.create_builder_config()
    for flag in weak_precision_flags:
        config.set_flag(flag)
    if options.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))
    if options.optimization_level is not None:
        config.builder_optimization_level = int(options.optimization_level)

    trt_profile = builder.create_optimization_profile()
    network_inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for tensor in network_inputs:
        entry = plan.profile.get(tensor.name)
        if entry is None:
            raise DeployError(f"the parsed network has an input {tensor.name!r} that the ONNX graph inputs do not")
        trt_profile.set_shape(tensor.name, entry.min, entry.opt, entry.max)
    config.add_optimization_profile(trt_profile)

    cache = None
    if options.timing_cache:
        cache_path = Path(options.timing_cache)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, False)

    serialized_plugin = False
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        builder_flags.append("VERSION_COMPATIBLE")
        if options.exclude_lean_runtime:
            config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
            builder_flags.append("EXCLUDE_LEAN_RUNTIME")
        if plan.plugin_path is not None:
            # the plugin travels inside the engine, so a newer TensorRT can run it without the .so next to it
            config.plugins_to_serialize = [str(plan.plugin_path)]
            serialized_plugin = True

    monitor = None
    if options.progress:
        monitor = _make_progress_monitor(trt)
        config.progress_monitor = monitor
    if monitor is not None:
        with monitor.progress:
            serialized = builder.build_serialized_network(network, config)
    else:
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "\n".join(f"  {m}" for m in logger.errors) or "  (TensorRT logged no error; rerun with --verbose)"
        raise DeployError(f"{label} could not build an engine from {onnx_path}:\n{detail}{_build_hint(plan, logger)}")

    engine_path = plan.engine_path
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(engine_path, bytes(serialized))
    if cache is not None:
        atomic_write_bytes(options.timing_cache, bytes(config.get_timing_cache().serialize()))

    precision_mode = plan.precision_mode
    quantized = precision_mode not in ("fp32", "fp16", "bf16", "mixed")  # Q/DQ layers keep their type under flags
    if "FP16" in builder_flags and not quantized:
        precision_mode = "fp16"
    elif "BF16" in builder_flags and not quantized:
        precision_mode = "bf16"
    data = {
        "schema": SCHEMA_ID,
        "engine": {"file": engine_path.name, "bytes": engine_path.stat().st_size, "sha256": sha256_file(engine_path)},
        "created": now_iso(),
        "carafe_deploy_version": __version__,
        "runtime": {"name": runtime_name(trt), "version": str(trt.__version__)},
        "gpu": gpu_info(),
        "onnx": {"file": str(onnx_path), "sha256": sha256_file(onnx_path)},
        "inputs": [_tensor_info(t) for t in network_inputs],
        "outputs": [_tensor_info(network.get_output(i)) for i in range(network.num_outputs)],
        "profiles": [{name: p.to_json() for name, p in plan.profile.items()}],
        "precision": {"mode": precision_mode, "onnx_float_types": plan.onnx_float_types,
                      "builder_flags": [f for f in builder_flags if f in ("FP16", "BF16")],
                      "strongly_typed": strongly_typed},
        "plugin": {
            "used": plan.plugin_path is not None,
            "library": str(plan.plugin_path) if plan.plugin_path else None,
            "sha256": sha256_file(plan.plugin_path) if plan.plugin_path else None,
            "serialized_in_engine": serialized_plugin,
        },
        "version_compatible": bool(options.version_compatible),
        "workspace_bytes": int(options.workspace_bytes) if options.workspace_bytes else None,
        "graph": {"carafe_nodes": len(plan.prepared.carafe_nodes), "mmcv_converted": plan.prepared.mmcv_converted,
                  "carafe_form": plan.prepared.carafe_form},
    }
    if plan.prepared.detection_nodes:  # only detectors' graphs have them; other sidecars read as before
        data["graph"].update(detection_nodes=len(plan.prepared.detection_nodes),
                             detection_form=plan.prepared.detection_form)
    side = write_sidecar(engine_path, data)
    return BuildResult(engine_path, side, data, list(logger.warnings))
