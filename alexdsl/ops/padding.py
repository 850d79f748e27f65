"""Padding of height and width by different amounts on each side: ``pad(top, bottom, left, right)``; a negative
amount removes rows or columns, as ``F.pad`` does. ``mode=reflect`` mirrors the input without repeating its edge
and ``mode=replicate`` repeats the edge (``F.pad``'s modes; timm's anti-aliasing ``BlurPool2d`` reflects).

A convolution or pool pads both ends of an axis alike; TensorFlow's 'SAME' padding (timm's
Conv2dSame, ONNX's ``auto_pad=SAME_UPPER``) pads the end one more than the start when the
window needs an odd total. ``pad`` is that step on its own, written before the conv or pool as
torch writes ``F.pad``. The ONNX import of ``Conv`` uses the helpers here: a zero ``Pad`` that
makes the padding even folds into the conv's ``pad``, and ``auto_pad`` becomes explicit pads.

>>> same_pads(225, 3, 2, 1, upper=True), same_pads(224, 3, 2, 1, upper=True), same_pads(224, 4, 1, 1, upper=False)
((1, 1), (0, 1), (2, 1))
"""

from __future__ import annotations

import math
from typing import Any

from alexdsl.ops.contexts import ExecutorContext, OnnxExportContext, OnnxImportContext, OnnxNodeView, TorchContext
from alexdsl.ops.lowering import ExecutorKernel, ExecutorLowering, Lowerings, OnnxImport, Pattern, TorchLowering
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, expect_rank, format_shape, register

SIDES = ("top", "bottom", "left", "right")
MODES = ("constant", "reflect", "replicate")  # F.pad's names
_ONNX_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


def _infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    if not any(attrs[side] for side in SIDES):
        raise ShapeError("pads nothing: every side is 0", arg="top", expected="at least one side other than 0",
                         received="pad(0, 0, 0, 0)")
    mode = attrs["mode"]
    if mode != "constant" and attrs["value"]:
        raise ShapeError(f"a fill value is given with mode={mode}, which fills from the input", arg="value",
                         expected="value only with mode=constant", received=f"value={attrs['value']}")
    if mode == "reflect" and any(not 0 <= attrs[side] < x[1 + i // 2] for i, side in enumerate(SIDES)):
        raise ShapeError(f"mode=reflect pads each side by less than its axis ({format_shape(x)}) and removes nothing",
                         arg="top", expected=f"pads from 0 to {x[1] - 1} (rows) and {x[2] - 1} (columns)",
                         received=f"pad({', '.join(str(attrs[side]) for side in SIDES)})")
    if mode == "replicate" and any(attrs[side] < 0 for side in SIDES):
        raise ShapeError("mode=replicate removes nothing", arg="top", expected="pads of 0 or more",
                         received=f"pad({', '.join(str(attrs[side]) for side in SIDES)})")
    height, width = x[1] + attrs["top"] + attrs["bottom"], x[2] + attrs["left"] + attrs["right"]
    if height < 1 or width < 1:
        raise ShapeError(f"removes every row or column of a {format_shape(x)} input", arg="top",
                         expected="negative pads that leave at least one row and column",
                         received=f"{height}x{width}")
    return (x[0], height, width)


def _sides(layer: Any) -> tuple[int, int, int, int]:
    a = layer.attrs
    return a["top"], a["bottom"], a["left"], a["right"]


def _torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    top, bottom, left, right = (ctx.int(v) for v in _sides(layer))
    value = layer.attrs["value"]
    fill = f", value={ctx.float(value)}" if value else ""
    mode = f", mode={layer.attrs['mode']!r}" if layer.attrs["mode"] != "constant" else ""
    return f"F.pad({args[0]}, ({left}, {right}, {top}, {bottom}){fill}{mode})"


def _executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    fill = ctx.lit(float(layer.attrs["value"]))
    mode = f"mode={ctx.lit(layer.attrs['mode'])}, " if layer.attrs["mode"] != "constant" else ""
    return ExecutorKernel(f"rt.pad2d({ctx.inputs[0]}, {ctx.lit(_sides(layer))}, {fill}, {mode}out={{out}})", "pad2d")


def _onnx(layer: Any, ctx: OnnxExportContext) -> None:
    top, bottom, left, right = _sides(layer)
    pads = ctx.constant([0, 0, top, left, 0, 0, bottom, right], output=f"{layer.name}.pads", integer=True)
    inputs = [ctx.inputs[0], pads]
    if layer.attrs["value"]:
        inputs.append(ctx.constant(layer.attrs["value"], output=f"{layer.name}.value"))
    if layer.attrs["mode"] == "constant":
        ctx.node("Pad", inputs)
    else:
        ctx.node("Pad", inputs, mode=_ONNX_MODES[layer.attrs["mode"]])


def _reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    top, bottom, left, right = _sides(layer)
    if layer.attrs["mode"] != "constant":
        return F.pad(xs[0], (left, right, top, bottom), mode=layer.attrs["mode"])
    return F.pad(xs[0], (left, right, top, bottom), value=float(layer.attrs["value"]))


# ONNX import --------------------------------------------------------------------------------------
def pad_mode(node: OnnxNodeView) -> str:
    """A ``Pad`` node's mode as alexdsl names it (ONNX's ``edge`` is torch's ``replicate``)."""
    mode = node.attr("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    return {onnx: ours for ours, onnx in _ONNX_MODES.items()}.get(mode, mode)


def pad_sides(node: OnnxNodeView, ctx: OnnxImportContext) -> tuple[tuple[int, int, int, int], float] | str:
    """A ``Pad`` node's (top, bottom, left, right) and fill value, or why alexdsl cannot express it: a mode
    alexdsl lacks, padding of the batch or channels, computed pads."""
    mode = pad_mode(node)
    if mode not in MODES:
        return f"mode={mode} is not supported (alexdsl pads with a constant, reflect or edge)"
    if len(node.inputs) > 1 and node.inputs[1]:
        found = ctx.const(node.inputs[1])
        pads = None if found is None else [int(p) for p in found.reshape(-1)]
    else:  # opset < 11: attributes
        pads = [int(p) for p in node.attr("pads", ())] or None
    shape = ctx.shape(node.inputs[0])
    if pads is None or shape is None:
        return "its pads are computed, or its input's shape is unknown"
    rank = len(shape) + 1
    axes = ctx.const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
    if axes is not None:  # opset 18: pads of the listed axes only
        full = [0] * (2 * rank)
        for i, axis in enumerate(int(a) % rank for a in axes.reshape(-1)):
            full[axis], full[rank + axis] = pads[i], pads[len(axes.reshape(-1)) + i]
        pads = full
    if rank != 4 or len(pads) != 8:
        return f"only a Pad of a 4-D (NCHW) tensor is imported; this one pads a {rank}-D tensor"
    n0, c0, top, left, n1, c1, bottom, right = pads
    if n0 or c0 or n1 or c1:
        return f"pads {pads} pad the batch or the channels; alexdsl pads height and width only"
    value = 0.0
    if len(node.inputs) > 2 and node.inputs[2]:
        fill = ctx.const(node.inputs[2])
        if fill is None or fill.size != 1:
            return "its fill value is computed"
        value = float(fill.reshape(-1)[0])
    elif len(node.inputs) == 1:
        value = float(node.attr("value", 0.0))
    return (top, bottom, left, right), value


def _from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """A constant ``Pad`` of height and width (``F.pad``, timm's ``pad_same``) -> pad."""
    found = pad_sides(node, ctx)
    if isinstance(found, str):
        return ctx.fail(node, found)
    (top, bottom, left, right), value = found
    if not math.isfinite(value):
        return ctx.fail(node, f"the fill value {value} is not finite (timm's MaxPool2dSame before a pool it does "
                              "not fit); alexdsl's pad fills with a number")
    attrs: dict[str, Any] = {"top": top, "bottom": bottom, "left": left, "right": right}
    if value:
        attrs["value"] = value
    if pad_mode(node) != "constant":
        attrs["mode"] = pad_mode(node)
    if not any((top, bottom, left, right)):
        return OnnxImport(None, node.inputs[:1])  # pads nothing: the identity
    return OnnxImport("pad", node.inputs[:1], attrs)


def same_pads(size: int, kernel: int, stride: int, dilation: int, *, upper: bool) -> tuple[int, int]:
    """The (start, end) pads of ONNX's ``auto_pad=SAME_UPPER`` (``upper``) or ``SAME_LOWER`` along one axis:
    the output is ceil(size / stride), and the odd pixel of an odd total goes to the end (the start)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def window_pads(node: OnnxNodeView, ctx: OnnxImportContext, kernel: list[int]) -> tuple[list[int], list[int]] | None:
    """The (begin, end) pads of height and width of a 2-D ``Conv`` or pool, ``auto_pad`` made explicit from the
    input's shape; None (after ``ctx.fail``) when the shape is unknown."""
    auto = node.attr("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", "VALID"):
        pads = [int(p) for p in node.attr("pads", (0, 0, 0, 0))] if auto == "NOTSET" else [0, 0, 0, 0]
        return pads[:2], pads[2:]
    shape = ctx.shape(node.inputs[0])
    if shape is None or len(shape) != 3:
        return ctx.fail(node, f"auto_pad={auto} needs the input's shape, which is unknown")
    strides, dilations = node.attr("strides", (1, 1)), node.attr("dilations", (1, 1))
    sides = [same_pads(shape[1 + i], kernel[i], int(strides[i]), int(dilations[i]), upper=auto == "SAME_UPPER")
             for i in range(2)]
    return [s[0] for s in sides], [s[1] for s in sides]


def padding_before(node: OnnxNodeView, ctx: OnnxImportContext,
                   value: float = 0.0) -> tuple[Any, list[int], list[int]] | None:
    """The ``Pad`` filling with ``value`` that computes the node's first input, if only this node reads it: the
    Pad node and its (top, left) and (bottom, right) pads; None otherwise."""
    pad = ctx.absorb(node.inputs[0])
    if pad is None or pad.op_type != "Pad":
        return None
    found = pad_sides(pad, ctx)
    if isinstance(found, str) or found[1] != value or min(found[0]) < 0 or pad_mode(pad) != "constant":
        return None
    top, bottom, left, right = found[0]
    return pad, [top, left], [bottom, right]


def padded_window(node: OnnxNodeView, ctx: OnnxImportContext, op: str, attrs: dict[str, Any],
                  kernel: list[int], params: dict[str, Any] | None = None) -> OnnxImport | list[OnnxImport] | None:
    """A zero-padded window op (conv) from its node: the pads even at both ends of each axis, a zero ``Pad``
    before it folded in where that makes them even; otherwise a ``pad`` layer then the op without padding,
    as timm's Conv2dSame writes it. ``attrs`` lack ``pad``."""
    pads = window_pads(node, ctx, kernel)
    if pads is None:
        return None
    begin, end = pads
    source, absorbed = node.inputs[0], ()
    before = padding_before(node, ctx)
    if before is not None and all(b + pb == e + pe for b, pb, e, pe in zip(begin, before[1], end, before[2])):
        absorbed, source = (before[0],), before[0].inputs[0]
        begin, end = [b + pb for b, pb in zip(begin, before[1])], [e + pe for e, pe in zip(end, before[2])]
    if begin == end:
        return OnnxImport(op, [source], {**attrs, "pad": _pair(begin)}, params or {}, absorbed=absorbed)
    padded = f"{node.outputs[0]}.padded"
    sides = {"top": begin[0], "bottom": end[0], "left": begin[1], "right": end[1]}
    return [OnnxImport("pad", [source], sides, output=padded, absorbed=absorbed),
            OnnxImport(op, [padded], {**attrs, "pad": 0}, params or {})]


def _pair(values: list[int]) -> int | tuple[int, int]:
    return values[0] if values[0] == values[1] else (values[0], values[1])


register(OpDef(
    name="pad",
    family="conv",
    summary="Pad height and width by (top, bottom, left, right) with a constant or the input's edge (F.pad; "
            "TensorFlow's 'SAME').",
    example="padded: pad(0, 1, 0, 1)",
    args=(
        Arg("top", "int", 0, "rows added above (negative: removed)"),
        Arg("bottom", "int", 0, "rows added below (negative: removed)"),
        Arg("left", "int", 0, "columns added on the left (negative: removed)"),
        Arg("right", "int", 0, "columns added on the right (negative: removed)"),
        Arg("value", "float", 0.0, "the fill value (mode=constant)", positional=False),
        Arg("mode", "choice", "constant", "constant (value), reflect (mirror without the edge) or replicate "
            "(repeat the edge), as F.pad", choices=MODES, positional=False),
    ),
    infer=_infer,
    pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=_torch),
        executor=ExecutorLowering(lower=_executor),
        onnx=_onnx,
        reference=_reference,
        from_onnx={"Pad": _from_onnx},
    ),
))
