"""Channels-last regions of an ONNX graph rewritten channels-first, before ops are matched.

PyTorch models written channels-last inside a block (torchvision's ConvNeXt ``CNBlock``:
``permute(0, 2, 3, 1) -> LayerNorm -> Linear -> GELU -> Linear -> permute(0, 3, 1, 2)``) export
a region between ``Transpose(0,2,3,1)`` and ``Transpose(0,3,1,2)`` whose values are NHWC. alexdsl
layers are CxHxW, so each such region is rewritten into the forms alexdsl's own export writes,
which the ops' ``from_onnx`` converters already read:

* elementwise nodes (one region input, or two, or a scalar constant) stay as they are;
* a constant per channel (shape ``(C,)``) becomes ``(C, 1, 1)``;
* ``MatMul(x, W)`` (+ a bias ``Add``) becomes the 1x1 ``Conv`` of a ``pointwise_fc``
  (``<name>.kernel``, the ``(out, C)`` matrix ``<name>.weight`` = torch's Linear weight);
* ``LayerNormalization`` over the last axis stays between its own two Transposes (a layernorm);
  torch's spelled-out layer norm below opset 17 averages over the channels (``ReduceMean`` axis 1);
* ``Split`` and ``Concat`` of the last axis become those of the channels (timm's MambaOut splits its
  ``fc1`` output into gate, identity and convolved channels);
* a ``Transpose(0,3,1,2)`` leaves the region and a ``Transpose(0,2,3,1)`` whose result a region node reads
  enters it again (a convolution in the middle of a channels-last block, MambaOut's); a mean over height
  and width that drops them (``x.mean((1, 2))``, MambaOut's head) leaves it as a vector.

A region holding anything else (another reduction, a value read outside it) is left as it was,
and matching then says which node alexdsl cannot take. Inputs given channels-last (Keras and
TensorFlow exports) are read as CxHxW (:func:`channels_first_inputs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alexdsl.interop.torch_scope import node_scope
from alexdsl.ops import registry
from alexdsl.ops.from_onnx import axes_of

TO_LAST = [0, 2, 3, 1]
TO_FIRST = [0, 3, 1, 2]
_ELEMENTWISE = registry.ONNX_ELEMENTWISE  # each op declares its elementwise ONNX op types


def _node(template: Any, op_type: str, inputs: list[str], outputs: list[str], name: str, **attrs: Any) -> Any:
    return type(template)(op_type, name, inputs, outputs, attrs, template.index)


class _Region:
    def __init__(self, start: Any, consumers: dict[str, list[Any]], producers: dict[str, Any],
                 constants: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], outputs: set[str]):
        self.start, self.consumers, self.constants, self.shapes = start, consumers, constants, shapes
        self.producers = producers
        self.graph_outputs = outputs
        self.starts: list[Any] = [start]  # the Transposes(0,2,3,1) entering the region
        self.nodes: list[Any] = []
        self.ends: list[Any] = []
        self.values: set[str] = {start.outputs[0]}

    def grow(self) -> bool:
        """Collect the region's nodes; False when something in it has no channels-first form."""
        pending = [self.start.outputs[0]]
        seen: set[int] = set()
        while pending:
            value = pending.pop()
            if value in self.graph_outputs:
                return False
            for node in self.consumers.get(value, []):
                if id(node) in seen:
                    continue
                seen.add(id(node))
                if _is_transpose(node, TO_FIRST) or self._is_pooled_end(node):
                    self.ends.append(node)
                    continue
                if not self._allowed(node):
                    return False
                self.nodes.append(node)
                self.values.update(node.outputs)
                pending.extend(node.outputs)
                for source in node.inputs:  # a value brought back channels-last from outside joins the region
                    entry = self.producers.get(source)
                    if entry is not None and _is_transpose(entry, TO_LAST) and source not in self.values:
                        self.starts.append(entry)
                        self.values.add(source)
                        pending.append(source)
        self.nodes.sort(key=lambda n: n.index)
        return bool(self.ends) and all(self._inputs_known(n) for n in self.nodes)

    def _is_pooled_end(self, node: Any) -> bool:
        """A mean over height and width that drops them: the region's value leaves as a (C) vector."""
        return node.op_type == "ReduceMean" and node.attr("keepdims", 1) == 0 \
            and sorted(a % 4 for a in axes_of(node, self.constants.get) or ()) == [1, 2]

    def _allowed(self, node: Any) -> bool:
        if node.op_type in ("Split", "Concat"):  # of computed values (a Split's sizes are its constant input)
            computed = node.inputs[:1] if node.op_type == "Split" else node.inputs
            return int(node.attr("axis", 0)) in (-1, 3) and all(v not in self.constants for v in computed)
        if len(node.outputs) != 1:
            return False
        if node.op_type == "LayerNormalization":
            return int(node.attr("axis", -1)) in (-1, 3)
        if node.op_type == "MatMul":
            weight = self.constants.get(node.inputs[1])
            return weight is not None and weight.ndim == 2
        if node.op_type == "ReduceMean":  # over the last axis, kept: torch's layer norm below opset 17
            return axes_of(node, self.constants.get) in ([-1], [3]) and node.attr("keepdims", 1) == 1
        # a computed input must turn out to be a region value (checked once the region is whole)
        return node.op_type in _ELEMENTWISE and all(
            v not in self.constants or self._per_channel(v) is not None for v in node.inputs[:2] if v)

    def _inputs_known(self, node: Any) -> bool:
        return all(not v or v in self.values or v in self.constants for v in node.inputs)

    def _per_channel(self, value: str) -> np.ndarray | None:
        """A constant broadcast over the channels only, as channels-first (scalars unchanged)."""
        array = self.constants.get(value)
        if array is None:
            return None
        if array.size == 1:
            return array
        if array.ndim >= 1 and all(d == 1 for d in array.shape[:-1]):
            return array.reshape(-1, 1, 1)
        return None


def channels_first_inputs(nodes: list[Any], inputs: dict[str, tuple[int, ...]],
                          shapes: dict[str, tuple[int, ...]]) -> tuple[list[Any], list[str]]:
    """Inputs given channels-last (Keras and TensorFlow exports: NHWC, then ``Transpose(0,3,1,2)``) taken
    as CxHxW instead: alexdsl networks read CxHxW. ``inputs`` and ``shapes`` are updated; returns the
    nodes and a note per input changed.

    >>> from alexdsl.interop.onnx_graph import OnnxNode
    >>> t = OnnxNode("Transpose", "t", ["x"], ["y"], {"perm": [0, 3, 1, 2]}, 0)
    >>> inputs, shapes = {"x": (8, 8, 3)}, {"x": (8, 8, 3), "y": (3, 8, 8)}
    >>> nodes, notes = channels_first_inputs([t], inputs, shapes)
    >>> inputs, [n.op_type for n in nodes], notes
    ({'x': (3, 8, 8)}, ['Identity'], ['input x is NHWC in the model (8x8x3); this network reads it as CxHxW (3x8x8)'])
    """
    notes = []
    for name, shape in list(inputs.items()):
        readers = [n for n in nodes if name in n.inputs]
        if len(shape) != 3 or not readers or any(
                n.op_type != "Transpose" or list(n.attr("perm", ())) != TO_FIRST for n in readers):
            continue
        height, width, channels = shape
        inputs[name] = shapes[name] = (channels, height, width)
        for node in readers:
            node.op_type, node.attrs = "Identity", {}
        notes.append(f"input {name} is NHWC in the model ({height}x{width}x{channels}); this network reads it "
                     f"as CxHxW ({channels}x{height}x{width})")
    return nodes, notes


def channels_first(nodes: list[Any], constants: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
                   outputs: list[str]) -> list[Any]:
    """``nodes`` with every channels-last region rewritten channels-first (``constants`` and ``shapes``
    gain what the new nodes use)."""
    consumers: dict[str, list[Any]] = {}
    for node in nodes:
        for value in node.inputs:
            consumers.setdefault(value, []).append(node)
    producers = {value: node for node in nodes for value in node.outputs}
    replaced: dict[int, list[Any]] = {}  # id(node) -> what stands in its place ([] drops it)
    for start in nodes:
        if not _is_transpose(start, TO_LAST) or id(start) in replaced:
            continue
        region = _Region(start, consumers, producers, constants, shapes, set(outputs))
        if not region.grow() or any(id(n) in replaced for n in [*region.starts, *region.nodes]):
            continue
        new = _rewrite(region, constants, shapes, consumers)
        if new is not None:
            replaced.update(new)
    if not replaced:
        return nodes
    result: list[Any] = []
    for node in nodes:
        result.extend(replaced.get(id(node), [node]))
    for index, node in enumerate(result):
        node.index = index
    return result


def _is_transpose(node: Any, perm: list[int]) -> bool:
    return node.op_type == "Transpose" and list(node.attr("perm", ())) == perm


def _rewrite(region: _Region, constants: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
             consumers: dict[str, list[Any]]) -> dict[int, list[Any]] | None:
    """What stands in place of each node of the region (by ``id``), each where the node was, so that the nodes
    outside it that it reads or that read it keep their order; None when a constant has no channels-first form."""
    renamed = {start.outputs[0]: start.inputs[0] for start in region.starts}
    placed: dict[int, list[Any]] = {id(start): [] for start in region.starts}

    def first(value: str) -> str:  # a region value's channels-first name
        if value not in renamed:
            renamed[value] = f"{value}#nchw"
            h, w, c = region.shapes.get(value, (0, 0, 0))
            shapes[renamed[value]] = (c, h, w)
        return renamed[value]

    taken_bias: set[int] = set()
    for node in region.nodes:
        out = placed[id(node)] = []
        if id(node) in taken_bias:
            continue
        if node.op_type in ("Split", "Concat"):
            inputs = [first(v) if v in region.values else v for v in node.inputs]
            out.append(_node(node, node.op_type, inputs, [first(v) for v in node.outputs], node.name,
                             **{**node.attrs, "axis": 1}))
            continue
        if node.op_type == "LayerNormalization":
            nhwc, normed = f"{node.outputs[0]}#nhwc", f"{node.outputs[0]}#normed"
            h, w, c = region.shapes.get(node.outputs[0], (0, 0, 0))
            shapes[nhwc] = shapes[normed] = (h, w, c)
            out += [_node(node, "Transpose", [first(node.inputs[0])], [nhwc], f"{node.name}#to_last", perm=TO_LAST),
                    _node(node, "LayerNormalization", [nhwc, *node.inputs[1:]], [normed], node.name, **node.attrs),
                    _node(node, "Transpose", [normed], [first(node.outputs[0])], f"{node.name}#to_first",
                          perm=TO_FIRST)]
            continue
        if node.op_type == "MatMul":
            matrix = constants[node.inputs[1]].T  # (out, C): torch's Linear weight
            base, kept = _weight_base(node, constants, matrix)
            matrix = kept if kept is not None else np.ascontiguousarray(matrix)
            base = _free_name(base, constants)
            constants[f"{base}.weight"] = matrix
            constants[f"{base}.kernel"] = matrix.reshape(*matrix.shape, 1, 1)
            inputs, output = [first(node.inputs[0]), f"{base}.kernel"], node.outputs[0]
            readers = consumers.get(output, [])
            if len(readers) == 1 and readers[0].op_type == "Add" and readers[0] in region.nodes:
                add = readers[0]
                other = add.inputs[1] if add.inputs[0] == output else add.inputs[0]
                bias = constants.get(other)
                if bias is not None and bias.size == matrix.shape[0]:
                    if bias.ndim != 1:
                        other = f"{base}.bias"
                        constants[other] = bias.reshape(-1)
                    inputs.append(other)
                    taken_bias.add(id(add))
                    output = add.outputs[0]
            out.append(_node(node, "Conv", inputs, [first(output)], node.name, kernel_shape=[1, 1]))
            continue
        if node.op_type == "ReduceMean":  # the channels are axis 1 now
            axes = f"{node.outputs[0]}#axes"
            constants[axes] = np.array([1], dtype=np.int64)
            attrs = {k: v for k, v in node.attrs.items() if k != "axes"}
            if "axes" in node.attrs:
                out.append(_node(node, "ReduceMean", [first(node.inputs[0])], [first(node.outputs[0])], node.name,
                                 **attrs, axes=[1]))
            else:
                out.append(_node(node, "ReduceMean", [first(node.inputs[0]), axes], [first(node.outputs[0])],
                                 node.name, **attrs))
            continue
        inputs = []
        for value in node.inputs:
            if not value or value in region.values:
                inputs.append(first(value) if value else value)
                continue
            array = region._per_channel(value)
            if array is None:
                return None
            if array.shape != constants[value].shape:
                constants[f"{value}#nchw"] = array
                value = f"{value}#nchw"
            inputs.append(value)
        out.append(_node(node, node.op_type, inputs, [first(node.outputs[0])], node.name, **node.attrs))
    for end in region.ends:
        if end.op_type == "ReduceMean":  # over height and width, now axes 2 and 3
            attrs = {k: v for k, v in end.attrs.items() if k != "axes"}
            placed[id(end)] = [_node(end, "ReduceMean", [first(end.inputs[0])], list(end.outputs), end.name,
                                     **attrs, axes=[2, 3])]
        else:
            placed[id(end)] = [_node(end, "Identity", [first(end.inputs[0])], list(end.outputs), end.name)]
    return placed


def _weight_base(node: Any, constants: dict[str, np.ndarray], matrix: np.ndarray) -> tuple[str, np.ndarray | None]:
    """Torch's Linear weight name and array when the model kept it (``Transpose(pwconv1.weight)``), else the
    node's scope and None. A weight whose first row differs is passed over before the whole is compared."""
    row = matrix[:1]
    for name, array in constants.items():
        if name.endswith(".weight") and "/" not in name and array.shape == matrix.shape \
                and np.array_equal(array[:1], row) and np.array_equal(array, matrix):
            return name[: -len(".weight")], array
    return node_scope(node) or node.name.strip("/").replace("/", ".") or "linear", None


def _free_name(base: str, constants: dict[str, np.ndarray]) -> str:
    name, i = base, 2
    while f"{name}.kernel" in constants:
        name, i = f"{base}_{i}", i + 1
    return name
