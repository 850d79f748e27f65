"""The IR as versioned JSON: what other tools read and write.

The schema is documented in docs/ir.md. ``from_json(to_json(net))`` gives an equal graph.

>>> import alexdsl
>>> net = alexdsl.parse("network T\\ninput x: 3x8x8\\nc: conv(2, 3)\\n")
>>> again = alexdsl.Network.from_json(net.to_json())
>>> again.shapes == net.shapes and again.totals() == net.totals()
True
"""

from __future__ import annotations

import json
from typing import Any

import networkx as nx

from alexdsl.errors import AlexDSLError, Span
from alexdsl.ir.network import Network, ParamSpec
from alexdsl.ops.registry import Filler, lookup

FORMAT = "alexdsl-ir"
VERSION = 1


def _attrs_to_json(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}


def _attrs_from_json(op: str, attrs: dict[str, Any]) -> dict[str, Any]:
    opdef = lookup(op)
    pairs = {a.name for a in opdef.args if a.kind == "pair"} if opdef else set()
    return {k: tuple(v) if k in pairs and isinstance(v, list) else v for k, v in attrs.items()}


def network_to_dict(network: Network) -> dict[str, Any]:
    layers = []
    for layer in network.layers():
        layers.append({
            "name": layer.name,
            "op": layer.op,
            "attrs": _attrs_to_json(layer.attrs),
            "inputs": list(layer.inputs),
            "shape": list(layer.shape),
            "params": {
                name: {"shape": list(spec.shape), "filler": spec.filler.to_json(), "lr_mult": spec.lr_mult,
                       "decay_mult": spec.decay_mult}
                for name, spec in layer.params.items()
            },
            "buffers": {name: list(shape) for name, shape in layer.buffers.items()},
            "phase": layer.phase,
            "macs": layer.macs,
            "block": layer.block,
            "span": layer.span.to_json() if layer.span else None,
        })
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": network.name,
        "description": network.description,
        "source": network.source_file,
        "inputs": network.inputs,
        "outputs": network.outputs,
        "solver": network.solver,
        "preprocess": network.preprocess,
        "layers": layers,
        "totals": network.totals(),
    }


def network_to_json(network: Network, indent: int | None = 2) -> str:
    return json.dumps(network_to_dict(network), indent=indent) + "\n"


def network_from_dict(data: dict[str, Any]) -> Network:
    if data.get("format") != FORMAT:
        raise AlexDSLError(f"error: not an alexdsl IR file (format is {data.get('format')!r}, expected {FORMAT!r})")
    if data.get("version") != VERSION:
        raise AlexDSLError(f"error: IR version {data.get('version')} is not supported; this alexdsl reads "
                           f"version {VERSION}")
    graph = nx.DiGraph()
    try:
        for layer in data["layers"]:
            graph.add_node(
                layer["name"],
                op=layer["op"],
                attrs=_attrs_from_json(layer["op"], layer["attrs"]),
                inputs=list(layer["inputs"]),
                shape=tuple(layer["shape"]),
                params={
                    name: ParamSpec(tuple(p["shape"]), Filler.from_json(p["filler"]), p["lr_mult"], p["decay_mult"])
                    for name, p in layer["params"].items()
                },
                buffers={name: tuple(shape) for name, shape in layer["buffers"].items()},
                phase=layer["phase"],
                span=Span.from_json(layer.get("span")),
                block=layer.get("block"),
                macs=layer["macs"],
            )
        for layer in data["layers"]:
            for index, source in enumerate(layer["inputs"]):
                if source not in graph:
                    raise AlexDSLError(f"error: layer '{layer['name']}' reads '{source}', which is not in the file")
                if graph.has_edge(source, layer["name"]):
                    graph.edges[source, layer["name"]]["index"].append(index)
                else:
                    graph.add_edge(source, layer["name"], index=[index])
        return Network(
            data["name"], graph, description=data.get("description", ""), inputs=data["inputs"],
            outputs=data["outputs"], solver=data.get("solver", {}), preprocess=data.get("preprocess", {}),
            source_file=data.get("source"),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise AlexDSLError(f"error: malformed IR file: missing or wrong field {error}") from None


def network_from_json(text: str) -> Network:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise AlexDSLError(f"error: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
                           ) from None
    if not isinstance(data, dict):
        raise AlexDSLError("error: an IR file holds one JSON object")
    return network_from_dict(data)
