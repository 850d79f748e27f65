"""The language features, as functions of an :class:`~alexdsl.lsp.analysis.Analysis` and a position.

They build :mod:`lsprotocol` types and know nothing of the transport; :mod:`alexdsl.lsp.server`
calls them. Positions in and out go through :class:`Positions`, which converts between the
front end's 1-based code-point spans and the client's line/character units.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lsprotocol import types

from alexdsl.errors import AlexDSLError, Diagnostic, Span
from alexdsl.fmt import format_source, format_value
from alexdsl.ir.elaboration.state import PARAM_KIND_KEYS
from alexdsl.ir.network import Layer, Network
from alexdsl.lsp.analysis import Analysis, call_layers, describe_shapes, statement_calls
from alexdsl.lsp.symbols import Symbol, SymbolIndex
from alexdsl.ops.registry import FILLERS, REQUIRED, Arg, OpDef, all_ops, format_shape, lookup
from alexdsl.settings import PREPROCESS_KEYS, SOLVER_KEYS
from alexdsl.syntax import ast
from alexdsl.syntax.build import string_literal

KEYWORDS = ("network", "description", "input", "output", "defaults", "solver", "preprocess", "block", "repeat")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")
MAX_INSTANCES_SHOWN = 4


class Positions:
    """Converts between 1-based code-point (line, column) pairs and client positions.

    ``units`` counts a string's length in the client's encoding (UTF-16 unless negotiated).
    """

    def __init__(self, text: str, units: Callable[[str], int] | None = None):
        self.lines = text.split("\n")
        self.units = units or (lambda s: len(s.encode("utf-16-le")) // 2)

    def _line(self, line: int) -> str:
        return self.lines[line - 1] if 1 <= line <= len(self.lines) else ""

    def position(self, line: int, column: int) -> types.Position:
        text = self._line(line)
        prefix = text[: max(column - 1, 0)]
        return types.Position(max(line - 1, 0), len(prefix) if prefix.isascii() else self.units(prefix))

    def range(self, span: Span) -> types.Range:
        return types.Range(self.position(span.line, span.column), self.position(span.end_line, span.end_column))

    def point(self, position: types.Position) -> tuple[int, int]:
        """The 1-based (line, column) of a client position."""
        text = self.lines[position.line] if 0 <= position.line < len(self.lines) else ""
        if text.isascii():
            return position.line + 1, min(position.character, len(text)) + 1
        units = 0
        for i, char in enumerate(text):
            if units >= position.character:
                return position.line + 1, i + 1
            units += self.units(char)
        return position.line + 1, len(text) + 1

    def whole(self) -> types.Range:
        return types.Range(types.Position(0, 0), types.Position(len(self.lines), 0))


# diagnostics -----------------------------------------------------------------------------------
def diagnostics(found: list[Diagnostic], file: str, positions: Positions) -> list[types.Diagnostic]:
    """Every error and warning ``alexdsl check`` reports for ``file``, with its span (else the first line)."""
    out = []
    for diag in found:
        span = diag.span if diag.span is not None and diag.span.file == file else None
        rng = positions.range(span) if span else types.Range(types.Position(0, 0), positions.position(1, 10**6))
        severity = types.DiagnosticSeverity.Error if diag.severity == "error" else types.DiagnosticSeverity.Warning
        out.append(types.Diagnostic(rng, _diagnostic_text(diag), severity=severity, source="alexdsl"))
    return out


def _diagnostic_text(diag: Diagnostic) -> str:
    lines = [diag.message]
    if diag.expected:
        lines.append(f"expected: {diag.expected}")
    if diag.received:
        lines.append(f"received: {diag.received}")
    if diag.hint:
        lines.append(diag.hint)
    return "\n".join(lines)


# inlay hints -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HintSettings:
    """What the hints show besides the shape (the client's ``alexdsl.inlayHints`` settings)."""

    params: bool = False
    macs: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> HintSettings:
        hints = settings.get("inlayHints", {}) if isinstance(settings, dict) else {}
        hints = hints if isinstance(hints, dict) else {}
        return cls(params=hints.get("params") is True, macs=hints.get("macs") is True)


def inlay_hints(analysis: Analysis, positions: Positions, first_line: int, last_line: int,
                settings: HintSettings = HintSettings(), focus: str | None = None) -> list[types.InlayHint]:
    """The output shape at the end of each layer line from 0-based ``first_line`` to ``last_line``, and
    before it, the shape after each stage of a chain whose shape changes (as rust-analyzer shows chained types).

    In a block body, ``focus`` (a block instance, such as ``inc3b``) picks the instance shown.
    """
    hints = []
    network = analysis.network
    for line in range(first_line, min(last_line, len(positions.lines) - 1) + 1):
        hint = analysis.line_hints.get(line)
        if hint is None:
            continue
        fresh = line not in analysis.stale_lines and network is not None
        focus_here = focus if fresh else None
        for stage in hint.stages:
            in_focus = _in_focus(network, stage.layers, focus_here)
            label = describe_shapes(in_focus) if in_focus else stage.label
            hints.append(_shape_hint(positions, line, stage.column, label, fresh))
        label, line_layers = hint.label, hint.line_layers
        if in_focus := _in_focus(network, hint.layers, focus_here):
            label = f"{describe_shapes(in_focus)} in {focus}"
            line_layers = tuple(n for n in line_layers if n.startswith(f"{focus}."))
        if fresh and (settings.params or settings.macs):
            layers = [network.layer(n) for n in line_layers if n in network.graph]  # type: ignore[union-attr]
            if settings.params:
                label += f" · {sum(layer.param_count for layer in layers):,} params"
            if settings.macs:
                label += f" · {sum(layer.macs for layer in layers):,} MACs"
        hints.append(_shape_hint(positions, line, hint.column, label, fresh))
    return hints


def _in_focus(network: Network | None, layers: tuple[str, ...], focus: str | None) -> list[Layer]:
    """The ``layers`` of the block instance ``focus`` (none without a focus)."""
    if network is None or not focus:
        return []
    return [network.layer(n) for n in layers if n.startswith(f"{focus}.")]


def _shape_hint(positions: Positions, line: int, column: int, label: str, fresh: bool) -> types.InlayHint:
    """A type hint after 0-based ``column`` of ``line`` (clamped to the line); a stale one says so."""
    position = positions.position(line + 1, min(column, len(positions.lines[line])) + 1)
    return types.InlayHint(position, label, kind=types.InlayHintKind.Type, padding_left=True,
                           tooltip=None if fresh else "from the last version without errors here")


def instance_at(index: SymbolIndex | None, line: int) -> str | None:
    """The block instance made by the top-level statement on the 1-based ``line`` (its first, for a repeat)."""
    if index is None:
        return None
    for stmt in index.module.statements:
        if isinstance(stmt, (ast.LayerStmt, ast.RepeatStmt)) and stmt.span.line <= line <= stmt.span.end_line:
            for call, names in statement_calls(stmt):
                if call.name in index.blocks and names:
                    return names[0]
    return None


def highlights(index: SymbolIndex | None, positions: Positions, line: int, column: int
               ) -> list[types.DocumentHighlight]:
    """Every occurrence of the name under the cursor: its definition as Write, its uses as Read."""
    occurrence = index.at(line, column) if index else None
    if occurrence is None or index is None:
        return []
    kinds = {True: types.DocumentHighlightKind.Write, False: types.DocumentHighlightKind.Read}
    return [types.DocumentHighlight(positions.range(o.span), kinds[o.definition])
            for o in index.occurrences_of(occurrence.symbol) if not (o.definition and o.symbol.generated)]


# hover -----------------------------------------------------------------------------------------
def hover(analysis: Analysis, index: SymbolIndex | None, positions: Positions, line: int, column: int
          ) -> types.Hover | None:
    """Layer (op, shape, parameters, MACs, receptive field), op/argument/filler doc, or block signature."""
    found = _thing_at(analysis, index, line, column)
    if found is None:
        return None
    text, span = found
    return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, text), positions.range(span))


def _thing_at(analysis: Analysis, index: SymbolIndex | None, line: int, column: int) -> tuple[str, Span] | None:
    if index is None:
        return None
    occurrence = index.at(line, column)
    if occurrence is not None:
        symbol = occurrence.symbol
        if symbol.kind == "block":
            return block_signature(index.blocks[symbol.name]) + _layers_text(analysis, symbol, index), occurrence.span
        if symbol.kind == "param":
            block = index.blocks[symbol.scope]  # type: ignore[index]
            return f"parameter `{symbol.name}` of block {block_signature(block)}", occurrence.span
        text = _layers_text(analysis, symbol, index, reference=not occurrence.definition)
        return (text or f"`{symbol.name}`: no shape yet (the file has errors here)"), occurrence.span
    call, arg = _call_at(index.module, line, column)
    if call is None:
        return None
    if arg is not None and arg.keyword is not None and _in(arg.span, line, column, len(arg.keyword)):
        return _arg_doc(call.name, arg.keyword), arg.span
    if _in(call.name_span, line, column):
        op = lookup(call.name)
        if op is not None:
            layers = [analysis.network.layer(n) for n in call_layers(analysis, call, [], False)
                      ] if analysis.network else []
            return _op_doc(op) + ("\n\n---\n" + _describe_layers(analysis, layers) if layers else ""), call.name_span
        if call.name in FILLERS:
            return f"filler `{_filler_signature(call.name)}`", call.name_span
    return None


def _in(span: Span, line: int, column: int, width: int | None = None) -> bool:
    end = span.column + width if width is not None else span.end_column
    return span.line == line and span.column <= column <= end


def _call_at(module: ast.Module, line: int, column: int) -> tuple[ast.Call | None, ast.Arg | None]:
    """The innermost call (and argument) whose span contains the position."""
    best: tuple[ast.Call | None, ast.Arg | None] = (None, None)
    for call in _calls(module):
        if _contains(call.span, line, column):
            best = (call, next((a for a in call.args if _contains(a.span, line, column)), None))
    return best


def _contains(span: Span, line: int, column: int) -> bool:
    return (span.line, span.column) <= (line, column) <= (span.end_line, span.end_column)


def _calls(module: ast.Module) -> list[ast.Call]:
    """Every call in source order, outer before inner (op, block and filler calls)."""
    found: list[ast.Call] = []

    def value(v: ast.Value) -> None:
        if isinstance(v, ast.Call):
            call(v)
        elif isinstance(v, ast.TupleValue):
            for item in v.items:
                value(item)

    def call(c: ast.Call) -> None:
        found.append(c)
        for a in c.args:
            value(a.value)

    def statement(stmt: ast.Statement) -> None:
        if isinstance(stmt, ast.LayerStmt):
            for link in stmt.links:
                call(link.call)
        elif isinstance(stmt, ast.RepeatStmt):
            call(stmt.call)
        elif isinstance(stmt, (ast.DefaultsStmt, ast.SolverStmt, ast.PreprocessStmt)):
            for a in stmt.args:
                value(a.value)
        elif isinstance(stmt, ast.BlockDef):
            for inner in stmt.body:
                statement(inner)

    for stmt in module.statements:
        statement(stmt)
    return found


def symbol_layers(analysis: Analysis, symbol: Symbol, reference: bool = False) -> list[Layer]:
    """The IR layers a symbol names (a reference to a label: its chain's output; in a block: every instance)."""
    network = analysis.network
    if network is None:
        return []
    if symbol.kind == "input":
        return [network.layer(symbol.name)] if symbol.name in network.graph else []
    if symbol.call is None:
        return []
    call, names = (symbol.output if reference and symbol.output else (symbol.call, [symbol.name]))
    if symbol.scope is None and symbol.name in network.graph and not reference:
        return [network.layer(symbol.name)]
    return [network.layer(n) for n in call_layers(analysis, call, names, symbol.scope is None)]


def _layers_text(analysis: Analysis, symbol: Symbol, index: SymbolIndex, reference: bool = False) -> str:
    if symbol.kind == "block":
        uses = [o for o in index.occurrences if o.symbol is symbol and not o.definition]
        return f"\n\nused {len(uses)} time{'s' if len(uses) != 1 else ''}"
    layers = symbol_layers(analysis, symbol, reference)
    if not layers:
        return ""
    text = _describe_layers(analysis, layers)
    op = lookup(layers[0].op)
    return text + (f"\n\n---\n{op.summary}" if op is not None else "")


def _describe_layers(analysis: Analysis, layers: list[Layer]) -> str:
    shown = layers[:MAX_INSTANCES_SHOWN]
    parts = [_describe_layer(analysis, layer) for layer in shown]
    if len(layers) > len(shown):
        parts.append(f"... and {len(layers) - len(shown)} more instances ({describe_shapes(layers)})")
    return "\n\n".join(parts)


def _describe_layer(analysis: Analysis, layer: Layer) -> str:
    lines = [f"**{layer.name}**: `{layer.op}` → `{format_shape(layer.shape)}`"
             + (f" @{layer.phase}" if layer.phase != "all" else "")]
    if layer.inputs:
        lines.append("inputs: " + ", ".join(f"`{n}`" for n in layer.inputs))
    for name, spec in layer.params.items():
        lines.append(f"- `{layer.state_key(name)}`: {format_shape(spec.shape)} ({spec.count:,}), {spec.filler}, "
                     f"lr ×{spec.lr_mult:g}, decay ×{spec.decay_mult:g}")
    if layer.params:
        lines.append(f"parameters: {layer.param_count:,}")
    if layer.macs:
        lines.append(f"MACs: {layer.macs:,}")
    field = analysis.receptive_fields.get(layer.name)
    if field is not None and not layer.is_input:
        lines.append(f"receptive field: {field}")
    return "  \n".join(lines)


def signature(op: OpDef) -> str:
    """``conv(out, kernel, stride=1, pad=0, ...)``; ``relu`` for an op without arguments."""
    return f"{op.name}(" + ", ".join(_arg_text(a) for a in op.args) + ")" if op.args else op.name


def _arg_text(arg: Arg) -> str:
    """``name`` or ``name=default`` as source writes it; a sizes argument is ``**name`` (its keywords)."""
    if arg.kind == "sizes":
        return f"**{arg.name}"
    if arg.default is REQUIRED:
        return arg.name
    default = arg.default
    if isinstance(default, bool):
        text = "true" if default else "false"
    elif default is None:
        text = "none"
    elif arg.kind == "shape" and isinstance(default, tuple):
        text = "x".join(map(str, default))
    elif arg.kind == "string":
        text = string_literal(default)
    else:
        text = str(default)
    return f"{arg.name}={text}"


def _op_doc(op: OpDef) -> str:
    return f"```adsl\n{signature(op)}\n```\n{op.summary}\n\nexample: `{op.example}`"


def _arg_doc(op_name: str, keyword: str) -> str:
    op = lookup(op_name)
    if op is None:
        if op_name in FILLERS:
            return f"`{keyword}`: argument of filler `{_filler_signature(op_name)}`"
        return f"`{keyword}`"
    arg = op.arg(keyword)
    sizes = next((a for a in op.args if a.kind == "sizes"), None)
    setting = keyword in op.param_kinds() or keyword.endswith(("_lr", "_decay"))
    if arg is None and sizes is not None and not setting:
        return f"`{keyword}`: a size collected by `**{sizes.name}` ({sizes.words}): {sizes.doc}\n\n" \
               f"example: `{op.example}`"
    if arg is None:
        kind = keyword.rsplit("_", 1)[0]
        return f"`{keyword}`: parameter setting of `{kind}` (filler, `_lr` or `_decay` multiplier)\n\n" \
               f"example: `{op.example}`"
    return f"`{_arg_text(arg)}`: {arg.words}. {arg.doc}\n\nexample: `{op.example}`"


def _filler_signature(name: str) -> str:
    return f"{name}(" + ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in FILLERS[name]) + ")"


def block_signature(block: ast.BlockDef) -> str:
    params = ", ".join(p.name.name + (f"={format_value(p.default)}" if p.default is not None else "")
                       for p in block.params)
    return f"`block {block.name.name}({params})`"


# definition, references, rename ----------------------------------------------------------------
def definition(index: SymbolIndex | None, positions: Positions, uri: str, line: int, column: int
               ) -> list[types.Location]:
    occurrence = index.at(line, column) if index else None
    if occurrence is None:
        return []
    return [types.Location(uri, positions.range(occurrence.symbol.span))]


def references(index: SymbolIndex | None, positions: Positions, uri: str, line: int, column: int,
               include_declaration: bool) -> list[types.Location]:
    occurrence = index.at(line, column) if index else None
    if occurrence is None or index is None:
        return []
    return [types.Location(uri, positions.range(o.span)) for o in index.occurrences_of(occurrence.symbol)
            if include_declaration or not o.definition]


class RenameRefused(Exception):
    """A rename that cannot be done; the message says why."""


def prepare_rename(index: SymbolIndex | None, line: int, column: int) -> tuple[Symbol, Span]:
    occurrence = index.at(line, column) if index else None
    if occurrence is None:
        raise RenameRefused("only a layer, an input, a block or a block parameter can be renamed")
    symbol = occurrence.symbol
    if symbol.generated:
        raise RenameRefused(f"'{symbol.name}' is a generated name; name the op inline to rename it, "
                            f"as in 'x: {symbol.call.name if symbol.call else 'relu'}'")
    return symbol, occurrence.span


def rename(index: SymbolIndex | None, positions: Positions, line: int, column: int, new_name: str
           ) -> list[types.TextEdit]:
    """Edits renaming the symbol at the position (a label renames its generated names too)."""
    symbol, _ = prepare_rename(index, line, column)
    assert index is not None
    if not NAME.fullmatch(new_name) or new_name in KEYWORDS or new_name in ("true", "false", "in"):
        raise RenameRefused(f"'{new_name}' is not a valid name")
    if symbol.kind == "block" and lookup(new_name) is not None:
        raise RenameRefused(f"'{new_name}' is a built-in op; a block may not take its name")
    renames = {symbol: new_name}
    for derived in index.generated_from(symbol):
        renames[derived] = new_name + derived.name[len(symbol.name):]
    taken = _names_taken(index, symbol)
    for new in renames.values():
        if new in taken and taken[new] not in renames:
            raise RenameRefused(f"'{new}' is already defined at line {taken[new].span.line}")
    edits = []
    for old, new in renames.items():
        for occurrence in index.occurrences_of(old):
            if occurrence.definition and old.generated:
                continue
            edits.append(types.TextEdit(positions.range(occurrence.span), new))
    return edits


def _names_taken(index: SymbolIndex, symbol: Symbol) -> dict[str, Symbol]:
    return dict(index.block_symbols) if symbol.kind == "block" else dict(index.scopes.get(symbol.scope, {}))


# completion ------------------------------------------------------------------------------------
_OPEN_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\s*\($")
_KEYWORD_VALUE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*[A-Za-z_]*$")


def completion(analysis: Analysis, index: SymbolIndex | None, line: int, column: int) -> list[types.CompletionItem]:
    """Ops (with signatures), argument names, visible layers, blocks, fillers, keywords: by context."""
    return _ordered(_completion(analysis, index, line, column))


def _completion(analysis: Analysis, index: SymbolIndex | None, line: int, column: int
                ) -> list[types.CompletionItem]:
    text = analysis.text.split("\n")
    before = text[line - 1][: column - 1] if 1 <= line <= len(text) else ""
    blocks = index.blocks if index else {}
    scope = index.scope_at(line) if index else None
    call_name, inside = _enclosing_call(text, line, column)
    if call_name is not None:
        keyword = _KEYWORD_VALUE.search(inside)
        if keyword:
            return _value_items(call_name, keyword.group(1))
        return _argument_items(call_name, inside, blocks, index, scope)
    stripped = before.strip()
    if re.search(r"@\w*$", before):
        return [_item(p, types.CompletionItemKind.Keyword) for p in ("train", "test")]
    if re.fullmatch(r"\w*", stripped) and not before.startswith((" ", "\t")) or stripped.startswith("defaults"):
        if stripped.startswith("defaults"):
            return _op_items() + [_item(k, types.CompletionItemKind.Property, "parameter kind")
                                  for k in _param_kinds()]
        return [_item(k, types.CompletionItemKind.Keyword) for k in KEYWORDS if k != "repeat"]
    if re.search(r"(:|\||->)\s*\w*$", before) or re.fullmatch(r"\w*", stripped):
        items = _op_items() + [_item(b.name.name, types.CompletionItemKind.Class, block_signature(b).strip("`"))
                               for b in blocks.values()]
        if re.search(r":\s*\w*$", before):
            items += _layer_items(index, scope) + [_item("repeat", types.CompletionItemKind.Keyword)]
        return items
    if re.search(r",\s*\w*$", before):
        return _layer_items(index, scope)
    return []


def _enclosing_call(lines: list[str], line: int, column: int) -> tuple[str | None, str]:
    """The name of the call whose '(' is open at the position (searching a few lines up), and the text
    of its argument list so far."""
    first = max(0, line - 20)
    text = "\n".join(lines[first: line - 1] + [lines[line - 1][: column - 1] if line <= len(lines) else ""])
    text = re.sub(r'"([^"\\\n]|\\.)*"|#[^\n]*', lambda m: " " * len(m.group(0)), text)
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        char = text[i]
        if char == ")":
            depth += 1
        elif char == "(":
            if depth == 0:
                match = _OPEN_CALL.search(text[: i + 1])
                return (match.group(1) if match else ""), text[i + 1:]
            depth -= 1
        elif char in "{}":
            break
    return None, ""


def _argument_items(call_name: str, inside: str, blocks: dict[str, ast.BlockDef], index: SymbolIndex | None,
                    scope: str | None) -> list[types.CompletionItem]:
    given = set(re.findall(r"([A-Za-z_]\w*)\s*=", inside))
    op = lookup(call_name)
    if op is not None:
        items = [_item(f"{a.name}=", types.CompletionItemKind.Property, f"{a.words}, default {_arg_text(a)}"
                       if a.default is not REQUIRED else f"{a.words}, required", a.doc)
                 for a in op.args if a.name not in given and a.kind != "sizes"]
        items += [_item(f"{k}{s}=", types.CompletionItemKind.Property, "filler" if not s else "multiplier")
                  for k in op.param_kinds() for s in ("", "_lr", "_decay") if op.arg(k + s) is None]
        if op.inputs[1] is None or op.inputs[1] > 1 or "=" not in inside:
            items += _layer_items(index, scope)
        return items
    if call_name in blocks:
        return [_item(f"{p.name.name}=", types.CompletionItemKind.Property) for p in blocks[call_name].params
                if p.name.name not in given]
    if call_name in _param_kinds():  # defaults weight(...), defaults bias(...)
        return [_item(f"{k}=", types.CompletionItemKind.Property) for k in PARAM_KIND_KEYS]
    if call_name == "solver":
        return [_item(f"{k}=", types.CompletionItemKind.Property, kind) for k, (kind, _) in SOLVER_KEYS.items()]
    if call_name in FILLERS:
        return [_item(f"{k}=", types.CompletionItemKind.Property, f"default {v}") for k, v in FILLERS[call_name]]
    if index is not None and any(isinstance(s, ast.InputStmt) and s.name.name == call_name
                                 for s in index.module.statements):
        return [_item(f"{k}=", types.CompletionItemKind.Property, kind) for k, (kind, _) in PREPROCESS_KEYS.items()]
    return []


def _param_kinds() -> list[str]:
    """The parameter kinds ``defaults KIND(...)`` accepts (weight, bias, ...)."""
    return sorted({k for op in all_ops() for k in op.param_kinds()})


def _value_items(call_name: str, keyword: str) -> list[types.CompletionItem]:
    op = lookup(call_name)
    arg = op.arg(keyword) if op else None
    if arg is not None and arg.kind == "choice":
        return [_item(c, types.CompletionItemKind.EnumMember) for c in arg.choices]
    if arg is not None and arg.kind == "bool":
        return [_item(v, types.CompletionItemKind.Keyword) for v in ("true", "false")]
    if (arg is not None and arg.kind == "bias") or (op is not None and keyword in op.param_kinds()) \
            or keyword == "filler":
        return [_item(name, types.CompletionItemKind.Function, _filler_signature(name)) for name in FILLERS]
    if keyword == "variance_norm":
        return [_item(v, types.CompletionItemKind.EnumMember) for v in ("fan_in", "fan_out", "average")]
    if call_name == "solver" and keyword in SOLVER_KEYS:
        return [_item(c, types.CompletionItemKind.EnumMember) for c in SOLVER_KEYS[keyword][1]]
    return []


def _op_items() -> list[types.CompletionItem]:
    return [_item(op.name, types.CompletionItemKind.Function, signature(op), f"{op.summary}\n\n{op.example}")
            for op in all_ops()]


def _layer_items(index: SymbolIndex | None, scope: str | None) -> list[types.CompletionItem]:
    if index is None:
        return []
    items = [_item(s.name, types.CompletionItemKind.Variable, s.kind) for s in index.visible(scope)]
    if scope is not None:
        items.append(_item("in", types.CompletionItemKind.Variable, "the block's input"))
    return items


def _item(label: str, kind: types.CompletionItemKind, detail: str | None = None, doc: str | None = None
          ) -> types.CompletionItem:
    return types.CompletionItem(label, kind=kind, detail=detail, documentation=doc)


def _ordered(items: list[types.CompletionItem]) -> list[types.CompletionItem]:
    """Keep the order the context gives (arguments before layer names) in every client."""
    for i, item in enumerate(items):
        item.sort_text = f"{i:04d}"
    return items


# formatting ------------------------------------------------------------------------------------
def formatting(analysis: Analysis, positions: Positions, line_range: tuple[int, int] | None = None
               ) -> list[types.TextEdit]:
    """One edit replacing the document (or the 0-based inclusive ``line_range`` of it) with its ``fmt`` form.

    A document with syntax errors is left alone (fmt prints from the syntax tree)."""
    try:
        formatted = format_source(analysis.text, analysis.file)
    except AlexDSLError:
        return []
    if formatted == analysis.text:
        return []
    if line_range is None:
        return [types.TextEdit(positions.whole(), formatted)]
    old, new = analysis.text.split("\n"), formatted.split("\n")
    if len(old) != len(new):  # lines were joined or dropped: only the whole document lines up
        return [types.TextEdit(positions.whole(), formatted)]
    first, last = line_range
    edits = []
    for line in range(first, min(last, len(old) - 1) + 1):
        if old[line] != new[line]:
            edits.append(types.TextEdit(types.Range(types.Position(line, 0), positions.position(line + 1, 10**6)),
                                        new[line]))
    return edits


# outline, folding, semantic tokens -------------------------------------------------------------
def document_symbols(index: SymbolIndex | None, positions: Positions) -> list[types.DocumentSymbol]:
    if index is None:
        return []

    def layer(stmt: ast.LayerStmt | ast.RepeatStmt) -> types.DocumentSymbol:
        detail = " | ".join(link.call.name for link in stmt.links) if isinstance(stmt, ast.LayerStmt) \
            else f"repeat {stmt.call.name}"
        return types.DocumentSymbol(stmt.label.name, types.SymbolKind.Function, positions.range(stmt.span),
                                    positions.range(stmt.label.span), detail=detail)

    out = []
    for stmt in index.module.statements:
        if isinstance(stmt, ast.InputStmt):
            out.append(types.DocumentSymbol(stmt.name.name, types.SymbolKind.Variable, positions.range(stmt.span),
                                            positions.range(stmt.name.span), detail="input"))
        elif isinstance(stmt, (ast.LayerStmt, ast.RepeatStmt)):
            out.append(layer(stmt))
        elif isinstance(stmt, ast.BlockDef):
            out.append(types.DocumentSymbol(stmt.name.name, types.SymbolKind.Class, positions.range(stmt.span),
                                            positions.range(stmt.name.span), detail=block_signature(stmt).strip("`"),
                                            children=[layer(inner) for inner in stmt.body]))
    return out


def folding_ranges(index: SymbolIndex | None) -> list[types.FoldingRange]:
    """Blocks, and statements written over several lines."""
    if index is None:
        return []
    spans = [s.span for s in index.module.statements if not isinstance(s, ast.BlockDef)]
    spans += [inner.span for b in index.blocks.values() for inner in b.body]
    ranges = [types.FoldingRange(b.span.line - 1, b.span.end_line - 1, kind=types.FoldingRangeKind.Region)
              for b in index.blocks.values() if b.span.end_line > b.span.line]
    ranges += [types.FoldingRange(s.line - 1, s.end_line - 1) for s in spans if s.end_line > s.line]
    return ranges


TOKEN_TYPES = ["keyword", "function", "class", "variable", "parameter", "property", "enumMember"]
TOKEN_MODIFIERS = ["declaration", "defaultLibrary"]


def semantic_tokens(index: SymbolIndex | None, positions: Positions) -> list[int]:
    """LSP's relative encoding of: keywords, ops, fillers, blocks, layers, parameters, argument names."""
    if index is None:
        return []
    tokens: list[tuple[int, int, int, int, int]] = []  # line, column, length, type, modifiers

    def add(line: int, column: int, length: int, kind: str, modifiers: int = 0) -> None:
        tokens.append((line, column, length, TOKEN_TYPES.index(kind), modifiers))

    kinds = {"input": "variable", "layer": "variable", "block": "class", "param": "parameter"}
    for occurrence in index.occurrences:
        span = occurrence.span
        add(span.line, span.column, span.end_column - span.column, kinds[occurrence.symbol.kind],
            1 if occurrence.definition else 0)
    for stmt in index.module.statements:
        keyword = _keyword(stmt)
        if keyword:
            add(stmt.span.line, stmt.span.column, len(keyword), "keyword")
    for call in _calls(index.module):
        if lookup(call.name) is not None or call.name in FILLERS:
            add(call.name_span.line, call.name_span.column, len(call.name), "function", 2)
        for arg in call.args:
            if arg.keyword is not None:
                add(arg.span.line, arg.span.column, len(arg.keyword), "property")
    tokens = sorted(set(tokens))
    data: list[int] = []
    previous_line, previous_start = 1, 0
    for line, column, length, kind, modifiers in tokens:
        position = positions.position(line, column)
        start = position.character
        delta_line = line - previous_line
        data += [delta_line, start - previous_start if delta_line == 0 else start,
                 positions.position(line, column + length).character - start, kind, modifiers]
        previous_line, previous_start = line, start
    return data


def _keyword(stmt: ast.Statement) -> str | None:
    names: Sequence[tuple[type, str]] = (
        (ast.NetworkStmt, "network"), (ast.DescriptionStmt, "description"), (ast.InputStmt, "input"),
        (ast.OutputStmt, "output"), (ast.DefaultsStmt, "defaults"), (ast.SolverStmt, "solver"),
        (ast.PreprocessStmt, "preprocess"), (ast.BlockDef, "block"))
    return next((word for cls, word in names if isinstance(stmt, cls)), None)
