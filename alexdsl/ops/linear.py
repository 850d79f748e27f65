"""Fully connected (Caffe InnerProduct)."""

from __future__ import annotations

import math
from typing import Any

from alexdsl.ops.lowering import CaffeLayer, ExecutorKernel, ExecutorLowering, Lowerings, Pattern, TorchLowering
from alexdsl.ops.registry import Arg, Attrs, Filler, OpDef, Shape, numel, register


def _infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return (attrs["out"],)


def _params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    params: dict[str, Shape] = {"weight": (attrs["out"], numel(inputs[0]))}
    if attrs["bias"]:
        params["bias"] = (attrs["out"],)
    return params


def _macs(attrs: Attrs, inputs: list[Shape], output: Shape) -> int:
    return attrs["out"] * numel(inputs[0])


def _torch_module(layer: Any, ctx: Any) -> str:
    in_features = math.prod(ctx.input_shape(layer, 0))
    bias = "" if "bias" in layer.params else ", bias=False"
    return f"nn.Linear({ctx.int(in_features)}, {ctx.int(layer.attrs['out'])}{bias})"


def _torch_forward(layer: Any, args: list[str], ctx: Any) -> str:
    x = args[0] if len(ctx.input_shape(layer, 0)) == 1 else f"torch.flatten({args[0]}, 1)"
    return f"{ctx.module(layer)}({x})"


def _executor(layer: Any, ctx: Any) -> ExecutorKernel:
    ident = ctx.ident
    return ExecutorKernel(
        code=(f"rt.linear({ctx.inputs[0]}, self.{ident}_w, self.{ident}_b, relu={ctx.epilogue == 'relu'}, "
              "transposed=True, out={out})"),
        kernel="linear" + "+bias" * ctx.has_bias(layer),
        setup=(*ctx.weights_setup(layer), f"self.{ident}_w = rt.pretranspose(self.{ident}_w)"),
    )


def _onnx(layer: Any, ctx: Any) -> None:
    source = ctx.inputs[0]
    if len(ctx.input_shape(layer, 0)) != 1:
        source = ctx.node("Flatten", [source], output=f"{layer.name}.flatten", axis=1)
    inputs = [source, ctx.initializer(layer, "weight")]
    if "bias" in layer.params:
        inputs.append(ctx.initializer(layer, "bias"))
    ctx.node("Gemm", inputs, transB=1)


def _from_caffe(layer: Any, name: str, ctx: Any) -> tuple[str, list[str], str] | None:
    p = layer.message("inner_product_param")
    if p is None or p.scalar("num_output") is None:
        ctx.error(f"InnerProduct '{name}' needs inner_product_param {{ num_output }}", layer.span)
        return None
    args = [p.scalar("num_output").text]
    if ctx.is_true(p.scalar("bias_term")) is False:
        args.append("bias=false")
    for key, default in (("axis", "1"), ("transpose", "false")):
        value = p.scalar(key)
        if value is not None and str(value.value).lower() != default:
            ctx.error(f"inner_product_param {key}: {value.text} is not supported", value.span)
    return "fc", args, "inner_product_param"


register(OpDef(
    name="fc",
    family="linear",
    summary="Fully connected layer; flattens its input first (Caffe InnerProduct).",
    example="fc6: fc(4096, weight=gaussian(0.005), bias=constant(1))",
    args=(
        Arg("out", "int", doc="number of outputs", min=1),
        Arg("bias", "bias", True, "false for no bias, or the bias filler"),
    ),
    infer=_infer,
    params=_params,
    macs=_macs,
    default_fillers={"weight": Filler("xavier", (("variance_norm", "fan_in"),)),
                     "bias": Filler("constant", (("value", 0.0),))},
    pattern=Pattern.OUT_ELEMWISE_FUSABLE,
    lower=Lowerings(
        torch=TorchLowering(module=_torch_module, forward=_torch_forward, overwritable_output=True),
        executor=ExecutorLowering(lower=_executor, epilogues=("relu",), folds_affine=True),
        onnx=_onnx,
        caffe=lambda layer, ctx: [CaffeLayer("InnerProduct", "inner_product_param",
                                             (f"num_output: {layer.attrs['out']}", *ctx.weight_and_bias(layer)),
                                             ("weight", "bias"))],
        from_caffe={"InnerProduct": _from_caffe},
        reference=lambda layer, xs, w, F: F.linear(xs[0].flatten(1), w["weight"], w.get("bias")),
    ),
))
