"""Chains: layer statements, their automatic names, repeats and splits, and each op call as a layer."""

from __future__ import annotations

import dataclasses
import itertools

from alexdsl.fmt import format_value
from alexdsl.ir.elaboration.blocks import Blocks
from alexdsl.ir.elaboration.state import (
    BROKEN,
    INVALID,
    PHASES,
    SELF,
    SPLIT,
    Scope,
    Symbol,
    Unexpandable,
    describe,
)
from alexdsl.limits import MAX_DIM
from alexdsl.ops.registry import lookup, op_names
from alexdsl.ops.split import SPLITTERS
from alexdsl.syntax import ast


class Chains(Blocks):
    """Elaborates layer and repeat statements, one op call or block instance at a time."""

    def _statement(self, stmt: ast.LayerStmt | ast.RepeatStmt | ast.BrokenStmt, scope: Scope) -> None:
        if isinstance(stmt, ast.BrokenStmt):  # reported by the parser: what it defines reports nothing more
            if stmt.label is not None:
                scope.labels[stmt.label.name] = BROKEN
            if stmt.kind in ("layer", "statement"):
                scope.prev = BROKEN
            return
        label = stmt.label.name
        full = scope.prefix + label
        if label == SELF and scope.prefix:  # the block instance's own name (ConvNeXt's features.1.0.layer_scale)
            full = scope.prefix[:-1]
        if label in scope.labels or full in self.graph:
            self.sink.error(f"duplicate name '{label}'", stmt.label.span,
                            hint=self._first_definition(full))
            label, full = f"{label}\0dup", f"{full}\0dup"
        if not self._check_name_length(full, stmt.label.span):
            scope.labels[label] = scope.prev = BROKEN
            return
        phase = "all"
        if stmt.phase is not None:
            if stmt.phase.name in PHASES:
                phase = stmt.phase.name
            else:
                self.sink.error(f"unknown phase '@{stmt.phase.name}'", stmt.phase.span, expected="@train or @test",
                                hint=self._did_you_mean(stmt.phase.name, PHASES))
        if isinstance(stmt, ast.RepeatStmt):
            output = self._repeat(stmt, scope, full, phase)
        else:
            output = self._chain(stmt, scope, full, phase)
        scope.labels[label] = output if output is not None else BROKEN
        scope.prev = output if output is not None else BROKEN

    def _chain(self, stmt: ast.LayerStmt, scope: Scope, full: str, phase: str) -> str | None:
        """Each link as a layer, in order, named by :func:`~alexdsl.syntax.ast.chain_names`.

        After a link fails the rest are still elaborated, reading nothing, so each of their mistakes
        is reported too; the chain's output is then broken.
        """
        prev = scope.prev
        names = ast.chain_names(full, [(scope.prefix + link.label.name if link.label else None, link.call.name)
                                       for link in stmt.links])
        failed = False
        for i, (link, name) in enumerate(zip(stmt.links, names)):
            call = link.call
            if link.label is not None and (name in self.graph or link.label.name in scope.labels):
                self.sink.error(f"duplicate name '{link.label.name}'", link.label.span,
                                hint=self._first_definition(name))
                return None
            sources = stmt.sources if i == 0 else []
            if i > 0 and self._takes_no_input(call):
                self.sink.error(f"{call.name} takes no input, so it cannot follow another link of a chain", call.span,
                                hint=f"start a statement with it, as in '{link.label.name if link.label else 'p'}: "
                                     f"{call.name}(...)', and name that layer where it is read")
                failed = True
                prev = BROKEN
                continue
            if self._is_splitter(call):
                if i < len(stmt.links) - 1:
                    self.sink.error(f"{call.name} must end its chain: its parts are read by name", call.span,
                                    hint=f"start a new statement that reads a part, as in 'b: {stmt.label.name}.0 "
                                         "-> conv(...)'")
                    return None
                local = link.label.name if link.label is not None else stmt.label.name
                out = self._split(call, local, name, sources, prev, i > 0 or not stmt.sources, scope, phase)
                return None if failed else out
            out = self._apply(call, name, sources, prev, i > 0 or not stmt.sources, scope, phase)
            failed = failed or out is None
            prev = BROKEN if out is None else out
        return None if failed else prev

    def _repeat(self, stmt: ast.RepeatStmt, scope: Scope, full: str, phase: str) -> str | None:
        count = self._eval(stmt.count, scope.values)
        if count is INVALID:
            return None
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            shown = describe(count)
            if isinstance(stmt.count, (ast.BinaryOp, ast.Negate)):
                shown = f"{format_value(stmt.count)} = {shown}"
            self.sink.error("repeat needs a count of at least 1", stmt.count.span, received=shown,
                            expected="a positive integer: a number, a block parameter or an expression of them")
            return None
        if stmt.index is not None and stmt.index.name in scope.values:
            self.sink.error(f"the repeat index '{stmt.index.name}' has the name of a block parameter",
                            stmt.index.span, hint="name the index otherwise, as in 'repeat 3 as i: ...'")
            return None
        try:
            size = self._repeat_size(stmt, count, scope.values, [])
        except Unexpandable as error:
            self.sink.error(error.message, stmt.call.span, hint=error.hint)
            return None
        if not self._fits(size, f"repeat {count} {stmt.call.name}", stmt.count.span):
            return None
        prev = scope.prev
        for i in range(count):
            instance = scope if stmt.index is None else dataclasses.replace(scope, values=self._instance_values(
                stmt, scope.values, i))  # the same names and pending lists: only the values differ
            out = self._apply(self._instance_call(stmt, i), f"{full}.{i}", stmt.sources if i == 0 else [], prev,
                              i > 0 or not stmt.sources, instance, phase)
            if out is None:
                return None
            prev = out
        return prev

    def _takes_no_input(self, call: ast.Call) -> bool:
        """Whether ``call`` is an op declared with no inputs (``param(1x1x768)``): it never reads the layer before."""
        op = lookup(call.name) if call.name not in self.blocks else None
        return op is not None and op.inputs == (0, 0)

    def _is_splitter(self, call: ast.Call) -> bool:
        return call.name in SPLITTERS and call.name not in self.blocks and lookup(call.name) is None

    def _split(self, call: ast.Call, local: str, name: str, sources: list[ast.Name], implicit: str | None,
               implicit_allowed: bool, scope: Scope, phase: str) -> str | None:
        """``chunk(n)`` / ``split(sizes)``: one layer per part, ``<name>.<i>``; returns the SPLIT marker."""
        leading = 0
        while leading < len(call.args) and call.args[leading].keyword is None and \
                isinstance(call.args[leading].value, ast.Name) and call.args[leading].value.name not in scope.values:
            leading += 1
        refs, rest = call.args[:leading], call.args[leading:]
        keyword = "chunks" if call.name == "chunk" else "sizes"
        example = "half: chunk(2)" if call.name == "chunk" else "parts: split((24, 40))"
        axis = [a for a in rest if a.keyword == "axis"]  # passed on to each part, which checks it
        rest = [a for a in rest if a.keyword != "axis"]
        if len(rest) != 1 or rest[0].keyword not in (None, keyword) or len(axis) > 1:
            self.sink.error(f"{call.name} takes one argument, {keyword}, and optionally axis=", call.span,
                            expected=f"{example}, or {example[:-1]}, axis=-1)",
                            received=", ".join(format_value(a.value) for a in call.args[leading:]) or "no argument")
            return None
        arg = rest[0]
        value = self._eval(arg.value, scope.values)
        if value is INVALID:
            return None
        items = value if isinstance(value, tuple) and call.name == "split" else (value,)
        if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_DIM for v in items) \
                or (call.name == "split" and not isinstance(value, tuple)):
            shown = describe(value)
            if isinstance(arg.value, (ast.BinaryOp, ast.Negate, ast.TupleValue)):
                shown = f"{format_value(arg.value)} = {shown}"
            self.sink.error(f"{call.name} needs " + ("a number of parts of at least 1" if call.name == "chunk"
                                                     else "the size of each part, each at least 1"),
                            arg.value.span, expected=example, received=shown,
                            hint="for parts of equal size write chunk(n)" if call.name == "split" else None)
            return None
        count = items[0] if call.name == "chunk" else len(items)
        if not self._fits(count, f"{call.name}({describe(value)})", call.span):
            return None
        starts = list(itertools.accumulate(items, initial=0)) if call.name == "split" else []
        for index in range(count):
            def number(v: int) -> ast.Arg:
                return ast.Arg(None, ast.Literal(v, arg.span, str(v)), arg.span)

            if call.name == "chunk":
                extra = [number(count), number(index)]
            else:
                extra = [number(starts[index]), number(starts[index + 1])]
                if index == count - 1:  # the last part checks the sizes add up to the input's channels
                    extra.append(ast.Arg("channels", ast.Literal(starts[-1], arg.span, str(starts[-1])), arg.span))
            part = ast.Call(SPLITTERS[call.name], refs + extra + axis, call.span, call.name_span)
            out = self._apply(part, f"{name}.{index}", sources, implicit, implicit_allowed, scope, phase)
            if out is None:
                return None
            scope.labels[f"{local}.{index}"] = out
        return SPLIT + f"{local}\0{count}"

    def _apply(self, call: ast.Call, name: str, sources: list[ast.Name], implicit: str | None,
               implicit_allowed: bool, scope: Scope, phase: str) -> str | None:
        """Add the op or block instance ``call`` as ``name``; return the name of its output."""
        if self._takes_no_input(call):
            implicit, implicit_allowed = None, False
        if implicit is not None and implicit.startswith(SPLIT) and implicit_allowed and not sources and (
                call.name in self.blocks or not (call.args and call.args[0].keyword is None
                                                 and isinstance(call.args[0].value, ast.Name)
                                                 and call.args[0].value.name not in scope.values)):
            self._split_error(implicit, call.span)
            return None
        if call.name in self.blocks:
            return self._instantiate(call, name, sources, implicit, scope, phase)
        if call.name in self.broken_blocks:
            return None
        op = lookup(call.name)
        if op is None:
            if call.name not in self.unknown_hints:
                self.unknown_hints[call.name] = self._did_you_mean(call.name, op_names() + list(self.blocks))
            self.unknown_ops.append(call)  # reported at the end, in source order
            return None
        values = [(a.keyword, self._eval(a.value, scope.values), a.span, a.value) for a in call.args]
        refs: list[ast.Name] = list(sources)
        lo, hi = op.inputs
        if hi == 0 and refs:
            self.sink.error(f"{call.name} takes no input, received {len(refs)}", refs[0].span,
                            expected=op.example, hint=f"remove '{', '.join(r.name for r in refs)} ->'")
            return None
        while hi != 0 and values and values[0][0] is None and isinstance(values[0][1], Symbol):
            refs.append(values.pop(0)[3])  # type: ignore[arg-type]
        inputs: list[str | None] = []
        if hi == 0:
            pass  # an op without inputs (param(1x1x768)) reads nothing, never the layer before
        elif len(refs) < lo or not refs:
            if implicit == BROKEN and implicit_allowed:
                inputs.append(None)
            elif implicit is None or not implicit_allowed:
                if not refs:
                    self.sink.error(f"layer '{name}' has no input", call.span,
                                    hint="declare an input first, or name one: 'x -> " + call.name + "'")
                    return None
            else:
                inputs.append(implicit)
        count = len(inputs) + len(refs)
        if count < lo or (hi is not None and count > hi):
            want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            self.sink.error(f"{call.name} takes {want} input{'s' if lo != 1 or hi != 1 else ''}, received {count}",
                            call.span, expected=op.example)
            return None
        attrs, arg_spans, param_cfg = self._bind(op, call, values)
        if name in self.graph:
            self.sink.error(f"duplicate name '{name}'", call.span, hint=self._first_definition(name))
            return None
        if not self._check_name_length(name, call.span):
            return None
        pending_index = len(inputs)
        inputs.extend([None] * len(refs))
        for j, ref in enumerate(refs):
            scope.pending.append((name, pending_index + j, ref))
        self._add_node(name, op.name, attrs or {}, inputs, None, phase, call.span, scope.block, arg_spans,
                       param_config=param_cfg, ok=attrs is not None)
        return name
