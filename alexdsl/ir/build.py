"""The front end in one call: text -> syntax tree -> IR -> checked IR.

>>> from alexdsl.ir.build import build_network
>>> build_network("network T\\ninput x: 3x8x8\\nc: conv(2, 3)\\n").shapes["c"]
(2, 6, 6)
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

from alexdsl.errors import AlexDSLError, Diagnostic, DiagnosticSink
from alexdsl.ir.elaborate import elaborate
from alexdsl.ir.network import Network
from alexdsl.passes.shapes import infer_shapes
from alexdsl.passes.validate import choose_outputs, find_cycle
from alexdsl.syntax.parser import parse_module

_INTERNAL_ATTRS = ("arg_spans", "param_config", "ok")


def _position(diagnostic: Diagnostic) -> tuple[int, int]:
    return (diagnostic.span.line, diagnostic.span.column) if diagnostic.span else (0, 0)


@contextlib.contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Pause the cyclic garbage collector: the front end allocates many small objects that all
    stay alive, and collections over them make the cost grow faster than the layer count."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_network(text: str, file: str = "<string>", input_shapes: dict[str, tuple[int, ...]] | None = None
                  ) -> Network:
    """Parse, elaborate and check ``text``; raise :class:`AlexDSLError` listing every error."""
    with _no_gc_pauses():
        return _build(text, file, input_shapes)


def _build(text: str, file: str, input_shapes: dict[str, tuple[int, ...]] | None) -> Network:
    module = parse_module(text, file)
    sink = DiagnosticSink()
    graph, meta = elaborate(module, sink, input_shapes)
    outputs: list[str] = []
    if not find_cycle(graph, sink):
        order = Network(meta.name, graph).layer_names()
        infer_shapes(graph, order, sink)
        if not sink.has_errors:
            outputs = choose_outputs(graph, order, meta.outputs, sink)
    if not meta.inputs:
        sink.error("the network declares no input", None, hint="add a line such as 'input data: 3x227x227'")
    diagnostics = sorted(sink.diagnostics, key=_position)
    if sink.has_errors:
        raise AlexDSLError(diagnostics, sources={file: text})
    for _, data in graph.nodes(data=True):
        for key in _INTERNAL_ATTRS:
            data.pop(key, None)
    return Network(
        meta.name,
        graph,
        description=meta.description,
        inputs=meta.inputs,
        outputs=outputs,
        solver=meta.solver,
        preprocess=meta.preprocess,
        source_file=file,
        warnings=diagnostics,
    )
