"""Syntax tree -> IR graph: resolves names, binds arguments, applies defaults, expands blocks.

This is the driver; each concern is a module beside it in :mod:`alexdsl.ir.elaboration`.

Every mistake is recorded in a :class:`~alexdsl.errors.DiagnosticSink` and elaboration goes
on, so one run reports every problem. Shapes are not known yet: :mod:`alexdsl.passes.shapes`
fills them in.
"""

from __future__ import annotations

import networkx as nx

from alexdsl.errors import DiagnosticSink
from alexdsl.ir.elaboration.chains import Chains
from alexdsl.ir.elaboration.state import BROKEN, Meta, Scope
from alexdsl.ir.elaboration.unknown_ops import report_unknown_ops
from alexdsl.syntax import ast


class Elaborator(Chains):
    """Builds the graph for one module. Use :func:`elaborate`."""

    def run(self) -> tuple[nx.DiGraph, Meta]:
        """Declarations first, then every layer statement in order, then outputs and edges."""
        statements = self.module.statements
        for stmt in statements:
            if isinstance(stmt, ast.BlockDef):
                self._declare_block(stmt)
            elif isinstance(stmt, ast.BrokenStmt) and stmt.kind == "block" and stmt.label is not None:
                self.broken_blocks.add(stmt.label.name)
        for stmt in statements:
            self._declare(stmt)
        for name in self.input_shapes:
            if name not in self.meta.inputs:
                hint = self._did_you_mean(name, self.meta.inputs)
                self.sink.error(f"--input names '{name}', which is not a declared input",
                                expected=", ".join(self.meta.inputs) or "a declared input", hint=hint)
        data_inputs = [n for n in self.meta.inputs if self.graph.nodes[n]["attrs"]["kind"] in ("tensor", "tokens")]
        broken_input = any(isinstance(s, ast.BrokenStmt) and s.kind == "input" for s in statements)
        scope = Scope(prefix="", values={}, in_node=None, block=None,
                       prev=data_inputs[0] if data_inputs else BROKEN if broken_input else None)
        for name in self.meta.inputs:
            scope.labels[name] = name
        for stmt in statements:
            if isinstance(stmt, (ast.LayerStmt, ast.RepeatStmt, ast.BrokenStmt)):
                self._statement(stmt, scope)
        self._resolve(scope)
        for stmt in statements:
            if isinstance(stmt, ast.OutputStmt):
                for name in stmt.names:
                    target = self._lookup(name, scope)
                    if target is not None:
                        self.meta.outputs.append((target, name.span))
        self._connect()
        report_unknown_ops(self.sink, self.unknown_ops, sorted(self.blocks), self.module.file, self.unknown_hints)
        if not self.meta.name:
            stem = self.module.file.rsplit("/", 1)[-1].split(".", 1)[0] or "Network"
            self.meta.name = "".join(part.capitalize() for part in stem.replace("-", "_").split("_")) or "Network"
        return self.graph, self.meta


def elaborate(module: ast.Module, sink: DiagnosticSink, input_shapes: dict[str, tuple[int, ...]] | None = None,
              max_layers: int | None = None) -> tuple[nx.DiGraph, Meta]:
    """Build the IR graph (without shapes) for ``module``, recording problems in ``sink``.

    ``max_layers`` bounds the layers after expansion (see :func:`alexdsl.limits.max_layers`).
    """
    return Elaborator(module, sink, input_shapes, max_layers).run()
