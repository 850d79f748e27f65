"""The typed IR: one Layer per node, ``inputs`` the one record of connectivity, nodes in topological order,
and the IR's modules importing no pass and no front end (so frontend -> ir/network -> ir/serialize is one way)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest
from conftest import EXAMPLES, ROOT

import alexdsl
from alexdsl.ir.network import LAYER, Layer, add_layers, graph_of, layer_of

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.adsl"))


def derived_edges(graph: nx.DiGraph) -> set[tuple[str, str]]:
    return {(source, name) for name, layer in graph.nodes(data=LAYER) for source in layer.inputs}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: path.stem)
def test_every_node_is_one_layer_whose_inputs_are_the_edges(path: Path) -> None:
    net = alexdsl.load(path)
    for name, data in net.graph.nodes(data=True):
        assert list(data) == [LAYER] and isinstance(data[LAYER], Layer) and data[LAYER].name == name
    assert set(net.graph.edges) == derived_edges(net.graph)
    assert all(data == {} for _, _, data in net.graph.edges(data=True))  # no second record of connectivity
    position = {name: i for i, name in enumerate(net.layer_names())}
    assert all(position[source] < position[reader] for source, reader in net.graph.edges)  # layers() runs in order
    assert all(net.layer(layer.name) is layer for layer in net.layers())  # no view built per access
    again = alexdsl.from_json(net.to_json())
    assert set(again.graph.edges) == derived_edges(again.graph) == set(net.graph.edges)
    assert list(again.graph) == list(net.graph)  # the order layers are written, which orders the state keys


def test_a_layer_read_before_it_is_written_runs_first_and_keeps_its_place_in_the_graph() -> None:
    net = alexdsl.parse("input x: 3x8x8\nb: a -> conv(4, 1)\na: x -> conv(4, 3)\nc: add(a, b)\n")
    assert list(net.graph) == ["x", "b", "a", "c"]  # as written: the state keys' order, as torch's __init__
    assert net.layer_names() == ["x", "a", "b", "c"]  # as they run
    assert list(net.state_keys()) == ["b.weight", "b.bias", "a.weight", "a.bias"]
    assert set(net.graph.edges) == {("x", "a"), ("a", "b"), ("a", "c"), ("b", "c")}


def test_the_front_end_state_is_gone_once_checked() -> None:
    net = alexdsl.parse("input x: 3x8x8\nc: conv(4, 3, stride=2)\n")
    conv = net.layer("c")
    assert conv.arg_spans == {} and conv.param_config == {} and conv.shape == (4, 3, 3)
    assert "arg_spans" not in repr(conv) and conv.params["weight"].shape == (4, 3, 3, 3)


def test_rewiring_an_input_keeps_the_edges_in_step() -> None:
    x = Layer("x", "input", {"kind": "tensor"}, [], (3, 4, 4))
    y = Layer("y", "relu", {}, ["x"], (3, 4, 4))
    both = Layer("both", "add", {}, ["x", "x"], (3, 4, 4))  # add(x, x): one edge for two inputs
    graph = graph_of([x, y, both])
    assert set(graph.edges) == {("x", "y"), ("x", "both")}
    both.rewire(graph, 0, "y")
    assert set(graph.edges) == derived_edges(graph) == {("x", "y"), ("x", "both"), ("y", "both")}
    both.rewire(graph, 1, "y")
    assert set(graph.edges) == derived_edges(graph) == {("x", "y"), ("y", "both")}
    both.rewire(graph, 1, None)  # unresolved: no edge
    assert set(graph.edges) == {("x", "y"), ("y", "both")} and both.inputs == ["y", None]


def test_layers_added_together_may_read_each_other_in_any_order() -> None:
    graph = nx.DiGraph()
    add_layers(graph, [Layer("b", "relu", {}, ["a"]), Layer("a", "input", {"kind": "tensor"}, [], (1,)),
                       Layer("c", "relu", {}, ["nowhere"])])
    assert set(graph.edges) == {("a", "b")} and layer_of(graph, "b").inputs == ["a"]


def test_a_network_built_in_python_answers_from_its_layers() -> None:
    net = alexdsl.Network("T", graph_of([Layer("x", "input", {"kind": "tensor"}, [], (3, 4, 4)),
                                         Layer("r", "relu", {}, ["x"], (3, 4, 4))]), inputs=["x"], outputs=["r"])
    assert net.shapes == {"x": (3, 4, 4), "r": (3, 4, 4)} and net.consumers("x") == ["r"]
    assert net.totals() == {"params": 0, "macs": 0, "activation_bytes": 2 * 4 * 48}


def _imports_anywhere(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every absolute import in ``path``, at module level or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def test_the_ir_imports_no_pass_and_no_front_end_even_inside_functions() -> None:
    """The layers point one way: frontend -> passes -> ir; ir/serialize -> ir/network, never back."""
    upward = [f"{path.relative_to(ROOT)}:{line} imports {module}"
              for path in sorted((ROOT / "alexdsl" / "ir").glob("*.py"))
              for module, line in _imports_anywhere(path)
              if module.startswith(("alexdsl.frontend", "alexdsl.passes", "alexdsl.backends", "alexdsl.interop"))
              or (path.stem == "network" and module.startswith("alexdsl.ir."))]
    assert upward == []
    passes = [f"{path.relative_to(ROOT)}:{line}" for path in sorted((ROOT / "alexdsl" / "passes").glob("*.py"))
              for module, line in _imports_anywhere(path) if module.startswith("alexdsl.frontend")]
    assert passes == []
