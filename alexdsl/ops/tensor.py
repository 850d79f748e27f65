"""Tensor plumbing: flatten, concat, add, dropout."""

from __future__ import annotations

from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, format_shape, numel, register


def _flatten(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return (numel(inputs[0]),)


register(OpDef(name="flatten", family="tensor", summary="CxHxW -> C*H*W.", example="flat: flatten",
               args=(), infer=_flatten))


def _concat(attrs: Attrs, inputs: list[Shape]) -> Shape:
    first = inputs[0]
    for i, shape in enumerate(inputs[1:], start=2):
        if len(shape) != len(first) or shape[1:] != first[1:]:
            raise ShapeError(
                f"concat input {i} has shape {format_shape(shape)}, which does not match input 1 "
                f"({format_shape(first)}) outside the channel dimension",
                expected="inputs that differ only in channels",
                received=", ".join(format_shape(s) for s in inputs),
            )
    return (sum(s[0] for s in inputs), *first[1:])


register(OpDef(name="concat", family="tensor", summary="Join inputs along channels (Caffe Concat).",
               example="out: concat(b1, b3, b5, bp)", args=(), infer=_concat, inputs=(2, None)))


def _add(attrs: Attrs, inputs: list[Shape]) -> Shape:
    first = inputs[0]
    for i, shape in enumerate(inputs[1:], start=2):
        if shape != first:
            raise ShapeError(
                f"add input {i} has shape {format_shape(shape)}, input 1 has {format_shape(first)}",
                expected="inputs of one shape",
                received=", ".join(format_shape(s) for s in inputs),
            )
    return first


register(OpDef(name="add", family="tensor", summary="Elementwise sum of inputs of one shape (Caffe Eltwise SUM).",
               example="out: add(branch, shortcut)", args=(), infer=_add, inputs=(2, None)))


def _same(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return inputs[0]


register(OpDef(name="dropout", family="tensor",
               summary="Zero each element with probability p while training; identity at inference.",
               example="drop6: dropout(0.5)", args=(Arg("p", "float", 0.5, "drop probability", min=0, max=0.999999),),
               infer=_same))
