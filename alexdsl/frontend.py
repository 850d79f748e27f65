"""The two ways into the IR, and the checks they share.

* :func:`build_network`: source text -> syntax tree -> IR -> checked IR.
* :func:`network_from_json` (``alexdsl.from_json``): IR JSON -> IR whose form is checked
  (:func:`alexdsl.ir.serialize.read_ir`) -> checked IR, compared with what the file claims.

Both run :func:`check_graph`: cycles, the shape pass, every layer shaped, resources.

>>> build_network("network T\\ninput x: 3x8x8\\nc: conv(2, 3)\\n").shapes["c"]
(2, 6, 6)
>>> network_from_json(build_network("network T\\ninput x: 3x8x8\\nc: conv(2, 3)\\n").to_json()).shapes["c"]
(2, 6, 6)
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Collection, Iterator, Sequence

import networkx as nx

from alexdsl.errors import AlexDSLError, Diagnostic, DiagnosticSink
from alexdsl.ir.elaboration.driver import elaborate
from alexdsl.ir.elaboration.state import Meta
from alexdsl.ir.network import LAYER, Network, layer_of
from alexdsl.ir.serialize import read_ir
from alexdsl.limits import max_source_bytes
from alexdsl.passes.resources import check_resources
from alexdsl.passes.shapes import infer_shapes
from alexdsl.passes.validate import choose_outputs, find_cycle
from alexdsl.syntax import ast
from alexdsl.syntax.parser import parse_recovering


def _position(diagnostic: Diagnostic) -> tuple[int, int]:
    return (diagnostic.span.line, diagnostic.span.column) if diagnostic.span else (0, 0)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: the front end allocates many small objects that all
    stay alive, and collections over them make the cost grow faster than the layer count."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_network(text: str, file: str = "<string>", input_shapes: dict[str, tuple[int, ...]] | None = None,
                  max_layers: int | None = None) -> Network:
    """Parse, elaborate and check ``text``; raise :class:`AlexDSLError` listing every error.

    ``max_layers`` bounds the layers after expansion (see :func:`alexdsl.limits.max_layers`).
    """
    with gc_paused():
        return _build(text, file, input_shapes, max_layers)


def _build(text: str, file: str, input_shapes: dict[str, tuple[int, ...]] | None, max_layers: int | None
           ) -> Network:
    limit = max_source_bytes()
    if len(text) > limit and len(text.encode("utf-8")) > limit:  # text given in memory is bounded like a file
        raise AlexDSLError([Diagnostic("error", f"the source is larger than the limit of {limit:,} bytes", path=file,
                                       hint="set ALEXDSL_MAX_SOURCE_BYTES to read a larger file")])
    module, syntax_errors = parse_recovering(text, file)
    if syntax_errors and not module.statements:  # parsing stopped early: nothing more can be checked
        raise AlexDSLError(syntax_errors, sources={file: text})
    return _build_module(module, {file: text}, input_shapes, max_layers, syntax_errors)


def network_from_module(module: ast.Module, sources: dict[str, str] | None = None,
                        input_shapes: dict[str, tuple[int, ...]] | None = None,
                        deferred_labels: Collection[str] = ()) -> Network:
    """Elaborate and check a syntax tree built in code (an importer's, through :mod:`alexdsl.syntax.build`)
    as :func:`build_network` does a parsed one: no text is printed or parsed. ``sources`` holds the text of
    each file its spans point into, for the errors. The label inputs named in ``deferred_labels`` (whose
    ``class(N)`` the importer does not know) take their class count from the shape pass: the width of the
    logits of the first loss or metric reading them (see ``Layer.attrs["classes"]`` of the result), or 1 where
    none reads them."""
    with gc_paused():
        return _build_module(module, sources or {}, input_shapes, None, deferred_labels=deferred_labels)


def _build_module(module: ast.Module, sources: dict[str, str], input_shapes: dict[str, tuple[int, ...]] | None,
                  max_layers: int | None, syntax_errors: Sequence[Diagnostic] = (),
                  deferred_labels: Collection[str] = ()) -> Network:
    file = module.file
    sink = DiagnosticSink(list(syntax_errors))
    graph, meta = elaborate(module, sink, input_shapes, max_layers)
    for name in deferred_labels:
        layer = layer_of(graph, name) if name in graph else None
        if layer is not None and layer.is_label:
            layer.attrs["classes"] = None  # resolved by the shape pass (passes.shapes.infer_shapes)
    outputs: list[str] = []
    order = check_graph(graph, sink, file)
    for name in deferred_labels:  # one no loss or metric read is the class(1) it is printed as
        if name in graph and layer_of(graph, name).is_label and layer_of(graph, name).attrs["classes"] is None:
            layer_of(graph, name).attrs["classes"] = 1
    if order is not None and not sink.has_errors:
        outputs = choose_outputs(graph, order, meta.outputs, sink)
    if not any(isinstance(statement, ast.InputStmt) or (isinstance(statement, ast.BrokenStmt)
                                                         and statement.kind == "input")
               for statement in module.statements):
        sink.error("the network declares no input", None, path=file,
                   hint="add a line such as 'input data: 3x227x227'")
    diagnostics = sorted(_merge_instances(_with_uses(sink.diagnostics, graph, meta), graph), key=_position)
    if sink.has_errors:
        raise AlexDSLError(diagnostics, sources=sources)
    return Network(
        meta.name,
        _checked(graph),
        description=meta.description,
        inputs=meta.inputs,
        outputs=outputs,
        solver=meta.solver,
        preprocess=meta.preprocess,
        source_file=file,
        warnings=diagnostics,
    )


def check_graph(graph: nx.DiGraph, sink: DiagnosticSink, file: str) -> list[str] | None:
    """The checks every way into the IR runs: cycles, the shape pass (shapes, parameters, MACs),
    every layer shaped, and resources. Returns the layer order, or None for a cyclic graph."""
    if find_cycle(graph, sink):
        return None
    network = Network("", graph)
    order = network.layer_names()
    infer_shapes(graph, order, sink)
    if not sink.has_errors:
        _require_shapes(graph, sink)
        check_resources(network, sink, file)
    return order


def network_from_json(text: str, file: str = "<json>") -> Network:
    """Read and check IR JSON (``alexdsl.from_json``); ``file`` names it in errors."""
    sink = DiagnosticSink()
    with gc_paused():
        ir = read_ir(text, file)
        order = check_graph(ir.graph, sink, file)
    located = []  # no source lines here: each problem is located by its layer's JSON path
    for diagnostic in sink.diagnostics:
        layer = diagnostic.message.split(": ", 1)[0]
        located.append(dataclasses.replace(diagnostic, span=None, path=ir.locate(layer)))
    if order is not None and not sink.has_errors:
        ir.compare(order)
    errors = [d for d in located if d.severity == "error"] + ir.reader.sink.diagnostics
    if errors:
        raise AlexDSLError(errors)
    assert order is not None
    return Network(ir.name, _checked(ir.graph), description=ir.description, inputs=ir.inputs,
                   outputs=ir.outputs, solver=ir.solver, preprocess=ir.preprocess, source_file=ir.source,
                   warnings=[d for d in located if d.severity == "warning"])


def _checked(graph: nx.DiGraph) -> nx.DiGraph:
    """The checked graph, its nodes in declaration order, without the front end's working state."""
    for _, layer in graph.nodes(data=LAYER):
        layer.clear_build_state()
    return graph


def _require_shapes(graph: nx.DiGraph, sink: DiagnosticSink) -> None:
    """A located error for any layer left without a shape (so no broken network is ever accepted)."""
    for name, layer in graph.nodes(data=LAYER):
        if layer.shape is None:
            sink.error(f"{name}: the layer's input could not be resolved", layer.span,
                       hint="check the names this layer and the block it is in read from")


def _layer_of(diagnostic: Diagnostic, graph: nx.DiGraph) -> tuple[str, str] | None:
    """The layer a pass's message starts with ("layer: ..."), and the rest of the message."""
    layer, sep, rest = diagnostic.message.partition(": ")
    return (layer, rest) if sep and layer in graph else None


def _with_uses(diagnostics: list[Diagnostic], graph: nx.DiGraph, meta: Meta) -> list[Diagnostic]:
    """A pass's diagnostics about a layer inside a block body, with notes naming the lines that used the block."""
    out = []
    for diagnostic in diagnostics:
        found = _layer_of(diagnostic, graph)
        block = layer_of(graph, found[0]).block if found else None
        if block and not diagnostic.notes and diagnostic.span is not None \
                and block in meta.instances and meta.instances[block].encloses(diagnostic.span):
            diagnostic = dataclasses.replace(diagnostic, notes=meta.use_notes(block))
        out.append(diagnostic)
    return out


def _merge_instances(diagnostics: list[Diagnostic], graph: nx.DiGraph) -> list[Diagnostic]:
    """One diagnostic per mistake inside a block body, "(in N instances)", not one per instance.

    Instances differ in their notes (where each was used), and a did-you-mean may be left off
    past the first errors: neither makes them different mistakes. The notes name every place
    that used the block once, and the first hint given is kept.
    """
    groups: dict[tuple, list[Diagnostic]] = {}
    for diagnostic in diagnostics:
        message = diagnostic.message
        found = _layer_of(diagnostic, graph)
        block = layer_of(graph, found[0]).block if found else None
        if found and block:
            message = f"{found[0][len(block) + 1:]}: {found[1]}"
        key = (diagnostic.severity, diagnostic.span, diagnostic.path, message, diagnostic.expected,
               diagnostic.received)
        groups.setdefault(key, []).append(diagnostic)
    merged = []
    for key, group in groups.items():
        if len(group) == 1:
            merged.append(group[0])
        else:
            hint = next((d.hint for d in group if d.hint), None)
            uses = {note.span: dataclasses.replace(note, subject=None) for d in group for note in d.notes}
            merged.append(dataclasses.replace(group[0], message=f"{key[3]} (in {len(group)} instances)", hint=hint,
                                              notes=tuple(uses.values())))
    return merged
