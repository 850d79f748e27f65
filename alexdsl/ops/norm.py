"""Normalisation: local response, batch, layer (over channels) and group normalisation."""

from __future__ import annotations

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
from alexdsl.ops.fillers import UNIT_AFFINE
from alexdsl.ops.from_onnx import axes_of, f32, near, per_channel, producer_of, scalar
from alexdsl.ops.lowering import (
    CaffeLayer,
    ExecutorKernel,
    ExecutorLowering,
    Lowerings,
    OnnxImport,
    TorchLowering,
    call_module,
)
from alexdsl.ops.registry import (
    Arg,
    Attrs,
    OpDef,
    Shape,
    ShapeError,
    expect_rank,
    format_shape,
    normalize_axis,
    register,
)


def _infer_lrn(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    if attrs["size"] % 2 == 0:
        raise ShapeError(
            f"lrn size must be odd (the window is centred on each channel), got {attrs['size']}",
            arg="size",
            expected="an odd size such as 5",
            received=f"size={attrs['size']}",
        )
    return x


def _lrn_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    a = layer.attrs
    return (f"F.local_response_norm({args[0]}, {ctx.int(a['size'])}, alpha={ctx.float(a['alpha'])}, "
            f"beta={ctx.float(a['beta'])}, k={ctx.float(a['k'])})")


def _lrn_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    a = layer.attrs
    terms = ", ".join(ctx.lit(float(a[k])) for k in ("alpha", "beta", "k"))
    return ExecutorKernel(f"rt.lrn({ctx.inputs[0]}, {ctx.lit(int(a['size']))}, {terms}, out={{out}})", "lrn")


def _lrn_caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
    a = layer.attrs
    body = [f"local_size: {a['size']}", f"alpha: {ctx.number(a['alpha'])}", f"beta: {ctx.number(a['beta'])}"]
    if a["k"] != 1:
        body.append(f"k: {ctx.number(a['k'])}")
    return [CaffeLayer("LRN", "lrn_param", tuple(body))]


def _lrn_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``LRN`` -> lrn: ONNX divides alpha by size as Caffe does, so the values carry over. An even size
    centres ONNX's window one channel later than torch's, and alexdsl takes odd sizes only."""
    size = int(node.attr("size", 0))
    if size % 2 == 0:
        return ctx.fail(node, f"LRN size {size} is even; alexdsl's lrn (Caffe's, torch's) centres an odd window")
    return OnnxImport("lrn", node.inputs[:1], {"size": size, "alpha": f32(node.attr("alpha", 1e-4)),
                                               "beta": f32(node.attr("beta", 0.75)), "k": f32(node.attr("bias", 1.0))})


def _lrn_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], None] | None:
    p = ctx.section(layer, "lrn_param")
    region = p.scalar("norm_region")
    if region is not None and str(region.value) != "ACROSS_CHANNELS":
        ctx.error(f"LRN norm_region {region.value} is not supported", region.span, expected="ACROSS_CHANNELS")
        return None
    size = p.scalar("local_size")
    args = [ctx.literal(size) if size is not None else 5]
    for key in ("alpha", "beta", "k"):
        value = p.scalar(key)
        if value is not None:
            args.append(ctx.arg(ctx.literal(value), key))
        elif key == "alpha":
            args.append(ctx.arg(1, "alpha"))  # Caffe's default; alexdsl's is torch's 1e-4
    return "lrn", args, None


register(OpDef(
    name="lrn",
    family="norm",
    summary="Local response normalisation across channels, Caffe's: x / (k + alpha/size * sum(x^2))^beta.",
    example="norm1: lrn(5, alpha=1e-4, beta=0.75)",
    args=(
        Arg("size", "int", 5, "channels in the window (odd)", min=1),
        Arg("alpha", "float", 1e-4, "scale; divided by size as in Caffe", min=0),
        Arg("beta", "float", 0.75, "exponent", min=0),
        Arg("k", "float", 1.0, "additive constant (Caffe: 1)", min=0),
    ),
    infer=_infer_lrn,
    lower=Lowerings(
        torch=TorchLowering(forward=_lrn_torch),
        executor=ExecutorLowering(lower=_lrn_executor, inplace=True),
        onnx=lambda layer, ctx: ctx.node("LRN", ctx.inputs, size=int(layer.attrs["size"]),
                                         alpha=float(layer.attrs["alpha"]), beta=float(layer.attrs["beta"]),
                                         bias=float(layer.attrs["k"])),
        caffe=_lrn_caffe,
        from_caffe={"LRN": _lrn_from_caffe},
        from_onnx={"LRN": _lrn_from_onnx},
        reference=lambda layer, xs, w, F: F.local_response_norm(xs[0], layer.attrs["size"], layer.attrs["alpha"],
                                                                layer.attrs["beta"], layer.attrs["k"]),
    ),
))


def _infer_same(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    if len(x) not in (1, 3):
        raise ShapeError("expects a vector (C) or CxHxW input", expected="C or CxHxW", received="x".join(map(str, x)))
    return x


def _channels(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    return {"weight": (inputs[0][0],), "bias": (inputs[0][0],)}


def _stats(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    return {"running_mean": (inputs[0][0],), "running_var": (inputs[0][0],)}


def _bn_torch_module(layer: Any, ctx: TorchContext) -> str:
    kind = "BatchNorm2d" if len(ctx.input_shape(layer, 0)) == 3 else "BatchNorm1d"
    a = layer.attrs
    return f"nn.{kind}({ctx.int(layer.shape[0])}, eps={ctx.float(a['eps'])}, momentum={ctx.float(a['momentum'])})"


def _bn_terms(layer: Any, ctx: ExecutorContext) -> tuple[str, str, str]:
    """The running statistics, scale and shift (None when absent) and eps, as source arguments."""
    stats = [ctx.weight(layer, "running_mean"), ctx.weight(layer, "running_var")]
    affine = [ctx.weight(layer, p) if p in layer.params else "None" for p in ("weight", "bias")]
    return ", ".join(stats), ", ".join(affine), ctx.lit(float(layer.attrs["eps"]))


def _bn_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    stats, affine, eps = _bn_terms(layer, ctx)
    ident = ctx.ident
    return ExecutorKernel(
        code=f"rt.channel_affine({ctx.inputs[0]}, self.{ident}_scale, self.{ident}_shift, out={{out}})",
        kernel="channel_affine",
        setup=(f"self.{ident}_scale, self.{ident}_shift = rt.batchnorm_affine(\n"
               f"            {stats}, {affine}, {eps}\n        )",),
    )


def _bn_fold(layer: Any, ctx: ExecutorContext, weight: str, bias: str) -> str:
    stats, affine, eps = _bn_terms(layer, ctx)
    indent = "\n            "
    return f"rt.fold_batchnorm({indent}{weight}, {bias},{indent}{stats},{indent}{affine}, {eps},\n        )"


def _bn_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    inputs = [ctx.initializer(layer, name) for name in ("weight", "bias", "running_mean", "running_var")]
    ctx.node("BatchNormalization", [ctx.inputs[0], *inputs], epsilon=float(layer.attrs["eps"]),
             momentum=1.0 - float(layer.attrs["momentum"]))


def _bn_caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
    """Caffe's BatchNorm has no scale and shift: an in-place Scale layer follows it."""
    a = layer.attrs
    scale = ("bias_term: true", *ctx.filler("filler", layer.params["weight"].filler),
             *ctx.filler("bias_filler", layer.params["bias"].filler))
    return [CaffeLayer("BatchNorm", "batch_norm_param",
                       (f"eps: {ctx.number(a['eps'])}",
                        f"moving_average_fraction: {ctx.number(round(1 - a['momentum'], 9))}")),
            CaffeLayer("Scale", "scale_param", scale, ("weight", "bias"), suffix="_scale")]


def _bn_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], None]:
    p = ctx.section(layer, "batch_norm_param")
    args = []
    eps = p.scalar("eps")
    if eps is not None:
        args.append(ctx.arg(ctx.literal(eps), "eps"))
    fraction = p.scalar("moving_average_fraction")
    if fraction is not None:
        args.append(ctx.arg(round(1 - float(fraction.value), 9), "momentum"))
    return "batchnorm", args, None


def _bn_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``BatchNormalization`` (inference form, constant statistics) -> batchnorm; ONNX's momentum is 1 - torch's."""
    if len(node.outputs) > 1 or any(ctx.const(v) is None for v in node.inputs[1:5]):
        return ctx.fail(node, "only inference BatchNormalization with constant scale, bias and statistics is imported")
    attrs = {"eps": f32(node.attr("epsilon", 1e-5)), "momentum": round(1.0 - f32(node.attr("momentum", 0.9)), 7)}
    params = dict(zip(("weight", "bias", "running_mean", "running_var"), node.inputs[1:5]))
    return OnnxImport("batchnorm", [node.inputs[0]], attrs, params)


def _bn_reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    return F.batch_norm(xs[0], w["running_mean"], w["running_var"], w.get("weight"), w.get("bias"), training=False,
                        eps=layer.attrs["eps"])


register(OpDef(
    name="batchnorm",
    family="norm",
    summary="Batch normalisation over channels with a learned scale and shift (Caffe BatchNorm + Scale).",
    example="bn1: batchnorm(eps=1e-5, momentum=0.1)",
    args=(
        Arg("eps", "float", 1e-5, "added to the variance", min=0),
        Arg("momentum", "float", 0.1, "running-statistics update rate", min=0, max=1),
    ),
    infer=_infer_same,
    params=_channels,
    buffers=_stats,
    default_fillers=UNIT_AFFINE,
    lower=Lowerings(
        torch=TorchLowering(module=_bn_torch_module, overwritable_output=True),
        executor=ExecutorLowering(lower=_bn_executor, inplace=True, fold=_bn_fold),
        onnx=_bn_onnx,
        caffe=_bn_caffe,
        from_caffe={"BatchNorm": _bn_from_caffe},
        reference=_bn_reference,
        from_onnx={"BatchNormalization": _bn_from_onnx},
    ),
))


# layernorm and groupnorm: per-sample statistics, a learned per-channel scale and shift ---------------

def _norm_executor(function: str, *args: str) -> ExecutorLowering:
    """``rt.<function>(x, <args>, scale, shift, eps, out=...)``, the scale and shift bound at setup."""
    def lower(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
        values = "".join(f"{ctx.lit(layer.attrs[a])}, " for a in args)
        ident = ctx.ident
        return ExecutorKernel(
            f"rt.{function}({ctx.inputs[0]}, {values}self.{ident}_w, self.{ident}_b, "
            f"{ctx.lit(float(layer.attrs['eps']))}, out={{out}})", function,
            setup=(f"self.{ident}_w = {ctx.weight(layer, 'weight')}", f"self.{ident}_b = {ctx.weight(layer, 'bias')}"))

    return ExecutorLowering(lower=lower)


def _per_channel_onnx(layer: Any, ctx: OnnxExportContext, name: str) -> str:
    """The (C,) parameter ``name`` as a (C, 1, 1) ONNX value, to broadcast along the channels of NCHW."""
    shape = ctx.constant([layer.shape[0], 1, 1], integer=True)
    return ctx.node("Reshape", [ctx.initializer(layer, name), shape], output=f"{layer.name}.{name}_c11")


def _ln_over_last(layer: Any) -> bool:
    """Whether the layer normalises the last axis of its input (else the channels of CxHxW)."""
    return normalize_axis(layer.attrs["axis"], len(layer.shape)) == len(layer.shape) - 1


def _ln_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    axis = normalize_axis(attrs["axis"], len(x))
    if axis != len(x) - 1 and not (axis == 0 and len(x) == 3):
        raise ShapeError(f"layernorm normalises the last axis, or the channels (axis 0) of CxHxW; not axis "
                         f"{attrs['axis']} of {format_shape(x)}", arg="axis",
                         expected="axis=-1 (the last axis, any rank) or axis=0 of CxHxW", received=format_shape(x))
    return x


def _ln_params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    size = inputs[0][normalize_axis(attrs["axis"], len(inputs[0]))]
    return {"weight": (size,), "bias": (size,)}


def _ln_torch_forward(layer: Any, args: list[str], ctx: TorchContext) -> str:
    """nn.LayerNorm over the last axis; over the channels of CxHxW, applied channels last (torchvision's
    LayerNorm2d)."""
    if _ln_over_last(layer):
        return call_module(layer, args, ctx)
    return f"{ctx.module(layer)}({args[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)"


def _ln_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    if not _ln_over_last(layer) or len(layer.shape) == 1:
        return _norm_executor("layer_norm").lower(layer, ctx)  # type: ignore[misc]
    ident = ctx.ident
    return ExecutorKernel(
        f"rt.layer_norm_last({ctx.inputs[0]}, self.{ident}_w, self.{ident}_b, {ctx.lit(float(layer.attrs['eps']))}, "
        "out={out})", "layer_norm_last",
        setup=(f"self.{ident}_w = {ctx.weight(layer, 'weight')}", f"self.{ident}_b = {ctx.weight(layer, 'bias')}"))


def _ln_reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    size = w["weight"].shape
    if _ln_over_last(layer):
        return F.layer_norm(xs[0], size, w["weight"], w["bias"], layer.attrs["eps"])
    return F.layer_norm(xs[0].permute(0, 2, 3, 1), size, w["weight"], w["bias"], layer.attrs["eps"]).permute(0, 3, 1, 2)


def _ln_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    scale, bias = ctx.initializer(layer, "weight"), ctx.initializer(layer, "bias")
    eps = float(layer.attrs["eps"])
    if _ln_over_last(layer):
        ctx.node("LayerNormalization", [ctx.inputs[0], scale, bias], axis=-1, epsilon=eps)
        return
    last = ctx.node("Transpose", ctx.inputs, output=f"{layer.name}.nhwc", perm=[0, 2, 3, 1])
    normed = ctx.node("LayerNormalization", [last, scale, bias], output=f"{layer.name}.normed", axis=-1, epsilon=eps)
    ctx.node("Transpose", [normed], perm=[0, 3, 1, 2])


def _mean_axis(ctx: OnnxImportContext, node: OnnxNodeView) -> int | None:
    """The one per-sample axis a ``ReduceMean`` averages, keeping it (axes an attribute below opset 18, an
    input from 18), or None."""
    axes = axes_of(node, ctx.const)
    shape = ctx.shape(node.inputs[0])
    if node.op_type != "ReduceMean" or axes is None or shape is None or len(axes) != 1 \
            or node.attr("keepdims", 1) != 1:
        return None
    return axes[0] % (len(shape) + 1) - 1


def _ln_affine(ctx: OnnxImportContext, value: str, channels: int) -> Any:
    """The (C,) constant ``value`` as a parameter: its initializer's name when it has that shape."""
    array = ctx.const(value) if value else None
    if array is None or array.size != channels:
        return None
    return value if array.shape == (channels,) else array.reshape(channels)


def _decomposed_ln(ctx: OnnxImportContext, top: Any) -> tuple[str, float, dict[str, Any], list[Any], list[Any]] | None:
    """torch's layer norm below opset 17, ending at ``top`` (the Add of the shift):
    ``(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * weight + bias`` over the last axis, or over
    the channels of CxHxW (a channels-last region made channels-first, alexdsl/interop/onnx_layout.py)."""
    for scaled, shift in (top.inputs[:2], top.inputs[1::-1]):
        mul = producer_of(ctx, scaled, "Mul", top)
        for normed, factor in ((mul.inputs[:2], mul.inputs[1::-1]) if mul is not None else ()):
            div = producer_of(ctx, normed, "Div", mul)
            sqrt = producer_of(ctx, div.inputs[1], "Sqrt", div) if div is not None else None
            plus = producer_of(ctx, sqrt.inputs[0], "Add", sqrt) if sqrt is not None else None
            if plus is None:
                continue
            for variance, eps in (plus.inputs[:2], plus.inputs[1::-1]):
                mean_square = producer_of(ctx, variance, "ReduceMean", plus)
                square = producer_of(ctx, mean_square.inputs[0], "Pow", mean_square) if mean_square else None
                axis = _mean_axis(ctx, mean_square) if mean_square is not None else None
                if square is None or scalar(ctx, eps) is None or not near(scalar(ctx, square.inputs[1]), 2.0) \
                        or square.inputs[0] != div.inputs[0] or axis is None:
                    continue
                centred = ctx.absorb(div.inputs[0], square, div)
                mean = producer_of(ctx, centred.inputs[1], "ReduceMean", centred) \
                    if centred is not None and centred.op_type == "Sub" else None
                if mean is None or mean.inputs[0] != centred.inputs[0] or _mean_axis(ctx, mean) != axis:
                    continue
                source = centred.inputs[0]
                shape = ctx.shape(source) or (0,)
                if axis != len(shape) - 1 and (axis, len(shape)) != (0, 3):  # the last axis, or CxHxW's channels
                    continue
                channels = shape[axis]
                weight, bias = _ln_affine(ctx, factor, channels), _ln_affine(ctx, shift, channels)
                if weight is None or bias is None:
                    continue
                return (source, f32(scalar(ctx, eps)), {"weight": weight, "bias": bias},
                        [mul, div, sqrt, plus, mean_square, square, centred, mean], [mean, centred])
    return None


def _ln_core(ctx: OnnxImportContext, top: Any) -> tuple[str, float, dict[str, Any], list[Any], list[Any]] | None:
    """A layer norm over the last axis ending at ``top`` (``LayerNormalization``, or the decomposed form):
    its input, eps, weight and bias, the nodes before ``top``, and the nodes of it that read the input."""
    if top.op_type == "Add":
        return _decomposed_ln(ctx, top)
    shape = ctx.shape(top.inputs[0])
    axis = int(top.attr("axis", -1))
    if shape is None or axis not in (-1, len(shape)) or any(ctx.readers(v) for v in top.outputs[1:]):
        return None
    channels = shape[-1]
    weight = _ln_affine(ctx, top.inputs[1], channels)
    if len(top.inputs) > 2 and top.inputs[2]:
        bias = _ln_affine(ctx, top.inputs[2], channels)
    else:
        import numpy as np

        bias = np.zeros(channels, np.float32)
    if weight is None or bias is None:
        return None
    return top.inputs[0], f32(top.attr("epsilon", 1e-5)), {"weight": weight, "bias": bias}, [], [top]


def _ln_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """A layer norm over the last axis (``LayerNormalization``, or its decomposition below opset 17) -> layernorm:
    of a vector (the default axis), of a token tensor (``axis=-1``)."""
    core = _ln_core(ctx, node)
    if core is None:
        if node.op_type == "LayerNormalization":
            return ctx.fail(node, "a LayerNormalization is imported over the last axis, with a constant scale and "
                                  "shift of its size")
        return None
    source, eps, params, nodes, _ = core
    if _over_channels(ctx, core):
        return OnnxImport("layernorm", [source], {"eps": eps}, params, tuple(nodes))
    return OnnxImport("layernorm", [source], {"eps": eps, "axis": -1}, params, tuple(nodes))  # a token tensor


def _over_channels(ctx: OnnxImportContext, core: tuple[Any, ...]) -> bool:
    """Whether a layer norm core normalises the channels of its input: a vector's, or CxHxW's when its
    means reduce axis 1 (a LayerNormalization always takes the last axis)."""
    rank = len(ctx.shape(core[0]) or ())
    first = core[4][0]
    return rank == 1 or (rank == 3 and first.op_type == "ReduceMean" and _mean_axis(ctx, first) == 0)


def _ln_from_transpose(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Transpose(0,2,3,1)``, a layer norm over the last axis, ``Transpose(0,3,1,2)`` -> layernorm of CxHxW
    (alexdsl's export and torchvision's LayerNorm2d, at every opset)."""
    top = ctx.absorb(node.inputs[0])
    if list(node.attr("perm", ())) != [0, 3, 1, 2] or top is None \
            or top.op_type not in ("LayerNormalization", "Add"):
        return None
    core = _ln_core(ctx, top)
    if core is not None and core[4][0].op_type == "ReduceMean" \
            and _mean_axis(ctx, core[4][0]) != len(ctx.shape(core[0]) or ()) - 1:
        return None  # between the Transposes only the last axis is the channels
    first = ctx.absorb(core[0], *core[4]) if core is not None else None
    if first is None or first.op_type != "Transpose" or list(first.attr("perm", ())) != [0, 2, 3, 1]:
        return None
    _, eps, params, nodes, _ = core
    return OnnxImport("layernorm", [first.inputs[0]], {"eps": eps}, params, (top, *nodes, first))


register(OpDef(
    name="layernorm",
    family="norm",
    summary="Layer normalisation over one axis with a learned scale and shift of its size: by default the channels "
            "of every pixel of CxHxW (torchvision's LayerNorm2d) or of a vector; axis=-1: nn.LayerNorm over the last "
            "axis of any rank (no Caffe layer).",
    example="norm: layernorm(eps=1e-6)",
    args=(Arg("eps", "float", 1e-5, "added to the variance", min=0),
          Arg("axis", "int", 0, "the axis normalised: 0, the channels of CxHxW or a vector; -1, the last axis",
              positional=False)),
    infer=_ln_infer,
    params=_ln_params,
    default_fillers=UNIT_AFFINE,
    per_token=lambda attrs, inputs: attrs["axis"] == -1 and len(inputs[0]) >= 2,
    lower=Lowerings(
        torch=TorchLowering(module=lambda layer, ctx: (f"nn.LayerNorm({ctx.int(layer.params['weight'].shape[0])}, "
                                                       f"eps={ctx.float(layer.attrs['eps'])})"),
                            forward=_ln_torch_forward),
        executor=ExecutorLowering(lower=_ln_executor),
        onnx=_ln_onnx,
        from_onnx={"LayerNormalization": _ln_from_onnx, "Add": _ln_from_onnx, "Transpose": _ln_from_transpose},
        onnx_elementwise=("Sub", "Pow", "Add", "Sqrt", "Div", "Mul"),  # torch's decomposition below opset 17
        reference=_ln_reference,
    ),
))


def _gn_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    if x[0] % attrs["groups"]:
        raise ShapeError(f"input channels ({x[0]}) are not divisible by groups ({attrs['groups']})", arg="groups",
                         expected=f"a divisor of {x[0]}", received=f"groups={attrs['groups']} on {format_shape(x)}")
    return x


def _gn_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    """Reshape to (N, groups, -1), InstanceNormalization, reshape back, then the per-channel scale and shift."""
    groups, name = layer.attrs["groups"], layer.name
    grouped = ctx.node("Reshape", [ctx.inputs[0], ctx.constant([0, groups, -1], integer=True)],
                       output=f"{name}.grouped")
    ones, zeros = ctx.constant([1.0] * groups), ctx.constant([0.0] * groups)
    normed = ctx.node("InstanceNormalization", [grouped, ones, zeros], output=f"{name}.normed",
                      epsilon=float(layer.attrs["eps"]))
    back = ctx.node("Reshape", [normed, ctx.constant([0, *layer.shape], integer=True)], output=f"{name}.ungrouped")
    scaled = ctx.node("Mul", [back, _per_channel_onnx(layer, ctx, "weight")], output=f"{name}.scaled")
    ctx.node("Add", [scaled, _per_channel_onnx(layer, ctx, "bias")])


def _gn_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Reshape(N, groups, -1)``, ``InstanceNormalization`` (unit scale, zero shift), ``Reshape`` back, then a
    per-channel ``Mul`` and ``Add`` -> groupnorm (alexdsl's and torch's export, at every opset)."""
    for scaled, shift in (node.inputs[:2], node.inputs[1::-1]):
        mul = producer_of(ctx, scaled, "Mul")
        for value, factor in ((mul.inputs[:2], mul.inputs[1::-1]) if mul is not None else ()):
            back = producer_of(ctx, value, "Reshape", mul)
            normed = producer_of(ctx, back.inputs[0], "InstanceNormalization", back) if back is not None else None
            grouped = producer_of(ctx, normed.inputs[0], "Reshape", normed) if normed is not None else None
            if grouped is None:
                continue
            x = grouped.inputs[0]
            shape, groups = ctx.shape(x), ctx.shape(grouped.outputs[0])
            if shape is None or len(shape) != 3 or ctx.shape(back.outputs[0]) != shape or groups is None \
                    or len(groups) != 2:
                continue
            unit, zero = (ctx.const(v) for v in normed.inputs[1:3])
            weight, bias = per_channel(ctx, factor, shape), per_channel(ctx, shift, shape)
            if unit is None or zero is None or (unit != 1).any() or zero.any() or weight is None or bias is None:
                continue
            return OnnxImport("groupnorm", [x], {"groups": groups[0], "eps": f32(normed.attr("epsilon", 1e-5))},
                              {"weight": weight, "bias": bias}, (mul, back, normed, grouped))
    return None


register(OpDef(
    name="groupnorm",
    family="norm",
    summary="Group normalisation: statistics over each group of channels and its pixels (nn.GroupNorm; no Caffe "
            "layer).",
    example="gn: groupnorm(4, eps=1e-5)",
    args=(Arg("groups", "int", doc="channel groups (a divisor of the channels)", min=1),
          Arg("eps", "float", 1e-5, "added to the variance", min=0)),
    infer=_gn_infer,
    params=_channels,
    default_fillers=UNIT_AFFINE,
    lower=Lowerings(
        torch=TorchLowering(module=lambda layer, ctx: (f"nn.GroupNorm({ctx.int(layer.attrs['groups'])}, "
                                                       f"{ctx.int(layer.shape[0])}, "
                                                       f"eps={ctx.float(layer.attrs['eps'])})")),
        executor=_norm_executor("group_norm", "groups"),
        onnx=_gn_onnx,
        from_onnx={"Add": _gn_from_onnx},
        reference=lambda layer, xs, w, F: F.group_norm(xs[0], layer.attrs["groups"], w["weight"], w["bias"],
                                                       layer.attrs["eps"]),
    ),
))
