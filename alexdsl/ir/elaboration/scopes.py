"""Scopes: looking up the names layers read, resolving those defined later, and connecting the graph."""

from __future__ import annotations

import itertools

from alexdsl.errors import Span
from alexdsl.ir.elaboration.declarations import Declarations
from alexdsl.ir.elaboration.state import (
    SPLIT,
    Scope,
    listing,
)
from alexdsl.ir.network import LAYER, Layer, graph_of
from alexdsl.syntax import ast


class Scopes(Declarations):
    """Resolves layer references in the file and in block instances."""

    def _lookup(self, ref: ast.Name, scope: Scope, report: bool = True) -> str | None:
        name = ref.name
        if name in scope.labels:
            target = scope.labels[name]
            if target is not None and target.startswith(SPLIT):
                if report:
                    self._split_error(target, ref.span)
                return None
            return target
        if name == "in" and scope.in_node is not None:
            return scope.in_node
        if scope.prefix + name in self.graph:
            return scope.prefix + name
        if not scope.prefix and name in self.graph:
            return name
        if report:
            candidates = itertools.chain((n for n in scope.labels if "\0" not in n), ["in"] if scope.in_node else [])
            if name == "in":
                self.sink.error("'in' is only defined inside a block", ref.span,
                                hint="name the layer to read from instead")
            else:
                self.sink.error(f"unknown input name '{name}'", ref.span,
                                expected="a declared input or a layer defined in this " +
                                         ("block" if scope.prefix else "file"),
                                hint=self._did_you_mean(name, candidates))
        return None

    def _resolve(self, scope: Scope) -> None:
        reported: set[int] = set()  # a block's input read by several of its layers is reported once
        for node, index, ref in scope.pending:
            target = self._lookup(ref, scope, report=id(ref) not in reported)
            reported.add(id(ref))
            self.graph.nodes[node]["inputs"][index] = target
        scope.pending.clear()

    def _split_error(self, marker: str, span: Span) -> None:
        local, count = marker[len(SPLIT):].split("\0")
        names = [f"{local}.{i}" for i in range(int(count))]
        self.sink.error(f"'{local}' is split into {count} parts: read one of them by name", span,
                        expected=listing(names), hint=f"write '{names[0]} -> ...' to read the first part")

    def _connect(self) -> None:
        """Hand the layers built so far to the IR as typed nodes; a layer with an unresolved input is broken."""
        self.graph = graph_of(Layer(name, **data) for name, data in self.graph.nodes(data=True))
        for _, layer in self.graph.nodes(data=LAYER):
            if any(source is None or source not in self.graph for source in layer.inputs):
                layer.fail()
