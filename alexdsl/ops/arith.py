"""Elementwise arithmetic with NumPy broadcasting (add, sub, mul, div) and a learned per-channel scale.

Shapes broadcast as in NumPy over the shapes without the batch: trailing dimensions are aligned
and each pair must be equal or 1, so a squeeze-excitation gate of Cx1x1 multiplies a CxHxW
tensor (``mul(x, gate)``). An input of lower rank gets its missing dimensions after the batch
(``x[:, None]``) in every backend; the executor broadcasts in place and never materialises a
broadcast copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alexdsl.ops.activation import epilogue_args
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
from alexdsl.ops.from_onnx import operands, per_channel, producer_of
from alexdsl.ops.lowering import (
    EVERY_EPILOGUE,
    CaffeLayer,
    ExecutorKernel,
    ExecutorLowering,
    Lowerings,
    OnnxImport,
    Pattern,
    TorchLowering,
    XpKernel,
)
from alexdsl.ops.registry import Arg, Attrs, Filler, OpDef, Shape, ShapeError, format_shape, register
from alexdsl.ops.xp import Array, array_module


def broadcast_shapes(op: str, inputs: list[Shape]) -> Shape:
    """The NumPy broadcast of ``inputs`` (shapes without the batch), or a ShapeError showing both shapes."""
    result = inputs[0]
    for i, shape in enumerate(inputs[1:], start=2):
        rank = max(len(result), len(shape))
        a, b = (1,) * (rank - len(result)) + tuple(result), (1,) * (rank - len(shape)) + tuple(shape)
        if any(x != y and 1 not in (x, y) for x, y in zip(a, b, strict=True)):
            raise ShapeError(
                f"{op} input {i} has shape {format_shape(shape)}, which does not broadcast with "
                f"{format_shape(result)}" + (" (inputs 1.." + f"{i - 1})" if i > 2 else " (input 1)"),
                expected="shapes that broadcast: aligned from the right, each dimension equal or 1",
                received=", ".join(format_shape(s) for s in inputs),
            )
        result = tuple(max(x, y) for x, y in zip(a, b, strict=True))
    return result


def _broadcast(op: str) -> Any:
    """The shape rule of a broadcasting op: :func:`broadcast_shapes` under the op's name."""
    return lambda attrs, inputs: broadcast_shapes(op, inputs)


# the xp kernels: each op's math, written once; the executor's rt.add etc. call them and add the epilogue -----

def broadcast_add(*inputs: Array, out: Array | None = None) -> Array:
    """The sum of any number of arrays, folded left with NumPy broadcasting (one input: a copy of it); into ``out``
    when given, which may be the first input (in place)."""
    if not inputs:
        raise ValueError("add needs at least one input")
    if len(inputs) == 1:
        if out is None:
            return inputs[0].copy()
        out[...] = inputs[0]
        return out
    return _folded(array_module(inputs[0]).add, inputs, out)


def broadcast_multiply(*inputs: Array, out: Array | None = None) -> Array:
    """The product of two or more arrays, folded left with NumPy broadcasting (squeeze-excitation's ``x * gate``
    without a broadcast copy); into ``out`` when given, which may be the first input."""
    return _folded(array_module(inputs[0]).multiply, inputs, out)


def broadcast_subtract(a: Array, b: Array, *, out: Array | None = None) -> Array:
    """``a - b`` with NumPy broadcasting, into ``out`` when given (which may be ``a``)."""
    return array_module(a).subtract(a, b, out=out)


def broadcast_divide(a: Array, b: Array, *, out: Array | None = None) -> Array:
    """``a / b`` with NumPy broadcasting, into ``out`` when given (which may be ``a``)."""
    return array_module(a).divide(a, b, out=out)


def _folded(ufunc: Callable[..., Array], inputs: tuple[Array, ...], out: Array | None) -> Array:
    """``ufunc`` folded left over ``inputs``: in ``out`` when given, else in new arrays as the broadcast grows."""
    result = ufunc(inputs[0], inputs[1], out=out)
    for extra in inputs[2:]:
        result = ufunc(result, extra, out=out)
    return result


def aligned(layer: Any, args: list[str], input_shape: Any) -> list[str]:
    """The inputs, each of lower rank than the output given its missing dimensions after the batch."""
    rank = len(layer.shape)
    return [arg if len(input_shape(layer, i)) == rank else f"{arg}[:{', None' * (rank - len(input_shape(layer, i)))}]"
            for i, arg in enumerate(args)]


def onnx_aligned(layer: Any, ctx: OnnxExportContext) -> list[str]:
    """The ONNX inputs, each of lower rank than the output unsqueezed after the batch."""
    rank = len(layer.shape)
    values = []
    for i, value in enumerate(ctx.inputs):
        missing = rank - len(ctx.input_shape(layer, i))
        if missing:
            axes = ctx.constant(list(range(1, missing + 1)), integer=True)
            value = ctx.node("Unsqueeze", [value, axes], output=f"{layer.name}.input{i + 1}")
        values.append(value)
    return values


def _binary_onnx(op_type: str) -> Any:
    """``a op b op c ...`` as a chain of ONNX ``op_type`` nodes, the last one the layer's."""
    def lower(layer: Any, ctx: OnnxExportContext) -> None:
        values = onnx_aligned(layer, ctx)
        result = values[0]
        for i, value in enumerate(values[1:], start=2):
            last = i == len(values)
            result = ctx.node(op_type, [result, value], output=None if last else f"{layer.name}.partial{i}")

    return lower


def _binary_from_onnx(op: str) -> Any:
    """``Add``/``Sum``/``Sub``/``Mul`` of computed values -> ``op``, absorbing alexdsl's rank alignment
    (see :func:`alexdsl.ops.from_onnx.operands`); a constant operand is a scale's (or fc's bias)."""
    def convert(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
        found = operands(ctx, node)
        return OnnxImport(op, found[0], absorbed=found[1]) if found else None

    return convert


def _executor(function: str) -> ExecutorLowering:
    """``rt.<function>(inputs..., <epilogue>, out=...)``, in place: the walker shares only an input of the output's
    shape. ``rt.add`` takes ``relu=`` as conv and fc do; the others take the epilogue as ``act=``."""
    def lower(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
        inputs = aligned(layer, list(ctx.inputs), ctx.input_shape)
        if function == "add":
            epilogue = epilogue_args(ctx.epilogue) + ", "
        else:
            epilogue = f"act=rt.{ctx.epilogue}, " if ctx.epilogue is not None else ""
        return ExecutorKernel(f"rt.{function}({', '.join(inputs)}, {epilogue}out={{out}})", function)

    return ExecutorLowering(lower=lower, inplace=True, epilogues=EVERY_EPILOGUE, sums_inputs=function == "add")


# add ------------------------------------------------------------------------------------------------

def _eltwise_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], None] | None:
    """Eltwise SUM -> add (coefficients 1) or sub (1, -1); PROD -> mul."""
    p = ctx.section(layer, "eltwise_param")
    operation = p.scalar("operation")
    kind = str(operation.value) if operation is not None else "SUM"
    coeffs = [c.value for c in p.scalars("coeff")]
    if kind == "PROD" and not coeffs:
        return "mul", [], None
    if kind == "SUM" and all(c == 1 for c in coeffs):
        return "add", [], None
    if kind == "SUM" and coeffs == [1, -1]:
        return "sub", [], None
    span = operation.span if operation is not None and kind != "SUM" else (p.scalars("coeff") or [p])[0].span
    ctx.error(f"Eltwise {kind}{' with coefficients ' + str(coeffs) if coeffs else ''} is not supported",
              span, expected="SUM (-> add), SUM with coeff 1, -1 (-> sub), PROD (-> mul)")
    return None


def _eltwise(operation: str, *coeffs: str) -> Any:
    """Caffe's Eltwise layer, which needs inputs of one shape."""
    def caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
        shapes = [ctx.input_shape(layer, i) for i in range(len(layer.inputs))]
        if any(tuple(s) != tuple(layer.shape) for s in shapes):
            ctx.fail(f"Caffe's Eltwise needs inputs of one shape; {layer.op} broadcasts "
                     f"{', '.join(format_shape(s) for s in shapes)}")
        return [CaffeLayer("Eltwise", "eltwise_param", (f"operation: {operation}", *coeffs))]

    return caffe


def reference_aligned(layer: Any, xs: list[Any]) -> list[Any]:
    """The inputs (torch tensors or xp arrays, batch first), each of lower rank than the output given its missing
    dimensions after the batch, as the generated code aligns them (:func:`aligned`)."""
    rank = len(layer.shape) + 1
    return [x.reshape(x.shape[0], *[1] * (rank - x.ndim), *x.shape[1:]) for x in xs]


def _kernel(function: Callable[..., Array]) -> XpKernel:
    """A broadcasting op's kernel, over its inputs aligned as alexdsl broadcasts them."""
    return XpKernel(function, align=reference_aligned)


register(OpDef(
    name="add", family="arith",
    summary="Elementwise sum, with NumPy broadcasting over the shapes without the batch (Caffe Eltwise SUM).",
    example="out: add(branch, shortcut)", args=(), infer=_broadcast("add"), inputs=(2, None),
    pattern=Pattern.BROADCAST,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: " + ".join(aligned(layer, args, ctx.input_shape)),
                            overwritable_output=True),
        executor=_executor("add"),
        onnx=lambda layer, ctx: ctx.node("Add" if len(ctx.inputs) == 2 else "Sum", onnx_aligned(layer, ctx)),
        caffe=_eltwise("SUM"),
        from_caffe={"Eltwise": _eltwise_from_caffe},
        from_onnx={"Add": _binary_from_onnx("add"), "Sum": _binary_from_onnx("add")},
        onnx_elementwise=("Add",),
        kernel=_kernel(broadcast_add),
    ),
))


register(OpDef(
    name="sub", family="arith",
    summary="Elementwise difference a - b, with NumPy broadcasting (Caffe Eltwise SUM with coeff 1, -1).",
    example="d: sub(branch, shortcut)", args=(), infer=_broadcast("sub"), inputs=(2, 2), pattern=Pattern.BROADCAST,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: " - ".join(aligned(layer, args, ctx.input_shape)),
                            overwritable_output=True),
        executor=_executor("subtract"),
        onnx=_binary_onnx("Sub"),
        from_onnx={"Sub": _binary_from_onnx("sub")},
        onnx_elementwise=("Sub",),
        caffe=_eltwise("SUM", "coeff: 1", "coeff: -1"),
        kernel=_kernel(broadcast_subtract),
    ),
))


register(OpDef(
    name="div", family="arith",
    summary="Elementwise quotient a / b, with NumPy broadcasting (EfficientViT's attention normaliser; no Caffe "
            "layer).",
    example="q: div(branch, data)", args=(), infer=_broadcast("div"), inputs=(2, 2), pattern=Pattern.BROADCAST,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: " / ".join(aligned(layer, args, ctx.input_shape)),
                            overwritable_output=True),
        executor=_executor("divide"),
        onnx=_binary_onnx("Div"),
        from_onnx={"Div": _binary_from_onnx("div")},
        onnx_elementwise=("Div",),
        kernel=_kernel(broadcast_divide),
    ),
))


register(OpDef(
    name="mul", family="arith",
    summary="Elementwise product, with NumPy broadcasting: squeeze-excitation's x * gate (Caffe Eltwise PROD).",
    example="se: mul(branch, shortcut)", args=(), infer=_broadcast("mul"), inputs=(2, None),
    pattern=Pattern.BROADCAST,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: " * ".join(aligned(layer, args, ctx.input_shape)),
                            overwritable_output=True),
        executor=_executor("multiply"),
        onnx=_binary_onnx("Mul"),
        from_onnx={"Mul": _binary_from_onnx("mul")},
        onnx_elementwise=("Mul",),
        caffe=_eltwise("PROD"),
        kernel=_kernel(broadcast_multiply),
    ),
))


# scale: a learned per-channel factor --------------------------------------------------------------

def _scale_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    if len(x) not in (1, 3):
        raise ShapeError("expects a vector (C) or CxHxW input", expected="C or CxHxW", received=format_shape(x))
    return x


def _scale_params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    channels = inputs[0][0]
    params: dict[str, Shape] = {}
    if attrs["param"] == "layer_scale":
        params["layer_scale"] = (channels, *[1] * (len(inputs[0]) - 1))
    else:
        params["weight"] = (channels,)
    if attrs["bias"]:
        params["bias"] = (channels,)
    return params


def _scale_terms(layer: Any) -> tuple[str, str | None]:
    return layer.attrs["param"], "bias" if "bias" in layer.params else None


def _per_channel(rank: int) -> str:
    """Source of the view that puts a (C,) vector along the channels of an input of ``rank`` (batch included)."""
    return "" if rank <= 2 else f".view(-1{', 1' * (rank - 2)})"


def _scale_torch_module(layer: Any, ctx: TorchContext) -> str:
    """An ``nn.ParameterDict`` keeps the parameter's name: ``features.1.0.layer_scale`` as in torchvision."""
    entries = ", ".join(f"{name!r}: nn.Parameter(torch.empty({', '.join(map(ctx.int, spec.shape))}))"
                        for name, spec in layer.params.items())
    return f"nn.ParameterDict({{{entries}}})"


def _scale_torch_forward(layer: Any, args: list[str], ctx: TorchContext) -> str:
    weight, bias = _scale_terms(layer)
    view = _per_channel(len(layer.shape) + 1)
    module = ctx.module(layer)
    expr = f"{args[0]} * {module}.{weight}" + ("" if weight == "layer_scale" else view)
    return f"{expr} + {module}.bias{view}" if bias else expr


def _scale_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    weight, bias = _scale_terms(layer)
    ident = ctx.ident
    channels = layer.shape[0]
    shift = ctx.weight(layer, "bias") if bias else "None"
    return ExecutorKernel(
        code=f"rt.channel_affine({ctx.inputs[0]}, self.{ident}_scale, self.{ident}_shift, out={{out}})",
        kernel="channel_affine",
        setup=(f"self.{ident}_scale = {ctx.weight(layer, weight)}.reshape({ctx.lit(channels)})",
               f"self.{ident}_shift = {shift}"),
    )


def _scale_fold(layer: Any, ctx: ExecutorContext, weight: str, bias: str) -> str:
    name, shift = _scale_terms(layer)
    return (f"rt.fold_affine({weight}, {bias}, {ctx.weight(layer, name)}, "
            f"{ctx.weight(layer, shift) if shift else 'None'})")


def _scale_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    weight, bias = _scale_terms(layer)
    rank = len(layer.shape)
    factor = ctx.initializer(layer, weight)
    # The (C, 1, 1) shape that (C,) vectors are reshaped to; a layer_scale has that shape already.
    reshaped = rank > 1 and (weight == "weight" or bias is not None)
    shape = ctx.constant([layer.shape[0], *[1] * (rank - 1)], integer=True) if reshaped else None
    if weight == "weight" and shape is not None:
        factor = ctx.node("Reshape", [factor, shape], output=f"{layer.name}.factor")
    if bias is None:
        ctx.node("Mul", [ctx.inputs[0], factor])
        return
    scaled = ctx.node("Mul", [ctx.inputs[0], factor], output=f"{layer.name}.scaled")
    shift = ctx.initializer(layer, "bias")
    if shape is not None:
        shift = ctx.node("Reshape", [shift, shape], output=f"{layer.name}.shift")
    ctx.node("Add", [scaled, shift])


def _scaled(ctx: OnnxImportContext, node: OnnxNodeView) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """Of ``Mul(x, factor)`` (either order) with a per-channel constant factor: x, the scale's attrs and params.

    An initializer named ``...layer_scale`` of shape (C, 1, 1) is torchvision's ConvNeXt layer scale
    (``param=layer_scale``, kept as it is); any other factor is the (C,) ``weight``.
    """
    for x, factor in (node.inputs[:2], node.inputs[1::-1]):
        shape = ctx.shape(x)
        weight = per_channel(ctx, factor, shape) if shape and len(shape) in (1, 3) and ctx.const(x) is None else None
        if weight is None:
            continue
        column = (shape[0], *[1] * (len(shape) - 1))
        if factor.rsplit(".", 1)[-1] == "layer_scale" and ctx.const(factor).shape == column:
            return x, {"param": "layer_scale"}, {"layer_scale": factor}
        return x, {"param": "weight"}, {"weight": factor if ctx.const(factor).shape == weight.shape else weight}
    return None


def _scale_from_mul(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Mul(x, factor)`` with a per-channel constant factor -> scale."""
    found = _scaled(ctx, node)
    if found is None:
        return ctx.fail(node, "a Mul by a constant is imported only when the constant is one factor per channel "
                              "(scale)")
    x, attrs, params = found
    return OnnxImport("scale", [x], {**attrs, "bias": False}, params)


def _scale_from_div(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Div(x, divisor)`` with a per-channel constant divisor (RepViT's ``(head(x) + head_dist(x)) / 2``) -> a
    scale by its reciprocal."""
    x, divisor = node.inputs[:2]
    shape = ctx.shape(x)
    weight = per_channel(ctx, divisor, shape) if shape and len(shape) in (1, 3) and ctx.const(x) is None else None
    if weight is None or not weight.all():
        return ctx.fail(node, "a Div is imported only by a constant of one nonzero divisor per channel (a scale by "
                              "its reciprocal)")
    return OnnxImport("scale", [x], {"param": "weight", "bias": False}, {"weight": (1 / weight).astype(weight.dtype)})


def _scale_from_add(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Add(Mul(x, factor), shift)`` with per-channel constants -> scale(bias=true); ``Add(x, shift)`` -> a scale
    whose factor is 1."""
    for value, shift in (node.inputs[:2], node.inputs[1::-1]):
        shape = ctx.shape(value)
        bias = per_channel(ctx, shift, shape) if shape and len(shape) in (1, 3) else None
        if bias is None or ctx.const(value) is not None:
            continue
        bias_source = shift if ctx.const(shift).shape == bias.shape else bias
        mul = producer_of(ctx, value, "Mul")
        found = _scaled(ctx, mul) if mul is not None else None
        if found is not None:
            x, attrs, params = found
            return OnnxImport("scale", [x], {**attrs, "bias": True}, {**params, "bias": bias_source}, (mul,))
        import numpy as np

        return OnnxImport("scale", [value], {"param": "weight", "bias": True},
                          {"weight": np.ones_like(bias), "bias": bias_source})
    return None


def _scale_caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
    weight, bias = _scale_terms(layer)
    body = [*ctx.filler("filler", layer.params[weight].filler)]
    if bias:
        body = ["bias_term: true", *body, *ctx.filler("bias_filler", layer.params["bias"].filler)]
    return [CaffeLayer("Scale", "scale_param", tuple(body), (weight, "bias"))]


def _scale_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], str] | None:
    p = ctx.section(layer, "scale_param")
    for key, default in (("axis", 1), ("num_axes", 1)):
        value = p.scalar(key)
        if value is not None and value.value != default:
            ctx.error(f"scale_param {key}: {value.text} is not supported (alexdsl scales channels)", value.span,
                      expected=f"{key}: {default}")
            return None
    # a bias_filler comes back as bias=<filler>, which also turns the bias on
    bias = ctx.is_true(p.scalar("bias_term")) and p.message("bias_filler") is None
    return "scale", [ctx.arg(True, "bias")] if bias else [], "scale_param"


def _scale_reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    weight, bias = _scale_terms(layer)
    shape = (-1, *[1] * (len(layer.shape) - 1))
    out = xs[0] * w[weight].reshape(shape)
    return out + w["bias"].reshape(shape) if bias else out


register(OpDef(
    name="scale", family="arith",
    summary="A learned per-channel factor, optionally with a shift (Caffe Scale, ConvNeXt's layer scale).",
    example="ls: scale(bias=false, param=weight)",
    args=(
        Arg("bias", "bias", False, "true (or a filler) for a learned per-channel shift"),
        Arg("param", "choice", "weight", "the factor's name and shape: weight (C), or layer_scale (Cx1x1, "
            "torchvision's ConvNeXt)", choices=("weight", "layer_scale"), positional=False),
    ),
    infer=_scale_infer,
    params=_scale_params,
    default_fillers={"weight": Filler("constant", (("value", 1.0),)),
                     "layer_scale": Filler("constant", (("value", 1e-6),)),
                     "bias": Filler("constant", (("value", 0.0),))},
    pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(module=_scale_torch_module, forward=_scale_torch_forward, overwritable_output=True),
        executor=ExecutorLowering(lower=_scale_executor, inplace=True, fold=_scale_fold),
        onnx=_scale_onnx,
        from_onnx={"Mul": _scale_from_mul, "Add": _scale_from_add, "Div": _scale_from_div},
        onnx_elementwise=("Mul", "Add"),
        caffe=_scale_caffe,
        from_caffe={"Scale": _scale_from_caffe},
        reference=_scale_reference,
    ),
))
