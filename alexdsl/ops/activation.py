"""Elementwise activations and softmax."""

from __future__ import annotations

from typing import Any

from alexdsl.ops.lowering import CaffeLayer, ExecutorKernel, ExecutorLowering, Lowerings, Pattern, TorchLowering
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, register


def _same(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return inputs[0]


def _relu_forward(layer: Any, args: list[str], ctx: Any) -> str:
    return f"F.relu({args[0]}, inplace=True)" if ctx.may_run_inplace(layer) else f"F.relu({args[0]})"


def _runtime_call(function: str, epilogue: str | None = None) -> ExecutorLowering:
    """An in-place elementwise runtime kernel ``rt.<function>(x, out=...)``."""
    return ExecutorLowering(lower=lambda layer, ctx: ExecutorKernel(f"rt.{function}({ctx.inputs[0]}, out={{out}})",
                                                                    function), inplace=True, epilogue=epilogue)


def _relu_from_caffe(layer: Any, name: str, ctx: Any) -> tuple[str, list[str], None]:
    p = layer.message("relu_param")
    slope = p.scalar("negative_slope") if p is not None else None
    if slope is not None and slope.value != 0:
        return "leaky_relu", [slope.text], None
    return "relu", [], None


register(OpDef(
    name="relu", family="activation", summary="Rectified linear unit: max(x, 0).", example="r: relu",
    args=(), infer=_same, pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(forward=_relu_forward),
        executor=_runtime_call("relu", epilogue="relu"),
        onnx=lambda layer, ctx: ctx.node("Relu", ctx.inputs),
        caffe=lambda layer, ctx: [CaffeLayer("ReLU")],
        from_caffe={"ReLU": _relu_from_caffe},
        reference=lambda layer, xs, w, F: F.relu(xs[0]),
    ),
))

register(OpDef(
    name="leaky_relu", family="activation", summary="x if x > 0 else slope * x.",
    example="r: leaky_relu(0.1)", args=(Arg("slope", "float", 0.01, "negative slope"),), infer=_same,
    pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(
            forward=lambda layer, args, ctx: f"F.leaky_relu({args[0]}, {ctx.float(layer.attrs['slope'])})"),
        executor=ExecutorLowering(
            lower=lambda layer, ctx: ExecutorKernel(
                f"rt.leaky_relu({ctx.inputs[0]}, {ctx.lit(float(layer.attrs['slope']))}, out={{out}})", "leaky_relu"),
            inplace=True),
        onnx=lambda layer, ctx: ctx.node("LeakyRelu", ctx.inputs, alpha=float(layer.attrs["slope"])),
        caffe=lambda layer, ctx: [
            CaffeLayer("ReLU", "relu_param", (f"negative_slope: {ctx.number(layer.attrs['slope'])}",))],
        reference=lambda layer, xs, w, F: F.leaky_relu(xs[0], layer.attrs["slope"]),
    ),
))

register(OpDef(
    name="sigmoid", family="activation", summary="1 / (1 + exp(-x)).", example="s: sigmoid",
    args=(), infer=_same, pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"torch.sigmoid({args[0]})"),
        executor=_runtime_call("sigmoid"),
        onnx=lambda layer, ctx: ctx.node("Sigmoid", ctx.inputs),
        caffe=lambda layer, ctx: [CaffeLayer("Sigmoid")],
        from_caffe={"Sigmoid": lambda layer, name, ctx: ("sigmoid", [], None)},
        reference=lambda layer, xs, w, F: xs[0].sigmoid(),
    ),
))

register(OpDef(
    name="tanh", family="activation", summary="Hyperbolic tangent, elementwise.", example="t: tanh",
    args=(), infer=_same, pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"torch.tanh({args[0]})"),
        executor=_runtime_call("tanh"),
        onnx=lambda layer, ctx: ctx.node("Tanh", ctx.inputs),
        caffe=lambda layer, ctx: [CaffeLayer("TanH")],
        from_caffe={"TanH": lambda layer, name, ctx: ("tanh", [], None)},
        reference=lambda layer, xs, w, F: xs[0].tanh(),
    ),
))

def _softmax_from_caffe(layer: Any, name: str, ctx: Any) -> tuple[str, list[str], None]:
    axis = ctx.section(layer, "softmax_param").scalar("axis")
    if axis is not None and axis.value != 1:
        ctx.error("softmax along an axis other than channels (1) is not supported", axis.span)
    return "softmax", [], None


register(OpDef(
    name="softmax", family="activation", summary="Softmax over channels (dimension 1 of NCHW).",
    example="prob: softmax", args=(), infer=_same,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"F.softmax({args[0]}, 1)"),
        executor=_runtime_call("softmax"),
        onnx=lambda layer, ctx: ctx.node("Softmax", ctx.inputs, axis=1),
        caffe=lambda layer, ctx: [CaffeLayer("Softmax")],
        from_caffe={"Softmax": _softmax_from_caffe},
        reference=lambda layer, xs, w, F: F.softmax(xs[0], dim=1),
    ),
))
