"""The IR: a networkx DiGraph with one typed node, a :class:`Layer`, per layer, wrapped by :class:`Network`.

Each node holds its :class:`Layer` under the node attribute ``"layer"`` (:data:`LAYER`), and nothing
else. A layer's ``inputs`` is the one record of connectivity: the edges (producer -> consumer,
without data) are derived from it by :func:`add_layers`, the one function that adds nodes, and
:meth:`Layer.rewire` keeps them in step when an input changes. A checked network's nodes are in
declaration order, which is topological unless a layer reads one written after it; :meth:`Network.layers`
gives the topological order. The fields are documented in docs/ir.md.

>>> import alexdsl
>>> net = alexdsl.parse("network Tiny\\ninput x: 3x8x8\\nc1: conv(4, 3) | relu\\n")
>>> [(layer.name, layer.shape) for layer in net.layers()]
[('x', (3, 8, 8)), ('c1', (4, 6, 6)), ('c1_relu', (4, 6, 6))]
>>> net.graph.nodes["c1"]["layer"] is net.layer("c1")
True
>>> net.totals()["params"]
112
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from alexdsl.errors import AlexDSLError, Span, did_you_mean
from alexdsl.ops.registry import Filler, Shape, numel

BYTES_PER_ELEMENT = 4  # float32 activations
LABEL_BYTES = 8  # one int64 class index per sample
LAYER = "layer"  # the node attribute that holds a node's Layer
FORMAT = "alexdsl-ir"  # the JSON form (docs/ir.md)
VERSION = 1
_OWN = ""  # state_keys: a layer's own entries in its name tree (no name segment is empty)


@dataclass(frozen=True)
class ParamSpec:
    """One learnable parameter: its shape, filler, and Caffe's lr_mult / decay_mult."""

    shape: Shape
    filler: Filler
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    tied: str | None = None  # the state key of the parameter this one is (GPT-2's lm_head.weight: the wte's)

    @property
    def count(self) -> int:
        return numel(self.shape)

    def to_json(self) -> dict[str, Any]:
        data = {"shape": list(self.shape), "filler": self.filler.to_json(), "lr_mult": self.lr_mult,
                "decay_mult": self.decay_mult}
        return {**data, "tied": self.tied} if self.tied else data


@dataclass(slots=True)
class Layer:
    """One node of :attr:`Network.graph`: a layer, or a declared input (op ``"input"``).

    Read its fields; the front end's passes change them only through the methods below.
    """

    name: str
    op: str  # registry op name, or "input"
    attrs: dict[str, Any]  # the op's arguments, every one filled in; pairs as (h, w) tuples
    inputs: list[str]  # producer names in argument order: the one record of connectivity
    shape: Shape | None = None  # output shape without the batch; None until the shape pass computes it
    params: dict[str, ParamSpec] = field(default_factory=dict)
    buffers: dict[str, Shape] = field(default_factory=dict)  # non-learned state: name -> shape
    phase: str = "all"  # "all", "train" or "test"
    span: Span | None = None  # where the layer is written
    block: str | None = None  # the block instance the layer came from ("inc3a", "layer2.0")
    macs: int = 0  # multiply-accumulates of one sample (conv and fc weights only)
    # What the front end knows while it checks the layer, cleared by clear_build_state():
    arg_spans: dict[str, Span] = field(default_factory=dict, repr=False, compare=False)  # argument -> its span
    param_config: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)  # filler, lr
    ok: bool = field(default=True, repr=False, compare=False)  # False: elaboration failed, the pass skips it

    @property
    def param_count(self) -> int:
        return sum(p.count for p in self.params.values() if not p.tied)  # a tied parameter counts once, at its owner

    def state_key(self, pname: str) -> str:
        """The state_dict key of parameter or buffer ``pname``: ``<layer>.<pname>``, or the layer's own name for
        the tensor an op keeps under it (``param``'s: ``class_token``, ``encoder.pos_embedding``)."""
        from alexdsl.ops.registry import lookup

        spec = self.params.get(pname)
        if spec is not None and spec.tied:  # stored once, under the key of the layer it is tied to
            return spec.tied
        op = lookup(self.op) if not self.is_input else None
        return self.name if op is not None and op.own_key == pname else f"{self.name}.{pname}"

    @property
    def is_input(self) -> bool:
        return self.op == "input"

    @property
    def is_label(self) -> bool:
        return self.op == "input" and self.attrs.get("kind") == "label"

    @property
    def is_tokens(self) -> bool:
        """An input of token ids (``tokens(N)``): integers, int64 in torch and ONNX."""
        return self.op == "input" and self.attrs.get("kind") == "tokens"

    def activation_bytes(self, batch: int = 1) -> int:
        """Bytes of this layer's output for a batch (float32; labels as int64)."""
        if self.is_label:
            return LABEL_BYTES * batch
        return BYTES_PER_ELEMENT * numel(self.shape or ()) * batch

    # what the passes change --------------------------------------------------------------------
    def computed(self, shape: Shape, params: dict[str, ParamSpec], buffers: dict[str, Shape], macs: int) -> None:
        """Record what the shape pass computed for this layer."""
        self.shape, self.params, self.buffers, self.macs = shape, params, buffers, macs

    def unshaped(self) -> None:
        """Record that the shape pass could not compute this layer (it or an input failed)."""
        self.shape = None

    def fail(self) -> None:
        """Mark the layer as broken while it is built (an input is unresolved): the shape pass skips it."""
        self.ok = False

    def clear_build_state(self) -> None:
        """Drop what only the front end needs (argument spans, parameter settings), once the layer is checked."""
        self.arg_spans, self.param_config = {}, {}

    def rewire(self, graph: nx.DiGraph, index: int, source: str | None) -> None:
        """Read input ``index`` from ``source`` (None: unresolved), keeping ``graph``'s edges in step."""
        old, self.inputs[index] = self.inputs[index], source  # type: ignore[call-overload]
        if old is not None and old in graph and old not in self.inputs:
            graph.remove_edge(old, self.name)
        if source is not None and source in graph:
            graph.add_edge(source, self.name)

    def to_json(self) -> dict[str, Any]:
        """This layer's entry in the IR JSON's ``layers`` list."""
        return {
            "name": self.name,
            "op": self.op,
            "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.attrs.items()},
            "inputs": list(self.inputs),
            "shape": list(self.shape or ()),
            "params": {name: spec.to_json() for name, spec in self.params.items()},
            "buffers": {name: list(shape) for name, shape in self.buffers.items()},
            "phase": self.phase,
            "macs": self.macs,
            "block": self.block,
            "span": self.span.to_json() if self.span else None,
        }


def add_layers(graph: nx.DiGraph, layers: Iterable[Layer]) -> None:
    """Add ``layers`` as nodes of ``graph``, then an edge to each from each of its inputs in the graph.

    The one way a node enters the IR, so the edges are always those its layers' ``inputs`` name. An input
    that is None or not (yet) a layer has no edge until :meth:`Layer.rewire` points it at one.
    """
    added = list(layers)
    graph.add_nodes_from((layer.name, {LAYER: layer}) for layer in added)
    graph.add_edges_from((source, layer.name) for layer in added for source in layer.inputs
                         if source is not None and source in graph)


def graph_of(layers: Iterable[Layer]) -> nx.DiGraph:
    """A new graph of ``layers``, in their order (see :func:`add_layers`)."""
    graph = nx.DiGraph()
    add_layers(graph, layers)
    return graph


def layer_of(graph: nx.DiGraph, name: str) -> Layer:
    """The :class:`Layer` of node ``name``."""
    return graph.nodes[name][LAYER]


@dataclass(frozen=True)
class InferenceView:
    """What runs at inference (see :meth:`Network.inference_view`)."""

    layers: list[Layer]  # the layers that compute at test time, in order: no inputs, losses or metrics
    inputs: list[str]  # the data inputs (labels are not fed)
    outputs: list[str]  # what a forward pass returns
    dropped: list[str]  # layers that do not run: train-only layers, losses, metrics and labels


class Network:
    """A checked network: the graph, its inputs and outputs, and the settings declared with it.

    Build one with :func:`alexdsl.load` or :func:`alexdsl.parse`.
    """

    def __init__(
        self,
        name: str,
        graph: nx.DiGraph,
        *,
        description: str = "",
        inputs: list[str] | None = None,
        outputs: list[str] | None = None,
        solver: dict[str, Any] | None = None,
        preprocess: dict[str, dict[str, Any]] | None = None,
        source_file: str | None = None,
        warnings: list[Any] | None = None,
    ):
        self.name = name
        self.graph = graph
        self.description = description
        self.inputs = list(inputs or [])
        self.outputs = list(outputs or [])
        self.solver = dict(solver or {})
        self.preprocess = dict(preprocess or {})
        self.source_file = source_file
        self.warnings = list(warnings or [])
        self._order: list[str] | None = None
        self._layers: list[Layer] | None = None

    def __repr__(self) -> str:
        return f"<Network {self.name}: {self.graph.number_of_nodes()} layers>"

    # layers ---------------------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        """Layer names in topological order (declaration order breaks ties)."""
        if self._order is None:
            position = {name: i for i, name in enumerate(self.graph.nodes)}
            if all(position[source] < position[reader] for source, reader in self.graph.edges):
                self._order = list(self.graph)  # already in order, as a checked network's graph is
            else:
                self._order = list(nx.lexicographical_topological_sort(self.graph, key=position.__getitem__))
        return self._order

    def declared_layers(self) -> list[Layer]:
        """Layers in declaration order (the graph's own order): the order of :meth:`state_keys`, as torch's
        state_dict follows the order in which modules are registered, not the order forward runs them."""
        return [layer for _, layer in self.graph.nodes(data=LAYER)]

    def layer(self, name: str) -> Layer:
        """The layer called ``name`` (the graph's own node, not a copy)."""
        if name not in self.graph:
            hint = did_you_mean(name, self.graph.nodes)
            raise AlexDSLError(f"no layer named '{name}' in {self.name}" + (f"; {hint}" if hint else ""))
        return self.graph.nodes[name][LAYER]

    def layers(self, phase: str | None = None) -> list[Layer]:
        """Layers in topological order; ``phase="train"`` or ``"test"`` keeps those run then."""
        if self._layers is None:
            nodes = self.graph.nodes
            self._layers = [nodes[name][LAYER] for name in self.layer_names()]
        if phase is None:
            return list(self._layers)
        return [layer for layer in self._layers if layer.phase in ("all", phase)]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers())

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    @property
    def shapes(self) -> dict[str, Shape]:
        return {layer.name: layer.shape for layer in self.layers()}

    @property
    def label_inputs(self) -> list[str]:
        return [n for n in self.inputs if self.layer(n).is_label]

    @property
    def data_inputs(self) -> list[str]:
        """The non-label inputs, in declaration order: what a forward pass takes."""
        return [n for n in self.inputs if not self.layer(n).is_label]

    def inference_view(self) -> InferenceView:
        """The layers that run at test time and what a forward pass returns.

        Outputs are the declared outputs, with a loss or metric standing for the scores it
        reads; without any, the scores the losses read; else the layers nobody reads.
        Every backend and exporter runs this view.

        >>> import alexdsl
        >>> view = alexdsl.load("examples/alexnet.adsl").inference_view()
        >>> view.inputs, view.outputs, view.dropped
        (['data'], ['fc8'], ['label', 'loss', 'accuracy'])
        """
        from alexdsl.ops.registry import lookup

        def role(layer: Layer) -> str:
            op = lookup(layer.op)
            return op.role if op is not None else "input"

        everything = self.layers()
        dropped = [layer.name for layer in everything
                   if layer.phase == "train" or layer.is_label or role(layer) in ("loss", "metric")]
        kept = [layer for layer in everything if layer.name not in dropped and not layer.is_input]
        kept_names = {layer.name for layer in kept}
        scores = {layer.name: layer.inputs[0] for layer in everything if role(layer) in ("loss", "metric")}
        outputs = [o for o in dict.fromkeys(scores.get(o, o) for o in self.outputs) if o in kept_names]
        if not outputs:
            outputs = [s for s in dict.fromkeys(scores.values()) if s in kept_names]
        if not outputs:
            read = {i for layer in kept for i in layer.inputs}
            outputs = [layer.name for layer in kept if layer.name not in read]
        inputs = [n for n in self.data_inputs if n not in dropped]
        return InferenceView(kept, inputs, outputs, dropped)

    def consumers(self, name: str) -> list[str]:
        return list(self.graph.successors(name))

    def totals(self, batch: int = 1) -> dict[str, int]:
        """Parameter count, MACs and activation bytes (MACs and bytes for ``batch`` samples)."""
        layers = self.layers()
        return {
            "params": sum(layer.param_count for layer in layers),
            "macs": sum(layer.macs for layer in layers) * batch,
            "activation_bytes": sum(layer.activation_bytes(batch) for layer in layers),
        }

    def state_keys(self) -> dict[str, Shape]:
        """Every parameter and buffer as ``<layer>.<name>`` -> shape, in the torch module's order: layers in
        declaration order (:meth:`declared_layers`), except that a layer's own entries come before those of the
        layers named below it (ConvNeXt's ``features.1.0.layer_scale`` before ``features.1.0.block.0.weight``), and a
        tensor kept under a layer's own name (``encoder.pos_embedding``) comes with its parent's entries, as in
        state_dict().

        These keys are the torch state_dict keys and the executor's weight keys.
        """
        tree: dict[str, Any] = {}  # a name segment -> its subtree; _OWN -> the entries of the layer named so
        for layer in self.declared_layers():
            entries = [(layer.state_key(pname), spec.shape) for pname, spec in layer.params.items()
                       if not spec.tied]
            entries += [(layer.state_key(bname), shape) for bname, shape in layer.buffers.items()]
            if entries:
                node = tree
                segments = layer.name.split(".")
                if len(entries) == 1 and entries[0][0] == layer.name:  # a bare tensor is its parent's own entry
                    segments = segments[:-1]
                for segment in segments:
                    node = node.setdefault(segment, {})
                node.setdefault(_OWN, []).extend(entries)
        keys: dict[str, Shape] = {}

        def visit(node: dict[str, Any]) -> None:
            keys.update(node.get(_OWN, ()))
            for segment, child in node.items():
                if segment != _OWN:
                    visit(child)

        visit(tree)
        return keys

    # interchange ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The IR JSON object (docs/ir.md); read one back with :func:`alexdsl.from_json`."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "description": self.description,
            "source": self.source_file,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "solver": self.solver,
            "preprocess": self.preprocess,
            "layers": [layer.to_json() for layer in self.declared_layers()],
            "totals": self.totals(),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (no NaN or Infinity, which strict readers reject)."""
        try:
            return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"
        except ValueError:
            raise AlexDSLError(f"error: network {self.name} holds a number that is not finite; "
                               "JSON cannot represent it") from None
