"""Names in a syntax tree: where each input, layer, block and block parameter is defined and used.

The front end resolves names while it builds the IR and keeps no record of where each use
is; this index recomputes that from the tree, with elaboration's rules: a statement's label
and the names of its links (``conv1_relu``) are visible in the whole file (or block), a
block's parameters inside its body, and leading positional names of an op are layer inputs.

>>> from alexdsl.syntax.parser import parse_module
>>> index = SymbolIndex(parse_module("input x: 3x8x8\\na: conv(2, 3) | relu\\nb: a_relu -> relu\\n"))
>>> [(o.symbol.name, o.span.line, o.definition) for o in index.occurrences_of(index.scopes[None]["a_relu"])]
[('a_relu', 2, True), ('a_relu', 3, False)]
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from alexdsl.errors import Span
from alexdsl.lsp.analysis import statement_calls
from alexdsl.ops.registry import lookup
from alexdsl.ops.split import SPLITTERS
from alexdsl.syntax import ast


@dataclass(eq=False)
class Symbol:
    """A named thing: ``kind`` is input, layer, block or param; ``scope`` is None or a block's name.

    ``label`` is set on the names a label generates (``conv1_relu`` for ``conv1``, see ast.chain_names), so a
    rename of the label can rename them too; such a name is written nowhere in its definition.
    """

    name: str
    kind: str
    span: Span
    scope: str | None
    label: Symbol | None = None
    call: ast.Call | None = None  # the op or block call that makes this layer
    output: tuple[ast.Call, list[str]] | None = None  # a label's chain output: its last call and names

    @property
    def generated(self) -> bool:
        return self.label is not None


@dataclass(frozen=True)
class Occurrence:
    symbol: Symbol
    span: Span
    definition: bool


@dataclass
class SymbolIndex:
    """Every definition and resolved use of a name in one module."""

    module: ast.Module = field(repr=False)
    scopes: dict[str | None, dict[str, Symbol]] = field(default_factory=dict)
    blocks: dict[str, ast.BlockDef] = field(default_factory=dict)
    block_symbols: dict[str, Symbol] = field(default_factory=dict)
    occurrences: list[Occurrence] = field(default_factory=list, repr=False)
    splits: dict[tuple[str | None, str], Symbol] = field(default_factory=dict, repr=False)  # chunk/split labels
    _starts: list[tuple[int, int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.blocks = {s.name.name: s for s in self.module.statements if isinstance(s, ast.BlockDef)}
        self.scopes[None] = {}
        for name, block in self.blocks.items():
            self.block_symbols[name] = Symbol(name, "block", block.name.span, None)
            self.occurrences.append(Occurrence(self.block_symbols[name], block.name.span, True))
            self.scopes[name] = {}
            for param in block.params:
                self._define(Symbol(param.name.name, "param", param.name.span, name))
        uses: list[tuple[ast.Name, str | None, str]] = []  # (name, scope, "layer" or "value")
        for stmt in self.module.statements:
            if isinstance(stmt, ast.InputStmt):
                self._define(Symbol(stmt.name.name, "input", stmt.name.span, None))
            elif isinstance(stmt, (ast.LayerStmt, ast.RepeatStmt)):
                self._statement(stmt, None, uses)
            elif isinstance(stmt, ast.BlockDef):
                for param in stmt.params:
                    if param.default is not None:
                        uses.extend((n, None, "value") for n in _names_in(param.default))
                for inner in stmt.body:
                    self._statement(inner, stmt.name.name, uses)
            elif isinstance(stmt, ast.OutputStmt):
                uses.extend((n, None, "layer") for n in stmt.names)
            elif isinstance(stmt, ast.PreprocessStmt):
                uses.append((stmt.target, None, "layer"))
        for name, scope, kind in uses:
            symbol = self.resolve(name.name, scope, layers_only=kind == "layer") or self._part(name.name, scope)
            if symbol is not None:
                self.occurrences.append(Occurrence(symbol, name.span, False))
        self.occurrences.sort(key=lambda o: (o.span.line, o.span.column))
        self._starts = [(o.span.line, o.span.column) for o in self.occurrences]

    # building ----------------------------------------------------------------------------------
    def _define(self, symbol: Symbol) -> None:
        self.scopes.setdefault(symbol.scope, {}).setdefault(symbol.name, symbol)
        if not symbol.generated:
            self.occurrences.append(Occurrence(symbol, symbol.span, True))

    def _statement(self, stmt: ast.LayerStmt | ast.RepeatStmt, scope: str | None,
                   uses: list[tuple[ast.Name, str | None, str]]) -> None:
        calls = statement_calls(stmt)
        label = Symbol(stmt.label.name, "layer", stmt.label.span, scope, call=calls[0][0], output=calls[-1])
        self._define(label)
        uses.extend((n, scope, "layer") for n in stmt.sources)
        if isinstance(stmt, ast.RepeatStmt):
            uses.extend((n, scope, "value") for n in _names_in(stmt.count))
        else:
            owner = label
            for i, (link, (call, (name,))) in enumerate(zip(stmt.links, calls)):
                if link.label is not None:
                    owner = Symbol(name, "layer", link.label.span, scope, call=call)
                    self._define(owner)
                elif i > 0:
                    self._define(Symbol(name, "layer", call.name_span, scope, label=owner, call=call))
            last = stmt.links[-1].call.name
            if last in SPLITTERS and last not in self.blocks and lookup(last) is None:
                self.splits[(scope, owner.name)] = owner
        for call, _ in calls:
            self._call(call, scope, uses)

    def _call(self, call: ast.Call, scope: str | None, uses: list[tuple[ast.Name, str | None, str]]) -> None:
        block = self.blocks.get(call.name)
        if block is not None:
            self.occurrences.append(Occurrence(self.block_symbols[call.name], call.name_span, False))
            for arg in call.args:  # down(64, stride=1): the keyword names the block's parameter
                param = self.scopes[call.name].get(arg.keyword) if arg.keyword else None
                if param is not None and param.kind == "param":
                    start = arg.span
                    keyword = Span(start.file, start.line, start.column, start.line, start.column + len(arg.keyword))
                    self.occurrences.append(Occurrence(param, keyword, False))
        op = lookup(call.name) if block is None else None
        leading = op is not None
        for arg in call.args:
            if leading and arg.keyword is None and isinstance(arg.value, ast.Name):
                uses.append((arg.value, scope, "layer"))
                continue
            spec = op.arg(arg.keyword) if op is not None and arg.keyword else None
            if spec is not None and spec.names_layer and isinstance(arg.value, ast.Literal) \
                    and isinstance(arg.value.value, str):  # tied="wte": the name inside the quotes
                span = arg.value.span
                inside = Span(span.file, span.line, span.column + 1, span.line, span.column + 1 + len(arg.value.value))
                uses.append((ast.Name(arg.value.value, inside), scope, "layer"))
                continue
            leading = False
            uses.extend((n, scope, "value") for n in _names_in(arg.value))

    def _part(self, name: str, scope: str | None) -> Symbol | None:
        """``half.1`` after ``half: chunk(2)``: a name generated from the split's label, defined at first use."""
        base, _, index = name.rpartition(".")
        owner = self.splits.get((scope, base))
        if owner is None or not index.isdigit():
            return None
        part = Symbol(name, "layer", owner.span, scope, label=owner, call=owner.call)
        self._define(part)
        return self.scopes[scope][name]

    # queries -----------------------------------------------------------------------------------
    def resolve(self, name: str, scope: str | None, layers_only: bool = False) -> Symbol | None:
        """What ``name`` means in ``scope``: a block parameter first (as elaboration evaluates), then,
        for a layer input, an input or layer."""
        symbol = self.scopes.get(scope, {}).get(name)
        if symbol is None or (symbol.kind != "param" and not layers_only):
            return None
        return symbol

    def at(self, line: int, column: int) -> Occurrence | None:
        """The occurrence under the 1-based position, if any."""
        i = bisect.bisect_right(self._starts, (line, column)) - 1
        while i >= 0 and self.occurrences[i].span.line == line:
            span = self.occurrences[i].span
            if span.column <= column <= span.end_column:
                return self.occurrences[i]
            i -= 1
        return None

    def occurrences_of(self, symbol: Symbol) -> list[Occurrence]:
        found = [o for o in self.occurrences if o.symbol is symbol]
        if symbol.generated:
            found.insert(0, Occurrence(symbol, symbol.span, True))
        return found

    def generated_from(self, label: Symbol) -> list[Symbol]:
        """The names a statement label generated (``conv1_relu``, ...)."""
        return [s for s in self.scopes.get(label.scope, {}).values() if s.label is label]

    def visible(self, scope: str | None) -> list[Symbol]:
        """Names usable as layer inputs in ``scope`` (a block also sees ``in``, which is not a symbol)."""
        return [s for s in self.scopes.get(scope, {}).values() if s.kind in ("input", "layer")]

    def scope_at(self, line: int) -> str | None:
        """The block whose body contains the 1-based ``line``, or None."""
        for name, block in self.blocks.items():
            if block.span.line <= line <= block.span.end_line:
                return name
        return None


def _names_in(value: ast.Value) -> list[ast.Name]:
    """Bare names inside a value (block parameters used in arguments, tuples, filler calls and arithmetic)."""
    if isinstance(value, ast.Name):
        return [value]
    if isinstance(value, ast.BinaryOp):
        return _names_in(value.left) + _names_in(value.right)
    if isinstance(value, ast.Negate):
        return _names_in(value.operand)
    if isinstance(value, ast.TupleValue):
        return [n for item in value.items for n in _names_in(item)]
    if isinstance(value, ast.Call):
        return [n for arg in value.args for n in _names_in(arg.value)]
    return []
