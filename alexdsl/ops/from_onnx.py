"""What the ops' ``from_onnx`` converters share (see :class:`alexdsl.ops.lowering.Lowerings`).

>>> f32(0.8999999761581421), f32(9.999999747378752e-06)
(0.9, 1e-05)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alexdsl.ops.lowering import OnnxImport

Converter = Callable[[Any, Any], OnnxImport | list[OnnxImport] | None]


def f32(value: float) -> float:
    """A float32 attribute as the shortest decimal that reads back as it (0.9, not 0.8999999762)."""
    import numpy as np

    return float(str(np.float32(value)))


def unary(op: str, **attrs: Any) -> Converter:
    """A converter for a node that is ``op`` on its first input, attributes fixed."""

    def convert(node: Any, ctx: Any) -> OnnxImport:
        return OnnxImport(op, [node.inputs[0]], dict(attrs))

    return convert


def computed(ctx: Any, values: list[str]) -> bool:
    """Whether every value is computed from the network's inputs (none is a constant)."""
    return all(v and ctx.const(v) is None for v in values)


def symmetric_pads(node: Any, ctx: Any, rank: int = 2) -> tuple[int, ...] | None:
    """The 2-D ``pads`` of a window node as one pad per axis, or None (after ``ctx.fail``) when uneven."""
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return ctx.fail(node, f"auto_pad={node.attr('auto_pad')} is not supported; export with explicit pads")
    pads = list(node.attr("pads", [0] * (2 * rank)))
    if node.attr("auto_pad", "NOTSET") == "VALID":
        pads = [0] * (2 * rank)
    begin, end = pads[:rank], pads[rank:]
    if begin != end:
        return ctx.fail(node, f"pads {pads} differ at the start and end of an axis; alexdsl pads both ends alike")
    return tuple(int(p) for p in begin)


def pair(values: Any) -> int | tuple[int, int]:
    """``(a, a)`` as ``a``; a pair otherwise."""
    a, b = (int(v) for v in values)
    return a if a == b else (a, b)


def producer_of(ctx: Any, value: str, op_type: str, reader: Any = None) -> Any:
    """The node computing ``value`` if it is an ``op_type`` node the anchor (or ``reader``) may absorb."""
    node = ctx.absorb(value, reader)
    return node if node is not None and node.op_type == op_type else None


def flattened_input(ctx: Any, value: str) -> tuple[str, tuple[Any, ...]]:
    """``value``, or the input of the ``Flatten``/``Reshape(N, -1)`` computing it (absorbed)."""
    node = ctx.absorb(value)
    if node is None:
        return value, ()
    if node.op_type == "Flatten" and node.attr("axis", 1) == 1:
        return node.inputs[0], (node,)
    if node.op_type == "Reshape" and is_flatten_reshape(node, ctx):
        return node.inputs[0], (node,)
    return value, ()


def is_flatten_reshape(node: Any, ctx: Any) -> bool:
    """A ``Reshape`` to ``(N, C*H*W)``: what ``x.view(x.size(0), -1)`` exports to."""
    shape = ctx.const(node.inputs[1]) if len(node.inputs) > 1 else None
    source, result = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    if shape is None or source is None or result is None or len(shape) != 2:
        return False
    count = 1
    for d in source:
        count *= d
    return len(result) == 1 and result[0] == count
