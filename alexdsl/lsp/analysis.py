"""What the language server knows about one version of a document, computed once per edit.

:func:`analyze` runs the front end (:func:`~alexdsl.frontend.build_network`) and keeps its
diagnostics exactly as ``alexdsl check`` reports them. When the text has errors it recovers
the way the parser does: the lines with errors are blanked and the rest is built again, so a
half-typed line does not wipe the shapes of the rest of the file. Where even that fails, the
hints of unchanged lines come from the document's last good analysis.

Positions are 0-based (line, column) pairs in code points; spans are the front end's 1-based ones.

>>> a = analyze("network T\\ninput x: 3x8x8\\nc: conv(2, 3) | relu | maxpool(2) | relu\\n", "t.adsl")
>>> a.network.shapes["c_relu"], a.line_hints[2].label
((2, 6, 6), '2x3x3')
>>> [(stage.column, stage.label) for stage in a.line_hints[2].stages]  # after conv(2, 3) and maxpool(2)
[(13, '2x6x6'), (33, '2x3x3')]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from alexdsl.errors import AlexDSLError, Diagnostic, Span
from alexdsl.frontend import build_network
from alexdsl.ir.network import Layer, Network
from alexdsl.ops.registry import format_shape
from alexdsl.syntax import ast
from alexdsl.syntax.parser import parse_module

RECOVERY_ROUNDS = 3
WHOLE_INPUT = 0  # receptive-field size meaning "every input position"


@dataclass(frozen=True)
class StageHint:
    """A hint inside a line whose chain changes the shape more than once, after a stage that changes it
    (``conv(96, 11, stride=4) 96x55x55 | relu | maxpool(3, stride=2) 96x27x27 | lrn(...)``)."""

    column: int  # 0-based, just after the stage's call
    label: str
    layers: tuple[str, ...]  # the IR layers of the stage (several in a block body: one per instance)


@dataclass(frozen=True)
class LineHint:
    """The inlay hint at the end of a line: the output of the last layer written on it; and the hints
    of the stages before it on the line whose shape changes."""

    column: int  # 0-based, just after the last call on the line (or the statement's @phase)
    label: str
    layers: tuple[str, ...]  # the IR layers it describes (several: repeat copies or block instances)
    line_layers: tuple[str, ...]  # every IR layer written on the line (for parameter and MAC totals)
    stages: tuple[StageHint, ...] = ()


@dataclass(frozen=True)
class ReceptiveField:
    """Input rows/columns one output position sees, and the step between output positions."""

    size: tuple[int, int]
    stride: tuple[int, int]

    def __str__(self) -> str:
        if self.size == (WHOLE_INPUT, WHOLE_INPUT):
            return "the whole input"
        return f"{self.size[0]}x{self.size[1]} (stride {self.stride[0]}x{self.stride[1]})"


@dataclass
class Analysis:
    """One document version: diagnostics, the (possibly recovered) network and its syntax tree."""

    text: str
    file: str
    diagnostics: list[Diagnostic]
    network: Network | None  # built from ``recovered`` when ``text`` has errors
    recovered: str  # ``text`` with the lines that have errors blanked
    module: ast.Module | None  # the syntax tree of ``recovered``
    line_hints: dict[int, LineHint] = field(default_factory=dict)
    stale_lines: frozenset[int] = frozenset()  # lines whose hints come from an earlier version

    @functools.cached_property
    def spans(self) -> dict[Span, list[str]]:
        """Source span -> the IR layers written there (a block's layers once per instance)."""
        index: dict[Span, list[str]] = {}
        if self.network is not None:
            for layer in self.network.layers():
                if layer.span is not None:
                    index.setdefault(layer.span, []).append(layer.name)
        return index

    @functools.cached_property
    def members(self) -> dict[str, list[str]]:
        """Dotted prefix -> the layers under it, in layer order (``inc3a`` -> ``inc3a.b1``, ...)."""
        members: dict[str, list[str]] = {}
        if self.network is not None:
            for name in self.network.layer_names():
                parts = name.split(".")
                for i in range(1, len(parts)):
                    members.setdefault(".".join(parts[:i]), []).append(name)
        return members

    @functools.cached_property
    def receptive_fields(self) -> dict[str, ReceptiveField]:
        return receptive_fields(self.network) if self.network is not None else {}

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


FrontEnd = tuple[list[Diagnostic], Network | None]


def front_end(text: str, file: str) -> FrontEnd:
    """What ``alexdsl check`` reports for ``text``, and the network when it has no errors."""
    try:
        network = build_network(text, file)
    except AlexDSLError as error:
        return error.diagnostics, None
    return list(network.warnings), network


def analyze(text: str, file: str, previous: Analysis | None = None, checked: FrontEnd | None = None) -> Analysis:
    """Analyse ``text`` (``checked``: its :func:`front_end` result, if already known); ``previous`` is
    the document's last analysis, whose hints fill the gaps the errors leave."""
    diagnostics, network = checked if checked is not None else front_end(text, file)
    recovered = text
    if network is None:
        recovered, network = _recover(text, file, diagnostics)
    try:
        module = parse_module(recovered, file)
    except AlexDSLError:
        module = None
    analysis = _with_hints(Analysis(text, file, diagnostics, network, recovered, module))
    if previous is not None and analysis.has_errors:
        _keep_unchanged_hints(analysis, previous)
    return analysis


def _recover(text: str, file: str, diagnostics: list[Diagnostic]) -> tuple[str, Network | None]:
    """Blank the lines with errors and build again, a few rounds; the text and network reached."""
    blanked = text
    lines: set[int] = set()
    for _ in range(RECOVERY_ROUNDS):
        new = {d.span.line for d in diagnostics if d.severity == "error" and d.span and d.span.file == file}
        if not new - lines:
            break
        lines |= new
        blanked = _blank_lines(text, lines)
        try:
            return blanked, build_network(blanked, file)
        except AlexDSLError as error:
            diagnostics = error.diagnostics
    return blanked, None


def _blank_lines(text: str, lines: set[int]) -> str:
    """``text`` with the given 1-based lines replaced by spaces (every position is kept)."""
    rows = text.split("\n")
    for line in lines:
        if 1 <= line <= len(rows):
            rows[line - 1] = " " * len(rows[line - 1])
    return "\n".join(rows)


def link_names(stmt: ast.LayerStmt) -> list[str]:
    """The local layer name of each link of a chain, as elaboration names them.

    >>> stmt = parse_module("input x: 3x8x8\\nc: conv(2, 3) | relu | p: maxpool(2) | relu\\n").statements[1]
    >>> link_names(stmt)
    ['c', 'c_relu', 'p', 'p_relu']
    """
    return ast.chain_names(stmt.label.name, [(link.label.name if link.label else None, link.call.name)
                                             for link in stmt.links])


def statement_calls(stmt: ast.LayerStmt | ast.RepeatStmt) -> list[tuple[ast.Call, list[str]]]:
    """Each call of a layer statement with the local names it creates (a repeat: one per copy)."""
    if isinstance(stmt, ast.RepeatStmt):
        count = stmt.count.value if isinstance(stmt.count, ast.Literal) and isinstance(stmt.count.value, int) else 0
        names = [f"{stmt.label.name}.{i}" for i in range(max(0, min(count, 10_000)))]
        if stmt.first is not None:  # repeat N first(...), then call(...)
            return [(stmt.first, names[:1]), (stmt.call, names[1:])]
        return [(stmt.call, names)]
    return [(link.call, [name]) for link, name in zip(stmt.links, link_names(stmt))]


def instance_output(analysis: Analysis, instance: str) -> str | None:
    """The layer a block instance outputs: the one of its layers read from outside it, else the last."""
    assert analysis.network is not None
    graph, prefix = analysis.network.graph, instance + "."
    inside = analysis.members.get(instance, [])
    read_outside = [n for n in inside if any(not s.startswith(prefix) for s in graph.successors(n))]
    chosen = read_outside or [n for n in inside if not any(graph.successors(n))] or inside
    return chosen[-1] if chosen else None


def call_layers(analysis: Analysis, call: ast.Call, names: list[str], top_level: bool) -> list[str]:
    """The IR layers a call became: an op's layers by span; a top-level block use, its (last) instance's output."""
    network = analysis.network
    if network is None:
        return []
    if call.span in analysis.spans:
        return analysis.spans[call.span]
    if not top_level:
        return []
    # a block use (an op's call is in ``spans``); its instance's own name may also be a layer ('self')
    output = instance_output(analysis, names[-1]) if names else None
    return [output] if output is not None else []


def _with_hints(analysis: Analysis) -> Analysis:
    """Fill ``line_hints``: at the end of each line of a layer statement, the output of its last call there."""
    if analysis.module is None or analysis.network is None:
        return analysis
    network = analysis.network
    for stmt, top_level in _layer_statements(analysis.module):
        last: dict[int, tuple[ast.Call, list[str]]] = {}
        on_line: dict[int, list[str]] = {}
        op_calls: dict[int, list[tuple[Span, list[str]]]] = {}  # the calls of ops, in order, per line
        for call, names in statement_calls(stmt):
            layers = call_layers(analysis, call, names, top_level)
            if layers:
                last[call.span.end_line - 1] = (call, layers)
                if call.span in analysis.spans:
                    op_calls.setdefault(call.span.end_line - 1, []).append((call.span, layers))
                on_line.setdefault(call.span.end_line - 1, []).extend(
                    [n for name in names for n in analysis.members.get(name, [])]
                    if top_level and call.span not in analysis.spans else layers)
        phase = stmt.phase.span if stmt.phase is not None else None
        for line, (call, layers) in last.items():
            end = phase.end_column if phase is not None and phase.end_line - 1 == line else call.span.end_column
            described = describe_shapes([network.layer(n) for n in layers])
            stages = _stage_hints(network, op_calls.get(line, []), call.span)
            analysis.line_hints[line] = LineHint(end - 1, described, tuple(layers), tuple(on_line[line]), stages)
    return analysis


def _stage_hints(network: Network, calls: list[tuple[Span, list[str]]], last: Span) -> tuple[StageHint, ...]:
    """The hints inside a line whose op ``calls`` (span and IR layers, in order) change the shape more than
    once: one after each call that changes it, but the ``last`` call of the line (the line's own hint is there).

    A line that changes the shape once shows it at its end alone (``conv(384, 3, pad=1) | relu``)."""
    changing = []
    for span, names in calls:
        layers = [network.layer(n) for n in names]
        if any(layer.inputs and network.layer(layer.inputs[0]).shape != layer.shape for layer in layers):
            changing.append(StageHint(span.end_column - 1, describe_shapes(layers), tuple(names)))
    last_column = last.end_column - 1
    return tuple(h for h in changing if h.column != last_column) if len(changing) > 1 else ()


def quick_analysis(text: str, file: str, checked: FrontEnd) -> Analysis | None:
    """Hints from the network alone, without a syntax tree: ready as soon as the front end is.

    Each line shows the output of the last op whose call ends there. Only a line that ends with
    a block use gets its hint later, from :func:`analyze` (which also moves hints past an @phase).
    None when the text has errors (the recovery needs the full analysis).
    """
    diagnostics, network = checked
    if network is None:
        return None
    analysis = Analysis(text, file, diagnostics, network, text, None)
    last: dict[int, Span] = {}
    on_line: dict[int, list[str]] = {}
    for span, layers in analysis.spans.items():
        if network.layer(layers[0]).is_input:
            continue
        line = span.end_line - 1
        on_line.setdefault(line, []).extend(layers)
        if line not in last or span.end_column > last[line].end_column:
            last[line] = span
    for line, span in last.items():
        layers = analysis.spans[span]
        described = describe_shapes([network.layer(n) for n in layers])
        calls = sorted((s for s in analysis.spans if s.end_line - 1 == line
                        and not network.layer(analysis.spans[s][0]).is_input), key=lambda s: s.end_column)
        stages = _stage_hints(network, [(s, analysis.spans[s]) for s in calls], span)
        analysis.line_hints[line] = LineHint(span.end_column - 1, described, tuple(layers), tuple(on_line[line]),
                                             stages)
    return analysis


def _layer_statements(module: ast.Module) -> list[tuple[ast.LayerStmt | ast.RepeatStmt, bool]]:
    """Every layer statement with whether it is at the top level (not in a block body)."""
    found: list[tuple[ast.LayerStmt | ast.RepeatStmt, bool]] = []
    for stmt in module.statements:
        if isinstance(stmt, (ast.LayerStmt, ast.RepeatStmt)):
            found.append((stmt, True))
        elif isinstance(stmt, ast.BlockDef):
            found.extend((inner, False) for inner in stmt.body)
    return found


def describe_shapes(layers: list[Layer]) -> str:
    """``96x55x55``; for the copies of a repeat, the last one's; for block instances, each shape."""
    if all(layer.block is None for layer in layers):
        return format_shape(layers[-1].shape)
    shapes = list(dict.fromkeys(format_shape(layer.shape) for layer in layers))
    if len(shapes) == 1:
        return shapes[0] if len(layers) == 1 else f"{shapes[0]} (all {len(layers)} instances)"
    shown = ", ".join(shapes[:3]) + (", ..." if len(shapes) > 3 else "")
    return f"{len(layers)} instances: {shown}"


def _keep_unchanged_hints(analysis: Analysis, previous: Analysis) -> None:
    """Lines without a fresh hint whose text did not change keep the hint they had."""
    if not previous.line_hints:
        return
    old_lines = previous.text.split("\n")
    by_text: dict[str, LineHint] = {}
    for line, hint in previous.line_hints.items():
        if line < len(old_lines):
            by_text.setdefault(old_lines[line], hint)
    stale = set()
    for line, text in enumerate(analysis.text.split("\n")):
        if line not in analysis.line_hints and text.strip() and text in by_text:
            analysis.line_hints[line] = by_text[text]
            stale.add(line)
    analysis.stale_lines = frozenset(stale)


def receptive_fields(network: Network) -> dict[str, ReceptiveField]:
    """Each tensor layer's receptive field on the network's inputs (windows compose; a layer that
    mixes every position, such as fc or global pooling, sees the whole input)."""
    fields: dict[str, ReceptiveField] = {}
    whole = ReceptiveField((WHOLE_INPUT, WHOLE_INPUT), (1, 1))
    for layer in network.layers():
        if layer.is_label:
            continue
        if layer.is_input:
            fields[layer.name] = ReceptiveField((1, 1), (1, 1))
            continue
        sources = [fields[n] for n in layer.inputs if n in fields]
        if not sources:
            continue
        if any(f == whole for f in sources):
            fields[layer.name] = whole
            continue
        size = (max(f.size[0] for f in sources), max(f.size[1] for f in sources))
        stride = (max(f.stride[0] for f in sources), max(f.stride[1] for f in sources))
        source_shape = network.layer(layer.inputs[0]).shape
        if "kernel" in layer.attrs:
            kernel, step = layer.attrs["kernel"], layer.attrs.get("stride") or layer.attrs["kernel"]
            dilation = layer.attrs.get("dilation") or (1, 1)
            size = tuple(size[i] + dilation[i] * (kernel[i] - 1) * stride[i] for i in range(2))  # type: ignore
            stride = (stride[0] * step[0], stride[1] * step[1])
        elif len(layer.shape) != 3 or layer.shape[1:] != source_shape[1:]:
            fields[layer.name] = whole
            continue
        fields[layer.name] = ReceptiveField(size, stride)  # type: ignore[arg-type]
    return fields
