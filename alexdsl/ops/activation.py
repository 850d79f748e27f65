"""Elementwise activations and softmax.

Named and defaulted as in ``torch.nn.functional``. The parameterless ones in
:data:`EPILOGUES` (and relu) run in the epilogue of a conv, fc or arithmetic op before them
in the NumPy/CuPy executor: ``relu=True``, or ``act=rt.<name>`` for the others.
"""

from __future__ import annotations

import math
from typing import Any

from alexdsl.ops.from_onnx import f32, unary
from alexdsl.ops.lowering import (
    CaffeLayer,
    ExecutorKernel,
    ExecutorLowering,
    Lowerings,
    OnnxImport,
    Pattern,
    TorchLowering,
)
from alexdsl.ops.registry import Arg, Attrs, Filler, OpDef, Shape, ShapeError, register


def _same(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return inputs[0]


EPILOGUES = ("relu", "relu6", "hardswish", "hardsigmoid", "silu", "mish", "sigmoid", "tanh")
"""The activations a producer with ``epilogues=EPILOGUES`` applies in its epilogue."""


def epilogue_args(epilogue: str | None) -> str:
    """A producer's epilogue arguments for the runtime: ``relu=True``/``relu=False``, or ``act=rt.<kernel>``."""
    if epilogue is None or epilogue == "relu":
        return f"relu={epilogue == 'relu'}"
    return f"relu=False, act=rt.{epilogue}"


def _relu_forward(layer: Any, args: list[str], ctx: Any) -> str:
    return f"F.relu({args[0]}, inplace=True)" if ctx.may_run_inplace(layer) else f"F.relu({args[0]})"


def _inplace_forward(function: str) -> Any:
    """``F.<function>(x, inplace=True)`` where the layer may overwrite its input, else ``F.<function>(x)``."""
    return lambda layer, args, ctx: f"F.{function}({args[0]}, inplace=True)" if ctx.may_run_inplace(layer) \
        else f"F.{function}({args[0]})"


def _runtime_call(function: str, epilogue: str | None = None) -> ExecutorLowering:
    """An in-place elementwise runtime kernel ``rt.<function>(x, out=...)``."""
    return ExecutorLowering(lower=lambda layer, ctx: ExecutorKernel(f"rt.{function}({ctx.inputs[0]}, out={{out}})",
                                                                    function), inplace=True, epilogue=epilogue)


def _relu_from_caffe(layer: Any, name: str, ctx: Any) -> tuple[str, list[Any], None]:
    p = layer.message("relu_param")
    slope = p.scalar("negative_slope") if p is not None else None
    if slope is not None and slope.value != 0:
        return "leaky_relu", [ctx.literal(slope)], None
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
        from_onnx={"Relu": unary("relu")},
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
        from_onnx={"LeakyRelu": lambda node, ctx: OnnxImport("leaky_relu", node.inputs[:1],
                                                             {"slope": f32(node.attr("alpha", 0.01))})},
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
        executor=_runtime_call("sigmoid", epilogue="sigmoid"),
        onnx=lambda layer, ctx: ctx.node("Sigmoid", ctx.inputs),
        caffe=lambda layer, ctx: [CaffeLayer("Sigmoid")],
        from_caffe={"Sigmoid": lambda layer, name, ctx: ("sigmoid", [], None)},
        from_onnx={"Sigmoid": unary("sigmoid")},
        reference=lambda layer, xs, w, F: xs[0].sigmoid(),
    ),
))

register(OpDef(
    name="tanh", family="activation", summary="Hyperbolic tangent, elementwise.", example="t: tanh",
    args=(), infer=_same, pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"torch.tanh({args[0]})"),
        executor=_runtime_call("tanh", epilogue="tanh"),
        onnx=lambda layer, ctx: ctx.node("Tanh", ctx.inputs),
        caffe=lambda layer, ctx: [CaffeLayer("TanH")],
        from_caffe={"TanH": lambda layer, name, ctx: ("tanh", [], None)},
        from_onnx={"Tanh": unary("tanh")},
        reference=lambda layer, xs, w, F: xs[0].tanh(),
    ),
))

def _softmax_from_caffe(layer: Any, name: str, ctx: Any) -> tuple[str, list[Any], None]:
    axis = ctx.section(layer, "softmax_param").scalar("axis")
    if axis is not None and axis.value != 1:
        ctx.error("softmax along an axis other than channels (1) is not supported", axis.span)
    return "softmax", [], None


def _softmax_from_onnx(node: Any, ctx: Any) -> OnnxImport | None:
    """``Softmax`` over the channels: axis 1 (before opset 13, axis 1 of a flat input only)."""
    shape = ctx.shape(node.inputs[0])
    rank = len(shape) + 1 if shape is not None else 0
    axis = int(node.attr("axis", 1 if ctx.opset < 13 else -1))
    if axis < 0:
        axis += rank
    if axis != 1 or (ctx.opset < 13 and rank != 2):
        return ctx.fail(node, f"a softmax over axis {node.attr('axis')} is not over the channels (axis 1)")
    return OnnxImport("softmax", node.inputs[:1])


register(OpDef(
    name="softmax", family="activation", summary="Softmax over channels (dimension 1 of NCHW).",
    example="prob: softmax", args=(), infer=_same,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"F.softmax({args[0]}, 1)"),
        executor=_runtime_call("softmax"),
        onnx=lambda layer, ctx: ctx.node("Softmax", ctx.inputs, axis=1),
        caffe=lambda layer, ctx: [CaffeLayer("Softmax")],
        from_caffe={"Softmax": _softmax_from_caffe},
        from_onnx={"Softmax": _softmax_from_onnx},
        reference=lambda layer, xs, w, F: F.softmax(xs[0], dim=1),
    ),
))


# torch.nn.functional's activations after ReLU --------------------------------------------------

def _onnx_silu(layer: Any, ctx: Any) -> None:
    gate = ctx.node("Sigmoid", ctx.inputs, output=f"{layer.name}.sigmoid")
    ctx.node("Mul", [ctx.inputs[0], gate])


def _onnx_gelu(layer: Any, ctx: Any) -> None:
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


def _onnx_softplus(layer: Any, ctx: Any) -> None:
    """Softplus(beta * x) / beta, and x where beta * x > threshold (ONNX Softplus has neither)."""
    a, name, x = layer.attrs, layer.name, ctx.inputs[0]
    scaled = ctx.node("Mul", [x, ctx.constant(a["beta"])], output=f"{name}.scaled") if a["beta"] != 1 else x
    soft = ctx.node("Softplus", [scaled], output=f"{name}.softplus")
    if a["beta"] != 1:
        soft = ctx.node("Div", [soft, ctx.constant(a["beta"])], output=f"{name}.unscaled")
    linear = ctx.node("Greater", [scaled, ctx.constant(a["threshold"])], output=f"{name}.linear")
    ctx.node("Where", [linear, x, soft])


def _onnx_mish(layer: Any, ctx: Any) -> None:
    soft = ctx.node("Softplus", ctx.inputs, output=f"{layer.name}.softplus")
    ctx.node("Mul", [ctx.inputs[0], ctx.node("Tanh", [soft], output=f"{layer.name}.tanh")])


def _xp_call(function: str, *args: str, epilogue: str | None = None) -> ExecutorLowering:
    """An in-place runtime kernel ``rt.<function>(x, <args from attrs>, out=...)``."""
    def lower(layer: Any, ctx: Any) -> ExecutorKernel:
        values = "".join(f", {ctx.lit(layer.attrs[a])}" for a in args)
        return ExecutorKernel(f"rt.{function}({ctx.inputs[0]}{values}, out={{out}})", function)

    return ExecutorLowering(lower=lower, inplace=True, epilogue=epilogue)


def _activation(name: str, summary: str, example: str, torch: Any, executor: ExecutorLowering, onnx: Any,
                reference: Any, args: tuple[Arg, ...] = (), caffe: Any = None,
                from_caffe: dict[str, Any] | None = None) -> None:
    register(OpDef(
        name=name, family="activation", summary=summary, example=example, args=args, infer=_same,
        pattern=Pattern.ELEMWISE,
        lower=Lowerings(torch=TorchLowering(forward=torch), executor=executor, onnx=onnx, caffe=caffe,
                        from_caffe=from_caffe or {}, reference=reference),
    ))


_activation(
    "relu6", "min(max(x, 0), 6): MobileNet's clipped ReLU (no Caffe layer).", "r: relu6",
    _inplace_forward("relu6"), _xp_call("relu6", epilogue="relu6"),
    lambda layer, ctx: ctx.node("Clip", [ctx.inputs[0], ctx.constant(0.0), ctx.constant(6.0)]),
    lambda layer, xs, w, F: F.relu6(xs[0]),
)


def _infer_hardtanh(attrs: Attrs, inputs: list[Shape]) -> Shape:
    if attrs["min"] >= attrs["max"]:
        raise ShapeError(f"hardtanh needs min < max, got min={attrs['min']:g} and max={attrs['max']:g}", arg="max",
                         expected=f"max greater than {attrs['min']:g}", received=f"max={attrs['max']:g}")
    return inputs[0]


register(OpDef(
    name="hardtanh", family="activation", summary="x clipped to [min, max] (no Caffe layer).",
    example="h: hardtanh(-1, 1)",
    args=(Arg("min", "float", -1.0, "lower bound"), Arg("max", "float", 1.0, "upper bound")),
    infer=_infer_hardtanh, pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: (
            f"F.hardtanh({args[0]}, {ctx.float(layer.attrs['min'])}, {ctx.float(layer.attrs['max'])})")),
        executor=_xp_call("hardtanh", "min", "max"),
        onnx=lambda layer, ctx: ctx.node("Clip", [ctx.inputs[0], ctx.constant(layer.attrs["min"]),
                                                  ctx.constant(layer.attrs["max"])]),
        reference=lambda layer, xs, w, F: F.hardtanh(xs[0], layer.attrs["min"], layer.attrs["max"]),
    ),
))

_activation(
    "hardswish", "x * relu6(x + 3) / 6: MobileNetV3's activation (no Caffe layer).", "h: hardswish",
    _inplace_forward("hardswish"), _xp_call("hardswish", epilogue="hardswish"),
    lambda layer, ctx: ctx.node("HardSwish", ctx.inputs),
    lambda layer, xs, w, F: F.hardswish(xs[0]),
)

_activation(
    "hardsigmoid", "relu6(x + 3) / 6: MobileNetV3's gate (no Caffe layer).", "g: hardsigmoid",
    _inplace_forward("hardsigmoid"), _xp_call("hardsigmoid", epilogue="hardsigmoid"),
    lambda layer, ctx: ctx.node("HardSigmoid", ctx.inputs, alpha=1 / 6, beta=0.5),
    lambda layer, xs, w, F: F.hardsigmoid(xs[0]),
)


def _swish_from_caffe(layer: Any, name: str, ctx: Any) -> tuple[str, list[Any], None] | None:
    beta = ctx.section(layer, "swish_param").scalar("beta")
    if beta is not None and beta.value != 1:
        ctx.error("Swish with beta other than 1 is not supported (silu is x * sigmoid(x))", beta.span,
                  expected="beta: 1")
        return None
    return "silu", [], None


_activation(
    "silu", "x * sigmoid(x) (swish): EfficientNet's activation (Caffe Swish).", "s: silu",
    _inplace_forward("silu"), _xp_call("silu", epilogue="silu"), _onnx_silu,
    lambda layer, xs, w, F: F.silu(xs[0]),
    caffe=lambda layer, ctx: [CaffeLayer("Swish")], from_caffe={"Swish": _swish_from_caffe},
)


def _gelu_torch(layer: Any, args: list[str], ctx: Any) -> str:
    return f"F.gelu({args[0]}, approximate='tanh')" if layer.attrs["approximate"] == "tanh" else f"F.gelu({args[0]})"


_activation(
    "gelu", "Gaussian error linear unit x * Phi(x), or its tanh approximation (no Caffe layer).",
    "g: gelu(approximate=none)", _gelu_torch, _xp_call("gelu", "approximate"), _onnx_gelu,
    lambda layer, xs, w, F: F.gelu(xs[0], approximate=layer.attrs["approximate"]),
    args=(Arg("approximate", "choice", "none", "none (erf), or tanh", choices=("none", "tanh")),),
)


def _elu_from_caffe(layer: Any, name: str, ctx: Any) -> tuple[str, list[Any], None]:
    alpha = ctx.section(layer, "elu_param").scalar("alpha")
    return "elu", [ctx.literal(alpha)] if alpha is not None else [], None


_activation(
    "elu", "x if x > 0 else alpha * (exp(x) - 1) (Caffe ELU).", "e: elu(1.0)",
    lambda layer, args, ctx: f"F.elu({args[0]}, {ctx.float(layer.attrs['alpha'])})", _xp_call("elu", "alpha"),
    lambda layer, ctx: ctx.node("Elu", ctx.inputs, alpha=float(layer.attrs["alpha"])),
    lambda layer, xs, w, F: F.elu(xs[0], layer.attrs["alpha"]),
    args=(Arg("alpha", "float", 1.0, "the negative saturation value", min=0),),
    caffe=lambda layer, ctx: [CaffeLayer("ELU", "elu_param", (f"alpha: {ctx.number(layer.attrs['alpha'])}",))],
    from_caffe={"ELU": _elu_from_caffe},
)


def _softplus_caffe(layer: Any, ctx: Any) -> list[CaffeLayer]:
    if layer.attrs["beta"] != 1 or layer.attrs["threshold"] < 20:
        ctx.fail("Caffe's BNLL is softplus with beta=1; this softplus has no Caffe layer")
    return [CaffeLayer("BNLL")]


_activation(
    "softplus", "log(1 + exp(beta * x)) / beta, linear above threshold (Caffe BNLL when beta=1).",
    "sp: softplus(beta=1, threshold=20)",
    lambda layer, args, ctx: (f"F.softplus({args[0]}, {ctx.float(layer.attrs['beta'])}, "
                              f"{ctx.float(layer.attrs['threshold'])})"),
    _xp_call("softplus", "beta", "threshold"), _onnx_softplus,
    lambda layer, xs, w, F: F.softplus(xs[0], layer.attrs["beta"], layer.attrs["threshold"]),
    args=(Arg("beta", "float", 1.0, "sharpness", min=1e-6),
          Arg("threshold", "float", 20.0, "beta * x above which the output is x")),
    caffe=_softplus_caffe, from_caffe={"BNLL": lambda layer, name, ctx: ("softplus", [], None)},
)

_activation(
    "mish", "x * tanh(softplus(x)) (no Caffe layer).", "m: mish",
    _inplace_forward("mish"), _xp_call("mish", epilogue="mish"), _onnx_mish,
    lambda layer, xs, w, F: F.mish(xs[0]),
)


# prelu: a learned slope ----------------------------------------------------------------------

def _prelu_params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    return {"weight": (1 if attrs["shared"] else inputs[0][0],)}


def _prelu_module(layer: Any, ctx: Any) -> str:
    return f"nn.PReLU({ctx.int(layer.params['weight'].shape[0])})"


def _prelu_executor(layer: Any, ctx: Any) -> ExecutorKernel:
    return ExecutorKernel(f"rt.prelu({ctx.inputs[0]}, self.{ctx.ident}_w, out={{out}})", "prelu",
                          setup=(f"self.{ctx.ident}_w = {ctx.weight(layer, 'weight')}",))


def _prelu_onnx(layer: Any, ctx: Any) -> None:
    slope = ctx.initializer(layer, "weight")
    rank = len(ctx.input_shape(layer, 0))
    if rank > 1:  # (C,) -> (C, 1, 1), broadcast along the channels of NCHW
        shape = ctx.constant([layer.params["weight"].shape[0], *[1] * (rank - 1)], integer=True)
        slope = ctx.node("Reshape", [slope, shape], output=f"{layer.name}.slope")
    ctx.node("PRelu", [ctx.inputs[0], slope])


def _prelu_caffe(layer: Any, ctx: Any) -> list[CaffeLayer]:
    body = ["channel_shared: true"] if layer.attrs["shared"] else []
    return [CaffeLayer("PReLU", "prelu_param", (*body, *ctx.filler("filler", layer.params["weight"].filler)),
                       ("weight",))]


def _prelu_from_caffe(layer: Any, name: str, ctx: Any) -> tuple[str, list[Any], str]:
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
        reference=lambda layer, xs, w, F: F.prelu(xs[0], w["weight"]),
    ),
))
