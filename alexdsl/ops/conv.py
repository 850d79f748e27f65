"""Convolution."""

from __future__ import annotations

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
from alexdsl.ops.fillers import WEIGHT_AND_BIAS
from alexdsl.ops.from_onnx import linear_kernel, pair
from alexdsl.ops.lowering import (
    EVERY_EPILOGUE,
    CaffeLayer,
    ExecutorKernel,
    ExecutorLowering,
    Lowerings,
    OnnxImport,
    Pattern,
    TorchLowering,
)
from alexdsl.ops.padding import padded_window
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, expect_rank, register
from alexdsl.shape_math import conv_output_size, uncovered_pixels


def _infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    channels, height, width = x
    groups = attrs["groups"]
    if channels % groups:
        raise ShapeError(
            f"input channels ({channels}) are not divisible by groups ({groups})",
            arg="groups",
            expected=f"a divisor of {channels}",
            received=f"groups={groups}",
        )
    if attrs["out"] % groups:
        raise ShapeError(
            f"the filter count ({attrs['out']}) is not divisible by groups ({groups})",
            arg="out",
            expected=f"a multiple of {groups}",
            received=f"out={attrs['out']}",
        )
    sizes = []
    for axis, size in (("height", height), ("width", width)):
        i = 0 if axis == "height" else 1
        out = conv_output_size(size, attrs["kernel"][i], attrs["stride"][i], attrs["pad"][i], attrs["dilation"][i])
        if out < 1:
            extent = attrs["dilation"][i] * (attrs["kernel"][i] - 1) + 1
            raise ShapeError(
                f"output {axis} would be {out}: a window of {extent} does not fit in "
                f"{size} + 2*{attrs['pad'][i]} padding",
                arg="kernel",
                expected=f"a kernel of at most {size + 2 * attrs['pad'][i]}, or more padding",
                received=f"kernel={attrs['kernel'][i]} on an input {axis} of {size}",
            )
        sizes.append(out)
    return (attrs["out"], sizes[0], sizes[1])


def _params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    channels = inputs[0][0]
    kh, kw = attrs["kernel"]
    params: dict[str, Shape] = {"weight": (attrs["out"], channels // attrs["groups"], kh, kw)}
    if attrs["bias"]:
        params["bias"] = (attrs["out"],)
    return params


def _macs(attrs: Attrs, inputs: list[Shape], output: Shape) -> int:
    kh, kw = attrs["kernel"]
    return output[0] * output[1] * output[2] * (inputs[0][0] // attrs["groups"]) * kh * kw


def _count(n: int, plural: str) -> str:
    return f"{n} {plural}" if n != 1 else plural[:-1]


def window_lint(attrs: Attrs, inputs: list[Shape]) -> list[tuple[str, str | None]]:
    """Warn when a floor-rounded window sweep leaves input rows or columns unread.

    The seed's 224-vs-227 confusion is the case in point: conv(96, 11, stride=4) reads all of
    a 227x227 image but not the last row and column of a 224x224 one.
    """
    if attrs.get("round", "floor") != "floor" or len(inputs[0]) != 3:
        return []
    dilation = attrs.get("dilation", (1, 1))
    _, height, width = inputs[0]
    lost = [uncovered_pixels(size, attrs["kernel"][i], attrs["stride"][i], attrs["pad"][i], dilation[i])
            if attrs["kernel"][i] >= attrs["stride"][i] else 0  # a stride past the kernel skips on purpose
            for i, size in enumerate((height, width))]
    if not any(lost):
        return []
    where = f"kernel {'x'.join(map(str, attrs['kernel']))} with stride {'x'.join(map(str, attrs['stride']))} " \
            f"on a {height}x{width} input never reads"
    parts = [p for p, n in ((_count(lost[0], "rows"), lost[0]), (_count(lost[1], "columns"), lost[1])) if n]
    message = f"{where} the last {' and '.join(parts)}"
    if not any(attrs["pad"]):
        fit_h, fit_w = height + (attrs["stride"][0] - lost[0]) % attrs["stride"][0], \
            width + (attrs["stride"][1] - lost[1]) % attrs["stride"][1]
        message += f"; a {fit_h}x{fit_w} (or {height - lost[0]}x{width - lost[1]}) input is covered exactly"
    return [(message, "kernel")]




# lowerings ----------------------------------------------------------------------------------

def _torch_module(layer: Any, ctx: TorchContext) -> str:
    a = layer.attrs
    parts = [ctx.int(ctx.input_shape(layer, 0)[0]), ctx.int(a["out"]), ctx.pair(a["kernel"])]
    for key, name, default in (("stride", "stride", "1"), ("pad", "padding", "0"), ("dilation", "dilation", "1")):
        value = ctx.pair(a[key])
        if value != default:
            parts.append(f"{name}={value}")
    if a["groups"] != 1:
        parts.append(f"groups={ctx.int(a['groups'])}")
    if "bias" not in layer.params:
        parts.append("bias=False")
    return f"nn.Conv2d({', '.join(parts)})"


def _executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    a = layer.attrs
    c, h, w = ctx.input_shape(layer, 0)
    geometry = (c, h, w, a["out"], tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]), tuple(a["dilation"]),
                a["groups"])
    plan = ctx.conv_plan(*geometry)
    ident = ctx.ident
    return ExecutorKernel(
        code=(f"rt.conv2d({ctx.inputs[0]}, self.{ident}_w, self.{ident}_b, {epilogue_args(ctx.epilogue)}, "
              + (f"residual={ctx.residual}, " if ctx.residual is not None else "")
              + f"plan=self.{ident}_plan, scratch=scratch, out={{out}})"),
        kernel="conv2d" + "+1x1" * plan.is_pointwise + "+bias" * ctx.has_bias(layer),
        setup=(*ctx.weights_setup(layer), f"self.{ident}_plan = rt.ConvPlan({', '.join(map(ctx.lit, geometry))})"),
        scratch=(plan.cols_size(1), plan.wide_size(1)),
    )


def _onnx(layer: Any, ctx: OnnxExportContext) -> None:
    a = layer.attrs
    ph, pw = a["pad"]
    inputs = [ctx.inputs[0], ctx.initializer(layer, "weight")]
    if "bias" in layer.params:
        inputs.append(ctx.initializer(layer, "bias"))
    ctx.node("Conv", inputs, kernel_shape=list(a["kernel"]), strides=list(a["stride"]), pads=[ph, pw, ph, pw],
             dilations=list(a["dilation"]), group=int(a["groups"]))


def _from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | list[OnnxImport] | None:
    """``Conv`` (2-D, a constant weight and optional bias) -> conv; a zero ``Pad`` before it that evens its pads
    is folded into ``pad``, and pads that stay uneven (``auto_pad=SAME_UPPER``) become a ``pad`` layer before it."""
    if linear_kernel(ctx, node) is not None:  # alexdsl's pointwise_fc export, which linear.py imports
        return None
    weight = ctx.const(node.inputs[1])
    if weight is None or weight.ndim != 4:
        return ctx.fail(node, "only 2-D convolutions with a constant weight are imported")
    kernel = [int(k) for k in node.attr("kernel_shape", weight.shape[2:])]
    attrs = {"out": int(weight.shape[0]), "kernel": pair(kernel), "stride": pair(node.attr("strides", (1, 1))),
             "dilation": pair(node.attr("dilations", (1, 1))), "groups": int(node.attr("group", 1))}
    params = {"weight": node.inputs[1]}
    if len(node.inputs) > 2 and node.inputs[2]:
        params["bias"] = node.inputs[2]
    else:
        attrs["bias"] = False
    return padded_window(node, ctx, "conv", attrs, kernel, params)


def _caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
    a = layer.attrs
    body = [f"num_output: {a['out']}", *ctx.pair("kernel", a["kernel"], None), *ctx.pair("stride", a["stride"], 1),
            *ctx.pair("pad", a["pad"], 0)]
    if tuple(a["dilation"]) != (1, 1):
        body += ctx.pair("dilation", a["dilation"], 1)
    if a["groups"] != 1:
        body.append(f"group: {a['groups']}")
    return [CaffeLayer("Convolution", "convolution_param", (*body, *ctx.weight_and_bias(layer)), ("weight", "bias"))]


def _from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], str] | None:
    p = layer.message("convolution_param")
    if p is None or p.scalar("num_output") is None:
        ctx.error(f"Convolution '{name}' needs convolution_param {{ num_output kernel_size }}", layer.span)
        return None
    kernel = ctx.pair(p, "kernel", None)
    if kernel is None:
        ctx.error(f"Convolution '{name}' has no kernel_size", p.span)
        return None
    args = [ctx.literal(p.scalar("num_output")), kernel]
    for key in ("stride", "pad", "dilation"):
        value = ctx.pair(p, key, None)
        if value is not None and value != (0 if key == "pad" else 1):
            args.append(ctx.arg(value, key))
    group = p.scalar("group")
    if group is not None and group.value != 1:
        args.append(ctx.arg(ctx.literal(group), "groups"))
    if ctx.is_true(p.scalar("bias_term")) is False:
        args.append(ctx.arg(False, "bias"))
    axis = p.scalar("axis")
    if axis is not None and axis.value != 1:
        ctx.error("convolution axis other than 1 is not supported", axis.span)
    return "conv", args, "convolution_param"


def _reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    a = layer.attrs
    return F.conv2d(xs[0], w["weight"], w.get("bias"), stride=a["stride"], padding=a["pad"], dilation=a["dilation"],
                    groups=a["groups"])


CONV = register(OpDef(
    name="conv",
    family="conv",
    summary="2-D convolution (Caffe Convolution), grouped when groups > 1.",
    example="conv1: conv(96, 11, stride=4, pad=0, groups=1, bias=constant(0))",
    args=(
        Arg("out", "int", doc="number of filters (output channels)", min=1),
        Arg("kernel", "pair", doc="window size, an int or (h, w)", min=1),
        Arg("stride", "pair", 1, "step between windows", min=1),
        Arg("pad", "pair", 0, "zero padding on each side", min=0),
        Arg("dilation", "pair", 1, "spacing between kernel taps", min=1),
        Arg("groups", "int", 1, "split channels into groups (AlexNet's two towers: 2)", min=1),
        Arg("bias", "bias", True, "false for no bias, or the bias filler"),
    ),
    infer=_infer,
    params=_params,
    macs=_macs,
    lint=window_lint,
    default_fillers=WEIGHT_AND_BIAS,
    pattern=Pattern.OUT_ELEMWISE_FUSABLE,
    lower=Lowerings(
        torch=TorchLowering(module=_torch_module, overwritable_output=True),
        executor=ExecutorLowering(lower=_executor, epilogues=EVERY_EPILOGUE, residual=True, folds_affine=True),
        onnx=_onnx,
        caffe=_caffe,
        from_caffe={"Convolution": _from_caffe},
        reference=_reference,
        from_onnx={"Conv": _from_onnx},
    ),
))
