"""A stand-in ``tensorrt`` module for exercising carafe_deploy.trt's control flow on machines without TensorRT.

It mimics only the API surface the builder and runner call, with TensorRT's documented behaviour where the tests
depend on it: the ONNX parser takes a model-local function before a plugin, fails on an op it has no importer,
function or loaded plugin for, and records errors with node name/op; profiles reject shapes outside min/max; FP16
builder flags exist in 10 and not in 11. Its "engine" computes the toy models' stand-in CARAFE body (see trt_toys)
by reading and writing the bound addresses, so a runner that binds the wrong buffers gives wrong numbers.

Nothing here tells whether real TensorRT works: tests that use it say so.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types

import numpy as np
import onnx

_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64}


def make(version: str = "11.4.0.106", parse_errors=None, build_error: str | None = None):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    trt.log = []  # what the code under test asked of "TensorRT"
    trt.loaded_libraries = []

    flags = ["DEBUG", "GPU_FALLBACK", "TF32", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"]
    if major < 11:
        flags += ["FP16", "BF16"]
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags, start=0)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED"], start=0)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE"], start=0)
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"], start=0)
    trt.DataType = enum.IntEnum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "BF16", "INT64"], start=0)
    Severity = enum.IntEnum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"], start=0)

    class ILogger:
        def __init__(self):
            pass

    ILogger.Severity = Severity

    class IProgressMonitor:
        def __init__(self):
            pass

    trt.ILogger, trt.IProgressMonitor = ILogger, IProgressMonitor

    class Registry:
        def load_library(self, path):
            trt.log.append(("load_library", path))
            trt.loaded_libraries.append(path)
            return object()

    registry = Registry()
    trt.get_plugin_registry = lambda: registry

    def init_libnvinfer_plugins(logger, namespace):
        trt.log.append(("init_libnvinfer_plugins", namespace))
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins

    class Tensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.outputs = flags, [], []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

    class ParserError:
        def __init__(self, node, name, op, desc, stack=()):
            self._v = (node, name, op, desc, list(stack))

        def node(self): return self._v[0]
        def node_name(self): return self._v[1]
        def node_operator(self): return self._v[2]
        def desc(self): return self._v[3]
        def code(self): return types.SimpleNamespace(name="UNSUPPORTED_NODE")
        def local_function_stack_size(self): return len(self._v[4])
        def local_function_stack(self): return self._v[4]

    def _dtype(elem):
        return {onnx.TensorProto.FLOAT: trt.DataType.FLOAT, onnx.TensorProto.FLOAT16: trt.DataType.HALF}[elem]

    def _dims(value):
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.logger, self.errors = network, logger, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i):
            return self.errors[i]

        def parse(self, model_bytes, path=None):
            model = onnx.load_from_string(bytes(model_bytes))
            trt.parsed_model = model
            if parse_errors:
                self.errors = [ParserError(*e) for e in parse_errors]
                return False
            functions = {(f.domain, f.name) for f in model.functions}
            for i, node in enumerate(model.graph.node):
                if node.domain in ("", "ai.onnx"):
                    continue
                # dispatch order of onnx-tensorrt: local function, then plugin fallback
                if (node.domain, node.op_type) in functions:
                    trt.log.append(("import_via_function", node.name))
                elif trt.loaded_libraries:
                    trt.log.append(("import_via_plugin", node.name))
                else:
                    self.errors.append(ParserError(i, node.name, node.op_type,
                                                   f"Plugin not found, are the plugin name, version, and namespace "
                                                   f"correct? (op {node.op_type})"))
            if self.errors:
                return False
            for v in model.graph.input:
                self.network.inputs.append(Tensor(v.name, _dims(v), _dtype(v.type.tensor_type.elem_type)))
            for v in model.graph.output:
                self.network.outputs.append(Tensor(v.name, _dims(v), _dtype(v.type.tensor_type.elem_type)))
            return True

    trt.OnnxParser = OnnxParser

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, op, mx):
            self.shapes[name] = (tuple(mn), tuple(op), tuple(mx))

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"|timed"

    class Config:
        def __init__(self):
            self.flags, self.pools, self.profiles = set(), {}, []
            self.plugins_to_serialize, self.progress_monitor, self.cache = [], None, None
            self.builder_optimization_level = 3

        def set_flag(self, flag):
            self.flags.add(flag.name)

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool.name] = size

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            trt.network = Network(flags)
            return trt.network

        def create_builder_config(self):
            trt.config = Config()
            return trt.config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            monitor = config.progress_monitor
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                monitor.phase_start("Tactic search", "Building engine", 3)
                for step in range(3):
                    monitor.step_complete("Tactic search", step)
                monitor.phase_finish("Tactic search")
                monitor.step_complete("Building engine", 0)
                monitor.phase_finish("Building engine")
            if build_error:
                self.logger.log(Severity.ERROR, build_error)
                return None
            profile = config.profiles[0].shapes
            io = {"inputs": [[t.name, t.dtype.name] for t in network.inputs],
                  "outputs": [[t.name, t.dtype.name] for t in network.outputs],
                  "profile": {k: [list(s) for s in v] for k, v in profile.items()}}
            return b"FAKE-ENGINE" + json.dumps(io).encode()

    trt.Builder = Builder

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
            if not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, address):
            self.addresses[name] = address
            return True

        def get_tensor_shape(self, name):
            n, c, h, w = self.shapes["features"]
            return (n, c, 2 * h, 2 * w) if name == "y" else self.shapes[name]

        def _array(self, name, shape):
            dtype = _NP[self.engine.get_tensor_dtype(name).name]
            count = int(np.prod(shape))
            raw = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(self.addresses[name])
            return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

        def execute_async_v3(self, stream_handle):
            trt.log.append(("execute_async_v3", stream_handle))
            f = self._array("features", self.shapes["features"])
            k = self._array("kernels", self.shapes["kernels"])
            out = self._array("y", self.get_tensor_shape("y"))
            up = f.repeat(2, axis=2).repeat(2, axis=3)
            out[...] = np.maximum(up * k.sum(axis=1, keepdims=True), 0)
            return True

    class Engine:
        def __init__(self, io):
            self.io = io
            self.names = [n for n, _ in io["inputs"]] + [n for n, _ in io["outputs"]]
            self.dtypes = dict(io["inputs"] + io["outputs"])

        num_io_tensors = property(lambda self: len(self.names))

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name in self.io["profile"] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.DataType[self.dtypes[name]]

        def get_tensor_shape(self, name):
            return tuple(-1 for _ in range(4))

        def get_tensor_profile_shape(self, name, index):
            return [tuple(s) for s in self.io["profile"][name]]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            self.logger, self.engine_host_code_allowed = logger, False

        def deserialize_cuda_engine(self, data):
            if not data.startswith(b"FAKE-ENGINE"):
                self.logger.log(Severity.ERROR, "Serialization assertion failed: magic tag does not match")
                return None
            return Engine(json.loads(data[len(b"FAKE-ENGINE"):]))

    trt.Runtime = Runtime
    return trt


class HostBuffers:
    """The runner's buffer backend on host memory: addresses are numpy data pointers the fake engine reads."""

    kind = "host"
    handle = 1234

    def __init__(self, device=0):
        self.synced = 0

    def to_device(self, value, dtype):
        return np.ascontiguousarray(value, dtype=np.dtype(dtype))

    def empty(self, shape, dtype):
        return np.full(tuple(shape), np.nan, dtype=np.dtype(dtype))

    @staticmethod
    def address(buf):
        return buf.ctypes.data

    def synchronize(self):
        self.synced += 1

    def to_host(self, buf, as_torch):
        if as_torch:
            import torch

            return torch.from_numpy(buf.copy())
        return buf.copy()

    def close(self):
        pass
