"""The layering of the package, read from its source: click only in alexdsl/cli, torch never at import time
of the NumPy path, and the commands of optional backends loadable without those backends."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT

from alexdsl.extras import install_command

PACKAGE = ROOT / "alexdsl"
NUMPY_PATH = ("backends/executor", "ir", "ops", "passes", "syntax")
OPTIONAL = ("torch", "torchvision", "onnx", "onnxruntime", "pygls", "lsprotocol", "cupy")


def _modules(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (PACKAGE / folder).rglob("*.py"))


def _imports(tree: ast.AST, in_function: bool = False) -> Iterator[tuple[str, int, bool]]:
    """(top-level package imported, line, whether the import is inside a function) of every import in ``tree``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name.partition(".")[0], node.lineno, in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.partition(".")[0], node.lineno, in_function
        yield from _imports(node, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _importers(paths: list[Path], package: str, anywhere: bool) -> list[str]:
    """``path:line`` of each import of ``package`` in ``paths`` (only those run at import time unless ``anywhere``)."""
    return [f"{path.relative_to(ROOT)}:{line}"
            for path in paths
            for name, line, in_function in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)))
            if name == package and (anywhere or not in_function)]


def test_the_import_walk_sees_nested_and_top_level_imports() -> None:
    tree = ast.parse("import click\nif True:\n    from torch import nn\ndef f():\n    import torch.nn\n")
    assert list(_imports(tree)) == [("click", 1, False), ("torch", 3, False), ("torch", 5, True)]


def test_only_the_cli_package_imports_click() -> None:
    outside = [path for path in _modules(".") if PACKAGE / "cli" not in path.parents]
    assert len(outside) > 40 and _modules("cli")
    assert _importers(outside, "click", anywhere=True) == []
    assert _importers(_modules("cli"), "click", anywhere=True)


@pytest.mark.parametrize("folder", NUMPY_PATH)
def test_the_numpy_path_imports_torch_only_inside_functions(folder: str) -> None:
    paths = _modules(folder)
    assert paths
    assert _importers(paths, "torch", anywhere=False) == []


HIDE_OPTIONAL = f"""
import sys

class HideOptional:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {OPTIONAL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)", name=name)

sys.meta_path.insert(0, HideOptional())
from alexdsl.cli import main
main(sys.argv[1:], prog_name="alexdsl")
"""


def _run_without_optional_packages(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", HIDE_OPTIONAL, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_the_commands_work_without_the_optional_packages() -> None:
    listing = _run_without_optional_packages("--help")
    assert listing.returncode == 0, listing.stderr
    for command in ("check", "shapes", "compile", "run", "train", "fmt", "import", "export", "draw", "compare",
                    "lsp"):
        assert f"\n  {command} " in listing.stdout, command
    shapes = _run_without_optional_packages("shapes", str(EXAMPLES / "alexnet.adsl"))
    assert shapes.returncode == 0, shapes.stderr
    assert "conv1" in shapes.stdout and "Traceback" not in shapes.stderr
    train = _run_without_optional_packages("train", str(EXAMPLES / "lenet.adsl"), "--data", "synthetic")
    assert train.returncode == 1 and install_command("torch") in train.stderr, train.stderr
    assert "Traceback" not in train.stderr
    lsp = _run_without_optional_packages("lsp")
    assert lsp.returncode == 1 and install_command("lsp") in lsp.stderr and "Traceback" not in lsp.stderr


def _module_imports(paths: list[Path], prefix: str) -> list[str]:
    """``path:line`` of each import-time ``from alexdsl.<prefix>...`` / ``import alexdsl.<prefix>...`` in ``paths``."""
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(name == prefix or name.startswith(prefix + ".") for name in names):
                top_level = node in tree.body
                if top_level:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_ir_and_passes_do_not_import_each_other_at_import_time() -> None:
    """passes read the IR; the IR knows no pass (the front-end driver, alexdsl/frontend.py, joins them)."""
    assert _module_imports(_modules("passes"), "alexdsl.ir")  # the passes do read the IR
    assert _module_imports(_modules("ir"), "alexdsl.passes") == []
    assert _module_imports(_modules("ir"), "alexdsl.frontend") == []


def test_the_cuda_kernels_do_not_import_the_runtime() -> None:
    """The runtime's modules reach the fused kernels (cuda.fused_kernels), never the other way round."""
    cupy_backend = _modules("backends/executor")
    kernels = [path for path in cupy_backend if path.stem in ("cuda", "depthwise", "arrays")]
    assert len(kernels) == 3
    assert _module_imports(kernels, "alexdsl.backends.executor.runtime") == []
    assert _module_imports(cupy_backend, "alexdsl.backends.executor.arrays")  # the kernel modules do use it


# The import graph, counting imports made anywhere (inside functions too) ------------------------------------

OP_FAMILIES = frozenset(f"alexdsl.ops.{path.stem}" for path in (PACKAGE / "ops").glob("*.py")
                        if "register(OpDef(" in path.read_text(encoding="utf-8"))
"""The built-in op modules: each registers its ops into the registry at import."""

JUSTIFIED_MODULE_CYCLES = {
    frozenset({"alexdsl.ops.registry", *OP_FAMILIES}):
        "inside ops: the families register into the registry at import, and the registry imports the built-in "
        "families on its first lookup (registry._load_families), so a plugin can import the registry alone",
    frozenset({"alexdsl.backends.executor.conv", "alexdsl.backends.executor.depthwise"}):
        "inside one backend: conv2d hands a depthwise plan to depthwise_conv2d, which builds a ConvPlan when "
        "called without one",
}
"""Cycles inside one package, each with the reason it is kept."""

JUSTIFIED_PACKAGE_CYCLES = {
    frozenset({"alexdsl.fmt", "alexdsl.syntax"}):
        "fmt is the syntax tree's one printer (the syntax layer, one module for its size): it reads syntax.ast and "
        "syntax.parser, and syntax.build's ModuleBuilder.text() prints the tree it built through it",
}
"""Package cycles (no module cycle) kept, each with the reason."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:``, which never run."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            yield from (n for child in node.orelse for n in (child, *_runtime_nodes(child)))
            continue
        yield node
        yield from _runtime_nodes(node)


def _imported_modules(path: Path, modules: set[str]) -> Iterator[tuple[str, int]]:
    """(alexdsl module, line) of every import in ``path`` that runs, at import time or in a function."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            submodules = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in modules]
            targets = submodules if len(submodules) == len(node.names) else [module, *submodules]
        else:
            continue
        yield from ((target, node.lineno) for target in targets if target in modules and target != name)


def _module_graph() -> dict[str, dict[str, int]]:
    """alexdsl module -> the alexdsl modules it imports anywhere -> the first line doing so."""
    paths = _modules(".")
    modules = {_module_name(path) for path in paths}
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for path in paths:
        for target, line in _imported_modules(path, modules):
            graph[_module_name(path)].setdefault(target, line)
    return graph


def _package(module: str) -> str:
    """The package a module belongs to for layering: its folder, or itself for a top-level module or package."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    return module if module.count(".") <= 1 or path.is_dir() else module.rpartition(".")[0]


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of ``graph`` with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_walk_sees_function_level_and_relative_imports_but_not_type_checking_ones() -> None:
    graph = _module_graph()
    assert graph["alexdsl.backends.torch.train"]["alexdsl.backends.torch.codegen"] > 1  # inside _build_model
    assert "alexdsl.backends.executor.conv" not in graph["alexdsl.backends.executor.cuda"]  # only under TYPE_CHECKING
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert _package("alexdsl.ops.conv") == "alexdsl.ops" and _package("alexdsl.fmt") == "alexdsl.fmt"
    assert _package("alexdsl.backends.executor.runtime") == "alexdsl.backends.executor"


def test_the_ops_import_no_backend() -> None:
    """Ops declare; a backend finds its kernels through the declaration (and offers what a lowering needs through
    its context), so an op module imports no backend, not even inside a function."""
    graph = _module_graph()
    reaching = [f"{module} -> {target} (line {line})" for module, targets in sorted(graph.items())
                if module.startswith("alexdsl.ops.") for target, line in targets.items()
                if target.startswith("alexdsl.backends")]
    assert reaching == []


def test_no_import_cycle_between_modules_but_the_named_ones() -> None:
    graph = {module: set(targets) for module, targets in _module_graph().items()}
    allowed = set(JUSTIFIED_MODULE_CYCLES)
    unexpected = [sorted(cycle) for cycle in _cycles(graph) if cycle not in allowed]
    assert unexpected == []


def test_no_import_cycle_between_packages_but_the_named_ones() -> None:
    packages: dict[str, set[str]] = {}
    for module, targets in _module_graph().items():
        packages.setdefault(_package(module), set()).update(
            _package(target) for target in targets if _package(target) != _package(module))
    allowed = set(JUSTIFIED_PACKAGE_CYCLES)
    unexpected = [sorted(cycle) for cycle in _cycles(packages) if cycle not in allowed]
    assert unexpected == []
