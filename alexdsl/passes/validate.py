"""Graph-level checks: cycles, the network's outputs, and layers whose output nobody uses."""

from __future__ import annotations

import networkx as nx

from alexdsl.errors import DiagnosticSink, Span
from alexdsl.ir.network import layer_of
from alexdsl.ops.registry import lookup


def find_cycle(graph: nx.DiGraph, sink: DiagnosticSink) -> bool:
    """Report one diagnostic per cycle found; return True when the graph has any."""
    found = False
    for component in nx.strongly_connected_components(graph):
        if len(component) == 1:
            node = next(iter(component))
            if not graph.has_edge(node, node):
                continue
        found = True
        position = {n: i for i, n in enumerate(graph.nodes)}
        ordered = sorted(component, key=position.__getitem__)
        first = ordered[0]
        sink.error(
            f"layers feed each other in a cycle: {' -> '.join(ordered + [first])}",
            layer_of(graph, first).span,
            hint="a layer's input must not depend on its own output",
        )
    return found


def choose_outputs(graph: nx.DiGraph, order: list[str], declared: list[tuple[str, Span]],
                   sink: DiagnosticSink) -> list[str]:
    """The network's outputs, and a warning for each other layer whose output is unused.

    Declared ``output`` names win. Otherwise the outputs are the layers whose scores the
    loss and metric layers read or, with neither, the last layer nobody consumes.
    """
    def role(node: str) -> str:
        op = lookup(layer_of(graph, node).op)
        return op.role if op else "input"

    if declared:
        outputs = list(dict.fromkeys(name for name, _ in declared))
    else:
        scored = [layer_of(graph, n).inputs[0] for n in order if role(n) in ("loss", "metric")]
        outputs = list(dict.fromkeys(s for s in scored if s is not None))
        if not outputs:
            sinks = [n for n in order if role(n) == "layer" and graph.out_degree(n) == 0]
            outputs = sinks[-1:]
    for node in order:
        if node in outputs or role(node) != "layer" or graph.out_degree(node) > 0:
            continue
        sink.warning(f"the output of layer '{node}' is never used", layer_of(graph, node).span,
                     hint="feed it to another layer, list it in an 'output' statement, or remove it")
    return outputs
