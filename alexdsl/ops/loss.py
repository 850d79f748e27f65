"""Loss and metric layers: they take the logits and the label."""

from __future__ import annotations

from typing import Any

from alexdsl.ops.contexts import CaffeImportContext, CaffeMessage, TorchContext
from alexdsl.ops.lowering import CaffeLayer, Lowerings, TorchLowering
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, format_shape, register


def class_count(logits: Shape) -> int:
    """The class count of a logits shape: C, or Cx1x1."""
    if len(logits) == 1 or (len(logits) == 3 and logits[1:] == (1, 1)):
        return logits[0]
    raise ShapeError(
        "expects class scores: a vector (C) or Cx1x1",
        expected="C or Cx1x1",
        received=format_shape(logits),
    )


def _scalar(attrs: Attrs, inputs: list[Shape]) -> Shape:
    class_count(inputs[0])
    return ()


register(OpDef(
    name="softmax_loss",
    family="loss",
    summary="Softmax cross-entropy of the logits against the label, averaged over the batch (Caffe SoftmaxWithLoss).",
    example="loss: softmax_loss(fc8, label) @train",
    args=(),
    infer=_scalar,
    inputs=(2, 2),
    role="loss",
    lower=Lowerings(
        torch=TorchLowering(
            forward=lambda layer, args, ctx: f"F.cross_entropy(torch.flatten({args[0]}, 1), {args[1]})"),
        caffe=lambda layer, ctx: [CaffeLayer("SoftmaxWithLoss")],
        from_caffe={"SoftmaxWithLoss": lambda layer, name, ctx: ("softmax_loss", [], None)},
    ),
))


def _accuracy_from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> tuple[str, list[Any], None]:
    top = ctx.section(layer, "accuracy_param").scalar("top_k")
    return "accuracy", [ctx.arg(ctx.literal(top), "top")] if top is not None and top.value != 1 else [], None


def _accuracy_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    logits, label = args
    top = layer.attrs["top"]
    if top == 1:
        return f"(torch.flatten({logits}, 1).argmax(1) == {label}).float().mean()"
    return f"(torch.flatten({logits}, 1).topk({ctx.int(top)}, 1).indices == {label}[:, None]).any(1).float().mean()"


register(OpDef(
    name="accuracy",
    family="loss",
    summary="Fraction of samples whose label is among the top-k logits (Caffe Accuracy).",
    example="accuracy: accuracy(fc8, label, top=5) @test",
    args=(Arg("top", "int", 1, "k in top-k", min=1),),
    infer=_scalar,
    inputs=(2, 2),
    role="metric",
    lower=Lowerings(
        torch=TorchLowering(forward=_accuracy_torch),
        caffe=lambda layer, ctx: [CaffeLayer("Accuracy", "accuracy_param", (f"top_k: {layer.attrs['top']}",))
                                  if layer.attrs["top"] != 1 else CaffeLayer("Accuracy")],
        from_caffe={"Accuracy": _accuracy_from_caffe},
    ),
))


def _next_token_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    logits, ids = inputs
    if len(ids) != 1:
        raise ShapeError("reads token ids as its second input", expected="a tokens(N) input",
                         received=format_shape(ids))
    if len(logits) != 2 or logits[0] != ids[0]:
        raise ShapeError(f"expects one row of vocabulary scores per token: {ids[0]}xV",
                         expected=f"{ids[0]}xV", received=format_shape(logits))
    return ()


register(OpDef(
    name="next_token_loss",
    family="loss",
    summary="Cross-entropy of each position's vocabulary scores against the next token id (logits[:-1] against "
            "ids[1:]), averaged over the positions and the batch: a decoder language model's training loss.",
    example="loss: next_token_loss(seq, ids) @train",
    args=(),
    infer=_next_token_infer,
    inputs=(2, 2),
    role="loss",
    reads_label=False,
    lower=Lowerings(
        torch=TorchLowering(
            forward=lambda layer, args, ctx: f"F.cross_entropy({args[0]}[:, :-1].flatten(0, 1), "
                                             f"{args[1]}[:, 1:].flatten())"),
    ),
))
