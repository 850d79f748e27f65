"""Elementwise activations and softmax.

Named and defaulted as in ``torch.nn.functional``. Each elementwise activation's math, and softmax's,
is written once, as an xp kernel here (:class:`~alexdsl.ops.lowering.XpKernel`): the NumPy/CuPy executor runs
it as ``rt.<kernel>``, and in float64 it is the op's reference for ``compare``. Every kernel takes
``out=`` and runs in place when ``out`` is its input. The parameterless ones that declare an
executor ``epilogue`` run in the epilogue of a conv, fc or arithmetic op before them in the
NumPy/CuPy executor (:data:`~alexdsl.ops.lowering.EVERY_EPILOGUE`): ``relu=True``, or
``act=rt.<name>`` for the others.

>>> import numpy as np
>>> relu6(np.array([-1.0, 3.0, 9.0])).tolist()
[0.0, 3.0, 6.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from alexdsl.ops.contexts import (
    CaffeExportContext,
    CaffeImportContext,
    CaffeMessage,
    ExecutorContext,
    OnnxExportContext,
    OnnxImportContext,
    OnnxNodeView,
    TorchContext,
)
from alexdsl.ops.from_onnx import f32, near, other_input, per_channel, producer_of, scalar, unary
from alexdsl.ops.lowering import (
    CaffeLayer,
    ExecutorKernel,
    ExecutorLowering,
    Lowerings,
    OnnxImport,
    Pattern,
    TorchLowering,
    XpKernel,
)
from alexdsl.ops.registry import Arg, Attrs, Filler, OpDef, Shape, ShapeError, normalize_axis, register
from alexdsl.ops.xp import Array, array_module, in_float64, narrowed


def _same(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return inputs[0]


def epilogue_args(epilogue: str | None) -> str:
    """A producer's epilogue arguments for the runtime: ``relu=True``/``relu=False``, or ``act=rt.<kernel>``."""
    if epilogue is None or epilogue == "relu":
        return f"relu={epilogue == 'relu'}"
    return f"relu=False, act=rt.{epilogue}"


@dataclass(frozen=True)
class TorchCall:
    """An activation's torch form, a call ``function(x, <attrs>...)`` of ``torch`` or ``torch.nn.functional``
    (``F``): the generated forward source. ``inplace``: ``inplace=True`` where the layer may overwrite its
    input."""

    function: str
    attrs: tuple[str, ...] = ()
    inplace: bool = False

    def forward(self, layer: Any, args: list[str], ctx: TorchContext) -> str:
        values = "".join(f", {ctx.float(layer.attrs[a])}" for a in self.attrs)
        inplace = ", inplace=True" if self.inplace and ctx.may_run_inplace(layer) else ""
        return f"{self.function}({args[0]}{values}{inplace})"


def _xp_call(kernel: XpKernel, epilogue: str | None = None) -> ExecutorLowering:
    """The op's kernel in place in the executor: ``rt.<kernel>(x, <its attrs>, out=...)``."""
    def lower(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
        values = "".join(f", {ctx.lit(layer.attrs[a])}" for a in kernel.attrs)
        return ExecutorKernel(f"rt.{kernel.name}({ctx.inputs[0]}{values}, out={{out}})", kernel.name)

    return ExecutorLowering(lower=lower, inplace=True, epilogue=epilogue)


# the xp kernels: each op's math, written once ------------------------------------------------------

def relu(x: Array, *, out: Array | None = None) -> Array:
    """max(x, 0); ``out=x`` runs in place."""
    return array_module(x).maximum(x, 0, out=out)


def leaky_relu(x: Array, slope: float = 0.01, *, out: Array | None = None) -> Array:
    """x if x > 0 else slope * x, as max(x, 0) + slope * min(x, 0) (one term is 0: exact, no select)."""
    return _positive_plus(x, _scaled_negative(x, x.dtype.type(slope)), out)


def _scaled_negative(x: Array, slope: Array) -> Array:
    """slope * min(x, 0), a new array."""
    negative = array_module(x).minimum(x, 0)
    negative *= slope
    return negative


def _positive_plus(x: Array, negative: Array, out: Array | None) -> Array:
    """max(x, 0) + ``negative`` into ``out`` (which may be ``x``)."""
    y = array_module(x).maximum(x, 0, out=out)
    y += negative
    return y


def _exp_neg_abs(x: Array) -> Array:
    """exp(-|x|) in (0, 1], a new array: an exponential that never overflows, exact argument."""
    xp = array_module(x)
    t = xp.abs(x)
    xp.negative(t, out=t)
    return xp.exp(t, out=t)


def sigmoid(x: Array, *, out: Array | None = None) -> Array:
    """Logistic function 1 / (1 + exp(-x)), a few ulps from the truth in both tails (``0.5 * (tanh(x / 2) + 1)``
    cancelled to 0 below -17). Below -88.7 exp(-x) is inf and the result, under 3e-39, is 0, as in torch."""
    e = _one_plus_exp_minus(x, out)
    return array_module(x).divide(1, e, out=e)


def _one_plus_exp_minus(x: Array, out: Array | None = None) -> Array:
    """1 + exp(-x), into ``out`` when given; exp(-x) overflows to inf (below -88.7 in float32) silently."""
    import numpy

    xp = array_module(x)
    e = xp.negative(x, out=out)
    with numpy.errstate(over="ignore"):
        xp.exp(e, out=e)
    e += 1
    return e


def tanh(x: Array, *, out: Array | None = None) -> Array:
    """Hyperbolic tangent."""
    return array_module(x).tanh(x, out=out)


def relu6(x: Array, *, out: Array | None = None) -> Array:
    """min(max(x, 0), 6)."""
    return array_module(x).clip(x, 0, 6, out=out)


def hardtanh(x: Array, low: float = -1.0, high: float = 1.0, *, out: Array | None = None) -> Array:
    """x clipped to [low, high]."""
    return array_module(x).clip(x, x.dtype.type(low), x.dtype.type(high), out=out)


def hardsigmoid(x: Array, *, out: Array | None = None) -> Array:
    """relu6(x + 3) / 6, as torch."""
    xp = array_module(x)
    out = xp.add(x, x.dtype.type(3), out=out)
    xp.clip(out, 0, 6, out=out)
    out /= x.dtype.type(6)
    return out


def hardswish(x: Array, *, out: Array | None = None) -> Array:
    """x * relu6(x + 3) / 6, as torch."""
    return array_module(x).multiply(x, hardsigmoid(x), out=out)


def silu(x: Array, *, out: Array | None = None) -> Array:
    """x * sigmoid(x) (swish), as x / (1 + exp(-x)) (see :func:`sigmoid`)."""
    return array_module(x).divide(x, _one_plus_exp_minus(x), out=out)


_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def erfc(x: Array) -> Array:
    """The complementary error function, to 1.2e-7 relative (Numerical Recipes' Chebyshev fit).

    Written against ``xp`` so it runs on NumPy (which has no erf) and CuPy alike; erfc(-z) = 2 - erfc(z).
    """
    xp = array_module(x)
    z = xp.abs(x)
    t = z * x.dtype.type(0.5)
    t += 1
    xp.divide(1, t, out=t)
    poly = t * x.dtype.type(0.17087277)
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368):
        poly += x.dtype.type(c)
        poly *= t
    poly -= x.dtype.type(1.26551223)
    z *= z
    poly -= z
    r = xp.exp(poly, out=poly)
    r *= t
    xp.copysign(r, x, out=r)
    r += xp.signbit(x) * x.dtype.type(2)
    return r


def gelu(x: Array, approximate: str = "none", *, out: Array | None = None) -> Array:
    """Gaussian error linear unit, as torch: x * Phi(x) with Phi(x) = erfc(-x / sqrt 2) / 2, or its tanh
    approximation x * (1 + tanh(u)) / 2 = x / (1 + exp(-2u)), u = sqrt(2 / pi) * (x + 0.044715 x^3).

    Computed in float64 and rounded once: in the negative tail the result's relative error is the argument's
    absolute error times |x| (or 2|u|), which float32 rounding of x / sqrt 2 or u would make tens of ulps.
    """
    return in_float64(_gelu_tanh if approximate == "tanh" else _gelu_erf, x, out)


def _gelu_erf(x: Array) -> Array:
    phi = erfc(x * -_SQRT_HALF)
    phi *= 0.5
    phi *= x
    return phi


def _gelu_tanh(x: Array) -> Array:
    two_u = x * x
    two_u *= 2 * _SQRT_2_OVER_PI * 0.044715
    two_u += 2 * _SQRT_2_OVER_PI
    two_u *= x
    return array_module(x).divide(x, _one_plus_exp_minus(two_u, out=two_u), out=two_u)


def elu(x: Array, alpha: float = 1.0, *, out: Array | None = None) -> Array:
    """x if x > 0 else alpha * (exp(x) - 1), as max(x, 0) + alpha * expm1(min(x, 0))."""
    negative = array_module(x).minimum(x, 0)
    array_module(x).expm1(negative, out=negative)
    negative *= x.dtype.type(alpha)
    return _positive_plus(x, negative, out)


def softplus(x: Array, beta: float = 1.0, threshold: float = 20.0, *, out: Array | None = None) -> Array:
    """log(1 + exp(beta * x)) / beta, and x where beta * x > threshold (torch's), as
    max(bx, 0) + log1p(exp(-|bx|)): no overflow, accurate in both tails; in float64 when beta != 1, whose
    rounded product the exponential would magnify."""
    if beta != 1:
        return in_float64(lambda wide: _softplus(wide, beta, threshold), x, out)
    return narrowed(_softplus(x, beta, threshold), x, out)


def _softplus(x: Array, beta: float, threshold: float) -> Array:
    xp = array_module(x)
    bx = x * x.dtype.type(beta) if beta != 1 else x
    soft = _exp_neg_abs(bx)
    xp.log1p(soft, out=soft)
    soft += xp.maximum(bx, 0)
    if beta != 1:
        soft /= x.dtype.type(beta)
    if math.exp(-threshold) >= threshold * float(xp.finfo(soft.dtype).eps) / 4:  # else x + that rounds to x
        xp.copyto(soft, x, where=bx > threshold)
    return soft


def mish(x: Array, *, out: Array | None = None) -> Array:
    """x * tanh(softplus(x))."""
    xp = array_module(x)
    return xp.multiply(x, xp.tanh(softplus(x)), out=out)


def prelu(x: Array, weight: Array, *, out: Array | None = None) -> Array:
    """x if x > 0 else weight * x, with one slope per channel (axis 1) or one shared."""
    slope = weight.reshape((1, -1) + (1,) * (x.ndim - 2)) if weight.size > 1 else weight.reshape(())
    return _positive_plus(x, _scaled_negative(x, slope), out)


FLOAT32_MAX = 3.4028234663852886e38
"""A bound ONNX ``Clip`` leaves out, as hardtanh writes it."""


def _clip_from_onnx(op: str) -> Any:
    """``Clip(x, min, max)`` -> relu (min 0, no max), relu6 (0, 6) or hardtanh (any other constant bounds);
    each op's converter takes only its own bounds, so no two claim one node."""
    def convert(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
        bounds = [node.inputs[i] if len(node.inputs) > i else "" for i in (1, 2)]
        low, high = (scalar(ctx, value) if value else None for value in bounds)
        if any(value and (ctx.const(value) is None or ctx.const(value).size != 1) for value in bounds):
            return ctx.fail(node, "only a Clip with constant scalar bounds is imported")
        kind = "relu" if (low, high) == (0, None) else "relu6" if (low, high) == (0, 6) else "hardtanh"
        if kind != op:
            return None
        if op != "hardtanh":
            return OnnxImport(op, node.inputs[:1])
        attrs = {"min": f32(low) if low is not None else -FLOAT32_MAX,
                 "max": f32(high) if high is not None else FLOAT32_MAX}
        if attrs["min"] >= attrs["max"]:
            return ctx.fail(node, f"Clip bounds {low} >= {high} clip everything to one value")
        return OnnxImport(op, node.inputs[:1], attrs)

    return convert


def _relu_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], None]:
    p = layer.message("relu_param")
    slope = p.scalar("negative_slope") if p is not None else None
    if slope is not None and slope.value != 0:
        return "leaky_relu", [ctx.literal(slope)], None
    return "relu", [], None


_RELU = TorchCall("F.relu", inplace=True)
_RELU_KERNEL = XpKernel(relu)

register(OpDef(
    name="relu", family="activation", summary="Rectified linear unit: max(x, 0).", example="r: relu",
    args=(), infer=_same, pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(forward=_RELU.forward),
        executor=_xp_call(_RELU_KERNEL, epilogue="relu"),
        onnx=lambda layer, ctx: ctx.node("Relu", ctx.inputs),
        caffe=lambda layer, ctx: [CaffeLayer("ReLU")],
        from_caffe={"ReLU": _relu_from_caffe},
        from_onnx={"Relu": unary("relu"), "Clip": _clip_from_onnx("relu")},
        onnx_elementwise=("Relu", "Clip"),
        kernel=_RELU_KERNEL,
    ),
))

_LEAKY_RELU = TorchCall("F.leaky_relu", ("slope",))
_LEAKY_RELU_KERNEL = XpKernel(leaky_relu, ("slope",))

register(OpDef(
    name="leaky_relu", family="activation", summary="x if x > 0 else slope * x.",
    example="r: leaky_relu(0.1)", args=(Arg("slope", "float", 0.01, "negative slope"),), infer=_same,
    pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(forward=_LEAKY_RELU.forward),
        executor=ExecutorLowering(
            lower=lambda layer, ctx: ExecutorKernel(
                f"rt.{_LEAKY_RELU_KERNEL.name}({ctx.inputs[0]}, {ctx.lit(float(layer.attrs['slope']))}, out={{out}})",
                _LEAKY_RELU_KERNEL.name),
            inplace=True),
        onnx=lambda layer, ctx: ctx.node("LeakyRelu", ctx.inputs, alpha=float(layer.attrs["slope"])),
        from_onnx={"LeakyRelu": lambda node, ctx: OnnxImport("leaky_relu", node.inputs[:1],
                                                             {"slope": f32(node.attr("alpha", 0.01))})},
        onnx_elementwise=("LeakyRelu",),
        caffe=lambda layer, ctx: [
            CaffeLayer("ReLU", "relu_param", (f"negative_slope: {ctx.number(layer.attrs['slope'])}",))],
        kernel=_LEAKY_RELU_KERNEL,
    ),
))

_SIGMOID = TorchCall("torch.sigmoid")
_SIGMOID_KERNEL = XpKernel(sigmoid, compiled=True)

register(OpDef(
    name="sigmoid", family="activation", summary="1 / (1 + exp(-x)).", example="s: sigmoid",
    args=(), infer=_same, pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(forward=_SIGMOID.forward),
        executor=_xp_call(_SIGMOID_KERNEL, epilogue="sigmoid"),
        onnx=lambda layer, ctx: ctx.node("Sigmoid", ctx.inputs),
        caffe=lambda layer, ctx: [CaffeLayer("Sigmoid")],
        from_caffe={"Sigmoid": lambda layer, name, ctx: ("sigmoid", [], None)},
        from_onnx={"Sigmoid": unary("sigmoid")},
        onnx_elementwise=("Sigmoid",),
        kernel=_SIGMOID_KERNEL,
    ),
))

_TANH = TorchCall("torch.tanh")
_TANH_KERNEL = XpKernel(tanh)

register(OpDef(
    name="tanh", family="activation", summary="Hyperbolic tangent, elementwise.", example="t: tanh",
    args=(), infer=_same, pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(forward=_TANH.forward),
        executor=_xp_call(_TANH_KERNEL, epilogue="tanh"),
        onnx=lambda layer, ctx: ctx.node("Tanh", ctx.inputs),
        caffe=lambda layer, ctx: [CaffeLayer("TanH")],
        from_caffe={"TanH": lambda layer, name, ctx: ("tanh", [], None)},
        from_onnx={"Tanh": unary("tanh")},
        onnx_elementwise=("Tanh",),
        kernel=_TANH_KERNEL,
    ),
))

def _softmax_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], None]:
    axis = ctx.section(layer, "softmax_param").scalar("axis")
    if axis is not None and axis.value != 1:
        ctx.error("softmax along an axis other than channels (1) is not supported", axis.span)
    return "softmax", [], None


def _softmax_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Softmax`` over the channels: axis 1 (before opset 13, axis 1 of a flat input only); from opset 13 any
    axis after the batch (softmax(axis=...))."""
    shape = ctx.shape(node.inputs[0])
    rank = len(shape) + 1 if shape is not None else 0
    written = int(node.attr("axis", 1 if ctx.opset < 13 else -1))
    axis = written + rank if written < 0 else written
    if axis == 1 and (ctx.opset >= 13 or rank == 2):
        return OnnxImport("softmax", node.inputs[:1])
    if ctx.opset >= 13 and 1 < axis < rank:  # another per-sample axis; a negative one stays negative
        return OnnxImport("softmax", node.inputs[:1], {"axis": written if written < 0 else axis - 1})
    return ctx.fail(node, f"a softmax over axis {node.attr('axis')} is not over an axis after the batch")


def _softmax_from_transpose(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Transpose`` moving the channels last, ``Softmax`` over the last axis, the inverse ``Transpose`` ->
    softmax: torch's export of a softmax over the channels of CxHxW below opset 13."""
    softmax = producer_of(ctx, node.inputs[0], "Softmax")
    first = producer_of(ctx, softmax.inputs[0], "Transpose", softmax) if softmax is not None else None
    if first is None:
        return None
    perm, back = list(first.attr("perm", ())), list(node.attr("perm", ()))
    axis = int(softmax.attr("axis", 1 if ctx.opset < 13 else -1)) % max(len(perm), 1)
    if len(back) != len(perm) or not perm or perm[-1] != 1 or axis != len(perm) - 1 \
            or [perm[i] for i in back] != list(range(len(perm))):
        return None
    return OnnxImport("softmax", first.inputs[:1], absorbed=(softmax, first))


def _softmax_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    normalize_axis(attrs["axis"], len(inputs[0]))
    return inputs[0]


def _softmax_dim(layer: Any) -> int:
    """The axis as torch counts it: the batch added to a non-negative axis, a negative one kept."""
    axis = layer.attrs["axis"]
    return axis + 1 if axis >= 0 else axis


def softmax(x: Array, axis: int = 0, *, out: Array | None = None) -> Array:
    """Numerically stable softmax along the per-sample ``axis`` of a batch (0: the channels, -1: the last axis);
    ``out=x`` runs in place."""
    dim = axis + 1 if axis >= 0 else axis
    e = array_module(x).exp(x - x.max(axis=dim, keepdims=True), out=out)
    e /= e.sum(axis=dim, keepdims=True)
    return e


def _softmax_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    """``rt.softmax(x, out=...)``, with the axis when it is not the channels."""
    axis = "" if layer.attrs["axis"] == 0 else f", {ctx.lit(layer.attrs['axis'])}"
    return ExecutorKernel(f"rt.softmax({ctx.inputs[0]}{axis}, out={{out}})", "softmax")


def _softmax_caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
    if layer.attrs["axis"] != 0:
        ctx.fail(f"softmax over axis {layer.attrs['axis']} has no Caffe layer: Caffe's Softmax is over the channels "
                 "(axis 0)")
    return [CaffeLayer("Softmax")]


register(OpDef(
    name="softmax", family="activation",
    summary="Softmax over one axis: by default the channels (dimension 1 of NCHW); axis=-1 the last axis.",
    example="prob: softmax", args=(
        Arg("axis", "int", 0, "the per-sample axis: 0, the channels; -1, the last axis", positional=False),),
    infer=_softmax_infer,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"F.softmax({args[0]}, {ctx.int(_softmax_dim(layer))})"),
        executor=ExecutorLowering(lower=_softmax_executor, inplace=True),
        onnx=lambda layer, ctx: ctx.node("Softmax", ctx.inputs, axis=_softmax_dim(layer)),
        caffe=_softmax_caffe,
        from_caffe={"Softmax": _softmax_from_caffe},
        from_onnx={"Softmax": _softmax_from_onnx, "Transpose": _softmax_from_transpose},
        kernel=XpKernel(softmax, ("axis",)),
    ),
))


# torch.nn.functional's activations after ReLU --------------------------------------------------

def _onnx_silu(layer: Any, ctx: OnnxExportContext) -> None:
    gate = ctx.node("Sigmoid", ctx.inputs, output=f"{layer.name}.sigmoid")
    ctx.node("Mul", [ctx.inputs[0], gate])


def _onnx_gelu(layer: Any, ctx: OnnxExportContext) -> None:
    """Gelu is native only from opset 20: x * 0.5 * (1 + erf(x / sqrt 2)), or the tanh form."""
    x, name = ctx.inputs[0], layer.name
    if layer.attrs["approximate"] == "tanh":
        cube = ctx.node("Mul", [ctx.node("Mul", [x, x], output=f"{name}.square"), x], output=f"{name}.cube")
        inner = ctx.node("Add", [x, ctx.node("Mul", [cube, ctx.constant(0.044715)], output=f"{name}.cubic")],
                         output=f"{name}.inner")
        scaled = ctx.node("Mul", [inner, ctx.constant(math.sqrt(2 / math.pi))], output=f"{name}.scaled")
        curve = ctx.node("Tanh", [scaled], output=f"{name}.tanh")
    else:
        curve = ctx.node("Erf", [ctx.node("Mul", [x, ctx.constant(math.sqrt(0.5))], output=f"{name}.scaled")],
                         output=f"{name}.erf")
    one_plus = ctx.node("Add", [curve, ctx.constant(1.0)], output=f"{name}.one_plus")
    half = ctx.node("Mul", [one_plus, ctx.constant(0.5)], output=f"{name}.half")
    ctx.node("Mul", [x, half])


def _onnx_softplus(layer: Any, ctx: OnnxExportContext) -> None:
    """Softplus(beta * x) / beta, and x where beta * x > threshold (ONNX Softplus has neither)."""
    a, name, x = layer.attrs, layer.name, ctx.inputs[0]
    scaled = ctx.node("Mul", [x, ctx.constant(a["beta"])], output=f"{name}.scaled") if a["beta"] != 1 else x
    soft = ctx.node("Softplus", [scaled], output=f"{name}.softplus")
    if a["beta"] != 1:
        soft = ctx.node("Div", [soft, ctx.constant(a["beta"])], output=f"{name}.unscaled")
    linear = ctx.node("Greater", [scaled, ctx.constant(a["threshold"])], output=f"{name}.linear")
    ctx.node("Where", [linear, x, soft])


def _onnx_mish(layer: Any, ctx: OnnxExportContext) -> None:
    soft = ctx.node("Softplus", ctx.inputs, output=f"{layer.name}.softplus")
    ctx.node("Mul", [ctx.inputs[0], ctx.node("Tanh", [soft], output=f"{layer.name}.tanh")])


def _gated(node: OnnxNodeView, ctx: OnnxImportContext, gate_type: str) -> tuple[str, Any] | None:
    """``Mul(x, gate(x))`` (either order): ``x`` and the gate node, which only the Mul reads."""
    for x, gate in (node.inputs[:2], node.inputs[1::-1]):
        found = producer_of(ctx, gate, gate_type)
        if found is not None and found.inputs[0] == x:
            return x, found
    return None


def _silu_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Mul(x, Sigmoid(x))`` -> silu (torch and alexdsl export it so at every opset)."""
    found = _gated(node, ctx, "Sigmoid")
    return OnnxImport("silu", [found[0]], absorbed=(found[1],)) if found else None


def _is_hard_gate(node: Any) -> bool:
    """A ``HardSigmoid`` that is torch's hardsigmoid: relu6(x + 3) / 6."""
    return near(node.attr("alpha", 0.2), 1 / 6) and near(node.attr("beta", 0.5), 0.5)


def _hardswish_from_mul(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Mul(x, HardSigmoid(x))`` -> hardswish: torch's export below opset 14, which has no HardSwish."""
    found = _gated(node, ctx, "HardSigmoid")
    return OnnxImport("hardswish", [found[0]], absorbed=(found[1],)) if found and _is_hard_gate(found[1]) else None


def _hardsigmoid_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    if not _is_hard_gate(node):
        return ctx.fail(node, f"HardSigmoid(alpha={node.attr('alpha', 0.2)}, beta={node.attr('beta', 0.5)}) is not "
                              "torch's hardsigmoid (alpha 1/6, beta 1/2)")
    return OnnxImport("hardsigmoid", node.inputs[:1])


def _mish_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Mul(x, Tanh(Softplus(x)))`` -> mish."""
    for x, gate in (node.inputs[:2], node.inputs[1::-1]):
        tanh = producer_of(ctx, gate, "Tanh")
        soft = producer_of(ctx, tanh.inputs[0], "Softplus", tanh) if tanh is not None else None
        if soft is not None and soft.inputs[0] == x:
            return OnnxImport("mish", [x], absorbed=(tanh, soft))
    return None


Factor = tuple[str, Any]  # a computed value and the node reading it


def _product(ctx: OnnxImportContext, value: str, reader: Any) -> tuple[list[Factor], float, list[Any]]:
    """``value`` taken apart as a product: its computed factors, the constant factor, and the ``Mul`` and
    ``Div``-by-a-constant nodes that only the product reads (which the pattern absorbs)."""
    constant = scalar(ctx, value)
    if constant is not None:
        return [], constant, []
    node = ctx.absorb(value, reader)
    if node is not None and node.op_type == "Mul":
        left, a, left_nodes = _product(ctx, node.inputs[0], node)
        right, b, right_nodes = _product(ctx, node.inputs[1], node)
        return left + right, a * b, [node, *left_nodes, *right_nodes]
    divisor = scalar(ctx, node.inputs[1]) if node is not None and node.op_type == "Div" else None
    if divisor:
        factors, a, nodes = _product(ctx, node.inputs[0], node)
        return factors, a / divisor, [node, *nodes]
    return [(value, reader)], 1.0, []


def _plus_one(ctx: OnnxImportContext, value: str, reader: Any) -> tuple[Any, Any] | None:
    """``Add(curve, 1)`` (either order) computing ``value``: the Add and the curve's node."""
    add = producer_of(ctx, value, "Add", reader)
    if add is None:
        return None
    for one, curve in (add.inputs[:2], add.inputs[1::-1]):
        if near(scalar(ctx, one), 1.0):
            node = ctx.absorb(curve, add)
            return (add, node) if node is not None else None
    return None


def _gelu_curve(ctx: OnnxImportContext, x: str, curve: Any) -> tuple[str, list[Any]] | None:
    """``erf(x / sqrt 2)`` or ``tanh(sqrt(2 / pi) * (x + 0.044715 x^3))``: the approximation and the nodes."""
    inner, constant, nodes = _product(ctx, curve.inputs[0], curve)
    if curve.op_type == "Erf" and [v for v, _ in inner] == [x] and near(constant, math.sqrt(0.5)):
        return "none", nodes
    if curve.op_type != "Tanh" or len(inner) != 1 or not near(constant, math.sqrt(2 / math.pi)):
        return None
    add = producer_of(ctx, inner[0][0], "Add", inner[0][1])
    cubic = other_input(add, x) if add is not None else None
    if cubic is None:
        return None
    cube, scale, cube_nodes = _product(ctx, cubic, add)
    if [v for v, _ in cube] != [x, x, x] or not near(scale, 0.044715):
        return None
    return "tanh", [*nodes, add, *cube_nodes]


def _gelu_from_mul(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``x * (1 + curve) * 0.5`` in any grouping of its products (torch's export below opset 20, and
    alexdsl's), the curve erf(x / sqrt 2) or the tanh approximation -> gelu."""
    factors, constant, nodes = [], 1.0, []
    for value in node.inputs[:2]:
        more, c, taken = _product(ctx, value, node)
        factors, constant, nodes = factors + more, constant * c, nodes + taken
    if len(factors) != 2 or not near(constant, 0.5):
        return None
    for (x, _), (shifted, reader) in (factors, factors[::-1]):
        found = _plus_one(ctx, shifted, reader)
        curve = _gelu_curve(ctx, x, found[1]) if found is not None else None
        if curve is not None and ctx.const(x) is None:
            approximate, curve_nodes = curve
            return OnnxImport("gelu", [x], {"approximate": approximate},
                              absorbed=(*nodes, *found, *curve_nodes))
    return None


def _gelu_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport:
    """``Gelu`` (opset 20)."""
    return OnnxImport("gelu", node.inputs[:1], {"approximate": node.attr("approximate", "none")})


def _softplus_from_div(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Div(Softplus(Mul(x, beta)), beta)`` -> softplus(beta): torch's export (which drops the threshold)."""
    found = _scaled_softplus(ctx, node, [])
    return OnnxImport("softplus", [found[0]], {"beta": found[1], "threshold": 20.0}, absorbed=found[3]) \
        if found else None


def _scaled_softplus(ctx: OnnxImportContext, div: Any, also: list[Any],
                     ) -> tuple[str, float, str, tuple[Any, ...]] | None:
    """Of ``Div(Softplus(Mul(x, beta)), beta)``: x, beta, the Mul's output and the nodes before ``div``
    (the Mul may be read by ``also`` too)."""
    beta = scalar(ctx, div.inputs[1])
    soft = producer_of(ctx, div.inputs[0], "Softplus", div)
    mul = ctx.absorb(soft.inputs[0], soft, *also) if soft is not None and beta else None
    if mul is None or mul.op_type != "Mul":
        return None
    for x, factor in (mul.inputs[:2], mul.inputs[1::-1]):
        if near(scalar(ctx, factor), beta) and ctx.const(x) is None:
            return x, f32(beta), mul.outputs[0], (soft, mul)
    return None


def _softplus_from_where(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Where(Greater(beta * x, threshold), x, softplus)``: alexdsl's export of a softplus with its threshold."""
    condition, x, soft = node.inputs
    greater = producer_of(ctx, condition, "Greater")
    threshold = scalar(ctx, greater.inputs[1]) if greater is not None else None
    if threshold is None:
        return None
    plain = producer_of(ctx, soft, "Softplus")
    if plain is not None and plain.inputs[0] == x == greater.inputs[0]:
        return OnnxImport("softplus", [x], {"beta": 1.0, "threshold": f32(threshold)}, absorbed=(greater, plain))
    div = producer_of(ctx, soft, "Div")
    found = _scaled_softplus(ctx, div, [greater]) if div is not None else None
    if found is None or found[0] != x or found[2] != greater.inputs[0]:
        return None
    return OnnxImport("softplus", [x], {"beta": found[1], "threshold": f32(threshold)},
                      absorbed=(greater, div, *found[3]))


def _activation(name: str, summary: str, example: str, forward: Any, kernel: XpKernel, onnx: Any,
                epilogue: str | None = None, args: tuple[Arg, ...] = (), caffe: Any = None,
                from_caffe: dict[str, Any] | None = None, from_onnx: dict[str, Any] | None = None,
                onnx_elementwise: tuple[str, ...] = ()) -> None:
    """Register an elementwise activation: its torch ``forward`` (a :class:`TorchCall`'s), its xp ``kernel`` (the
    executor's and the reference), and the ``epilogue`` name under which a producer applies it, if any."""
    register(OpDef(
        name=name, family="activation", summary=summary, example=example, args=args, infer=_same,
        pattern=Pattern.ELEMWISE,
        lower=Lowerings(torch=TorchLowering(forward=forward), executor=_xp_call(kernel, epilogue), onnx=onnx,
                        caffe=caffe, from_caffe=from_caffe or {}, kernel=kernel, from_onnx=from_onnx or {},
                        onnx_elementwise=onnx_elementwise),
    ))


_activation(
    "relu6", "min(max(x, 0), 6): MobileNet's clipped ReLU (no Caffe layer).", "r: relu6",
    TorchCall("F.relu6", inplace=True).forward, XpKernel(relu6, compiled=True),
    lambda layer, ctx: ctx.node("Clip", [ctx.inputs[0], ctx.constant(0.0), ctx.constant(6.0)]), epilogue="relu6",
    from_onnx={"Clip": _clip_from_onnx("relu6")}, onnx_elementwise=("Clip",),
)


def _infer_hardtanh(attrs: Attrs, inputs: list[Shape]) -> Shape:
    if attrs["min"] >= attrs["max"]:
        raise ShapeError(f"hardtanh needs min < max, got min={attrs['min']:g} and max={attrs['max']:g}", arg="max",
                         expected=f"max greater than {attrs['min']:g}", received=f"max={attrs['max']:g}")
    return inputs[0]


_HARDTANH = TorchCall("F.hardtanh", ("min", "max"))
_HARDTANH_KERNEL = XpKernel(hardtanh, ("min", "max"))

register(OpDef(
    name="hardtanh", family="activation", summary="x clipped to [min, max] (no Caffe layer).",
    example="h: hardtanh(-1, 1)",
    args=(Arg("min", "float", -1.0, "lower bound"), Arg("max", "float", 1.0, "upper bound")),
    infer=_infer_hardtanh, pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(forward=_HARDTANH.forward),
        executor=_xp_call(_HARDTANH_KERNEL),
        onnx=lambda layer, ctx: ctx.node("Clip", [ctx.inputs[0], ctx.constant(layer.attrs["min"]),
                                                  ctx.constant(layer.attrs["max"])]),
        from_onnx={"Clip": _clip_from_onnx("hardtanh")},
        onnx_elementwise=("Clip",),
        kernel=_HARDTANH_KERNEL,
    ),
))

_activation(
    "hardswish", "x * relu6(x + 3) / 6: MobileNetV3's activation (no Caffe layer).", "h: hardswish",
    TorchCall("F.hardswish", inplace=True).forward, XpKernel(hardswish, compiled=True),
    lambda layer, ctx: ctx.node("HardSwish", ctx.inputs), epilogue="hardswish",
    from_onnx={"HardSwish": unary("hardswish"), "Mul": _hardswish_from_mul},
    onnx_elementwise=("HardSwish", "HardSigmoid", "Mul"),
)

_activation(
    "hardsigmoid", "relu6(x + 3) / 6: MobileNetV3's gate (no Caffe layer).", "g: hardsigmoid",
    TorchCall("F.hardsigmoid", inplace=True).forward, XpKernel(hardsigmoid, compiled=True),
    lambda layer, ctx: ctx.node("HardSigmoid", ctx.inputs, alpha=1 / 6, beta=0.5), epilogue="hardsigmoid",
    from_onnx={"HardSigmoid": _hardsigmoid_from_onnx}, onnx_elementwise=("HardSigmoid",),
)


def _swish_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], None] | None:
    beta = ctx.section(layer, "swish_param").scalar("beta")
    if beta is not None and beta.value != 1:
        ctx.error("Swish with beta other than 1 is not supported (silu is x * sigmoid(x))", beta.span,
                  expected="beta: 1")
        return None
    return "silu", [], None


_activation(
    "silu", "x * sigmoid(x) (swish): EfficientNet's activation (Caffe Swish).", "s: silu",
    TorchCall("F.silu", inplace=True).forward, XpKernel(silu, compiled=True), _onnx_silu, epilogue="silu",
    caffe=lambda layer, ctx: [CaffeLayer("Swish")], from_caffe={"Swish": _swish_from_caffe},
    from_onnx={"Mul": _silu_from_onnx}, onnx_elementwise=("Sigmoid", "Mul"),
)


def _gelu_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    return f"F.gelu({args[0]}, approximate='tanh')" if layer.attrs["approximate"] == "tanh" else f"F.gelu({args[0]})"


_activation(
    "gelu", "Gaussian error linear unit x * Phi(x), or its tanh approximation (no Caffe layer).",
    "g: gelu(approximate=none)", _gelu_torch, XpKernel(gelu, ("approximate",), compiled=True), _onnx_gelu,
    args=(Arg("approximate", "choice", "none", "none (erf), or tanh", choices=("none", "tanh")),),
    from_onnx={"Gelu": _gelu_from_onnx, "Mul": _gelu_from_mul},
    onnx_elementwise=("Gelu", "Erf", "Tanh", "Add", "Mul", "Div"),
)


def _elu_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], None]:
    alpha = ctx.section(layer, "elu_param").scalar("alpha")
    return "elu", [ctx.literal(alpha)] if alpha is not None else [], None


_activation(
    "elu", "x if x > 0 else alpha * (exp(x) - 1) (Caffe ELU).", "e: elu(1.0)",
    TorchCall("F.elu", ("alpha",)).forward, XpKernel(elu, ("alpha",)),
    lambda layer, ctx: ctx.node("Elu", ctx.inputs, alpha=float(layer.attrs["alpha"])),
    args=(Arg("alpha", "float", 1.0, "the negative saturation value", min=0),),
    caffe=lambda layer, ctx: [CaffeLayer("ELU", "elu_param", (f"alpha: {ctx.number(layer.attrs['alpha'])}",))],
    from_caffe={"ELU": _elu_from_caffe},
    from_onnx={"Elu": lambda node, ctx: OnnxImport("elu", node.inputs[:1], {"alpha": f32(node.attr("alpha", 1.0))})},
    onnx_elementwise=("Elu",),
)


def _softplus_caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
    if layer.attrs["beta"] != 1 or layer.attrs["threshold"] < 20:
        ctx.fail("Caffe's BNLL is softplus with beta=1; this softplus has no Caffe layer")
    return [CaffeLayer("BNLL")]


_activation(
    "softplus", "log(1 + exp(beta * x)) / beta, linear above threshold (Caffe BNLL when beta=1).",
    "sp: softplus(beta=1, threshold=20)",
    TorchCall("F.softplus", ("beta", "threshold")).forward, XpKernel(softplus, ("beta", "threshold")), _onnx_softplus,
    args=(Arg("beta", "float", 1.0, "sharpness", min=1e-6),
          Arg("threshold", "float", 20.0, "beta * x above which the output is x")),
    caffe=_softplus_caffe, from_caffe={"BNLL": lambda layer, name, ctx: ("softplus", [], None)},
    from_onnx={"Softplus": lambda node, ctx: OnnxImport("softplus", node.inputs[:1], {"beta": 1.0, "threshold": 20.0}),
               "Div": _softplus_from_div, "Where": _softplus_from_where},
    onnx_elementwise=("Softplus", "Mul", "Div"),
)

_activation(
    "mish", "x * tanh(softplus(x)) (no Caffe layer).", "m: mish",
    TorchCall("F.mish", inplace=True).forward, XpKernel(mish), _onnx_mish, epilogue="mish",
    from_onnx={"Mul": _mish_from_onnx}, onnx_elementwise=("Softplus", "Tanh", "Mul"),
)


# prelu: a learned slope ----------------------------------------------------------------------

def _prelu_params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    return {"weight": (1 if attrs["shared"] else inputs[0][0],)}


def _prelu_module(layer: Any, ctx: TorchContext) -> str:
    return f"nn.PReLU({ctx.int(layer.params['weight'].shape[0])})"


_PRELU_KERNEL = XpKernel(prelu, params=("weight",))


def _prelu_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    return ExecutorKernel(f"rt.{_PRELU_KERNEL.name}({ctx.inputs[0]}, self.{ctx.ident}_w, out={{out}})",
                          _PRELU_KERNEL.name,
                          setup=(f"self.{ctx.ident}_w = {ctx.weight(layer, 'weight')}",))


def _prelu_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    slope = ctx.initializer(layer, "weight")
    rank = len(ctx.input_shape(layer, 0))
    if rank > 1:  # (C,) -> (C, 1, 1), broadcast along the channels of NCHW
        shape = ctx.constant([layer.params["weight"].shape[0], *[1] * (rank - 1)], integer=True)
        slope = ctx.node("Reshape", [slope, shape], output=f"{layer.name}.slope")
    ctx.node("PRelu", [ctx.inputs[0], slope])


def _prelu_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``PRelu(x, slope)`` with a constant slope per channel -> prelu; one slope for every channel -> shared."""
    slope, shape = ctx.const(node.inputs[1]), ctx.shape(node.inputs[0])
    weight = per_channel(ctx, node.inputs[1], shape) if shape else None
    if slope is None or weight is None:
        return ctx.fail(node, "only a PRelu with a constant slope per channel, or one for all, is imported")
    shared = slope.size == 1 and shape[0] != 1
    source = node.inputs[1] if slope.shape == (len(weight),) and not shared else weight[:1] if shared else weight
    return OnnxImport("prelu", node.inputs[:1], {"shared": shared}, {"weight": source})


def _prelu_caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
    body = ["channel_shared: true"] if layer.attrs["shared"] else []
    return [CaffeLayer("PReLU", "prelu_param", (*body, *ctx.filler("filler", layer.params["weight"].filler)),
                       ("weight",))]


def _prelu_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], str]:
    shared = ctx.is_true(ctx.section(layer, "prelu_param").scalar("channel_shared"))
    return "prelu", [ctx.arg(True, "shared")] if shared else [], "prelu_param"


register(OpDef(
    name="prelu", family="activation",
    summary="x if x > 0 else a * x with a learned slope a per channel, or one shared (Caffe PReLU).",
    example="p: prelu(shared=false)",
    args=(Arg("shared", "bool", False, "one slope for every channel instead of one per channel"),),
    infer=_same, params=_prelu_params, default_fillers={"weight": Filler("constant", (("value", 0.25),))},
    pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(module=_prelu_module),
        executor=ExecutorLowering(lower=_prelu_executor, inplace=True),
        onnx=_prelu_onnx,
        caffe=_prelu_caffe,
        from_caffe={"PReLU": _prelu_from_caffe},
        from_onnx={"PRelu": _prelu_from_onnx},
        kernel=_PRELU_KERNEL,
    ),
))
