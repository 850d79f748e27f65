"""A plugin op with weights: Dynamic Tanh, ``weight * tanh(alpha * x) + bias``.

DyT (Zhu, Chen, He, LeCun and Liu, "Transformers without Normalization", 2025) stands where a
LayerNorm would: a learned scalar ``alpha`` (initially 0.5), then a learned per-channel factor
``weight`` (1) and shift ``bias`` (0). Load it with ``alexdsl --plugin examples/plugins/dyt.py
COMMAND ...``, with ``ALEXDSL_PLUGINS``, or from an installed package's ``alexdsl.ops`` entry
point; then write ``| dyt`` in a network, or ``| dyt(alpha=constant(1.0))`` for another initial
alpha. docs/extending.md walks through what an op with parameters declares.
"""

from __future__ import annotations

from typing import Any

from alexdsl.ops.fillers import Filler
from alexdsl.ops.from_onnx import per_channel, producer_of
from alexdsl.ops.lowering import ExecutorKernel, ExecutorLowering, Lowerings, OnnxImport, Pattern, TorchLowering
from alexdsl.ops.registry import Attrs, OpDef, Shape, ShapeError, format_shape, register


def _infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    if len(x) not in (1, 3):
        raise ShapeError("expects a vector (C) or CxHxW input", expected="C or CxHxW", received=format_shape(x))
    return x


def _params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    """The parameters' shapes; their keys are ``<layer>.alpha``, ``<layer>.weight`` and ``<layer>.bias``."""
    channels = inputs[0][0]
    return {"alpha": (1,), "weight": (channels,), "bias": (channels,)}


def _macs(attrs: Attrs, inputs: list[Shape], output: Shape) -> int:
    """Two multiplies per element (alpha and weight); the tanh and the shift are not multiply-accumulates."""
    size = 1
    for extent in output:
        size *= extent
    return 2 * size


# PyTorch: an nn.ParameterDict keeps the parameter names as state_dict keys (``norm.alpha``).

def _torch_module(layer: Any, ctx: Any) -> str:
    entries = ", ".join(f"{name!r}: nn.Parameter(torch.empty({', '.join(map(ctx.int, spec.shape))}))"
                        for name, spec in layer.params.items())
    return f"nn.ParameterDict({{{entries}}})"


def _torch_forward(layer: Any, args: list[str], ctx: Any) -> str:
    module = ctx.module(layer)
    view = ".view(-1, 1, 1)" if len(layer.shape) == 3 else ""
    return f"{module}.weight{view} * torch.tanh({module}.alpha * {args[0]}) + {module}.bias{view}"


# The NumPy/CuPy executor: setup lines bind the weights once, the step passes them to the function.

def _executor_function(x: Any, alpha: Any, weight: Any, bias: Any, *, out: Any = None) -> Any:
    """NumPy or CuPy (``x`` decides which); ``weight`` and ``bias`` come shaped to broadcast over ``x``."""
    from alexdsl.backends.executor.runtime import array_module

    xp = array_module(x)
    out = xp.multiply(x, alpha, out=out)
    xp.tanh(out, out=out)
    out *= weight
    out += bias
    return out


def _executor(layer: Any, ctx: Any) -> ExecutorKernel:
    ident, shape = ctx.ident, ctx.lit((-1, 1, 1) if len(layer.shape) == 3 else (-1,))
    return ExecutorKernel(
        code=f"self.{ident}_fn({ctx.inputs[0]}, self.{ident}_alpha, self.{ident}_w, self.{ident}_b, out={{out}})",
        kernel="dyt",
        setup=(f"self.{ident}_fn = rt.op_function('dyt')",
               f"self.{ident}_alpha = {ctx.weight(layer, 'alpha')}",
               f"self.{ident}_w = {ctx.weight(layer, 'weight')}.reshape({shape})",
               f"self.{ident}_b = {ctx.weight(layer, 'bias')}.reshape({shape})"),
    )


# ONNX: Add(Mul(Tanh(Mul(x, alpha)), weight), bias), the weights as initializers; and back.

def _onnx(layer: Any, ctx: Any) -> None:
    weight, bias = ctx.initializer(layer, "weight"), ctx.initializer(layer, "bias")
    if len(layer.shape) == 3:  # (C,) -> (C, 1, 1), along the channels of NCHW
        shape = ctx.constant([layer.shape[0], 1, 1], integer=True)
        weight = ctx.node("Reshape", [weight, shape], output=f"{layer.name}.weight_c11")
        bias = ctx.node("Reshape", [bias, shape], output=f"{layer.name}.bias_c11")
    scaled = ctx.node("Mul", [ctx.inputs[0], ctx.initializer(layer, "alpha")], output=f"{layer.name}.scaled")
    bent = ctx.node("Tanh", [scaled], output=f"{layer.name}.tanh")
    ctx.node("Add", [ctx.node("Mul", [bent, weight], output=f"{layer.name}.weighted"), bias])


def _from_onnx(node: Any, ctx: Any) -> OnnxImport | None:
    """``Add(Mul(Tanh(Mul(x, alpha)), weight), bias)`` with constant weights (the export above) -> dyt."""
    for value, bias in (node.inputs[:2], node.inputs[1::-1]):
        shape = ctx.shape(value)
        weighted = producer_of(ctx, value, "Mul")
        shift = per_channel(ctx, bias, shape) if shape else None
        if weighted is None or shift is None:
            continue
        for bent, weight in (weighted.inputs[:2], weighted.inputs[1::-1]):
            tanh = producer_of(ctx, bent, "Tanh", weighted)
            scaled = producer_of(ctx, tanh.inputs[0], "Mul", tanh) if tanh is not None else None
            factor = per_channel(ctx, weight, shape)
            if scaled is None or factor is None:
                continue
            for x, alpha in (scaled.inputs[:2], scaled.inputs[1::-1]):
                slope = ctx.const(alpha)
                if slope is not None and slope.size == 1 and ctx.const(x) is None:
                    params = {"alpha": slope.reshape(1).astype("float32"), "weight": factor, "bias": shift}
                    return OnnxImport("dyt", [x], {}, params, absorbed=(weighted, tanh, scaled))
    return None


def _reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    shape = (-1, 1, 1) if len(layer.shape) == 3 else (-1,)
    return w["weight"].reshape(shape) * (w["alpha"] * xs[0]).tanh() + w["bias"].reshape(shape)


register(OpDef(
    name="dyt",
    family="norm",
    summary="Dynamic Tanh, weight * tanh(alpha * x) + bias, learned alpha and per-channel weight and bias.",
    example="d: dyt",
    args=(),
    infer=_infer,
    params=_params,
    macs=_macs,
    default_fillers={"alpha": Filler("constant", (("value", 0.5),)),
                     "weight": Filler("constant", (("value", 1.0),)),
                     "bias": Filler("constant", (("value", 0.0),))},
    pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(module=_torch_module, forward=_torch_forward),
        executor=ExecutorLowering(lower=_executor, function=_executor_function, inplace=True),
        onnx=_onnx,
        from_onnx={"Add": _from_onnx},
        reference=_reference,
    ),
))
