"""Fully connected (Caffe InnerProduct), and a linear layer over the channels of every pixel."""

from __future__ import annotations

import math
from typing import Any

from alexdsl.ops.activation import epilogue_args
from alexdsl.ops.contexts import (
    CaffeImportContext,
    CaffeMessage,
    ExecutorContext,
    OnnxExportContext,
    OnnxImportContext,
    OnnxNodeView,
    TorchContext,
)
from alexdsl.ops.fillers import WEIGHT_AND_BIAS
from alexdsl.ops.from_onnx import computed, flattened_input, linear_kernel, producer_of
from alexdsl.ops.lowering import (
    EVERY_EPILOGUE,
    CaffeLayer,
    ExecutorKernel,
    ExecutorLowering,
    Lowerings,
    OnnxImport,
    Pattern,
    TorchLowering,
    call_module,
)
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, format_shape, numel, register


def _infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return (attrs["out"],)


def _params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    params: dict[str, Shape] = {"weight": (attrs["out"], numel(inputs[0]))}
    if attrs["bias"]:
        params["bias"] = (attrs["out"],)
    return params


def _macs(attrs: Attrs, inputs: list[Shape], output: Shape) -> int:
    return attrs["out"] * numel(inputs[0])


def _torch_module(layer: Any, ctx: TorchContext) -> str:
    in_features = math.prod(ctx.input_shape(layer, 0))
    bias = "" if "bias" in layer.params else ", bias=False"
    return f"nn.Linear({ctx.int(in_features)}, {ctx.int(layer.attrs['out'])}{bias})"


def _torch_forward(layer: Any, args: list[str], ctx: TorchContext) -> str:
    x = args[0] if len(ctx.input_shape(layer, 0)) == 1 else f"torch.flatten({args[0]}, 1)"
    return f"{ctx.module(layer)}({x})"


def _executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    ident = ctx.ident
    return ExecutorKernel(
        code=(f"rt.linear({ctx.inputs[0]}, self.{ident}_w, self.{ident}_b, {epilogue_args(ctx.epilogue)}, "
              "transposed=True, out={out})"),
        kernel="linear" + "+bias" * ctx.has_bias(layer),
        setup=(*ctx.weights_setup(layer), f"self.{ident}_w = rt.pretranspose(self.{ident}_w)"),
    )


def _onnx(layer: Any, ctx: OnnxExportContext) -> None:
    source = ctx.inputs[0]
    if len(ctx.input_shape(layer, 0)) != 1:
        source = ctx.node("Flatten", [source], output=f"{layer.name}.flatten", axis=1)
    inputs = [source, ctx.initializer(layer, "weight")]
    if "bias" in layer.params:
        inputs.append(ctx.initializer(layer, "bias"))
    ctx.node("Gemm", inputs, transB=1)


def _fc_import(node: OnnxNodeView, ctx: OnnxImportContext, source: str, weight: Any, bias: Any,
               absorbed: tuple[Any, ...]) -> OnnxImport | None:
    """fc reading ``source`` (or what a Flatten before it reads) with ``weight`` (out, in) and ``bias``."""
    source, flatten = flattened_input(ctx, source)
    shape = ctx.shape(source)
    if shape is None or (not flatten and len(shape) != 1):
        return ctx.fail(node, "a matrix product is imported as fc only on a flat input (N, features)")
    attrs: dict[str, Any] = {"out": int((ctx.const(weight) if isinstance(weight, str) else weight).shape[0])}
    params = {"weight": weight}
    if bias is None:
        attrs["bias"] = False
    else:
        params["bias"] = bias
    return OnnxImport("fc", [source], attrs, params, (*absorbed, *flatten))


def _fc_from_gemm(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Gemm(x, W, b)`` (optionally after ``Flatten``) -> fc; transB=0 and alpha/beta are folded into W and b."""
    weight = ctx.const(node.inputs[1])
    if weight is None or weight.ndim != 2 or node.attr("transA", 0) or ctx.const(node.inputs[0]) is not None:
        return ctx.fail(node, "only Gemm(x, W, b) with a constant W and transA=0 is imported (as fc)")
    trans_b, alpha, beta = bool(node.attr("transB", 0)), float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    matrix = weight if trans_b else weight.T  # (out, in), as torch's Linear
    out = matrix.shape[0]
    bias: Any = None
    if len(node.inputs) > 2 and node.inputs[2]:
        value = ctx.const(node.inputs[2])
        if value is None or value.size not in (1, out):
            return ctx.fail(node, "Gemm's C must be a constant bias, one value per output")
        same = value.shape == (out,) and beta == 1.0
        bias = node.inputs[2] if same else value.reshape(-1).repeat(out // value.size) * beta
    chosen = node.inputs[1] if trans_b and alpha == 1.0 else matrix * alpha
    return _fc_import(node, ctx, node.inputs[0], chosen, bias, ())


def _fc_from_matmul(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``MatMul(x, W)`` with W (in, out) constant -> fc without bias."""
    weight = ctx.const(node.inputs[1])
    if weight is None or weight.ndim != 2 or not computed(ctx, node.inputs[:1]):
        return None
    return _fc_import(node, ctx, node.inputs[0], weight.T, None, ())


def _fc_from_matmul_add(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Add(MatMul(x, W), b)`` -> fc."""
    for product, bias in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
        matmul = producer_of(ctx, product, "MatMul")
        value = ctx.const(bias)
        if matmul is None or value is None:
            continue
        weight = ctx.const(matmul.inputs[1])
        if weight is None or weight.ndim != 2 or value.size != weight.shape[1] or not computed(ctx, matmul.inputs[:1]):
            continue
        return _fc_import(node, ctx, matmul.inputs[0], weight.T, bias if value.ndim == 1 else value.reshape(-1),
                          (matmul,))
    return None


def _from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], str] | None:
    p = layer.message("inner_product_param")
    if p is None or p.scalar("num_output") is None:
        ctx.error(f"InnerProduct '{name}' needs inner_product_param {{ num_output }}", layer.span)
        return None
    args = [ctx.literal(p.scalar("num_output"))]
    if ctx.is_true(p.scalar("bias_term")) is False:
        args.append(ctx.arg(False, "bias"))
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
    default_fillers=WEIGHT_AND_BIAS,
    pattern=Pattern.OUT_ELEMWISE_FUSABLE,
    lower=Lowerings(
        torch=TorchLowering(module=_torch_module, forward=_torch_forward, overwritable_output=True),
        executor=ExecutorLowering(lower=_executor, epilogues=EVERY_EPILOGUE, folds_affine=True),
        onnx=_onnx,
        caffe=lambda layer, ctx: [CaffeLayer("InnerProduct", "inner_product_param",
                                             (f"num_output: {layer.attrs['out']}", *ctx.weight_and_bias(layer)),
                                             ("weight", "bias"))],
        from_caffe={"InnerProduct": _from_caffe},
        reference=lambda layer, xs, w, F: F.linear(xs[0].flatten(1), w["weight"], w.get("bias")),
        from_onnx={"Gemm": _fc_from_gemm, "MatMul": _fc_from_matmul, "Add": _fc_from_matmul_add},
    ),
))


# pointwise_fc: nn.Linear over the channels of each pixel ------------------------------------------

def _pw_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    if len(x) not in (1, 3):
        raise ShapeError("expects a vector (C) or CxHxW input", expected="C or CxHxW", received=format_shape(x))
    return (attrs["out"], *x[1:])


def _pw_params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    params: dict[str, Shape] = {"weight": (attrs["out"], inputs[0][0])}
    if attrs["bias"]:
        params["bias"] = (attrs["out"],)
    return params


def _pw_macs(attrs: Attrs, inputs: list[Shape], output: Shape) -> int:
    return numel(output) * inputs[0][0]


def _pw_torch_module(layer: Any, ctx: TorchContext) -> str:
    bias = "" if "bias" in layer.params else ", bias=False"
    return f"nn.Linear({ctx.int(ctx.input_shape(layer, 0)[0])}, {ctx.int(layer.attrs['out'])}{bias})"


def _pw_torch_forward(layer: Any, args: list[str], ctx: TorchContext) -> str:
    """Channels last, nn.Linear, channels first again: ConvNeXt's ``Permute``, ``Linear``, ``Permute``."""
    if len(layer.shape) == 1:
        return call_module(layer, args, ctx)
    return f"{ctx.module(layer)}({args[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)"


def _pw_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    """A 1x1 convolution with the (out, C) weight viewed as (out, C, 1, 1); on a vector, of the vector viewed as a
    1x1 map, its output viewed as a vector again."""
    c, *size = ctx.input_shape(layer, 0)
    h, w = size if size else (1, 1)
    out = layer.attrs["out"]
    geometry = (c, h, w, out, (1, 1))
    ident = ctx.ident
    x = ctx.inputs[0] if size else f"{ctx.inputs[0]}.reshape(n, {c}, 1, 1)"
    target = "{out}" if size else f"{{out}}.reshape(n, {out}, 1, 1)"
    residual = ""
    if ctx.residual is not None:
        residual = f"residual={ctx.residual}, " if size else f"residual={ctx.residual}.reshape(n, {out}, 1, 1), "
    return ExecutorKernel(
        code=(f"rt.conv2d({x}, self.{ident}_w, self.{ident}_b, {epilogue_args(ctx.epilogue)}, {residual}"
              f"plan=self.{ident}_plan, scratch=scratch, out={target})" + ("" if size else f".reshape(n, {out})")),
        kernel="conv2d+1x1" + "+bias" * ctx.has_bias(layer),
        setup=(*ctx.weights_setup(layer), f"self.{ident}_w = self.{ident}_w.reshape({out}, {c}, 1, 1)",
               f"self.{ident}_plan = rt.ConvPlan({', '.join(map(ctx.lit, geometry))})"),
        scratch=(0, ctx.conv_plan(*geometry).wide_size(1)),
    )


def _pw_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    if len(layer.shape) == 1:
        inputs = [ctx.inputs[0], ctx.initializer(layer, "weight")]
        if "bias" in layer.params:
            inputs.append(ctx.initializer(layer, "bias"))
        ctx.node("Gemm", inputs, transB=1)
        return
    shape = ctx.constant([layer.attrs["out"], ctx.input_shape(layer, 0)[0], 1, 1], integer=True)
    weight = ctx.node("Reshape", [ctx.initializer(layer, "weight"), shape], output=f"{layer.name}.kernel")
    inputs = [ctx.inputs[0], weight]
    if "bias" in layer.params:
        inputs.append(ctx.initializer(layer, "bias"))
    ctx.node("Conv", inputs, kernel_shape=[1, 1])


def _pw_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """alexdsl's export of pointwise_fc over CxHxW: a 1x1 ``Conv`` whose kernel is the (out, C) weight reshaped
    (see :func:`alexdsl.ops.from_onnx.linear_kernel`). Over a vector it is a ``Gemm``, imported as fc (the same
    weight, key and output)."""
    weight = linear_kernel(ctx, node)
    if weight is None:
        return None
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    attrs: dict[str, Any] = {"out": int(ctx.const(weight).shape[0]), "bias": bias is not None}
    return OnnxImport("pointwise_fc", node.inputs[:1], attrs, {"weight": weight, **({"bias": bias} if bias else {})})


def _pw_reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    if len(layer.shape) == 1:
        return F.linear(xs[0], w["weight"], w.get("bias"))
    return F.linear(xs[0].permute(0, 2, 3, 1), w["weight"], w.get("bias")).permute(0, 3, 1, 2)


register(OpDef(
    name="pointwise_fc",
    family="linear",
    summary="nn.Linear over the channels of every pixel, weight (out, C) as nn.Linear's: ConvNeXt's MLP "
            "(no Caffe layer).",
    example="block.3: pointwise_fc(384)",
    args=(
        Arg("out", "int", doc="output channels", min=1),
        Arg("bias", "bias", True, "false for no bias, or the bias filler"),
    ),
    infer=_pw_infer,
    params=_pw_params,
    macs=_pw_macs,
    default_fillers=WEIGHT_AND_BIAS,
    pattern=Pattern.OUT_ELEMWISE_FUSABLE,
    lower=Lowerings(
        torch=TorchLowering(module=_pw_torch_module, forward=_pw_torch_forward, overwritable_output=True),
        executor=ExecutorLowering(lower=_pw_executor, epilogues=EVERY_EPILOGUE, residual=True, folds_affine=True),
        onnx=_pw_onnx,
        from_onnx={"Conv": _pw_from_onnx},
        reference=_pw_reference,
    ),
))
