"""A plugin op: LeCun's scaled tanh, ``a * tanh(b * x)`` (LeCun et al., "Efficient BackProp", 1998).

Load it with ``alexdsl --plugin examples/plugins/scaled_tanh.py COMMAND ...``, with
``ALEXDSL_PLUGINS``, or from an installed package's ``alexdsl.ops`` entry point; then write
``| scaled_tanh`` or ``| scaled_tanh(a=1.0, b=0.5)`` in a network. docs/extending.md walks
through every part of this file. Caffe has no such layer, so ``export --format prototxt``
gives a located error naming the op.
"""

from __future__ import annotations

from typing import Any

from alexdsl.ops.contexts import OnnxExportContext, OnnxImportContext, OnnxNodeView
from alexdsl.ops.from_onnx import f32
from alexdsl.ops.lowering import ExecutorLowering, Lowerings, OnnxImport, Pattern, TorchLowering
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, register


def _same_shape(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return inputs[0]


def _executor(x: Any, *, a: float, b: float, out: Any = None) -> Any:
    """NumPy or CuPy: the same code runs on both (``x`` decides which)."""
    from alexdsl.backends.executor.runtime import array_module

    xp = array_module(x)
    out = xp.multiply(x, x.dtype.type(b), out=out)
    xp.tanh(out, out=out)
    out *= x.dtype.type(a)
    return out


def _onnx(layer: Any, ctx: OnnxExportContext) -> None:
    scaled = ctx.node("Mul", [ctx.inputs[0], ctx.constant(layer.attrs["b"])], output=f"{layer.name}.scaled")
    bent = ctx.node("Tanh", [scaled], output=f"{layer.name}.tanh")
    ctx.node("Mul", [bent, ctx.constant(layer.attrs["a"])])


def _from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Mul(Tanh(Mul(x, b)), a)`` with one-value constants ``a`` and ``b`` (the export above) -> scaled_tanh."""
    for bent, a in (node.inputs[:2], node.inputs[1::-1]):
        tanh, scale = ctx.absorb(bent), ctx.const(a)
        inner = ctx.absorb(tanh.inputs[0], tanh) if tanh is not None and tanh.op_type == "Tanh" else None
        if inner is None or inner.op_type != "Mul" or scale is None or scale.size != 1:
            continue
        for x, b in (inner.inputs[:2], inner.inputs[1::-1]):
            factor = ctx.const(b)
            if factor is not None and factor.size == 1 and ctx.const(x) is None:
                attrs = {"a": f32(scale.reshape(-1)[0]), "b": f32(factor.reshape(-1)[0])}
                return OnnxImport("scaled_tanh", [x], attrs, absorbed=(tanh, inner))
    return None


register(OpDef(
    name="scaled_tanh",
    family="activation",
    summary="LeCun’s scaled hyperbolic tangent: a * tanh(b * x).",
    example="st: scaled_tanh(a=1.7159, b=0.6667)",
    args=(
        Arg("a", "float", 1.7159, "output scale"),
        Arg("b", "float", 0.6667, "input scale"),
    ),
    infer=_same_shape,
    pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: (
            f"{ctx.float(layer.attrs['a'])} * torch.tanh({ctx.float(layer.attrs['b'])} * {args[0]})")),
        executor=ExecutorLowering(function=_executor, inplace=True),
        onnx=_onnx,
        from_onnx={"Mul": _from_onnx},
        onnx_elementwise=("Mul", "Tanh"),
        reference=lambda layer, xs, w, F: layer.attrs["a"] * (layer.attrs["b"] * xs[0]).tanh(),
    ),
))
