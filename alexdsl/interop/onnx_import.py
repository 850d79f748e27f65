"""ONNX model -> alexdsl network and weights: ``alexdsl import onnx``.

The model is read and simplified by :func:`alexdsl.interop.onnx_graph.read_onnx` (shapes fixed,
constant subgraphs folded). Each node is then mapped onto an op by the ``from_onnx``
converters the ops declare (:class:`alexdsl.ops.lowering.Lowerings`), walking from the outputs
back, so that a pattern is matched from its last node and the longest match wins (``Flatten ->
Gemm`` is one ``fc``). Layers are named from what the model carries: the initializer
``features.0.weight`` names the layer ``features.0`` (so a torchvision model keeps its
``state_dict`` keys); otherwise torch's node name ``/layer1/layer1.0/relu/Relu`` gives
``layer1.0.relu``. The flat program is built as a syntax tree, elaborated and checked by the
front end like any source (once; no text is parsed), and the network is printed readably
(:mod:`alexdsl.interop.writer.readable`: chains and blocks).

>>> import alexdsl, tempfile, os
>>> from alexdsl.interop.onnx import export_onnx
>>> net = alexdsl.parse("network T\\ninput x: 3x8x8\\nconv1: conv(4, 3) | relu | fc(2)\\n")
>>> path = os.path.join(tempfile.mkdtemp(), "t.onnx")
>>> _ = open(path, "wb").write(export_onnx(net).SerializeToString())
>>> again, weights = import_onnx(path)
>>> again.shapes == net.shapes, sorted(weights) == sorted(net.state_keys())
(True, True)
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.frontend import network_from_module
from alexdsl.interop.onnx_graph import OnnxGraph, OnnxNode, read_onnx
from alexdsl.interop.torch_scope import node_scope
from alexdsl.interop.writer.readable import readable_source
from alexdsl.ir.network import Network
from alexdsl.ops.lowering import OnnxImport
from alexdsl.ops.registry import OpDef, lookup, onnx_importers
from alexdsl.ops.split import SPLITTERS
from alexdsl.syntax.build import ModuleBuilder, as_name, call, is_name, op_args

MAX_LISTED = 20  # unsupported op types listed in one error


@dataclass
class _Layer:
    """One layer of the imported network, before it is named and written."""

    anchor: OnnxNode
    op: str
    inputs: list[str]  # ONNX values
    attrs: dict[str, Any]
    params: dict[str, Any]
    output: str
    name: str = ""
    renamable: bool = False  # named after torch's scope or its op, not by the model: a chain may name it
    scoped: str | None = None  # its name under the anchor's torch module (OnnxImport.name)


class OnnxMatchContext:
    """What a ``from_onnx`` converter sees (:class:`~alexdsl.ops.contexts.OnnxImportContext`)."""

    opset: int
    outputs: list[str]

    def __init__(self, graph: OnnxGraph):
        self.graph = graph
        self.opset = graph.opset
        self.outputs = graph.outputs
        self.claimed: set[OnnxNode] = set()
        self.anchor: OnnxNode | None = None
        self.failures: list[tuple[OnnxNode, str]] = []

    def const(self, value: str) -> np.ndarray | None:
        return self.graph.constants.get(value) if value else None

    def shape(self, value: str) -> tuple[int, ...] | None:
        return self.graph.shapes.get(value)

    def producer(self, value: str) -> OnnxNode | None:
        return self.graph.producer.get(value)

    def readers(self, value: str) -> list[OnnxNode]:
        """The nodes that read ``value``."""
        return list(self.graph.consumers.get(value, []))

    def absorb(self, value: str, *readers: OnnxNode | None) -> OnnxNode | None:
        """The node computing ``value`` when only ``readers`` (default: the anchor) read its outputs: several
        when nodes of one pattern share it, as a layer norm's centred input feeds its variance and its division.
        None when another node or the graph's outputs read it, or another layer took it."""
        allowed = [r for r in readers if r is not None] or [self.anchor]
        node = self.graph.producer.get(value)
        if node is None or node in self.claimed:
            return None
        for out in node.outputs:
            if out in self.graph.outputs or any(all(c is not r for r in allowed)
                                                 for c in self.graph.consumers.get(out, [])):
                return None
        return node

    def constants_ending(self, suffix: str) -> list[str]:
        return [name for name in self.graph.constants if name.endswith(suffix)]

    def fail(self, node: OnnxNode, message: str) -> None:
        self.failures.append((node, message))
        return None


def _match(graph: OnnxGraph) -> tuple[list[_Layer], dict[str, str]]:
    """Every node mapped onto a layer, or one error naming every node that could not be."""
    importers = onnx_importers()
    ctx = OnnxMatchContext(graph)
    found: list[tuple[OnnxNode, list[OnnxImport]]] = []
    unsupported: dict[str, list[OnnxNode]] = {}
    failed: list[tuple[OnnxNode, str]] = []
    for node in reversed(graph.nodes):
        if node in ctx.claimed:
            continue
        converters = importers.get(node.op_type)
        if not converters:
            unsupported.setdefault(node.op_type, []).append(node)
            continue
        best: list[OnnxImport] | None = None
        ctx.failures = []
        for convert in converters:
            ctx.anchor = node
            try:
                result = convert(node, ctx)
            except (TypeError, ValueError, IndexError, KeyError, ArithmeticError) as error:  # a hostile value
                result = ctx.fail(node, f"its attributes or inputs cannot be read ({type(error).__name__}: "
                                        f"{str(error)[:160]})")
            if result is None:
                continue
            results = result if isinstance(result, list) else [result]
            if best is None or _absorbed(results) > _absorbed(best):
                best = results
        if best is None:
            failed += ctx.failures or [(node, f"no op takes this {node.op_type} node as it is")]
            continue
        ctx.claimed.add(node)
        for result in best:
            ctx.claimed.update(result.absorbed)
        found.append((node, best))
    if unsupported or failed:
        raise _unsupported(graph.file, unsupported, failed, graph.opset)
    layers: list[_Layer] = []
    alias: dict[str, str] = {}
    for node, results in sorted(found, key=lambda item: item[0].index):
        for result in results:
            output = result.output or node.outputs[0]
            if result.op is None:
                alias[output] = result.inputs[0]
                continue
            layers.append(_Layer(node, result.op, list(result.inputs), dict(result.attrs), dict(result.params),
                                 output, scoped=result.name))
    return layers, alias


def _absorbed(results: list[OnnxImport]) -> int:
    return sum(len(r.absorbed) for r in results)


def _unsupported(file: str, unsupported: dict[str, list[OnnxNode]], failed: list[tuple[OnnxNode, str]],
                 opset: int) -> AlexDSLError:
    diagnostics = []
    newer = (f"; the model is opset {opset}: exporters spell out ops such as LayerNormalization (17) and Gelu (20) "
             "in older opsets, so exporting at 17 or later may help") if opset < 17 else ""
    if unsupported:
        counts = sorted(unsupported.items(), key=lambda item: (-len(item[1]), item[0]))
        listed = "; ".join(f"{op_type} x{len(nodes)} (first: '{nodes[-1].name}')"
                           for op_type, nodes in counts[:MAX_LISTED])
        more = f"; and {len(counts) - MAX_LISTED} more op types" if len(counts) > MAX_LISTED else ""
        diagnostics.append(Diagnostic(
            "error", f"the model uses {len(counts)} ONNX op type{'s' if len(counts) != 1 else ''} "
                     f"alexdsl has no op for: {listed}{more}", path=file,
            hint="see docs/interop.md for the ONNX ops alexdsl imports; a plugin op can add one "
                 f"(docs/extending.md){newer}"))
    if diagnostics:  # nodes of supported types that did not fit follow from it; the one error says what to do
        return AlexDSLError(diagnostics)
    for node, message in sorted(failed, key=lambda item: item[0].index)[:MAX_LISTED]:
        diagnostics.append(Diagnostic("error", f"node '{node.name}' ({node.op_type}): {message}", path=file))
    if len(failed) > MAX_LISTED:
        diagnostics.append(Diagnostic("error", f"... and {len(failed) - MAX_LISTED} more nodes", path=file))
    return AlexDSLError(diagnostics)


# names -------------------------------------------------------------------------------------------
def clean_name(text: str) -> str:
    """``text`` as an alexdsl name: dotted parts kept, other characters replaced by ``_``.

    >>> clean_name("features.0"), clean_name("0.weight"), clean_name("/layer1/relu/Relu"), clean_name("b.block1-0")
    ('features.0', '_0.weight', 'layer1.relu.Relu', 'b.block1-0')
    """
    dotted = text.replace("/", ".")
    kept = ".".join(p for p in re.sub(r"[^A-Za-z0-9_.\-]+", "_", dotted).split(".") if p)
    if is_name(kept) and kept != "in":  # '-' inside a later part is allowed: torchvision's RegNet 'block1-0'
        return kept
    return as_name(kept)


def _param_prefix(layer: _Layer, initializers: set[str]) -> str | None:
    """The layer's name in its weights' names: ``features.0`` of torch's ``features.0.weight``, ``conv1``
    of Caffe2's ``conv1_w_0`` (the ONNX model zoo's older files)."""
    op = lookup(layer.op)
    for pname, source in layer.params.items():
        if isinstance(source, str) and source in initializers and not source.startswith("onnx::") \
                and "/" not in source:  # torch's exporter names what it computes '/scope/Op_output_0'
            if op is not None and op.own_key == pname:  # kept under the layer's name: param's
                return source
            if source.endswith("." + pname):
                return source[: -len(pname) - 1]
            if "." in source:
                return source.rsplit(".", 1)[0]
            caffe2 = re.fullmatch(r"(.+)_(w|b|s|rm|riv)_\d+", source)
            if caffe2:
                return caffe2.group(1)
    return None


def _name_layers(layers: list[_Layer], initializers: set[str]) -> None:
    """Names from initializers first, then from node names, then from the op; all distinct."""
    taken: set[str] = set()
    parents: set[str] = set()  # every name some taken name is below ('layer1', 'layer1.0' for 'layer1.0.conv1')

    def unique(name: str) -> str:
        base, i = name, 2
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        parts = name.split(".")
        parents.update(".".join(parts[:k]) for k in range(1, len(parts)))
        return name

    unnamed = []
    for layer in layers:
        prefix = _param_prefix(layer, initializers)
        if prefix:
            layer.name = unique(clean_name(prefix))
        else:
            unnamed.append(layer)
    made = r"node_\w+" if any(layer.anchor.scope for layer in layers) else None  # the dynamo exporter's: node_mean
    for layer in unnamed:
        path = node_scope(layer.anchor)
        if layer.scoped is not None:  # one of several layers of one anchor
            layer.name = unique(clean_name(".".join(filter(None, (path, layer.scoped)))))
            continue
        if path is not None:
            name = clean_name(path)
            if name in parents:  # a container's own op is named below it; a module called twice (one scope in
                name = f"{name}.{layer.op}"  # dynamo's namespaces) is numbered by unique(), relu_2, as TorchScript's
        elif layer.anchor.name and not re.fullmatch(rf"/?{layer.anchor.op_type}(_\d+)?", layer.anchor.name) \
                and not (made and re.fullmatch(made, layer.anchor.name)):
            name = clean_name(layer.anchor.name)  # a name of the model's own, not '/Conv_3' or 'Relu_7'
        else:
            name = ""
        layer.name = unique(name or layer.op)
        layer.renamable = path is not None or not name  # not a name of the model's own ('permute' is one)


def _chain_names(layers: list[_Layer]) -> None:
    """A stateless layer that continues a chain in its module takes the name alexdsl gives an unlabeled
    link there, after the nearest layer before it that keeps its name (``bn1_relu``, ``out_relu2``), so
    the written source needs no inline label for it: its name holds no weights, and
    ``/layer1/layer1.0/relu_1/Relu`` says less than its place in the chain."""
    by_output = {layer.output: layer for layer in layers}
    readers = Counter(value for layer in layers for value in layer.inputs)
    taken = {layer.name for layer in layers}
    head_of: dict[int, _Layer] = {}
    counts: dict[int, Counter[str]] = {}
    for layer in layers:
        op = lookup(layer.op)
        before = by_output.get(layer.inputs[0]) if len(layer.inputs) == 1 else None
        starts = before is None or readers[layer.inputs[0]] != 1 or (op is not None and op.arg("out") is not None)
        head = layer if starts else head_of[id(before)]  # type: ignore[index]
        if starts or not layer.renamable or layer.params or layer.op in SPLITTERS.values() \
                or layer.name.rpartition(".")[0] != head.name.rpartition(".")[0]:  # another module's: kept
            head_of[id(layer)] = layer  # a layer that keeps its name names those after it (ast.chain_names)
            counts[id(layer)] = Counter([layer.op])
            continue
        head_of[id(layer)] = head
        count = counts[id(head)]
        count[layer.op] += 1
        name = f"{head.name}_{layer.op}{count[layer.op] if count[layer.op] > 1 else ''}"
        if name not in taken:
            taken.discard(layer.name)
            taken.add(name)
            layer.name = name


# writing -----------------------------------------------------------------------------------------
def _call(op: OpDef, attrs: Mapping[str, Any]) -> Any:
    """The shortest call giving ``op`` the converter's attributes (pairs as the IR holds them: ``(3, 3)``)."""
    held: dict[str, Any] = {}
    for key, item in attrs.items():
        item = item.item() if isinstance(item, np.generic) else item
        if isinstance(item, (tuple, list)):
            item = tuple(v.item() if isinstance(v, np.generic) else v for v in item)
        spec = op.arg(key)
        held[key] = (item, item) if spec is not None and spec.kind == "pair" and isinstance(item, int) else item
    return call(op.name, *op_args(op, held))


def _network_name(graph: OnnxGraph) -> str:
    raw = graph.name if graph.name and graph.name not in ("main_graph", "torch_jit", "torch-jit-export") \
        else Path(graph.file).stem
    return as_name(raw, "Imported", dotted=False)


def _flat_module(graph: OnnxGraph, layers: list[_Layer], alias: dict[str, str]) -> ModuleBuilder:
    """The network as a flat syntax tree: one statement per layer, naming its inputs."""
    builder = ModuleBuilder(graph.file + ".adsl")
    builder.network(_network_name(graph))
    builder.blank()
    producer: dict[str, str] = {}
    for value in graph.inputs:
        name = clean_name(value)
        while name in producer.values():
            name += "_"
        producer[value] = name
        shape = graph.inputs[value]
        if value in graph.integer_inputs and len(shape) == 1:
            builder.tokens_input(name, shape[0])
        else:
            builder.input(name, shape)
    builder.blank()

    def resolve(value: str) -> str:
        seen = 0
        while value in alias and seen < len(alias) + 1:
            value, seen = alias[value], seen + 1
        if value not in producer:
            raise AlexDSLError([Diagnostic("error", f"value '{value}' is read before any layer computes it "
                                                    "(a constant where alexdsl needs a computed input?)",
                                           path=graph.file)])
        return producer[value]

    for layer in layers:
        op = lookup(layer.op)
        assert op is not None, layer.op
        sources = [resolve(v) for v in layer.inputs]
        builder.layer(layer.name, [_call(op, layer.attrs)], sources=sources)
        producer[layer.output] = layer.name
    outputs = [resolve(v) for v in graph.outputs]
    if outputs and set(outputs) != _sinks(layers):
        builder.output(dict.fromkeys(outputs))
    return builder


def _sinks(layers: list[_Layer]) -> set[str]:
    read = {v for layer in layers for v in layer.inputs}
    return {layer.name for layer in layers if layer.output not in read}


def _weights(graph: OnnxGraph, layers: list[_Layer], network: Network) -> dict[str, np.ndarray]:
    expected = network.state_keys()
    weights: dict[str, np.ndarray] = {}
    for layer in layers:
        op = lookup(layer.op)
        for pname, source in layer.params.items():
            array = graph.constants.get(source) if isinstance(source, str) else source
            if array is None:
                raise AlexDSLError([Diagnostic("error", f"layer '{layer.name}': its {pname} is computed in the "
                                                        "model, not a constant", path=graph.file)])
            array = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
            key = layer.name if op is not None and op.own_key == pname else f"{layer.name}.{pname}"
            weights[key] = array if array.flags.writeable else array.copy()  # not onnx's buffer
    wrong = [f"{key} {tuple(value.shape)} (expected {expected.get(key)})" for key, value in weights.items()
             if tuple(value.shape) != tuple(expected.get(key, ()))]
    missing = sorted(set(expected) - set(weights))
    if wrong or missing:
        raise AlexDSLError([Diagnostic("error", "the imported weights do not fit the imported network "
                                                "(a bug in alexdsl import onnx; please report it): "
                                                + "; ".join((wrong + [f"missing {k}" for k in missing])[:10]),
                                       path=graph.file)])
    return {key: weights[key] for key in expected}


def _check_shapes(graph: OnnxGraph, layers: list[_Layer], network: Network) -> None:
    shapes = network.shapes
    for layer in layers:
        want = graph.shapes.get(layer.output)
        got = shapes.get(layer.name)
        if want is not None and got is not None and tuple(want) != tuple(got):
            raise AlexDSLError([Diagnostic(
                "error", f"layer '{layer.name}' ({layer.op}, from node '{layer.anchor.name}') has shape "
                         f"{'x'.join(map(str, got))} but the model's {layer.anchor.op_type} gives "
                         f"{'x'.join(map(str, want))} (a bug in alexdsl import onnx; please report it)",
                path=graph.file)])


@dataclass
class ImportedModel:
    """What :func:`import_onnx_source` returns."""

    source: str
    network: Network
    weights: dict[str, np.ndarray]


def import_onnx_source(path: str | os.PathLike[str], inputs: Mapping[str, tuple[int, ...]] | None = None,
                       *, readable: bool = True) -> ImportedModel:
    """Read the model at ``path``: its alexdsl source, the network it builds, and its weights.

    The layers are built as a syntax tree and elaborated once; the source is printed once, from the
    network (chains and blocks), or from the flat tree when not ``readable``; no text is parsed."""
    graph = read_onnx(path, inputs)
    layers, alias = _match(graph)
    _name_layers(layers, set(graph.constants))  # initializers, and what Identity nodes made of them
    _chain_names(layers)
    flat = _flat_module(graph, layers, alias)
    try:
        network = network_from_module(flat.module())
    except AlexDSLError as error:  # located in the flat source, printed for the message
        raise AlexDSLError([Diagnostic("error", f"{path}: the imported network does not check:")]
                           + error.diagnostics, sources={flat.file: flat.text()}) from None
    _check_shapes(graph, layers, network)
    weights = _weights(graph, layers, network)
    if not readable:
        return ImportedModel(flat.text(), network, weights)
    header = [f"Imported from {Path(path).name} by alexdsl import onnx.", *(f"Note: {n}." for n in graph.notes)]
    return ImportedModel(readable_source(network, header="\n".join(header), file=flat.file), network, weights)


def import_onnx(path: str | os.PathLike[str], inputs: Mapping[str, tuple[int, ...]] | None = None,
                ) -> tuple[Network, dict[str, np.ndarray]]:
    """The network an ONNX model describes, and its weights keyed like the torch module's state_dict."""
    imported = import_onnx_source(path, inputs, readable=False)
    return imported.network, imported.weights
