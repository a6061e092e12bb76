"""What TensorRT for RTX (module ``tensorrt_rtx``) cannot do that full TensorRT can, checked before anything is
parsed: the user gets one line naming the reason instead of a parser error that names something else, a builder
assertion, or a process abort.

Measured with TensorRT-RTX 1.7.1.116 on a machine without a GPU (the commands are in docs/TENSORRT.md):

* ``NonMaxSuppression`` parses and then fails the build ("has no runners that implement it"); NVIDIA tracks it as
  a feature request (github.com/NVIDIA/TensorRT-RTX/issues/5). ``NonZero`` needs a plugin TensorRT-RTX lacks.
* ``RoiAlign`` is imported through the ``ROIAlign_TRT`` (v2) plugin, which TensorRT-RTX does ship; its constructor
  reads the GPU's properties (a ``CudaError`` 35 thrown in ``ROIAlignV3`` without a driver), so without a CUDA
  device the parser reports "ROIAlign plugin was not found in the plugin registry!".
* No lean runtime (``libnvinfer_lean``): a version-compatible build fails. The timing-cache calls are no-ops (a
  ``DeprecationWarning`` from the bindings says so, "Deprecated in TensorRT-RTX 1.2").
* Importing a plugin node, the ONNX parser ``dlopen``s the unversioned ``libtensorrt_rtx.so``; the wheel ships only
  ``libtensorrt_rtx.so.1``, and the parser's exception crosses a ``noexcept`` boundary: ``std::terminate``, the
  process aborts. With the link in place, the CARAFE plugin (built against the TensorRT 11.1 headers) parses and
  builds (plugins/tensorrt/README.md).
"""

from __future__ import annotations

import ctypes
import importlib.util
from collections import Counter
from pathlib import Path
from types import ModuleType

from .runtime import cuda_device_count, is_rtx, runtime_label

__all__ = ["UNBUILDABLE_OPS", "graph_unbuildable", "options_unsupported", "plugin_unusable", "CORE_LIBRARY"]

# op -> why TensorRT-RTX cannot build it, whatever the machine
UNBUILDABLE_OPS = {
    "NonMaxSuppression": "has no TensorRT-RTX implementation (github.com/NVIDIA/TensorRT-RTX/issues/5)",
    "NonZero": "needs a NonZero plugin, which TensorRT-RTX does not ship",
}
# op -> why TensorRT-RTX cannot parse it on a machine without a CUDA device
_NEEDS_A_GPU_TO_PARSE = {
    "RoiAlign": "needs a CUDA device when the graph is parsed (TensorRT-RTX's ROIAlign_TRT plugin reads the GPU's "
                "properties when it is created) and this machine has none",
}

CORE_LIBRARY = "libtensorrt_rtx.so"  # the name the parser dlopen()s for plugin nodes


def graph_unbuildable(model, trt: ModuleType) -> str | None:
    """``None`` when nothing in ``model`` (an ``onnx.ModelProto``, after graph preparation) is known to stop
    TensorRT-RTX, else one line naming each op, how often it occurs and why. Always ``None`` for full TensorRT."""
    if not is_rtx(trt):
        return None
    from .graph import all_nodes

    counts = Counter(n.op_type for n in all_nodes(model) if n.domain in ("", "ai.onnx"))
    reasons = dict(UNBUILDABLE_OPS)
    if any(op in counts for op in _NEEDS_A_GPU_TO_PARSE) and cuda_device_count() == 0:
        reasons.update(_NEEDS_A_GPU_TO_PARSE)
    found = [f"{op} ({counts[op]} node{'s' if counts[op] > 1 else ''}) {why}" for op, why in reasons.items()
             if op in counts]
    if not found:
        return None
    return (f"{runtime_label(trt)} cannot build this graph: " + "; ".join(found)
            + "; build it with full TensorRT (--backend tensorrt)")


def options_unsupported(trt: ModuleType, *, version_compatible: bool, timing_cache: bool) -> str | None:
    """Why TensorRT-RTX refuses the build options, or ``None``."""
    if not is_rtx(trt):
        return None
    if version_compatible:
        return (f"--version-compatible: {runtime_label(trt)} has no lean runtime (libnvinfer_lean), so it cannot build "
                "version-compatible engines; build without it, or with full TensorRT (--backend tensorrt)")
    if timing_cache:
        return (f"--timing-cache: {runtime_label(trt)} has no timing cache (its timing-cache calls are no-ops since "
                "TensorRT-RTX 1.2); build without it")
    return None


def _parser_folder(trt: ModuleType | None = None) -> Path | None:
    """The folder of the loaded ONNX parser library: its ``$ORIGIN``, where it looks for the core library first."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "libtensorrt_onnxparser_rtx.so" in path:
                    return Path(path).parent
    except OSError:  # no /proc: fall back to the wheel's layout
        pass
    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return None


def core_link_missing() -> bool:
    """Whether TensorRT-RTX's ONNX parser would fail to open the unversioned ``libtensorrt_rtx.so`` (see
    ``plugin_unusable``); found without importing TensorRT-RTX."""
    folder = _parser_folder(None)
    if folder is not None and (folder / CORE_LIBRARY).exists():
        return False
    try:
        ctypes.CDLL(CORE_LIBRARY)
        return False
    except OSError:
        return True


def plugin_unusable(trt: ModuleType) -> str | None:
    """``None`` when the runtime's ONNX parser can import a plugin node, else one line with the reason and the fix.

    Only TensorRT-RTX can say no: its parser needs ``libtensorrt_rtx.so`` (unversioned) and aborts the process when
    it cannot open it. The dynamic loader looks in the parser's ``$ORIGIN``, then ``LD_LIBRARY_PATH`` as it was when
    the process started, the ld.so cache and the system folders; ``ctypes.CDLL`` covers all but the first. Setting
    ``LD_LIBRARY_PATH`` from inside a running process changes nothing, and the project does not write into the
    installed wheel, so the fix is the user's (plugins/tensorrt/README.md).
    """
    if not is_rtx(trt) or not core_link_missing():
        return None
    folder = _parser_folder(trt)
    where = folder if folder is not None else Path("<the folder of libtensorrt_rtx.so.1>")
    return (f"{runtime_label(trt)} cannot use the CARAFE plugin here: its ONNX parser opens {CORE_LIBRARY} to import "
            f"a plugin node and aborts the process without it, and the wheel ships only {CORE_LIBRARY}.1; fix: "
            f"ln -s {CORE_LIBRARY}.1 {where / CORE_LIBRARY} (or put such a link in a folder on LD_LIBRARY_PATH before "
            "Python starts), or build with --no-plugin")
