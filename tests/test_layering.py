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
NUMPY_PATH = ("backends/cupy", "ir", "ops", "passes", "syntax")
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
    cupy_backend = _modules("backends/cupy")
    kernels = [path for path in cupy_backend if path.stem in ("cuda", "depthwise", "arrays")]
    assert len(kernels) == 3
    assert _module_imports(kernels, "alexdsl.backends.cupy.runtime") == []
    assert _module_imports(cupy_backend, "alexdsl.backends.cupy.arrays")  # the kernel modules do use it
