"""Unknown ops: reported in source order, the list of ops once per file, and the plugin that defines one.

Plugin files are found without running them: each ``.py`` file in the source's own folder and in the
checkout's ``examples/plugins/`` is read as a Python syntax tree, and the ``OpDef(name="...")`` it
contains are the ops it would register.
"""

from __future__ import annotations

import ast as python_ast
import os
from pathlib import Path

from alexdsl.errors import DiagnosticSink
from alexdsl.ir.elaboration.state import listing
from alexdsl.ops.registry import op_names
from alexdsl.syntax import ast

EXAMPLE_PLUGINS = Path(__file__).resolve().parents[3] / "examples" / "plugins"
MAX_PLUGIN_FILES = 100  # .py files read in one folder
MAX_PLUGIN_BYTES = 256 * 1024  # a larger .py file is skipped


def defined_ops(path: Path) -> list[str]:
    """The op names that ``OpDef(name="...")`` calls in the Python file ``path`` declare; [] if unreadable."""
    try:
        if path.stat().st_size > MAX_PLUGIN_BYTES:
            return []
        tree = python_ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    names = []
    for node in python_ast.walk(tree):
        if isinstance(node, python_ast.Call) and _callee(node.func) == "OpDef":
            for keyword in node.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, python_ast.Constant) \
                        and isinstance(keyword.value.value, str):
                    names.append(keyword.value.value)
    return names


def _callee(func: python_ast.expr) -> str | None:
    if isinstance(func, python_ast.Name):
        return func.id
    return func.attr if isinstance(func, python_ast.Attribute) else None


def plugin_defining(op: str, source_file: str) -> Path | None:
    """The plugin file, in ``source_file``'s folder or in examples/plugins/, that declares ``op``."""
    folders = [Path(source_file).parent] if os.path.isfile(source_file) else []
    folders += [EXAMPLE_PLUGINS] if EXAMPLE_PLUGINS.is_dir() else []
    for folder in folders:
        try:
            files = sorted(folder.glob("*.py"))[:MAX_PLUGIN_FILES]
        except OSError:
            continue
        for path in files:
            if op in defined_ops(path):
                return path
    return None


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)
    except (OSError, ValueError):
        return str(path)


def report_unknown_ops(sink: DiagnosticSink, calls: list[ast.Call], blocks: list[str], source_file: str,
                       hints: dict[str, str | None]) -> None:
    """One error per unknown op call, in source order; ``hints`` holds each name's did-you-mean.

    The first error lists every op and block; the others point back at it.
    """
    plugins: dict[str, Path | None] = {}
    told: set[str] = set()
    first: ast.Call | None = None
    for call in sorted(calls, key=lambda c: (c.name_span.line, c.name_span.column)):
        if call.name not in plugins:
            plugins[call.name] = plugin_defining(call.name, source_file)
        plugin = plugins[call.name]
        hint = hints.get(call.name)
        if plugin is not None:  # said once per op, instead of a did-you-mean
            hint = None if call.name in told else f"'{call.name}' is defined by the plugin {_shown(plugin)}: " \
                                                  f"load it with 'alexdsl --plugin {_shown(plugin)} COMMAND ...'"
            told.add(call.name)
        if first is None or first.name_span == call.name_span:
            first = call
            expected = "an op (" + ", ".join(op_names()) + ")" + \
                       (" or a block (" + listing(blocks) + ")" if blocks else "")
        else:
            expected = f"an op or a block, as listed at line {first.name_span.line}"
        sink.error(f"unknown op '{call.name}'", call.name_span, expected=expected, hint=hint)
