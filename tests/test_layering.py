"""The package's layers (docs/ARCHITECTURE.md): each part imports only from the parts below it, the engine tools
import without torch, and model code knows nothing of the deploy pipeline."""

import ast
import subprocess
import sys

import pytest

from support import REPO

PACKAGE = REPO / "carafe_deploy"

# part -> the parts of the package it may import (function-local imports included); docs/ARCHITECTURE.md draws it
ALLOWED = {
    "errors": set(),
    "files": {"errors"},
    "report": {"errors", "files"},
    "imaging": set(),  # numpy and PIL only: copied as it stands into Triton repositories
    "ops": {"errors"},
    "onnxruntime": {"errors", "files"},  # the custom-op library (no torch, no onnx)
    "nn": {"ops", "errors"},
    "compat": {"ops", "nn", "onnx", "errors"},
    "onnx": {"ops", "nn", "errors", "files"},
    "trt": {"onnx", "errors", "files"},
    "backends": {"onnx", "onnxruntime", "trt", "errors", "files"},
    "compare": {"backends", "errors", "report"},
    "bench": {"backends", "errors", "files", "report"},
    "models": {"ops", "nn", "errors", "files", "imaging"},
    "tasks": {"models", "backends", "compare", "bench", "onnx", "onnxruntime", "trt", "nn", "ops", "compat",
              "errors", "files", "report", "imaging"},
    "serving": {"tasks", "backends", "trt", "onnx", "onnxruntime", "models", "errors", "files", "report", "imaging"},
    "cli": {"serving", "tasks", "models", "backends", "compare", "bench", "onnx", "onnxruntime", "trt", "nn", "ops",
            "compat", "errors", "files", "report", "imaging"},
}
# third-party modules model code must not touch: it is model definitions, builders and checkpoint import only
NOT_IN_MODELS = {"onnx", "onnxruntime", "onnxscript", "tensorrt", "tensorrt_rtx", "argparse", "rich", "tqdm"}


def _part(path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path):
    """(absolute module name, line) of every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text())
    pkg = ["carafe_deploy", *path.relative_to(PACKAGE).with_suffix("").parts[:-1]]
    if path.name == "__init__.py":
        pkg = ["carafe_deploy", *path.relative_to(PACKAGE).parent.parts]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                if not node.module:  # from . import x: each name may be a submodule
                    for alias in node.names:
                        yield f"{module}.{alias.name}", node.lineno
                    continue
            else:
                module = node.module
            yield module, node.lineno


def test_every_part_imports_only_from_below():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        if part in ("__init__", "__main__"):
            continue
        assert part in ALLOWED, f"{path.relative_to(REPO)}: part {part!r} is not in the layer map"
        for module, line in _imports(path):
            names = module.split(".")
            if names[0] != "carafe_deploy" or len(names) < 2:
                continue
            target = names[1]
            if target != part and target not in ALLOWED[part] and target != "__version__":
                bad.append(f"{path.relative_to(REPO)}:{line} ({part}) imports {module}")
    assert not bad, "\n".join(bad)


def _module(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_itself_round_a_circle():
    """Within the parts too: no two modules import each other, directly or round a longer loop (function-local
    imports included). Packages' ``__init__`` files only hand names on and are left out."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, _ in _imports(path):
            while module and module not in modules and "." in module:
                module = module.rsplit(".", 1)[0]  # from pkg.mod import name -> pkg.mod
            if module in modules and module != name:
                targets.add(module)
        graph[name] = targets
    circles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(circles)


def test_models_are_model_code_only():
    bad = [f"{p.relative_to(REPO)}:{line} imports {m}" for p in sorted((PACKAGE / "models").rglob("*.py"))
           for m, line in _imports(p) if m.split(".")[0] in NOT_IN_MODELS]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("code", [
    # the engine tools: building needs TensorRT, onnx and this package, not torch
    "import carafe_deploy.trt, carafe_deploy.trt.builder, carafe_deploy.trt.runner, carafe_deploy.trt.graph, "
    "carafe_deploy.trt.profiles, carafe_deploy.trt.sidecar, carafe_deploy.trt.plugin, carafe_deploy.trt.runtime",
    # graph preparation itself, mmcv conversion and the portable function included
    "from carafe_deploy.trt.graph import prepare_onnx\n"
    "from onnx import helper\n"
    "n = helper.make_node('MMCVCARAFE', ['x', 'k'], ['y'], domain='mmcv', kernel_size=5, group_size=1, scale_factor=2.0)\n"
    "g = helper.make_graph([n], 'g', [helper.make_tensor_value_info('x', 1, [1, 4, 4, 4]),"
    " helper.make_tensor_value_info('k', 1, [1, 25, 8, 8])], [helper.make_tensor_value_info('y', 1, None)])\n"
    "m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 18), helper.make_opsetid('mmcv', 1)])\n"
    "assert prepare_onnx(m, use_plugin=False).mmcv_converted == 1",
    # the ONNX runner and the comparator
    "import carafe_deploy.backends.onnxrt, carafe_deploy.compare, carafe_deploy.bench",
    # the command line's parser (--help)
    "from carafe_deploy.cli import build_parser; build_parser()",
])
def test_imports_without_torch(code):
    check = code + "\nimport sys\nassert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"
    proc = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
