"""The IR: a networkx DiGraph with one node per layer, wrapped by :class:`Network`.

Node attributes (documented in docs/ir.md):

=========  ==================================================================
op         registry op name, or ``"input"`` for a declared input
attrs      the op's arguments, normalised (pairs as (h, w) tuples)
inputs     ordered list of producer layer names
shape      output shape without the batch dimension (a tuple; () for a scalar)
params     learnable parameters: name -> :class:`ParamSpec`
buffers    non-learned state (batchnorm running stats): name -> shape
phase      "all", "train" or "test"
span       :class:`~alexdsl.errors.Span` of the source text, or None
block      the block instance the layer came from (``"inc3a"``, ``"layer2.0"``), or None
macs       multiply-accumulates of one sample (conv and fc weights only)
=========  ==================================================================

Edges run producer -> consumer, with ``index``: the input positions they feed.

>>> import alexdsl
>>> net = alexdsl.parse("network Tiny\\ninput x: 3x8x8\\nc1: conv(4, 3) | relu\\n")
>>> [(layer.name, layer.shape) for layer in net.layers()]
[('x', (3, 8, 8)), ('c1', (4, 6, 6)), ('c1_relu', (4, 6, 6))]
>>> net.totals()["params"]
112
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from alexdsl.errors import AlexDSLError, Span, did_you_mean
from alexdsl.ops.registry import Filler, Shape, numel

BYTES_PER_ELEMENT = 4  # float32 activations
LABEL_BYTES = 8  # one int64 class index per sample
_OWN = ""  # state_keys: a layer's own entries in its name tree (no name segment is empty)


@dataclass(frozen=True)
class ParamSpec:
    """One learnable parameter: its shape, filler, and Caffe's lr_mult / decay_mult."""

    shape: Shape
    filler: Filler
    lr_mult: float = 1.0
    decay_mult: float = 1.0

    @property
    def count(self) -> int:
        return numel(self.shape)


@dataclass(frozen=True)
class Layer:
    """A read-only view of one node of :attr:`Network.graph`."""

    name: str
    op: str
    attrs: dict[str, Any]
    inputs: list[str]
    shape: Shape
    params: dict[str, ParamSpec] = field(default_factory=dict)
    buffers: dict[str, Shape] = field(default_factory=dict)
    phase: str = "all"
    span: Span | None = None
    block: str | None = None
    macs: int = 0

    @property
    def param_count(self) -> int:
        return sum(p.count for p in self.params.values())

    @property
    def is_input(self) -> bool:
        return self.op == "input"

    @property
    def is_label(self) -> bool:
        return self.op == "input" and self.attrs.get("kind") == "label"

    def activation_bytes(self, batch: int = 1) -> int:
        """Bytes of this layer's output for a batch (float32; labels as int64)."""
        if self.is_label:
            return LABEL_BYTES * batch
        return BYTES_PER_ELEMENT * numel(self.shape) * batch


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

    def __repr__(self) -> str:
        return f"<Network {self.name}: {self.graph.number_of_nodes()} layers>"

    # layers ---------------------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        """Layer names in topological order (declaration order breaks ties)."""
        if self._order is None:
            position = {name: i for i, name in enumerate(self.graph.nodes)}
            self._order = list(nx.lexicographical_topological_sort(self.graph, key=position.__getitem__))
        return self._order

    def layer(self, name: str) -> Layer:
        if name not in self.graph:
            hint = did_you_mean(name, self.graph.nodes)
            raise AlexDSLError(f"no layer named '{name}' in {self.name}" + (f"; {hint}" if hint else ""))
        data = self.graph.nodes[name]
        return Layer(
            name=name,
            op=data["op"],
            attrs=data["attrs"],
            inputs=data["inputs"],
            shape=data["shape"],
            params=data.get("params", {}),
            buffers=data.get("buffers", {}),
            phase=data.get("phase", "all"),
            span=data.get("span"),
            block=data.get("block"),
            macs=data.get("macs", 0),
        )

    def layers(self, phase: str | None = None) -> list[Layer]:
        """Layers in topological order; ``phase="train"`` or ``"test"`` keeps those run then."""
        return [
            layer
            for layer in map(self.layer, self.layer_names())
            if phase is None or layer.phase in ("all", phase)
        ]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers())

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    @property
    def shapes(self) -> dict[str, Shape]:
        return {name: self.graph.nodes[name]["shape"] for name in self.layer_names()}

    @property
    def label_inputs(self) -> list[str]:
        return [n for n in self.inputs if self.graph.nodes[n]["attrs"].get("kind") == "label"]

    @property
    def data_inputs(self) -> list[str]:
        """The non-label inputs, in declaration order: what a forward pass takes."""
        return [n for n in self.inputs if self.graph.nodes[n]["attrs"].get("kind") != "label"]

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
        layer order, except that a layer's own entries come before those of the layers named below it
        (ConvNeXt's ``features.1.0.layer_scale`` before ``features.1.0.block.0.weight``), as in state_dict().

        These keys are the torch state_dict keys and the executor's weight keys.
        """
        tree: dict[str, Any] = {}  # a name segment -> its subtree; _OWN -> the entries of the layer named so
        for layer in self.layers():
            entries = [(f"{layer.name}.{pname}", spec.shape) for pname, spec in layer.params.items()]
            entries += [(f"{layer.name}.{bname}", shape) for bname, shape in layer.buffers.items()]
            if entries:
                node = tree
                for segment in layer.name.split("."):
                    node = node.setdefault(segment, {})
                node[_OWN] = entries
        keys: dict[str, Shape] = {}

        def visit(node: dict[str, Any]) -> None:
            keys.update(node.get(_OWN, ()))
            for segment, child in node.items():
                if segment != _OWN:
                    visit(child)

        visit(tree)
        return keys

    # interchange ------------------------------------------------------------------------------
    def to_json(self, **kwargs: Any) -> str:
        from alexdsl.ir.serialize import network_to_json

        return network_to_json(self, **kwargs)

    @classmethod
    def from_json(cls, text: str, file: str = "<json>") -> Network:
        """Read IR JSON, checking every field (see :mod:`alexdsl.ir.serialize`); ``file`` names it in errors."""
        from alexdsl.frontend import network_from_json

        return network_from_json(text, file)
