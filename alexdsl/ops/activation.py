"""Elementwise activations and softmax."""

from __future__ import annotations

from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, register


def _same(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return inputs[0]


register(OpDef(name="relu", family="activation", summary="Rectified linear unit: max(x, 0).", example="r: relu",
               args=(), infer=_same))
register(OpDef(name="leaky_relu", family="activation", summary="x if x > 0 else slope * x.",
               example="r: leaky_relu(0.1)", args=(Arg("slope", "float", 0.01, "negative slope"),),
               infer=_same))
register(OpDef(name="sigmoid", family="activation", summary="1 / (1 + exp(-x)).", example="s: sigmoid",
               args=(), infer=_same))
register(OpDef(name="tanh", family="activation", summary="Hyperbolic tangent, elementwise.", example="t: tanh",
               args=(), infer=_same))
register(OpDef(name="softmax", family="activation", summary="Softmax over channels (dimension 1 of NCHW).",
               example="prob: softmax", args=(), infer=_same))
