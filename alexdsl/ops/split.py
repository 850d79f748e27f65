"""Channel slices: the parts that ``half: chunk(2)`` and ``parts: split((24, 40))`` make.

The front end expands a ``chunk``/``split`` statement into one single-output layer per part
(``half.0``, ``half.1``), so every IR node keeps one output: ``chunk(n)`` into
``channel_chunk(n, i)`` (torch.chunk over channels, sized from the input) and
``split(sizes)`` into ``channel_slice(start, stop, channels=sum(sizes))``.
"""

from __future__ import annotations

from typing import Any

from alexdsl.limits import MAX_DIM
from alexdsl.ops.contexts import (
    CaffeExportContext,
    CaffeImportContext,
    CaffeMessage,
    OnnxExportContext,
    OnnxImportContext,
    OnnxNodeView,
    TorchContext,
)
from alexdsl.ops.from_onnx import is_read
from alexdsl.ops.lowering import CaffeLayer, ExecutorLowering, Lowerings, OnnxImport, Pattern, TorchLowering
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, format_shape, normalize_axis, register


def chunk_bounds(chunks: int, index: int, channels: int) -> tuple[int, int]:
    """torch.chunk's part ``index`` of ``chunks`` over ``channels``: ``(start, stop)``; empty past the last part.

    >>> [chunk_bounds(3, i, 8) for i in range(3)]
    [(0, 3), (3, 6), (6, 8)]
    """
    size = -(-channels // chunks)
    start = min(index * size, channels)
    return start, min(start + size, channels)


def _bounds(op: str, attrs: Attrs, channels: int) -> tuple[int, int]:
    if op == "channel_chunk":
        return chunk_bounds(attrs["chunks"], attrs["index"], channels)
    return attrs["start"], attrs["stop"] or channels


def _axis(attrs: Attrs, x: Shape) -> int:
    """The per-sample axis split (0, the channels, by default), checked against the input's rank."""
    if not x:
        raise ShapeError("a scalar has no channels to split", expected="CxHxW or a vector (C)", received="scalar")
    return normalize_axis(attrs.get("axis", 0), len(x))


def _part(x: Shape, axis: int, size: int) -> Shape:
    return (*x[:axis], size, *x[axis + 1:])


def _where(attrs: Attrs) -> str:
    return "channels" if attrs.get("axis", 0) == 0 else f"elements of axis {attrs['axis']}"


def _infer_chunk(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    axis = _axis(attrs, x)
    chunks, index, size = attrs["chunks"], attrs["index"], x[axis]
    if index >= chunks:
        raise ShapeError(f"part {index} of chunk({chunks}) does not exist", arg="index",
                         expected=f"an index below {chunks}", received=str(index))
    start, stop = chunk_bounds(chunks, index, size)
    if start >= stop:
        made = -(-size // -(-size // chunks))
        raise ShapeError(f"chunk({chunks}) of {size} {_where(attrs)} makes only {made} parts, as torch.chunk does, "
                         f"so part {index} is empty", arg="chunks",
                         expected=f"at most {size} parts, or {_where(attrs)} that divide into {chunks}",
                         received=format_shape(x))
    return _part(x, axis, stop - start)


def _infer_slice(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    axis = _axis(attrs, x)
    size = x[axis]
    start, stop, channels = attrs["start"], attrs["stop"] or size, attrs["channels"]
    if channels and channels != size:
        raise ShapeError(f"the parts of the split add up to {channels} {_where(attrs)}, but the input has {size}",
                         arg="channels", expected=f"an input of {channels} {_where(attrs)}, or sizes that add up to "
                                                  f"{size}", received=format_shape(x))
    if not start < stop <= size:
        raise ShapeError(f"{_where(attrs)} {start}:{stop} are not inside the input's {size}", arg="stop",
                         expected=f"0 <= start < stop <= {size}", received=format_shape(x))
    return _part(x, axis, stop - start)


def _index(axis: int, start: str, stop: str) -> str:
    """The torch indexing of ``start:stop`` along per-sample ``axis``: ``[:, 0:4]``, ``[..., 0:4]``."""
    if axis < 0:
        return f"[..., {start}:{stop}{', :' * (-axis - 1)}]"
    return f"[:, {':, ' * axis}{start}:{stop}]"


def _torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    shape = ctx.input_shape(layer, 0)
    axis = layer.attrs.get("axis", 0)
    start, stop = _bounds(layer.op, layer.attrs, shape[normalize_axis(axis, len(shape))])
    return f"{args[0]}{_index(axis, ctx.int(start), ctx.int(stop))}"


def _onnx(layer: Any, ctx: OnnxExportContext) -> None:
    shape = ctx.input_shape(layer, 0)
    axis = normalize_axis(layer.attrs.get("axis", 0), len(shape))
    start, stop = _bounds(layer.op, layer.attrs, shape[axis])
    ctx.node("Slice", [ctx.inputs[0], ctx.constant([start], integer=True), ctx.constant([stop], integer=True),
                       ctx.constant([axis + 1], integer=True)])


def _reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    axis = normalize_axis(layer.attrs.get("axis", 0), xs[0].dim() - 1) + 1
    start, stop = _bounds(layer.op, layer.attrs, xs[0].shape[axis])
    return xs[0].narrow(axis, start, stop - start)


def _copy(x: Any, axis: int, start: int, stop: int, out: Any) -> Any:
    """``x[:, start:stop]`` along per-sample ``axis`` as a contiguous array (into ``out`` when given): the kernels
    read contiguous input (NumPy's and CuPy's ``copy`` are C-ordered)."""
    axis = axis % (x.ndim - 1) + 1
    part = x[(slice(None),) * axis + (slice(start, stop),)]
    if out is None:
        return part.copy()
    out[...] = part
    return out


def _chunk_executor(x: Any, *, chunks: int, index: int, axis: int = 0, out: Any = None) -> Any:
    return _copy(x, axis, *chunk_bounds(chunks, index, x.shape[axis % (x.ndim - 1) + 1]), out)


def _slice_executor(x: Any, *, start: int, stop: int, channels: int = 0, axis: int = 0, out: Any = None) -> Any:
    return _copy(x, axis, start, stop, out)


def _caffe(layer: Any, ctx: CaffeExportContext) -> list[CaffeLayer]:
    """One Slice layer whose top named after the layer is this part; the other parts are tops nobody reads."""
    if layer.attrs.get("axis", 0) != 0:
        ctx.fail(f"a part of a split along axis {layer.attrs['axis']}: alexdsl exports Caffe's Slice over the "
                 "channels only")
    channels = ctx.input_shape(layer, 0)[0]
    if layer.op == "channel_chunk" and channels % layer.attrs["chunks"] == 0:  # Caffe's even split: no points
        index = layer.attrs["index"]
        tops = tuple(layer.name if i == index else f"{layer.name}.part{i}" for i in range(layer.attrs["chunks"]))
        return [CaffeLayer("Slice", "slice_param", ("axis: 1",), tops=tops)]
    start, stop = _bounds(layer.op, layer.attrs, channels)
    points = tuple(f"slice_point: {p}" for p in (start, stop) if 0 < p < channels)
    tops = (f"{layer.name}.before",) * (start > 0) + (layer.name,) + (f"{layer.name}.after",) * (stop < channels)
    return [CaffeLayer("Slice", "slice_param", ("axis: 1", *points), tops=tops)]


def _from_caffe(layer: CaffeMessage, name: str, ctx: CaffeImportContext) -> list[tuple[str, list[Any], None]] | None:
    """A Slice over channels: channel_chunk parts for an even split, else channel_slice parts (one per top)."""
    p = ctx.section(layer, "slice_param")
    axis = p.scalar("axis") or p.scalar("slice_dim")
    if axis is not None and axis.value != 1:
        ctx.error("Slice along an axis other than channels (1) is not supported", axis.span)
        return None
    tops = len(layer.scalars("top"))
    points = [int(point.value) for point in p.scalars("slice_point")]
    if not points:
        return [("channel_chunk", [tops, i], None) for i in range(tops)]
    if len(points) != tops - 1:
        ctx.error(f"Slice layer '{name}' has {len(points)} slice points for {tops} tops", p.span,
                  expected=f"{tops - 1} slice points: one fewer than the tops")
        return None
    starts = [0, *points]
    return [("channel_slice", [a, b], None) for a, b in zip(starts, points)] + [
        ("channel_slice", [points[-1]], None)]


def _channel_axis(node: OnnxNodeView, ctx: OnnxImportContext, axis: int) -> int | None:
    """The channel count of the node's input when ``axis`` is its channel axis (1), else None."""
    shape = ctx.shape(node.inputs[0])
    if shape is None or (axis + len(shape) + 1 if axis < 0 else axis) != 1:
        return None
    return shape[0]


def _slice_bounds(node: OnnxNodeView, ctx: OnnxImportContext) -> tuple[int, int, int, int] | None:
    """The ``(start, stop)`` of a ``Slice`` of one per-sample axis with step 1 and constant bounds, the axis's size
    and the axis as channel_slice's ``axis`` takes it (0, the channels; -1, the last; another one as it is);
    None for any other Slice."""
    bounds = [ctx.const(v) if v else None for v in node.inputs[:5]]
    starts, ends, axes, steps = (bounds + [None] * 5)[1:5]
    shape = ctx.shape(node.inputs[0])
    if starts is None or ends is None or len(starts) != 1 or shape is None or not shape \
            or (axes is not None and len(axes) != 1) or (steps is not None and int(steps[0]) != 1):
        return None
    axis = int(axes[0]) if axes is not None else 0
    axis = axis + len(shape) + 1 if axis < 0 else axis
    if not 1 <= axis <= len(shape):
        return None
    size = shape[axis - 1]
    start, stop = (min(int(v) + size if int(v) < 0 else int(v), size) for v in (starts[0], ends[0]))
    return start, stop, size, -1 if axis == len(shape) and axis > 1 else axis - 1


def _whole(node: OnnxNodeView, ctx: OnnxImportContext) -> bool:
    """Whether a ``Slice`` keeps all of each per-sample axis it names, step 1 (GhostNet's ``x[:, :out]``;
    torchvision's Swin crops its padded map with ``x[:, :H, :W]``, all of it when nothing was padded)."""
    starts, ends, axes, steps = ([ctx.const(v) if v else None for v in node.inputs[1:5]] + [None] * 4)[:4]
    shape = ctx.shape(node.inputs[0])
    if starts is None or ends is None or shape is None or starts.size != ends.size:
        return False
    axes = axes.reshape(-1) if axes is not None else range(starts.size)
    steps = steps.reshape(-1) if steps is not None else [1] * starts.size
    for axis, start, stop, step in zip(axes, starts.reshape(-1), ends.reshape(-1), steps):
        axis = int(axis) + len(shape) + 1 if int(axis) < 0 else int(axis)
        if not 1 <= axis <= len(shape) or int(step) != 1:
            return False
        size = shape[axis - 1]
        start, stop = (min(max(int(v) + size if int(v) < 0 else int(v), 0), size) for v in (start, stop))
        if (start, stop) != (0, size):
            return False
    return True


def _slice_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Slice`` of one axis (step 1, constant bounds) -> channel_slice(start, stop); channel_chunk when the Slices
    of one input are exactly the parts of torch.chunk (as alexdsl and torch export a chunk); no layer for a
    Slice of all of every axis it names."""
    if _whole(node, ctx):
        return OnnxImport(None, node.inputs[:1])
    found = _slice_bounds(node, ctx)
    if found is None:
        return ctx.fail(node, "only a Slice of one axis after the batch, with step 1 and constant bounds, is "
                              "imported")
    start, stop, size, axis = found
    if not 0 <= start < stop:
        return ctx.fail(node, f"the Slice of elements {start}:{stop} is empty")
    along = {"axis": axis} if axis else {}
    siblings = {_slice_bounds(r, ctx) for r in ctx.readers(node.inputs[0]) if r.op_type == "Slice"}
    parts = len(siblings)
    chunks = [(*chunk_bounds(parts, i, size), size, axis) for i in range(parts)]
    if parts > 1 and siblings == set(chunks):
        return OnnxImport("channel_chunk", node.inputs[:1], {"chunks": parts, "index": chunks.index(found), **along})
    return OnnxImport("channel_slice", node.inputs[:1], {"start": start, "stop": stop, "channels": 0, **along})


def _split_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> list[OnnxImport] | None:
    """``Split`` of the channels -> one layer per output that is read: channel_chunk parts where the sizes are
    torch.chunk's, channel_slice parts (with ``channels``, as a split statement makes them) otherwise."""
    channels = _channel_axis(node, ctx, int(node.attr("axis", 0)))
    given = ctx.const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else node.attr("split")
    count = len(node.outputs)
    if channels is None:
        return ctx.fail(node, "only a Split of the channels (axis 1) is imported")
    sizes = [int(s) for s in given] if given is not None else \
        [b - a for a, b in (chunk_bounds(count, i, channels) for i in range(count))]
    starts = [sum(sizes[:i]) for i in range(count)]
    chunks = all(chunk_bounds(count, i, channels) == (a, a + s) for i, (a, s) in enumerate(zip(starts, sizes)))
    parts = []
    for i, (start, size, output) in enumerate(zip(starts, sizes, node.outputs)):
        if not is_read(ctx, output):
            continue
        if chunks:
            parts.append(OnnxImport("channel_chunk", node.inputs[:1], {"chunks": count, "index": i}, output=output))
        else:
            parts.append(OnnxImport("channel_slice", node.inputs[:1],
                                    {"start": start, "stop": start + size, "channels": channels}, output=output))
    return parts


def _lowerings(executor: Any, caffe_type: str | None = None, from_onnx: dict[str, Any] | None = None) -> Lowerings:
    return Lowerings(
        torch=TorchLowering(forward=_torch),
        executor=ExecutorLowering(function=executor),
        onnx=_onnx,
        caffe=_caffe,
        from_caffe={caffe_type: _from_caffe} if caffe_type else {},
        reference=_reference,
        from_onnx=from_onnx or {},
    )


CHANNEL_CHUNK = register(OpDef(
    name="channel_chunk", family="tensor",
    summary="Part index of torch.chunk(x, chunks, dim=1): what 'half: chunk(2)' makes half.0 and half.1 of "
            "(Caffe Slice).",
    example="part: channel_chunk(2, 1)",
    args=(Arg("chunks", "int", doc="the number of parts (torch.chunk: each ceil(C / chunks) channels)", min=1),
          Arg("index", "int", doc="which part, from 0", min=0),
          Arg("axis", "int", 0, "the per-sample axis split: 0, the channels; -1, the last axis", positional=False)),
    infer=_infer_chunk, pattern=Pattern.INJECTIVE, per_token=lambda attrs, inputs: _axis(attrs, inputs[0]) > 0,
    lower=_lowerings(_chunk_executor, from_onnx={"Split": _split_from_onnx}),
))

CHANNEL_SLICE = register(OpDef(
    name="channel_slice", family="tensor",
    summary="Channels start to stop (x[:, start:stop]): what 'parts: split((24, 40))' makes each part of "
            "(Caffe Slice).",
    example="part: channel_slice(4, 12)",
    args=(Arg("start", "int", doc="the first channel", min=0),
          Arg("stop", "int", 0, "one past the last channel (0: to the last channel)", min=0),
          Arg("channels", "int", 0, "the input channels the split expects (0: any)", min=0, max=MAX_DIM),
          Arg("axis", "int", 0, "the per-sample axis split: 0, the channels; -1, the last axis", positional=False)),
    infer=_infer_slice, pattern=Pattern.INJECTIVE, per_token=lambda attrs, inputs: _axis(attrs, inputs[0]) > 0,
    lower=_lowerings(_slice_executor, "Slice", from_onnx={"Slice": _slice_from_onnx}),
))

# The front end's split statements, 'half: chunk(2)' and 'parts: split((24, 40))', and the op
# each of their parts becomes (alexdsl.ir.elaboration expands them).
SPLITTERS = {"chunk": CHANNEL_CHUNK.name, "split": CHANNEL_SLICE.name}
