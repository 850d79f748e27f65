"""Pooling: max, average, adaptive average and global average."""

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
from alexdsl.ops.conv import window_lint
from alexdsl.ops.from_onnx import axes_of, pair, producer_of
from alexdsl.ops.lowering import CaffeLayer, ExecutorKernel, ExecutorLowering, Lowerings, OnnxImport, TorchLowering
from alexdsl.ops.padding import padding_before, window_pads
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, expect_rank, register
from alexdsl.shape_math import pool_output_size


def _stride_defaults_to_kernel(attrs: dict[str, Any]) -> dict[str, Any]:
    if attrs["stride"] is None:
        attrs["stride"] = attrs["kernel"]
    return attrs


def _infer_pool(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    out = [x[0]]
    for i, axis in enumerate(("height", "width")):
        kernel, pad = attrs["kernel"][i], attrs["pad"][i]
        if pad * 2 > kernel:
            raise ShapeError(
                f"padding {pad} is more than half the kernel {kernel}",
                arg="pad",
                expected=f"pad <= {kernel // 2}",
                received=f"pad={pad}",
            )
        size = pool_output_size(x[1 + i], kernel, attrs["stride"][i], pad, attrs["round"] == "ceil")
        if size < 1:
            raise ShapeError(
                f"output {axis} would be {size}: a window of {kernel} does not fit in {x[1 + i]}",
                arg="kernel",
                expected=f"a kernel of at most {x[1 + i] + 2 * pad}",
                received=f"kernel={kernel}",
            )
        out.append(size)
    return tuple(out)


_POOL_ARGS = (
    Arg("kernel", "pair", doc="window size, an int or (h, w)", min=1),
    Arg("stride", "pair", None, "step between windows (default: the kernel size)", min=1),
    Arg("pad", "pair", 0, "implicit padding on each side", min=0),
    Arg("round", "choice", "floor", "output size rounding: floor, or ceil as Caffe", choices=("floor", "ceil")),
)

def _pool_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    a = layer.attrs
    parts = [args[0], ctx.pair(a["kernel"]), ctx.pair(a["stride"])]
    if ctx.pair(a["pad"]) != "0":
        parts.append(ctx.pair(a["pad"]))
    if a["round"] == "ceil":
        parts.append("ceil_mode=True")
    if layer.op == "avgpool" and not a["count_pad"]:
        parts.append("count_include_pad=False")
    return f"F.{'max' if layer.op == 'maxpool' else 'avg'}_pool2d({', '.join(parts)})"


def _pool_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    a = layer.attrs
    _, height, width = ctx.input_shape(layer, 0)
    ident = ctx.ident
    window = ", ".join(ctx.lit(tuple(a[key])) for key in ("kernel", "stride", "pad")) + f", {a['round'] == 'ceil'}"
    setup = [f"self.{ident}_plan = rt.PoolPlan({ctx.lit(height)}, {ctx.lit(width)}, {window})"]
    if layer.op == "maxpool":
        return ExecutorKernel(f"rt.max_pool2d({ctx.inputs[0]}, {window}, plan=self.{ident}_plan, out={{out}})",
                              "max_pool2d", tuple(setup))
    count_pad = bool(a["count_pad"])
    setup.append(f"self.{ident}_div = self.const(1.0 / self.{ident}_plan.divisor({count_pad}))")
    return ExecutorKernel(
        f"rt.avg_pool2d({ctx.inputs[0]}, {window}, {count_pad}, plan=self.{ident}_plan, divisor=self.{ident}_div, "
        "out={out})", "avg_pool2d", tuple(setup))


def _pool_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    """Pools as ONNX nodes that keep exactly alexdsl's (torch's, Caffe's) windows.

    ONNX's ``ceil_mode`` keeps a last window that starts in the right padding, which alexdsl
    drops, so every pool is written with floor rounding and end pads that reach the last
    window alexdsl keeps. An average that counts the padding but not the part of a window
    past it (the divisor torch and Caffe use) zero-pads with a ``Pad`` node first and then
    averages with ``count_include_pad=0`` over that padded input.
    """
    a = layer.attrs
    kernel, stride, pad = list(a["kernel"]), list(a["stride"]), list(a["pad"])
    end = [max(p, (out - 1) * s + k - size - p)
           for out, s, k, size, p in zip(layer.shape[1:], stride, kernel, ctx.input_shape(layer, 0)[1:], pad)]
    window = {"kernel_shape": kernel, "strides": stride}
    if layer.op == "maxpool":
        ctx.node("MaxPool", ctx.inputs, pads=pad + end, **window)
        return
    count_pad = bool(a["count_pad"])
    overhang = [e - p for e, p in zip(end, pad)]
    if not count_pad or not any(overhang) or not any(pad):
        ctx.node("AveragePool", ctx.inputs, pads=pad + end, count_include_pad=int(count_pad and any(pad)), **window)
        return
    pads = ctx.constant([0, 0, *pad, 0, 0, *pad], output=f"{layer.name}.pads", integer=True)
    padded = ctx.node("Pad", [ctx.inputs[0], pads], output=f"{layer.name}.padded")
    ctx.node("AveragePool", [padded], pads=[0, 0, *overhang], count_include_pad=0, **window)


def _pool_reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    a = layer.attrs
    if layer.op == "maxpool":
        return F.max_pool2d(xs[0], a["kernel"], a["stride"], a["pad"], ceil_mode=a["round"] == "ceil")
    return F.avg_pool2d(xs[0], a["kernel"], a["stride"], a["pad"], ceil_mode=a["round"] == "ceil",
                        count_include_pad=a["count_pad"])


def _pool_caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
    a = layer.attrs
    body = [f"pool: {'MAX' if layer.op == 'maxpool' else 'AVE'}", *ctx.pair("kernel", a["kernel"], None),
            *ctx.pair("stride", a["stride"], 1), *ctx.pair("pad", a["pad"], 0)]
    if layer.op == "avgpool" and not a["count_pad"] and any(a["pad"]):
        ctx.fail("Caffe's average pooling always counts the padding; count_pad=false has no Caffe equivalent")
    if a["round"] == "floor":
        _, height, width = ctx.input_shape(layer, 0)
        sizes = [(pool_output_size(s, a["kernel"][i], a["stride"][i], a["pad"][i], False),
                  pool_output_size(s, a["kernel"][i], a["stride"][i], a["pad"][i], True))
                 for i, s in enumerate((height, width))]
        if any(floor != ceil for floor, ceil in sizes):
            body.append("round_mode: FLOOR")  # only where it matters: older Caffe builds lack the field
    return [CaffeLayer("Pooling", "pooling_param", tuple(body))]


def _adaptive_caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
    _, height, width = ctx.input_shape(layer, 0)
    oh, ow = layer.attrs["size"]
    if height % oh or width % ow:
        ctx.fail(f"adaptive_avgpool to {oh}x{ow} of a {height}x{width} input has uneven windows, which Caffe "
                 "cannot express")
    window = (height // oh, width // ow)
    return [CaffeLayer("Pooling", "pooling_param",
                       ("pool: AVE", *ctx.pair("kernel", window, None), *ctx.pair("stride", window, 1)))]


def _pool_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], None] | None:
    p = ctx.section(layer, "pooling_param")
    pool = p.scalar("pool")
    kind = str(pool.value) if pool is not None else "MAX"
    if kind not in ("MAX", "AVE"):
        ctx.error(f"pooling method {kind} is not supported", pool.span if pool else p.span, expected="MAX or AVE")
        return None
    if ctx.is_true(p.scalar("global_pooling")):
        if kind != "AVE":
            ctx.error("global max pooling is not supported (alexdsl has global_avgpool)", p.span)
            return None
        return "global_avgpool", [], None
    kernel = ctx.pair(p, "kernel", None)
    if kernel is None:
        ctx.error(f"Pooling '{name}' has no kernel_size", p.span)
        return None
    args = [kernel]
    stride = ctx.pair(p, "stride", 1)
    if stride is not None and stride != kernel:
        args.append(ctx.arg(stride, "stride"))
    pad = ctx.pair(p, "pad", 0)
    if pad not in (None, 0):
        args.append(ctx.arg(pad, "pad"))
    mode = p.scalar("round_mode")
    if mode is None or str(mode.value) == "CEIL":
        args.append(ctx.arg("ceil", "round"))  # Caffe's default rounding
    return ("maxpool" if kind == "MAX" else "avgpool"), args, None


def _padding_node(node: OnnxNodeView, ctx: OnnxImportContext) -> tuple[Any, list[int]] | None:
    """A zero ``Pad`` of height and width alike on both sides before an average: alexdsl's counted padding."""
    pad = producer_of(ctx, node.inputs[0], "Pad")
    if pad is None or pad.attr("mode", "constant") != "constant":
        return None
    pads = ctx.const(pad.inputs[1]) if len(pad.inputs) > 1 else None
    fill = ctx.const(pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2] else None
    if pads is None or len(pads) != 8 or (fill is not None and float(fill) != 0.0):
        return None
    n0, c0, h0, w0, n1, c1, h1, w1 = (int(p) for p in pads)
    if n0 or c0 or n1 or c1 or h0 != h1 or w0 != w1:
        return None
    return pad, [h0, w0]


def _pool_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``MaxPool``/``AveragePool`` (and a ``Pad`` before an average) -> maxpool/avgpool with alexdsl's windows.

    alexdsl pads both sides alike and rounds the output size down or up (torch's ceil_mode, which
    drops a last window that would start in the padding); the start pads of the node are the
    pad, and the rounding is the one that gives the node's output size.
    """
    op = "maxpool" if node.op_type == "MaxPool" else "avgpool"
    kernel = [int(k) for k in node.attr("kernel_shape", ())]
    if len(kernel) != 2 or any(d != 1 for d in node.attr("dilations", (1, 1))) or len(node.outputs) > 1:
        return ctx.fail(node, "only 2-D pools without dilation or indices are imported")
    stride = [int(s) for s in node.attr("strides", (1, 1))]
    found = window_pads(node, ctx, kernel)
    if found is None:
        return None
    begin, end = found
    pads = begin + end
    source, absorbed, count_pad = node.inputs[0], (), True
    before = padding_before(node, ctx, float("-inf")) if op == "maxpool" else None
    if before is not None:  # timm's MaxPool2dSame: a -inf Pad, which is a max pool's own padding
        absorbed, source = (before[0],), before[0].inputs[0]
        begin, end = [b + p for b, p in zip(begin, before[1])], [e + p for e, p in zip(end, before[2])]
        pads = begin + end
    if op == "avgpool":
        padded = _padding_node(node, ctx) if not any(begin) and not node.attr("count_include_pad", 0) else None
        if padded is not None:  # counted padding: a zero Pad, then an average over it
            absorbed, begin = (padded[0],), padded[1]
            source, end = padded[0].inputs[0], [b + e for b, e in zip(begin, end)]
        else:
            count_pad = bool(node.attr("count_include_pad", 0)) or not any(begin)
    size, out = ctx.shape(source), ctx.shape(node.outputs[0])
    if size is None or out is None or len(size) != 3:
        return ctx.fail(node, "the pool's input and output shapes are unknown")
    rounding = None
    for mode in ("ceil", "floor") if node.attr("ceil_mode", 0) else ("floor", "ceil"):  # the model's where both fit
        if all(pool_output_size(size[1 + i], kernel[i], stride[i], begin[i], mode == "ceil") == out[1 + i]
               for i in range(2)):
            rounding = mode
            break
    last_end = [(out[1 + i] - 1) * stride[i] + kernel[i] - begin[i] for i in range(2)]
    if rounding is None or any(b * 2 > k for b, k in zip(begin, kernel)):
        return ctx.fail(node, f"pads {pads} with ceil_mode={node.attr('ceil_mode', 0)} give windows alexdsl's "
                              "pools (torch's) cannot express")
    if op == "avgpool" and count_pad and not absorbed and any(begin) \
            and any(e > s + b for e, s, b in zip(last_end, size[1:], begin)):
        return ctx.fail(node, "an average that counts padding past the end of the input cannot be expressed")
    attrs: dict[str, Any] = {"kernel": pair(kernel), "stride": pair(stride), "pad": pair(begin), "round": rounding}
    if op == "avgpool":
        attrs["count_pad"] = count_pad
    return OnnxImport(op, [source], attrs, absorbed=absorbed)


_POOL_LOWERINGS = Lowerings(
    torch=TorchLowering(forward=_pool_torch),
    executor=ExecutorLowering(lower=_pool_executor),
    onnx=_pool_onnx,
    caffe=_pool_caffe,
    from_caffe={"Pooling": _pool_from_caffe},
    reference=_pool_reference,
    from_onnx={"MaxPool": _pool_from_onnx, "AveragePool": _pool_from_onnx},
)

register(OpDef(
    name="maxpool",
    family="pool",
    summary="Max pooling; round=ceil gives Caffe's default sizes (the last window starts inside the input).",
    example="pool1: maxpool(3, stride=2)",
    args=_POOL_ARGS,
    infer=_infer_pool,
    lint=window_lint,
    normalize=_stride_defaults_to_kernel,
    lower=_POOL_LOWERINGS,
))

register(OpDef(
    name="avgpool",
    family="pool",
    summary="Average pooling; count_pad=true divides by the window including padding (Caffe, PyTorch default).",
    example="pool: avgpool(3, stride=2, pad=1, round=ceil)",
    args=(*_POOL_ARGS, Arg("count_pad", "bool", True, "include padding in the divisor", positional=False)),
    infer=_infer_pool,
    lint=window_lint,
    normalize=_stride_defaults_to_kernel,
    lower=_POOL_LOWERINGS,
))


def _infer_adaptive(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    return (x[0], *attrs["size"])


def _adaptive_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    _, height, width = ctx.input_shape(layer, 0)
    size = ctx.lit(tuple(layer.attrs["size"]))
    return ExecutorKernel(
        f"rt.adaptive_avg_pool2d({ctx.inputs[0]}, {size}, matrices=self.{ctx.ident}_mats, out={{out}})",
        "adaptive_avg_pool2d",
        (f"self.{ctx.ident}_mats = tuple(self.const(m) for m in "
         f"rt.adaptive_matrices({ctx.lit(height)}, {ctx.lit(width)}, {size}))",))


def _adaptive_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    _, height, width = ctx.input_shape(layer, 0)
    oh, ow = layer.attrs["size"]
    if height % oh or width % ow:
        ctx.fail(f"adaptive_avgpool to {oh}x{ow} of a {height}x{width} input has uneven windows, which ONNX cannot "
                 f"express; use an input size whose last feature map is a multiple of {oh}x{ow} (--input), "
                 "or an avgpool")
    if (oh, ow) == (1, 1):
        ctx.node("GlobalAveragePool", ctx.inputs)
    else:
        window = [height // oh, width // ow]
        ctx.node("AveragePool", ctx.inputs, kernel_shape=window, strides=window)


register(OpDef(
    name="adaptive_avgpool",
    family="pool",
    summary="Average pooling to a fixed output size, whatever the input size (torchvision's AlexNet: 6x6).",
    example="pool: adaptive_avgpool(6)",
    args=(Arg("size", "pair", doc="output size, an int or (h, w)", min=1),),
    infer=_infer_adaptive,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"F.adaptive_avg_pool2d({args[0]}, "
                                                             f"{ctx.pair(layer.attrs['size'])})"),
        executor=ExecutorLowering(lower=_adaptive_executor),
        onnx=_adaptive_onnx,
        caffe=_adaptive_caffe,
        reference=lambda layer, xs, w, F: F.adaptive_avg_pool2d(xs[0], layer.attrs["size"]),
    ),
))


def _infer_global(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    return (x[0], 1, 1)


def _global_from_reduce_mean(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | list[OnnxImport] | None:
    """``ReduceMean`` over height and width (``x.mean((2, 3), keepdim=True)``) -> global_avgpool, and a
    flatten after it when the reduced axes are dropped."""
    shape = ctx.shape(node.inputs[0])
    axes = axes_of(node, ctx.const)
    if shape is None or len(shape) != 3 or axes is None or sorted(a % 4 for a in axes) != [2, 3]:
        return ctx.fail(node, "only a ReduceMean over height and width is imported (as global_avgpool)")
    if node.attr("keepdims", 1):
        return OnnxImport("global_avgpool", node.inputs[:1])
    pooled = f"{node.outputs[0]}.pooled"  # x.mean((2, 3)): the pool, then a flatten of its Cx1x1
    return [OnnxImport("global_avgpool", node.inputs[:1], output=pooled), OnnxImport("flatten", [pooled])]


register(OpDef(
    name="global_avgpool",
    family="pool",
    summary="Average over all positions of each channel: CxHxW -> Cx1x1.",
    example="pool: global_avgpool",
    args=(),
    infer=_infer_global,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"F.adaptive_avg_pool2d({args[0]}, 1)"),
        executor=ExecutorLowering(lower=lambda layer, ctx: ExecutorKernel(
            f"rt.global_avg_pool2d({ctx.inputs[0]}, out={{out}})", "global_avg_pool2d")),
        onnx=lambda layer, ctx: ctx.node("GlobalAveragePool", ctx.inputs),
        from_onnx={"GlobalAveragePool": lambda node, ctx: OnnxImport("global_avgpool", node.inputs[:1]),
                   "ReduceMean": _global_from_reduce_mean},
        caffe=lambda layer, ctx: [CaffeLayer("Pooling", "pooling_param", ("pool: AVE", "global_pooling: true"))],
        reference=lambda layer, xs, w, F: xs[0].mean(dim=(2, 3), keepdim=True),
    ),
))
