"""What the ops' ``from_onnx`` converters share (see :class:`alexdsl.ops.lowering.Lowerings`).

>>> f32(0.8999999761581421), f32(9.999999747378752e-06)
(0.9, 1e-05)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alexdsl.ops.contexts import OnnxImportContext, OnnxNodeView
from alexdsl.ops.lowering import OnnxConverter, OnnxImport

Converter = OnnxConverter


def f32(value: float) -> float:
    """A float32 attribute as the shortest decimal that reads back as it (0.9, not 0.8999999762)."""
    import numpy as np

    return float(str(np.float32(value)))


def unary(op: str, **attrs: Any) -> Converter:
    """A converter for a node that is ``op`` on its first input, attributes fixed."""

    def convert(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport:
        return OnnxImport(op, [node.inputs[0]], dict(attrs))

    return convert


def computed(ctx: OnnxImportContext, values: list[str]) -> bool:
    """Whether every value is computed from the network's inputs (none is a constant)."""
    return all(v and ctx.const(v) is None for v in values)


def pair(values: Any) -> int | tuple[int, int]:
    """``(a, a)`` as ``a``; a pair otherwise."""
    a, b = (int(v) for v in values)
    return a if a == b else (a, b)


def producer_of(ctx: OnnxImportContext, value: str, op_type: str, reader: Any = None) -> Any:
    """The node computing ``value`` if it is an ``op_type`` node the anchor (or ``reader``) may absorb."""
    node = ctx.absorb(value, reader)
    return node if node is not None and node.op_type == op_type else None


def flattened_input(ctx: OnnxImportContext, value: str) -> tuple[str, tuple[Any, ...]]:
    """``value``, or the input of the ``Flatten``/``Reshape(N, -1)`` computing it (absorbed)."""
    node = ctx.absorb(value)
    if node is None:
        return value, ()
    if node.op_type == "Flatten" and node.attr("axis", 1) == 1:
        return node.inputs[0], (node,)
    if node.op_type == "Reshape" and is_flatten_reshape(node, ctx):
        return node.inputs[0], (node,)
    return value, ()


def is_flatten_reshape(node: OnnxNodeView, ctx: OnnxImportContext) -> bool:
    """A ``Reshape`` to ``(N, C*H*W)``: what ``x.view(x.size(0), -1)`` exports to."""
    shape = ctx.const(node.inputs[1]) if len(node.inputs) > 1 else None
    source, result = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    if shape is None or source is None or result is None or len(shape) != 2:
        return False
    count = 1
    for d in source:
        count *= d
    return len(result) == 1 and result[0] == count


def axes_of(node: Any, const: Callable[[str], Any]) -> list[int] | None:
    """The ``axes`` of a reduction or (un)squeeze: an attribute in older opsets, the second input from
    opset 13 (Unsqueeze) or 18 (ReduceMean); None when absent or computed. ``const`` reads a constant
    (``ctx.const``).

    >>> from alexdsl.interop.onnx_graph import OnnxNode
    >>> axes_of(OnnxNode("ReduceMean", "m", ["x"], ["y"], {"axes": [2, 3]}, 0), {}.get)
    [2, 3]
    """
    if len(node.inputs) > 1 and node.inputs[1]:
        found = const(node.inputs[1])
        return None if found is None else [int(a) for a in found.reshape(-1)]
    found = node.attr("axes")
    return None if found is None else [int(a) for a in found]


def scalar(ctx: OnnxImportContext, value: str) -> float | None:
    """The value of a one-element constant, or None (a computed value, a larger constant, a missing input)."""
    array = ctx.const(value) if value else None
    return float(array.reshape(-1)[0]) if array is not None and array.size == 1 else None


def near(value: float | None, expected: float, rel: float = 1e-5) -> bool:
    """Whether a float32 constant is ``expected`` (as an exporter writes 1/6 or sqrt(2/pi)).

    >>> near(0.1666666716337204, 1 / 6), near(None, 1.0), near(0.5, 0.25)
    (True, False, False)
    """
    return value is not None and abs(value - expected) <= rel * abs(expected)


def other_input(node: Any, value: str) -> str | None:
    """The input of a two-input node that is not ``value`` (``value`` itself when it is both)."""
    first, second = node.inputs[:2]
    return second if first == value else first if second == value else None


def operands(ctx: OnnxImportContext, node: OnnxNodeView) -> tuple[list[str], tuple[Any, ...]] | None:
    """The computed inputs of an elementwise node as an alexdsl add/sub/mul reads them.

    alexdsl aligns an input of lower rank by giving it its missing dimensions after the batch
    (``Unsqueeze(axes=[1..k])``, which the layer absorbs). ONNX aligns ranks from the right,
    batch included, so inputs of different ranks without that Unsqueeze are not alexdsl's
    broadcast: None then (after ``ctx.fail``), and None without a failure when an input is a constant.
    """
    if not computed(ctx, node.inputs):
        return None
    out = ctx.shape(node.outputs[0])
    values, absorbed = [], []
    for value in node.inputs:
        unsqueeze = producer_of(ctx, value, "Unsqueeze")
        axes = axes_of(unsqueeze, ctx.const) if unsqueeze is not None else None
        if axes is not None and axes == list(range(1, len(axes) + 1)):
            values.append(unsqueeze.inputs[0])
            absorbed.append(unsqueeze)
            continue
        shape = ctx.shape(value)
        if out is None or shape is None:
            return ctx.fail(node, "the shapes of its inputs are unknown")
        if len(shape) != len(out):
            return ctx.fail(node, f"an input of shape {shape} broadcasts against the batch axis of {out} "
                                  "(ONNX aligns ranks from the right, batch included)")
        values.append(value)
    return values, tuple(absorbed)


def per_channel(ctx: OnnxImportContext, value: str, shape: tuple[int, ...]) -> Any:
    """A constant that broadcasts along the channels (axis 1) of an input of per-sample ``shape``, as a
    (C,) float32 array; None for a computed value or a constant of another shape (spatial, per-batch)."""
    import numpy as np

    array = ctx.const(value) if value else None
    if array is None or not shape or array.ndim > len(shape) + 1:
        return None
    full = (1,) * (len(shape) + 1 - array.ndim) + tuple(array.shape)
    channels = shape[0]
    if full[0] != 1 or full[1] not in (1, channels) or any(d != 1 for d in full[2:]):
        return None
    return np.ascontiguousarray(np.broadcast_to(array.reshape(-1).astype(np.float32), (channels,)))


def is_read(ctx: OnnxImportContext, value: str) -> bool:
    """Whether a node or the graph's outputs read ``value``."""
    return bool(ctx.readers(value)) or value in ctx.outputs


def linear_kernel(ctx: OnnxImportContext, node: OnnxNodeView) -> str | None:
    """The (out, C) matrix a plain 1x1 ``Conv`` applies when its weight is alexdsl's pointwise_fc export
    (``<layer>.kernel = Reshape(<layer>.weight)``, folded on reading): the matrix's initializer, or None."""
    import numpy as np

    weight = node.inputs[1]
    if not weight.endswith(".kernel"):
        return None
    source = weight[: -len(".kernel")] + ".weight"
    kernel, matrix = ctx.const(weight), ctx.const(source)
    plain = (all(int(v) == 1 for v in [*node.attr("strides", (1, 1)), *node.attr("dilations", (1, 1))])
             and not any(node.attr("pads", (0, 0, 0, 0))) and node.attr("group", 1) == 1
             and node.attr("auto_pad", "NOTSET") in ("NOTSET", "VALID"))
    if not plain or kernel is None or matrix is None or kernel.ndim != 4 or kernel.shape[2:] != (1, 1) \
            or matrix.shape != kernel.shape[:2] or not np.array_equal(kernel.reshape(matrix.shape), matrix):
        return None
    return source


def evaluate(ctx: OnnxImportContext, nodes: list[Any], feeds: dict[str, Any], output: str) -> Any:
    """``output`` of ``nodes`` (a matched subgraph) run by ONNX's reference evaluator at the model's opset on
    ``feeds`` (arrays with a batch axis), the constants the nodes read given: how a converter checks that
    what it matched computes what its layers compute."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    ordered = sorted(nodes, key=lambda n: n.index)
    constants = {v: ctx.const(v) for n in ordered for v in n.inputs if v and ctx.const(v) is not None}
    graph = helper.make_graph([helper.make_node(n.op_type, n.inputs, n.outputs, **n.attrs) for n in ordered],
                              "matched", [helper.make_tensor_value_info(v, 0, None) for v in [*feeds, *constants]],
                              [helper.make_tensor_value_info(output, 0, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ctx.opset)])
    return ReferenceEvaluator(model).run(None, {**feeds, **constants})[0]


def agrees(got: Any, want: Any) -> bool:
    """Whether a matched subgraph's output (:func:`evaluate`) is what its layers compute: the same shape, within
    1e-4 relative and 1e-5 of the largest value."""
    import numpy as np

    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max())))
