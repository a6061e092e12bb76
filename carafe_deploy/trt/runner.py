"""Run a serialized TensorRT engine from numpy arrays or torch tensors.

One runner = one engine, one execution context (reused across calls) and one CUDA stream. Device memory comes from
torch's CUDA tensors when torch sees a GPU, else from pycuda (the listed ``tensorrt`` extra). Inputs are bound with
``set_input_shape`` / ``set_tensor_address`` and run with ``execute_async_v3``; shapes outside the engine's
optimization profile are refused with the profile in the message.

An engine runs only on the runtime that built it. The runtime is the one its sidecar names (else TensorRT-RTX for a
file that starts with TensorRT-RTX's magic, else the automatic choice); an explicit ``backend`` that differs from
the sidecar is refused before anything is loaded, with both runtimes in the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import DeployError, MissingDependencyError
from .runtime import (NO_GPU, RUNTIME_LABELS, check_backend, cuda_device_count, dtype_name, import_tensorrt,
                      make_logger, runtime_label)
from .profiles import InputProfile
from .sidecar import read_sidecar

__all__ = ["EngineRunner", "TensorSpec", "run_engine", "check_feeds", "engine_runtime", "RTX_ENGINE_MAGIC"]

# the first bytes of every TensorRT-RTX 1.7 engine built here; not documented, and whether full TensorRT never writes
# them is not verified (it cannot be installed here), so the magic only picks the default runtime, it refuses nothing
RTX_ENGINE_MAGIC = b"vtrt"

_PYCUDA_HINT = "pycuda is not installed and torch has no CUDA device: pip install pycuda (or a CUDA build of torch)"


class TensorSpec:
    def __init__(self, name: str, is_input: bool, dtype: str, shape: tuple[int, ...], profile: InputProfile | None):
        self.name, self.is_input, self.dtype, self.shape, self.profile = name, is_input, dtype, shape, profile

    def __repr__(self) -> str:
        kind = "input" if self.is_input else "output"
        return f"TensorSpec({kind} {self.name!r}, {self.dtype}, {'x'.join(map(str, self.shape))})"


class _TorchBuffers:
    """Device buffers as torch CUDA tensors; the runner's stream is a ``torch.cuda.Stream``."""

    kind = "torch"

    def __init__(self, device: int):
        import torch

        self.torch = torch
        self.device = torch.device("cuda", device)
        self.stream = torch.cuda.Stream(device=self.device)
        self.handle = self.stream.cuda_stream

    def to_device(self, value, dtype: str):
        torch = self.torch
        want = getattr(torch, dtype)
        # a CUDA input may still be being written on the caller's stream
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            if isinstance(value, torch.Tensor):
                t = value.to(device=self.device, dtype=want, non_blocking=True)
            else:
                t = torch.from_numpy(np.ascontiguousarray(value)).to(device=self.device, dtype=want, non_blocking=True)
            return t.contiguous()

    def empty(self, shape, dtype: str):
        return self.torch.empty(tuple(shape), dtype=getattr(self.torch, dtype), device=self.device)

    @staticmethod
    def address(buf) -> int:
        return int(buf.data_ptr())

    def synchronize(self) -> None:
        self.stream.synchronize()

    def to_host(self, buf, as_torch: bool):
        return buf if as_torch else buf.cpu().numpy()

    def close(self) -> None:
        pass


class _PyCudaBuffers:
    """Device buffers through pycuda, in the device's primary context."""

    kind = "pycuda"

    def __init__(self, device: int):
        try:
            import pycuda.driver as cuda
        except ImportError as exc:
            raise MissingDependencyError(_PYCUDA_HINT) from exc
        cuda.init()
        self.cuda = cuda
        self.context = cuda.Device(device).retain_primary_context()
        self.context.push()
        self.stream = cuda.Stream()
        self.handle = self.stream.handle

    def to_device(self, value, dtype: str):
        if dtype == "bfloat16":
            raise TypeError("bfloat16 engine I/O needs torch tensors (numpy has no bfloat16); install CUDA torch")
        if not isinstance(value, np.ndarray):  # a CPU torch tensor
            value = value.detach().cpu().numpy()
        host = np.ascontiguousarray(value, dtype=np.dtype(dtype))
        mem = self.cuda.mem_alloc(max(host.nbytes, 1))
        self.cuda.memcpy_htod_async(mem, host, self.stream)
        return _PyCudaArray(mem, host.shape, host.dtype, keep=host)

    def empty(self, shape, dtype: str):
        if dtype == "bfloat16":
            raise TypeError("bfloat16 engine I/O needs torch tensors (numpy has no bfloat16); install CUDA torch")
        host = self.cuda.pagelocked_empty(tuple(shape), np.dtype(dtype))
        return _PyCudaArray(self.cuda.mem_alloc(max(host.nbytes, 1)), host.shape, host.dtype, keep=host)

    @staticmethod
    def address(buf) -> int:
        return int(buf.mem)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def to_host(self, buf, as_torch: bool):
        self.cuda.memcpy_dtoh_async(buf.keep, buf.mem, self.stream)
        self.stream.synchronize()
        out = np.array(buf.keep)
        if as_torch:
            import torch

            return torch.from_numpy(out)
        return out

    def close(self) -> None:
        try:
            self.context.pop()
        except Exception:  # already popped by an outer owner
            pass


class _PyCudaArray:
    def __init__(self, mem, shape, dtype, keep):
        self.mem, self.shape, self.dtype, self.keep = mem, shape, dtype, keep


def _buffers(device: int, buffers: str | None):
    if buffers not in (None, "torch", "pycuda"):
        raise ValueError(f"buffers must be 'torch' or 'pycuda', got {buffers!r}")
    if cuda_device_count() == 0:  # before any advice to install pycuda, which needs a GPU too
        raise MissingDependencyError(NO_GPU)
    if buffers in (None, "torch"):
        try:
            import torch

            if torch.cuda.is_available():
                return _TorchBuffers(device)
        except ImportError:
            pass
        if buffers == "torch":
            raise MissingDependencyError("torch has no CUDA device: install a CUDA build of torch or use pycuda")
    return _PyCudaBuffers(device)


class EngineRunner:
    """Run an engine many times; ``infer({name: array})`` -> ``{output name: array}``.

    ``plugin``: ``True`` loads the CARAFE plugin library when one is found (required when the engine's sidecar says it
    was built with it), a path loads that file, ``False`` loads nothing. ``backend``: "tensorrt" or "tensorrt-rtx"
    (default: the runtime that built the engine, :func:`engine_runtime`). ``buffers``: "torch" or "pycuda" (default:
    torch when it sees a GPU).
    """

    def __init__(self, engine_path, *, plugin: bool | str | Path = True, device: int = 0, backend: str | None = None,
                 buffers: str | None = None, verbose: bool = False):
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise FileNotFoundError(f"engine {self.engine_path} does not exist")
        self.sidecar = read_sidecar(self.engine_path)
        built_by, evidence = engine_runtime(self.engine_path, self.sidecar)
        if check_backend(backend) is not None and self.sidecar is not None and backend != built_by:
            raise DeployError(f"{self.engine_path} was built by {RUNTIME_LABELS[built_by]} ({evidence}); an engine "
                              f"runs only on the runtime that built it, not on {RUNTIME_LABELS[backend]}: run it with "
                              f"--backend {built_by}, or rebuild it with --backend {backend}")
        try:
            trt = import_tensorrt(backend or built_by)
        except MissingDependencyError as exc:
            if backend is None and built_by is not None:
                raise MissingDependencyError(
                    f"{self.engine_path} was built by {RUNTIME_LABELS[built_by]} ({evidence}); {exc}") from exc
            raise
        self.trt = trt
        self.logger = make_logger(trt, verbose)
        # a CUDA device first: without one TensorRT cannot deserialize (a missing dependency, not a broken engine)
        self.buffers = _buffers(device, buffers)
        try:
            self._load(trt, plugin)
        except BaseException:
            self.buffers.close()
            raise

    def _load(self, trt, plugin) -> None:
        self.plugin_path = self._load_plugin(trt, plugin)

        self.runtime = trt.Runtime(self.logger)
        if self.sidecar and self.sidecar["version_compatible"]:
            # version-compatible engines carry the lean runtime (and serialized plugins) as host code
            self.runtime.engine_host_code_allowed = True
        self.engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            hint = "" if self.plugin_path else " (no plugin library was loaded; set CARAFE_DEPLOY_PLUGIN)"
            if self.sidecar is None:
                hint += (" (no .json sidecar next to it: a version-compatible engine needs it, to allow the host"
                         " code it carries)")
            raise DeployError(f"{runtime_label(trt)} could not load {self.engine_path}{hint}: "
                              + ("; ".join(self.logger.errors)
                                 or "no reason logged; was it built with another TensorRT version or GPU?"))
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise DeployError(f"{runtime_label(trt)} could not create an execution context for {self.engine_path}: "
                              + "; ".join(self.logger.errors))
        self.tensors = self._io_specs(trt)
        self._bound: dict[str, object] = {}

    # -- setup -------------------------------------------------------------------------------------------------
    def _load_plugin(self, trt, plugin) -> Path | None:
        if plugin is False:
            return None
        needed = bool(self.sidecar and self.sidecar["plugin"]["used"] and not self.sidecar["plugin"]["serialized_in_engine"])
        if plugin is True:
            from .plugin import plugin_library

            path = plugin_library(required=needed)
        else:
            path = Path(plugin)
            if not path.is_file():
                raise FileNotFoundError(f"plugin library {path} does not exist")
        if path is None:
            return None
        from .plugin import load_plugin_library

        load_plugin_library(trt, path, self.logger)
        return path

    def _io_specs(self, trt) -> dict[str, TensorSpec]:
        specs = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
            profile = None
            if is_input:
                lo, mid, hi = self.engine.get_tensor_profile_shape(name, 0)
                profile = InputProfile(name, tuple(lo), tuple(mid), tuple(hi))
            specs[name] = TensorSpec(name, is_input, dtype_name(self.engine.get_tensor_dtype(name)), shape, profile)
        return specs

    @property
    def inputs(self) -> list[TensorSpec]:
        return [t for t in self.tensors.values() if t.is_input]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [t for t in self.tensors.values() if not t.is_input]

    # -- running -----------------------------------------------------------------------------------------------
    def check_feeds(self, feeds: Mapping[str, object]) -> None:
        """``ValueError`` for missing / unknown inputs and shapes outside the profile, ``TypeError`` for dtypes."""
        check_feeds(self.inputs, feeds)

    def bind(self, feeds: Mapping[str, object]) -> None:
        """Copy ``feeds`` to the device, set shapes, allocate outputs and bind every address (no launch)."""
        self.check_feeds(feeds)
        bound = {}
        for spec in self.inputs:
            value = feeds[spec.name]
            buf = self.buffers.to_device(value, spec.dtype)
            shape = tuple(int(d) for d in value.shape)
            if not self.context.set_input_shape(spec.name, shape):
                raise DeployError(f"TensorRT refused shape {'x'.join(map(str, shape))} for input {spec.name!r}: "
                                  + "; ".join(self.logger.errors))
            self.context.set_tensor_address(spec.name, self.buffers.address(buf))
            bound[spec.name] = buf
        for spec in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise DeployError(f"output {spec.name!r} has a data-dependent shape {shape}; not supported")
            buf = self.buffers.empty(shape, spec.dtype)
            self.context.set_tensor_address(spec.name, self.buffers.address(buf))
            bound[spec.name] = buf
        self._bound = bound

    def execute(self) -> None:
        """Launch on the runner's stream with the bound buffers and wait for it (what ``bench`` times)."""
        if not self._bound:
            raise RuntimeError("bind() inputs before execute()")
        if not self.context.execute_async_v3(self.buffers.handle):
            raise DeployError("TensorRT execution failed: " + "; ".join(self.logger.errors))
        self.buffers.synchronize()

    def fetch(self, as_torch: bool = False) -> dict:
        return {spec.name: self.buffers.to_host(self._bound[spec.name], as_torch) for spec in self.outputs}

    def infer(self, feeds: Mapping[str, object]) -> dict:
        """Run once; outputs are numpy arrays, or torch tensors when any input was a torch tensor."""
        as_torch = any(type(v).__module__.startswith("torch") for v in feeds.values())
        self.bind(feeds)
        self.execute()
        return self.fetch(as_torch)

    def close(self) -> None:
        self._bound = {}
        for attr in ("context", "engine", "runtime"):
            if hasattr(self, attr):
                setattr(self, attr, None)
        if hasattr(self, "buffers"):
            self.buffers.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_FLOATS = ("float16", "bfloat16", "float32", "float64")


def check_feeds(inputs: list[TensorSpec], feeds: Mapping[str, object]) -> None:
    """Names, dtypes and shapes of ``feeds`` against the engine's inputs and profile 0 (no TensorRT needed)."""
    names = [s.name for s in inputs]
    missing = [n for n in names if n not in feeds]
    unknown = [n for n in feeds if n not in names]
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(map(repr, missing)))
        if unknown:
            parts.append("unknown " + ", ".join(map(repr, unknown)))
        raise ValueError(f"engine inputs are {', '.join(names)}: {'; '.join(parts)}")
    for spec in inputs:
        value = feeds[spec.name]
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise TypeError(f"input {spec.name!r} must be a numpy array or torch tensor, got {type(value).__name__}")
        dtype = str(value.dtype).removeprefix("torch.")
        if (dtype in _FLOATS) != (spec.dtype in _FLOATS):
            raise TypeError(f"input {spec.name!r} is {dtype}, the engine wants {spec.dtype}")
        shape = tuple(int(d) for d in value.shape)
        if spec.profile is not None and not spec.profile.contains(shape):
            p = spec.profile
            fmt = lambda s: "x".join(map(str, s))  # noqa: E731
            raise ValueError(
                f"input {spec.name!r} shape {fmt(shape)} is outside the engine's optimization profile "
                f"(min {fmt(p.min)}, opt {fmt(p.opt)}, max {fmt(p.max)}); rebuild with a wider --min/--max"
            )


def engine_runtime(engine_path, sidecar: dict | None = None) -> tuple[str | None, str]:
    """(the runtime that built the engine, or ``None`` when nothing says; how that is known)."""
    if sidecar is not None:
        runtime = sidecar["runtime"]
        return runtime["name"], f"its sidecar says {runtime['name']} {runtime['version']}"
    try:
        with open(engine_path, "rb") as f:
            head = f.read(len(RTX_ENGINE_MAGIC))
    except OSError:
        return None, ""
    if head == RTX_ENGINE_MAGIC:
        return "tensorrt-rtx", f"the file starts with {RTX_ENGINE_MAGIC.decode()!r}"
    return None, ""


def run_engine(engine_path, feeds, *, plugin: bool | str = True, backend: str | None = None) -> dict:
    """Run a serialized engine once on numpy inputs; returns ``{output name: numpy array}``.

    ``MissingDependencyError`` when TensorRT (or a CUDA buffer backend) is not installed.
    """
    if not Path(engine_path).is_file():  # without TensorRT the backend is unavailable, whatever the path says
        import_tensorrt(check_backend(backend))
    with EngineRunner(engine_path, plugin=plugin, backend=backend) as runner:
        return runner.infer(feeds)
