"""Tensor plumbing: flatten, concat, add, dropout."""

from __future__ import annotations

from typing import Any

from alexdsl.ops.lowering import CaffeLayer, ExecutorKernel, ExecutorLowering, Lowerings, Pattern, TorchLowering
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, format_shape, numel, register


def _flatten(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return (numel(inputs[0]),)


register(OpDef(
    name="flatten", family="tensor", summary="CxHxW -> C*H*W.", example="flat: flatten", args=(), infer=_flatten,
    pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"torch.flatten({args[0]}, 1)"),
        executor=ExecutorLowering(
            lower=lambda layer, ctx: ExecutorKernel(f"{ctx.inputs[0]}.reshape(n, -1)", "view", note="flatten (a view)"),
            alias=True),
        onnx=lambda layer, ctx: ctx.node("Flatten", ctx.inputs, axis=1),
        caffe=lambda layer, ctx: [CaffeLayer("Flatten")],
        from_caffe={"Flatten": lambda layer, name, ctx: ("flatten", [], None)},
        reference=lambda layer, xs, w, F: xs[0].flatten(1),
    ),
))


def _concat(attrs: Attrs, inputs: list[Shape]) -> Shape:
    first = inputs[0]
    for i, shape in enumerate(inputs[1:], start=2):
        if len(shape) != len(first) or shape[1:] != first[1:]:
            raise ShapeError(
                f"concat input {i} has shape {format_shape(shape)}, which does not match input 1 "
                f"({format_shape(first)}) outside the channel dimension",
                expected="inputs that differ only in channels",
                received=", ".join(format_shape(s) for s in inputs),
            )
    return (sum(s[0] for s in inputs), *first[1:])


def _concat_from_caffe(layer: Any, name: str, ctx: Any) -> tuple[str, list[str], None] | None:
    p = ctx.section(layer, "concat_param")
    axis = p.scalar("axis") or p.scalar("concat_dim")
    if axis is not None and axis.value != 1:
        ctx.error("concat along an axis other than channels (1) is not supported", axis.span)
        return None
    return "concat", [], None


def _add_from_caffe(layer: Any, name: str, ctx: Any) -> tuple[str, list[str], None] | None:
    p = ctx.section(layer, "eltwise_param")
    operation = p.scalar("operation")
    if operation is not None and str(operation.value) != "SUM":
        ctx.error(f"Eltwise {operation.value} is not supported (only SUM -> add)", operation.span)
        return None
    coeffs = p.scalars("coeff")
    if any(c.value != 1 for c in coeffs):
        ctx.error("Eltwise coefficients other than 1 are not supported", coeffs[0].span)
        return None
    return "add", [], None


def _dropout_from_caffe(layer: Any, name: str, ctx: Any) -> tuple[str, list[str], None]:
    ratio = ctx.section(layer, "dropout_param").scalar("dropout_ratio")
    return "dropout", [ratio.text if ratio is not None else "0.5"], None


def _concat_reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    import torch

    return torch.cat(xs, dim=1)


register(OpDef(
    name="concat", family="tensor", summary="Join inputs along channels (Caffe Concat).",
    example="out: concat(b1, b3, b5, bp)", args=(), infer=_concat, inputs=(2, None), pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"torch.cat([{', '.join(args)}], 1)"),
        executor=ExecutorLowering(
            lower=lambda layer, ctx: ExecutorKernel(f"rt.concat([{', '.join(ctx.inputs)}], out={{out}})", "concat")),
        onnx=lambda layer, ctx: ctx.node("Concat", ctx.inputs, axis=1),
        caffe=lambda layer, ctx: [CaffeLayer("Concat")],
        from_caffe={"Concat": _concat_from_caffe},
        reference=_concat_reference,
    ),
))


def _add(attrs: Attrs, inputs: list[Shape]) -> Shape:
    first = inputs[0]
    for i, shape in enumerate(inputs[1:], start=2):
        if shape != first:
            raise ShapeError(
                f"add input {i} has shape {format_shape(shape)}, input 1 has {format_shape(first)}",
                expected="inputs of one shape",
                received=", ".join(format_shape(s) for s in inputs),
            )
    return first


register(OpDef(
    name="add", family="tensor", summary="Elementwise sum of inputs of one shape (Caffe Eltwise SUM).",
    example="out: add(branch, shortcut)", args=(), infer=_add, inputs=(2, None), pattern=Pattern.BROADCAST,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: " + ".join(args), overwritable_output=True),
        executor=ExecutorLowering(
            lower=lambda layer, ctx: ExecutorKernel(
                f"rt.add({', '.join(ctx.inputs)}, relu={ctx.epilogue == 'relu'}, out={{out}})", "add"),
            inplace=True, epilogues=("relu",)),
        onnx=lambda layer, ctx: ctx.node("Add" if len(ctx.inputs) == 2 else "Sum", ctx.inputs),
        caffe=lambda layer, ctx: [CaffeLayer("Eltwise", "eltwise_param", ("operation: SUM",))],
        from_caffe={"Eltwise": _add_from_caffe},
        reference=lambda layer, xs, w, F: sum(xs[1:], xs[0]),
    ),
))


def _same(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return inputs[0]


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
        reference=lambda layer, xs, w, F: xs[0],
    ),
))
