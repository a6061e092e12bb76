"""carafe-deploy: ship CARAFE / CARAFE++ models to ONNX, TensorRT and Triton.

The package root imports nothing heavy, so that the engine tools (``carafe_deploy.trt``) and the command line start
without torch. The op lives in :mod:`carafe_deploy.ops`; ``carafe_deploy.carafe`` is the same function, loaded on
first use.

Importing the package also makes the user's own exports work, whatever the order of imports (CONTRACT §2): the moment
``torch`` is imported (or at once, if it already is) the op is registered, so TorchScript files and ExportedPrograms
that call ``torch.ops.carafe_deploy.carafe`` load; when ``torch.onnx`` is, the TorchScript exporter's symbolic; when
onnxscript's torchlib registry is (torch's dynamo exporter loads it at its first export), the dynamo translation.
Each step runs once, right after that module finishes importing; until then nothing is imported.
"""

import sys

__version__ = "0.1.0"

__all__ = ["carafe", "__version__"]


def __getattr__(name: str):
    if name == "carafe":
        from .ops import carafe

        return carafe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _register_op():
    from . import ops  # noqa: F401  (registers the torch.library ops)


def _register_torchscript():
    from .onnx.symbolic import register_torchscript

    register_torchscript()


def _register_dynamo():
    from .onnx.symbolic import register_dynamo

    register_dynamo()


_AFTER_IMPORT = {
    "torch": _register_op,
    "torch.onnx": _register_torchscript,
    "onnxscript.function_libs.torch_lib.registration": _register_dynamo,
}


def _run(name: str) -> None:
    try:
        _AFTER_IMPORT.pop(name)()
    except Exception as exc:  # noqa: BLE001 -- a failed registration must not break the user's import
        import warnings

        warnings.warn(f"carafe_deploy could not register CARAFE's ONNX export with {name}: {exc}", stacklevel=3)
    if not _AFTER_IMPORT:  # all done: the finder leaves sys.meta_path
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterImportFinder)]


class _ChainedLoader:
    """The module's own loader, plus the registration once the module has executed."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, attr):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _run(module.__name__)


class _AfterImportFinder:
    """A ``sys.meta_path`` entry that wraps the loader of the modules in ``_AFTER_IMPORT``; it removes itself once
    every registration has run."""

    def __init__(self):
        self._busy: set[str] = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _AFTER_IMPORT or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.discard(fullname)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _ChainedLoader(spec.loader)
        return spec


def _install() -> None:
    for name in list(_AFTER_IMPORT):
        if name in sys.modules:
            _run(name)
    if _AFTER_IMPORT and not any(isinstance(f, _AfterImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImportFinder())


_install()
