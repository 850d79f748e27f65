"""Blocks: binding a block's parameters, expanding an instance, and its size before expanding it."""

from __future__ import annotations

import dataclasses
from typing import Any

from alexdsl.ir.elaboration.scopes import Scopes
from alexdsl.ir.elaboration.state import (
    MAX_BLOCK_DEPTH,
    PENDING,
    Instance,
    Scope,
    Unexpandable,
    listing,
)
from alexdsl.syntax import ast


class Blocks(Scopes):
    """Expands block instances; sizes are computed first, so the layer limit holds before any work."""

    def _instantiate(self, call: ast.Call, name: str, sources: list[ast.Name], implicit: str | None,
                     scope: Scope, phase: str) -> str | None:
        block = self.blocks[call.name]
        if len(sources) > 1:
            self.sink.error(f"block {call.name} takes one input, received {len(sources)}", call.span)
            return None
        values = self._block_values(block, call, scope.values, report=True)
        if values is None:
            return None
        try:
            size = self._block_size(call.name, values, [])
        except Unexpandable as error:
            self.sink.error(error.message, call.span, hint=error.hint)
            return None
        if not self._fits(size, f"block {call.name}", call.span):
            return None
        input_node = PENDING if sources else implicit
        inner = Scope(prefix=name + ".", values=values, in_node=input_node, prev=input_node, block=name)
        first_node = len(self.added)
        first_diagnostic = len(self.sink.diagnostics)
        self.meta.instances[name] = Instance(call.name, call.span, block.span)
        for stmt in block.body:
            self._statement(stmt, inner)
        source = self._lookup(sources[0], scope, report=False) if sources else None
        if source is not None:
            inner.in_node = source
        self._resolve(inner)
        output = self._block_output(inner, first_node)
        self._note_uses(first_diagnostic, name)
        if not sources:
            return output
        for node in self.added[first_node:]:  # the instance's layers that read its input
            inputs = self.graph.nodes[node]["inputs"]
            for index, item in enumerate(inputs):
                if item == PENDING:
                    if source is None:  # defined later: resolved with the layers that read it
                        scope.pending.append((node, index, sources[0]))
                    else:
                        inputs[index] = source
        if output != PENDING:
            return output
        if source is None:
            self.sink.error(f"block {call.name} has no layers, so '{name}' would only pass on "
                            f"'{sources[0].name}', which is defined later", call.span,
                            hint=f"read '{sources[0].name}' directly, or define it before '{name}'")
            return None
        return source

    def _block_output(self, inner: Scope, first_node: int) -> str | None:
        """The output of the statement labelled ``out``; else of the last statement, or, when a statement written
        before it reads it (a forward reference: a block that lists its layers in torch's registration order), of
        the last statement that no layer of the instance reads."""
        if "out" in inner.labels:
            return inner.labels["out"]
        read = {source for node in self.added[first_node:] for source in self.graph.nodes[node]["inputs"]}
        if inner.prev not in read:
            return inner.prev
        unread = [output for output in inner.labels.values() if output not in read]
        return unread[-1] if unread else inner.prev

    def _note_uses(self, first: int, instance: str) -> None:
        """Add where ``instance`` (and each instance around it) was used to the errors inside its block,
        from diagnostic ``first`` on, as compilers do for a template's instantiation."""
        diagnostics = self.sink.diagnostics
        for index in range(first, len(diagnostics)):
            diagnostic = diagnostics[index]
            if not diagnostic.notes and diagnostic.span is not None \
                    and self.meta.instances[instance].encloses(diagnostic.span):
                diagnostics[index] = dataclasses.replace(diagnostic, notes=self.meta.use_notes(instance))

    def _block_values(self, block: ast.BlockDef, call: ast.Call, outer: dict[str, Any], report: bool
                      ) -> dict[str, Any] | None:
        """The block's parameters bound to the call's arguments; None (reported) on a mistake.

        With ``report=False`` nothing is reported and a best-effort binding is returned.
        """
        params = [p.name.name for p in block.params]
        values: dict[str, Any] = {}
        position = 0
        for arg in call.args:
            value = self._eval(arg.value, outer, report)
            if arg.keyword is None:
                if position >= len(params):
                    if report:
                        self.sink.error(f"too many arguments for block {call.name}", arg.span,
                                        expected=f"{call.name}({listing(params)})")
                        return None
                    continue
                key = params[position]
                position += 1
            else:
                key = arg.keyword
                if key not in params:
                    if report:
                        self.sink.error(f"unknown argument '{key}' for block {call.name}", arg.span,
                                        expected=listing(params), hint=self._did_you_mean(key, params))
                        return None
                    continue
            values[key] = value
        for param in block.params:
            if param.name.name not in values:
                if param.default is None:
                    if report:
                        self.sink.error(f"block {call.name} is missing argument '{param.name.name}'", call.span,
                                        expected=f"{call.name}({listing(params)})")
                        return None
                    continue
                values[param.name.name] = self._eval(param.default, {}, report)
        return values

    def _call_size(self, call: ast.Call, values: dict[str, Any], chain: list[str]) -> int:
        """Layers that ``call`` adds: 1 for an op, the expanded size for a block."""
        block = self.blocks.get(call.name)
        if block is None:
            return 1
        return self._block_size(call.name, self._block_values(block, call, values, report=False) or {}, chain)

    @staticmethod
    def _instance_call(stmt: ast.RepeatStmt, index: int) -> ast.Call:
        """The call of instance ``index`` of a repeat: ``first`` for the first one when given."""
        return stmt.first if index == 0 and stmt.first is not None else stmt.call

    @staticmethod
    def _instance_values(stmt: ast.RepeatStmt, values: dict[str, Any], index: int) -> dict[str, Any]:
        """The values instance ``index`` of a repeat sees: ``values`` and its index, when it is named."""
        return values if stmt.index is None else {**values, stmt.index.name: index}

    def _repeat_size(self, stmt: ast.RepeatStmt, count: int, values: dict[str, Any], chain: list[str]) -> int:
        """Layers a repeat of ``count`` instances adds, computed without expanding it.

        When the index reaches a block's arguments, instances are sized one by one until the sum
        passes the layer limit; then each one left counts as one layer (a lower bound: the repeat is
        refused either way).
        """
        calls = [stmt.call] if stmt.first is None else [stmt.first, stmt.call]
        if all(call.name not in self.blocks for call in calls):
            return count
        if stmt.index is None or not any(_mentions(call, stmt.index.name) for call in calls) \
                or all(self._size_is_fixed(call.name, ()) for call in calls):
            rest = count * self._call_size(stmt.call, values, chain)
            if stmt.first is None:
                return rest
            return rest - self._call_size(stmt.call, values, chain) + self._call_size(stmt.first, values, chain)
        total = 0
        for i in range(count):
            total += self._call_size(self._instance_call(stmt, i), self._instance_values(stmt, values, i), chain)
            if total > self.layer_limit or i >= self.layer_limit:
                return total + count - i - 1
        return total

    def _size_is_fixed(self, name: str, chain: tuple[str, ...]) -> bool:
        """Whether op or block ``name`` adds the same layers whatever its arguments: no repeat count in it,
        or in a block it uses, names anything."""
        block = self.blocks.get(name)
        if block is None or name in chain:  # an op; a block using itself is reported elsewhere
            return True
        if name not in self.fixed_sizes:
            fixed = True
            for stmt in block.body:
                if isinstance(stmt, ast.RepeatStmt):
                    calls = [stmt.call] + ([stmt.first] if stmt.first is not None else [])
                    fixed = fixed and not _names(stmt.count)
                elif isinstance(stmt, ast.LayerStmt):
                    calls = [link.call for link in stmt.links]
                else:
                    calls = []
                fixed = fixed and all(self._size_is_fixed(call.name, chain + (name,)) for call in calls)
            self.fixed_sizes[name] = fixed
        return self.fixed_sizes[name]

    def _block_size(self, name: str, values: dict[str, Any], chain: list[str]) -> int:
        """Layers one instance of block ``name`` expands to, computed without expanding it.

        Memoised per (block, arguments), so even a block used 2**40 times through nesting costs
        one walk of each body. Raises :class:`Unexpandable` for a block that uses itself.
        """
        key = (name, tuple(sorted(values.items())))
        if key in self.block_sizes:
            return self.block_sizes[key]
        if name in chain:
            cycle = " -> ".join(chain[chain.index(name):] + [name])
            raise Unexpandable(f"block {name} expands into itself",
                                f"a block may not use itself, directly or through another block: {cycle}")
        if len(chain) >= MAX_BLOCK_DEPTH:
            path = chain[:3] + ["..."] + chain[-2:] + [name]
            raise Unexpandable(f"blocks are nested more than {MAX_BLOCK_DEPTH} deep here",
                                "use fewer levels of blocks inside blocks: " + " -> ".join(path))
        inner = chain + [name]
        total = 0
        for stmt in self.blocks[name].body:
            if isinstance(stmt, ast.RepeatStmt):
                count = self._eval(stmt.count, values, report=False)
                if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                    total += self._repeat_size(stmt, count, values, inner)
            elif isinstance(stmt, ast.LayerStmt):
                total += sum(self._call_size(link.call, values, inner) for link in stmt.links)
        self.block_sizes[key] = total
        return total


def _names(value: ast.Value) -> set[str]:
    """The names ``value`` mentions."""
    found = set()
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, ast.Name):
            found.add(item.name)
        elif isinstance(item, ast.BinaryOp):
            pending += [item.left, item.right]
        elif isinstance(item, ast.Negate):
            pending.append(item.operand)
        elif isinstance(item, ast.TupleValue):
            pending += item.items
        elif isinstance(item, ast.Call):
            pending += [arg.value for arg in item.args]
    return found


def _mentions(call: ast.Call, name: str) -> bool:
    """Whether ``name`` appears in the arguments of ``call``."""
    return any(name in _names(arg.value) for arg in call.args)
