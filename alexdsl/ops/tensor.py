"""Tensor plumbing: flatten, concat, dropout, stochastic depth, channel shuffle."""

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
from alexdsl.ops.from_onnx import computed, producer_of
from alexdsl.ops.lowering import (
    CaffeLayer,
    ExecutorKernel,
    ExecutorLowering,
    Lowerings,
    OnnxImport,
    Pattern,
    TorchLowering,
)
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, format_shape, normalize_axis, numel, register


def _flatten_axes(attrs: Attrs, x: Shape) -> tuple[int, int]:
    start, end = normalize_axis(attrs["start"], len(x), "start"), normalize_axis(attrs["end"], len(x), "end")
    if start > end:
        raise ShapeError(f"flatten's start ({attrs['start']}) comes after its end ({attrs['end']}) for "
                         f"{format_shape(x)}", arg="end", expected="start <= end", received=format_shape(x))
    return start, end


def _flatten(attrs: Attrs, inputs: list[Shape]) -> Shape:
    x = inputs[0]
    start, end = _flatten_axes(attrs, x)
    return (*x[:start], numel(x[start:end + 1]), *x[end + 1:])


def _flattens_all(layer: Any) -> bool:
    """Whether the layer flattens every per-sample axis (the default): torch.flatten(x, 1), ONNX Flatten."""
    return len(layer.shape) == 1


def _flatten_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    if _flattens_all(layer):
        return f"torch.flatten({args[0]}, 1)"
    start, end = _flatten_axes(layer.attrs, ctx.input_shape(layer, 0))
    return f"torch.flatten({args[0]}, {ctx.int(start + 1)}, {ctx.int(end + 1)})"


def _flatten_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    shape = "-1" if _flattens_all(layer) else ", ".join(ctx.lit(d) for d in layer.shape)
    return ExecutorKernel(f"{ctx.inputs[0]}.reshape(n, {shape})", "view", note="flatten (a view)")


def _flatten_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    if _flattens_all(layer):
        ctx.node("Flatten", ctx.inputs, axis=1)
    else:
        ctx.node("Reshape", [ctx.inputs[0], ctx.constant([-1, *layer.shape], integer=True)])


def _flatten_caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
    if not _flattens_all(layer):
        ctx.fail("a flatten of some axes only: alexdsl exports Caffe's Flatten of every axis after the batch")
    return [CaffeLayer("Flatten")]


register(OpDef(
    name="flatten", family="tensor",
    summary="Axes start to end (every per-sample axis by default: CxHxW -> C*H*W) as one.",
    example="flat: flatten",
    args=(Arg("start", "int", 0, "the first per-sample axis flattened"),
          Arg("end", "int", -1, "the last per-sample axis flattened (-1: the last axis)")),
    infer=_flatten,
    pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=_flatten_torch),
        executor=ExecutorLowering(lower=_flatten_executor, alias=True),
        onnx=_flatten_onnx,
        caffe=_flatten_caffe,
        from_caffe={"Flatten": lambda layer, name, ctx: ("flatten", [], None)},
        from_onnx={"Flatten": lambda node, ctx: OnnxImport("flatten", node.inputs[:1]) if node.attr("axis", 1) == 1
                   else ctx.fail(node, "only Flatten(axis=1) is imported")},
        reference=lambda layer, xs, w, F: xs[0].flatten(1) if _flattens_all(layer)
        else xs[0].reshape(-1, *layer.shape),
    ),
))


def _concat(attrs: Attrs, inputs: list[Shape]) -> Shape:
    first = inputs[0]
    axis = normalize_axis(attrs["axis"], len(first))
    for i, shape in enumerate(inputs[1:], start=2):
        if len(shape) != len(first) or shape[:axis] + shape[axis + 1:] != first[:axis] + first[axis + 1:]:
            channels = attrs["axis"] == 0 and len(first) in (1, 3)
            where = "the channel dimension" if channels else f"axis {attrs['axis']}"
            raise ShapeError(
                f"concat input {i} has shape {format_shape(shape)}, which does not match input 1 "
                f"({format_shape(first)}) outside {where}",
                expected="inputs that differ only in channels" if channels
                else f"inputs of one rank that differ only along axis {attrs['axis']}",
                received=", ".join(format_shape(s) for s in inputs),
            )
    return (*first[:axis], sum(s[axis] for s in inputs), *first[axis + 1:])


def _concat_dim(layer: Any) -> int:
    """The axis as torch counts it: the batch added to a non-negative axis, a negative one kept."""
    axis = layer.attrs["axis"]
    return axis + 1 if axis >= 0 else axis


def _concat_caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
    if layer.attrs["axis"] != 0:
        ctx.fail(f"concat over axis {layer.attrs['axis']}: alexdsl exports Caffe's Concat over the channels only")
    return [CaffeLayer("Concat")]


def _concat_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    axis = "" if layer.attrs["axis"] == 0 else f", axis={ctx.lit(_concat_dim(layer))}"
    return ExecutorKernel(f"rt.concat([{', '.join(ctx.inputs)}]{axis}, out={{out}})", "concat")


def _concat_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], None] | None:
    p = ctx.section(layer, "concat_param")
    axis = p.scalar("axis") or p.scalar("concat_dim")
    if axis is not None and axis.value != 1:
        ctx.error("concat along an axis other than channels (1) is not supported", axis.span)
        return None
    return "concat", [], None


def _dropout_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], None]:
    ratio = ctx.section(layer, "dropout_param").scalar("dropout_ratio")
    return "dropout", [ctx.literal(ratio) if ratio is not None else 0.5], None


def _concat_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Concat`` of computed values over a per-sample axis -> concat (over the channels, axis 1, without
    arguments; a negative axis stays negative)."""
    rank = len(ctx.shape(node.outputs[0]) or ()) + 1
    axis = int(node.attr("axis", 1))
    if axis in (0, -rank) or not -rank <= axis < rank or not computed(ctx, node.inputs):
        return ctx.fail(node, "only a Concat of computed values over an axis after the batch is imported")
    if len(node.inputs) == 1:  # torch.cat([x]) (DenseNet's first layer of a block) is x
        return OnnxImport(None, list(node.inputs))
    if axis in (1, 1 - rank):
        return OnnxImport("concat", list(node.inputs))
    return OnnxImport("concat", list(node.inputs), {"axis": axis - 1 if axis > 0 else axis})


def _concat_reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    """torch.cat, a learned tensor (batch 1, see ``param``) broadcast over the batch first."""
    import torch

    batch = max(x.shape[0] for x in xs)
    return torch.cat([x.expand(batch, *x.shape[1:]) for x in xs], dim=_concat_dim(layer))


register(OpDef(
    name="concat", family="tensor",
    summary="Join inputs along one axis: by default the channels (Caffe Concat); any axis of inputs of any rank.",
    example="out: concat(b1, b3, b5, bp)",
    args=(Arg("axis", "int", 0, "the per-sample axis joined: 0, the channels; -1, the last axis", positional=False),),
    infer=_concat, inputs=(2, None), pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"torch.cat([{', '.join(args)}], "
                                                             f"{ctx.int(_concat_dim(layer))})"),
        executor=ExecutorLowering(lower=_concat_executor),
        onnx=lambda layer, ctx: ctx.node("Concat", ctx.inputs, axis=_concat_dim(layer)),
        caffe=_concat_caffe,
        from_caffe={"Concat": _concat_from_caffe},
        from_onnx={"Concat": _concat_from_onnx},
        reference=_concat_reference,
    ),
))


def _same(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return inputs[0]


_ONNX_FLOAT = 1  # onnx.TensorProto.FLOAT: what every value alexdsl computes is


def _cast_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Cast`` to float32 of a value a node computes: no layer, since every value alexdsl computes is float32
    already (timm's EfficientViT casts its attention to float32 with autocast off)."""
    to = int(node.attr("to", 0))
    if to != _ONNX_FLOAT:
        return ctx.fail(node, f"a Cast to ONNX type {to} changes the dtype; alexdsl computes in float32 only "
                              f"(a Cast to float32, type {_ONNX_FLOAT}, is imported as no layer)")
    if ctx.producer(node.inputs[0]) is None:
        return ctx.fail(node, "a Cast of the model's input or of a constant is not imported (only a Cast to float32 "
                              "of a computed value, which changes nothing)")
    return OnnxImport(None, node.inputs[:1])


register(OpDef(
    name="dropout", family="tensor",
    summary="Zero each element with probability p while training; identity at inference.",
    example="drop6: dropout(0.5)", args=(Arg("p", "float", 0.5, "drop probability", min=0, max=0.999999),),
    infer=_same, pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"F.dropout({args[0]}, {ctx.float(layer.attrs['p'])}, "
                                                             "self.training)"),
        executor=ExecutorLowering(
            lower=lambda layer, ctx: ExecutorKernel(
                "", "identity", note=f"dropout(p={layer.attrs['p']!r}) is the identity at inference"),
            alias=True),
        onnx=lambda layer, ctx: ctx.alias(ctx.inputs[0]),
        caffe=lambda layer, ctx: [
            CaffeLayer("Dropout", "dropout_param", (f"dropout_ratio: {ctx.number(layer.attrs['p'])}",))],
        from_caffe={"Dropout": _dropout_from_caffe},
        from_onnx={"Dropout": lambda node, ctx: OnnxImport(None, node.inputs[:1]),  # the identity at inference
                   "Identity": lambda node, ctx: OnnxImport(None, node.inputs[:1]),
                   "Cast": _cast_from_onnx},
        onnx_elementwise=("Dropout", "Identity"),
        reference=lambda layer, xs, w, F: xs[0],
    ),
))



def _stochastic_depth_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    """torchvision.ops.stochastic_depth: in training, zero whole samples (row) or the batch with probability p
    and scale the survivors by 1 / (1 - p); the identity in eval mode."""
    p, x = layer.attrs["p"], args[0]
    if p == 0:
        return x
    ones = ", 1" * len(layer.shape)
    size = f"({x}.shape[0]{ones})" if layer.attrs["mode"] == "row" else f"(1{ones})"
    noise = f"{x}.new_zeros({size})" if p == 1 else \
        f"{x}.new_empty({size}).bernoulli_({ctx.float(1 - p)}).div_({ctx.float(1 - p)})"
    return f"{x} * {noise} if self.training else {x}"


register(OpDef(
    name="stochastic_depth", family="tensor",
    summary="While training, drop whole samples (row) or the whole batch with probability p and scale the rest by "
            "1 / (1 - p), as torchvision; identity at inference (no Caffe layer).",
    example="sd: stochastic_depth(0.1, mode=row)",
    args=(Arg("p", "float", doc="drop probability", min=0, max=1),
          Arg("mode", "choice", "row", "row: per sample; batch: the whole batch at once", choices=("row", "batch"))),
    infer=_same, pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=_stochastic_depth_torch),
        executor=ExecutorLowering(
            lower=lambda layer, ctx: ExecutorKernel(
                "", "identity", note=f"stochastic_depth(p={layer.attrs['p']!r}) is the identity at inference"),
            alias=True),
        onnx=lambda layer, ctx: ctx.alias(ctx.inputs[0]),
        reference=lambda layer, xs, w, F: xs[0],
    ),
))


def _shuffle_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    if len(x) != 3 or x[0] % attrs["groups"]:
        raise ShapeError(f"channel_shuffle needs CxHxW input whose channels divide into {attrs['groups']} groups",
                         arg="groups", expected=f"channels a multiple of {attrs['groups']}",
                         received=format_shape(x))
    return x


def _shuffle_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    c, h, w = layer.shape
    g = layer.attrs["groups"]
    grouped = ctx.node("Reshape", [ctx.inputs[0], ctx.constant([0, g, c // g, h, w], integer=True)],
                       output=f"{layer.name}.grouped")
    swapped = ctx.node("Transpose", [grouped], output=f"{layer.name}.swapped", perm=[0, 2, 1, 3, 4])
    ctx.node("Reshape", [swapped, ctx.constant([0, c, h, w], integer=True)])


def _shuffle_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Reshape`` to (N, g, C/g, H, W), ``Transpose(0, 2, 1, 3, 4)``, ``Reshape`` back -> channel_shuffle(g)
    (alexdsl's export and torchvision's ShuffleNetV2 ``channel_shuffle``)."""
    swapped = producer_of(ctx, node.inputs[0], "Transpose")
    grouped = producer_of(ctx, swapped.inputs[0], "Reshape", swapped) if swapped is not None else None
    if grouped is None or list(swapped.attr("perm", ())) != [0, 2, 1, 3, 4]:
        return None
    x = grouped.inputs[0]
    shape, groups = ctx.shape(x), ctx.shape(grouped.outputs[0])
    if shape is None or len(shape) != 3 or ctx.shape(node.outputs[0]) != shape or groups is None \
            or tuple(groups) != (groups[0], shape[0] // groups[0], *shape[1:]) or shape[0] % groups[0]:
        return None
    return OnnxImport("channel_shuffle", [x], {"groups": groups[0]}, absorbed=(swapped, grouped))


register(OpDef(
    name="channel_shuffle", family="tensor",
    summary="ShuffleNet's channel shuffle: channels as (groups, C/groups), transposed (no Caffe layer).",
    example="sh: channel_shuffle(2)",
    args=(Arg("groups", "int", doc="channel groups", min=1),),
    infer=_shuffle_infer, pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: (
            f"{args[0]}.unflatten(1, ({ctx.int(layer.attrs['groups'])}, -1)).transpose(1, 2).flatten(1, 2)")),
        executor=ExecutorLowering(lower=lambda layer, ctx: ExecutorKernel(
            f"rt.channel_shuffle({ctx.inputs[0]}, {ctx.lit(layer.attrs['groups'])}, out={{out}})", "channel_shuffle")),
        onnx=_shuffle_onnx,
        from_onnx={"Reshape": _shuffle_from_onnx},
        reference=lambda layer, xs, w, F: F.channel_shuffle(xs[0], layer.attrs["groups"]),
    ),
))
