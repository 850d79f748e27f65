"""Tensors of any rank (token tensors such as 197x768): learned tensors, einops rearrangement, selection,
permutation, reshaping, rolling, matrix products and linear layers over the last axis.

Axes are per-sample axes counted from 0 (negative from the end); the batch axis is never named.

>>> plan_rearrange("c (h p) (w q) -> (h w) (p q c)", (("p", 16), ("q", 16)), (3, 224, 224)).output
(196, 768)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from alexdsl.ops.activation import epilogue_args
from alexdsl.ops.arith import aligned, broadcast_shapes, onnx_aligned, reference_aligned
from alexdsl.ops.contexts import ExecutorContext, OnnxExportContext, OnnxImportContext, OnnxNodeView, TorchContext
from alexdsl.ops.fillers import WEIGHT_AND_BIAS, Filler
from alexdsl.ops.from_onnx import axes_of, computed, evaluate, operands, producer_of
from alexdsl.ops.lowering import (
    EVERY_EPILOGUE,
    ExecutorKernel,
    ExecutorLowering,
    Lowerings,
    OnnxImport,
    Pattern,
    TorchLowering,
    call_module,
)
from alexdsl.ops.registry import (
    Arg,
    Attrs,
    OpDef,
    Shape,
    ShapeError,
    expect_min_rank,
    format_shape,
    last_axis,
    normalize_axis,
    numel,
    register,
)


def _batch_axes(axes: tuple[int, ...] | list[int]) -> list[int]:
    """Per-sample axes as axes of the batched tensor (torch, NumPy and ONNX count the batch)."""
    return [a + 1 for a in axes]


def _restructure_onnx(layer: Any, ctx: OnnxExportContext, elementary: tuple[int, ...], perm: tuple[int, ...]) -> None:
    """``Reshape`` to the elementary axes, ``Transpose``, ``Reshape`` to the layer's shape (a step is left out
    when it changes nothing)."""
    value = ctx.inputs[0]
    if tuple(elementary) != tuple(ctx.input_shape(layer, 0)) and list(perm) != sorted(perm):
        value = ctx.node("Reshape", [value, ctx.constant([-1, *elementary], integer=True)],
                         output=f"{layer.name}.split")
    if list(perm) != sorted(perm):
        moved = [elementary[p] for p in perm]
        last = tuple(moved) == tuple(layer.shape)
        value = ctx.node("Transpose", [value], output=None if last else f"{layer.name}.moved",
                         perm=[0, *_batch_axes(perm)])
        if last:
            return
    ctx.node("Reshape", [value, ctx.constant([-1, *layer.shape], integer=True)])


def _restructure_executor(layer: Any, ctx: ExecutorContext, elementary: tuple[int, ...],
                          perm: tuple[int, ...]) -> ExecutorKernel:
    return ExecutorKernel(f"rt.rearrange({ctx.inputs[0]}, {ctx.lit(tuple(elementary))}, {ctx.lit(tuple(perm))}, "
                          "out={out})", "rearrange")


# param: a learned tensor ------------------------------------------------------------------------------

def _param_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    shape = tuple(attrs["shape"])
    if len(shape) < 2 or shape[0] != 1:
        raise ShapeError(f"the shape of a param starts with its batch axis, which must be 1 ({format_shape(shape)} "
                         "does not)", arg="shape", expected="1xD1x..., as 1x197x768 (broadcast over the batch)",
                         received=format_shape(shape))
    return shape[1:]


def _param_module(layer: Any, ctx: TorchContext) -> str:
    return f"nn.Parameter(torch.empty({', '.join(map(ctx.int, layer.params['init'].shape))}))"


def _param_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    return f"{ctx.module(layer)}.expand({ctx.batch_size()}{', -1' * len(layer.shape)})"


def _param_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    dims = ctx.constant(list(layer.shape), integer=True)
    shape = ctx.node("Concat", [ctx.batch_size(), dims], output=f"{layer.name}.shape", axis=0)
    # The initializer has the layer's name (its state key), so the layer's value is named otherwise.
    ctx.alias(ctx.node("Expand", [ctx.initializer(layer, "init"), shape], output=f"{layer.name}.expanded"))


def _param_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    return ExecutorKernel(f"rt.broadcast_batch(self.{ctx.ident}_w, out={{out}})", "broadcast",
                          setup=(f"self.{ctx.ident}_w = {ctx.weight(layer, 'init')}",))


def _param_from_onnx(op: str) -> Any:
    """``Add``/``Concat`` of a computed value and a float constant of the batch axis 1 and at least one more (a
    learned tensor: ViT's position embedding, its class token once folding has expanded it to the batch) ->
    a param layer, keyed by the constant's name, and ``op`` on it."""
    def convert(node: OnnxNodeView, ctx: OnnxImportContext) -> list[OnnxImport] | None:
        learned = [v for v in node.inputs if ctx.const(v) is not None]
        rank = len(ctx.shape(node.outputs[0]) or ()) + 1
        if len(learned) != 1 or len(node.inputs) != 2 or not computed(ctx, [v for v in node.inputs if v != learned[0]]):
            return None
        tensor = ctx.const(learned[0])
        if tensor.ndim != rank or tensor.shape[0] != 1 or tensor.dtype.kind != "f":
            return None
        attrs: dict[str, Any] = {}
        if op == "concat":
            axis = int(node.attr("axis", 1))
            axis = axis + rank if axis < 0 else axis
            if axis == 0:
                return None
            attrs = {"axis": axis - 1}
        return [OnnxImport("param", [], {"shape": tuple(int(d) for d in tensor.shape)}, {"init": learned[0]},
                           output=learned[0]),
                OnnxImport(op, list(node.inputs), attrs)]

    return convert


register(OpDef(
    name="param", family="tokens",
    summary="A learned tensor of the written shape, batch axis (1) first, broadcast over the batch; kept under the "
            "layer's own name (torchvision's class_token, encoder.pos_embedding; no Caffe layer).",
    example="cls: param(1x1x16, init=constant(0))",
    args=(Arg("shape", "shape", doc="the tensor's shape, its batch axis (1) first: 1x197x768"),),
    inputs=(0, 0),
    infer=_param_infer,
    params=lambda attrs, inputs: {"init": tuple(attrs["shape"])},
    default_fillers={"init": Filler("constant", (("value", 0.0),))},
    own_key="init",
    pattern=Pattern.OPAQUE,
    lower=Lowerings(
        torch=TorchLowering(module=_param_module, forward=_param_torch, parameter=True),
        executor=ExecutorLowering(lower=_param_executor),
        onnx=_param_onnx,
        from_onnx={"Add": _param_from_onnx("add"), "Concat": _param_from_onnx("concat")},
        reference=lambda layer, xs, w, F: w["init"],
    ),
))


# rearrange: einops notation ------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(->|\(|\)|[A-Za-z_][A-Za-z0-9_]*|\d+|\.\.\.|\S)")


@dataclass(frozen=True)
class Rearrangement:
    """A checked einops pattern over one input shape: each sample viewed as its ``elementary`` axes, taken in
    the order ``perm`` and grouped into ``output``."""

    elementary: tuple[int, ...]
    perm: tuple[int, ...]
    output: tuple[int, ...]

    @property
    def steps(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The elementary axes and their order: what the executor and ONNX export reshape and transpose by."""
        return self.elementary, self.perm


def _groups(side: str, which: str) -> list[list[str]]:
    """One side of a pattern as its axes, each a list of names (``(h p)`` -> ``["h", "p"]``)."""
    groups: list[list[str]] = []
    current: list[str] | None = None
    for token in _TOKEN.findall(side):
        if token == "(":
            if current is not None:
                raise ShapeError(f"nested parentheses on the {which} of the pattern", arg="pattern",
                                 expected="axes such as c (h p) (w q)")
            current = []
        elif token == ")":
            if current is None:
                raise ShapeError(f"a ')' without '(' on the {which} of the pattern", arg="pattern")
            groups.append(current)
            current = None
        elif token == "...":
            raise ShapeError("'...' is not supported: name every axis", arg="pattern",
                             expected="one name or group per axis, as c (h p) (w q)")
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|1", token):
            if current is None:
                groups.append([token])
            else:
                current.append(token)
        else:
            raise ShapeError(f"unexpected {token!r} on the {which} of the pattern", arg="pattern",
                             expected="names, (groups) and 1, as in c (h p) (w q) -> (h w) (p q c)")
    if current is not None:
        raise ShapeError(f"a '(' without ')' on the {which} of the pattern", arg="pattern")
    return groups


def plan_rearrange(pattern: str, sizes: tuple[tuple[str, int], ...], shape: Shape) -> Rearrangement:
    """Check ``pattern`` (einops notation, per-sample axes) with ``sizes`` against ``shape``; a ShapeError names
    the axis at fault."""
    if pattern.count("->") != 1:
        raise ShapeError("a rearrange pattern has one '->'", arg="pattern",
                         expected="as in c (h p) (w q) -> (h w) (p q c)", received=repr(pattern))
    left_text, right_text = pattern.split("->")
    left, right = _groups(left_text, "left side"), _groups(right_text, "right side")
    if len(left) != len(shape):
        raise ShapeError(f"the pattern's left side names {len(left)} axes but the input has rank {len(shape)}",
                         arg="pattern", expected=f"{len(shape)} axes (no batch axis) for {format_shape(shape)}",
                         received=left_text.strip())
    named = [n for g in left for n in g if n != "1"]
    for side, names in (("left", named), ("right", [n for g in right for n in g if n != "1"])):
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ShapeError(f"axis '{repeated[0]}' appears twice on the {side} side of the pattern", arg="pattern")
    outputs = {n for g in right for n in g if n != "1"}
    if set(named) != outputs:
        odd = sorted(set(named) ^ outputs)[0]
        where = "left" if odd in named else "right"
        raise ShapeError(f"axis '{odd}' is only on the {where} side of the pattern", arg="pattern",
                         expected="the same names on both sides")
    given = dict(sizes)
    for name in given:
        if name not in named:
            raise ShapeError(f"size {name}={given[name]} names no axis of the pattern", arg="sizes",
                             expected=", ".join(named) or "axes of the pattern")
    known: dict[str, int] = {}
    for index, (group, dim) in enumerate(zip(left, shape, strict=True)):
        names = [n for n in group if n != "1"]
        unknown = [n for n in names if n not in given]
        product = math.prod(given[n] for n in names if n in given)
        written = f"({' '.join(group)})" if len(group) > 1 else group[0]
        if len(unknown) > 1:
            raise ShapeError(f"axis {index} ({written}, size {dim}) has {len(unknown)} unknown sizes",
                             arg="pattern", expected=f"the sizes of all but one, as {unknown[-1]}=...")
        if unknown:
            if dim % product:
                raise ShapeError(f"axis {index} ({written}) has size {dim}, which is not a multiple of {product}",
                                 arg="sizes", expected=f"sizes whose product divides {dim}",
                                 received=format_shape(shape))
            known[unknown[0]] = dim // product
        elif product != dim:
            raise ShapeError(f"axis {index} ({written}) has size {dim}, not {product}", arg="pattern",
                             expected=f"sizes whose product is {dim}", received=format_shape(shape))
        known.update((n, given[n]) for n in names if n in given)
    order = {n: i for i, n in enumerate(named)}
    perm = tuple(order[n] for g in right for n in g if n != "1")
    output = tuple(math.prod(known[n] for n in g if n != "1") for g in right)
    return Rearrangement(tuple(known[n] for n in named), perm, output)


def _batch_name(pattern: str) -> str:
    """An axis name for the batch that the pattern does not use."""
    taken = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", pattern))
    return next(name for name in ("b", "batch", *(f"batch{i}" for i in range(len(taken) + 1))) if name not in taken)


def _rearrange_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    pattern = layer.attrs["pattern"]
    left, right = (side.strip() for side in pattern.split("->"))
    batch = _batch_name(pattern)
    sizes = "".join(f", {name}={ctx.int(size)}" for name, size in layer.attrs["sizes"])
    return f"einops.rearrange({args[0]}, {f'{batch} {left} -> {batch} {right}'!r}{sizes})"


def _batch_kept(node: OnnxNodeView, ctx: OnnxImportContext) -> bool:
    """Whether a ``Transpose`` or ``Reshape`` keeps the batch axis first (a Reshape: 0, -1 or the folded batch 1)."""
    if node.op_type == "Transpose":
        return list(node.attr("perm", [0]))[0] == 0
    target, source, result = ctx.const(node.inputs[1]), ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    return target is not None and source is not None and result is not None and target.size > 0 \
        and int(target.reshape(-1)[0]) in (-1, 0, 1) and numel(source) == numel(result)


def _regroup(axes: list[list[str]], sizes: dict[str, int], target: Shape, split: Any) -> list[list[str]] | None:
    """The elementary axes of ``axes`` grouped into ``target``'s axes, splitting one where a group ends inside it
    (``split(name, first)`` renames it as two); axes of size 1 are ``"1"``, which may appear and vanish."""
    flat = [name for axis in axes for name in axis]
    groups, i = [], 0
    for dim in target:
        group, product = [], 1
        while i < len(flat) and sizes[flat[i]] == 1 and (dim == 1 or product < dim):
            group.append(flat[i])  # units: kept in a unit axis, dropped from a larger one
            i += 1
        while product < dim:
            if i >= len(flat):
                return None
            need = dim // product
            if dim % product or (sizes[flat[i]] > need and sizes[flat[i]] % need):
                return None
            if sizes[flat[i]] > need:
                flat[i:i + 1] = split(flat[i], need)
            group.append(flat[i])
            product, i = product * sizes[flat[i]], i + 1
        groups.append(group or ["1"])
    while i < len(flat) and sizes[flat[i]] == 1:
        i += 1
    return groups if i == len(flat) else None


def _written(group: list[str]) -> str:
    names = [name for name in group if name != "1"] or ["1"]
    return f"({' '.join(names)})" if len(names) > 1 else names[0]


def _rearrange_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """A chain of ``Reshape`` and ``Transpose`` nodes that keep the batch axis, one of each at least (ViT's patch
    flattening ``reshape(n, c, h * w).permute(0, 2, 1)``) -> one rearrange."""
    chain = [node]
    while (before := ctx.absorb(chain[-1].inputs[0], chain[-1])) is not None \
            and before.op_type in ("Reshape", "Transpose"):
        chain.append(before)
    chain = [n for n in reversed(chain)]
    while chain and not _batch_kept(chain[0], ctx):
        chain.pop(0)
    for start in range(len(chain) - 1):  # the longest tail of the chain that is one rearrange
        found = _rearrange_chain(chain[start:], ctx)
        if found is not None:
            return found
    return None


def _rearrange_chain(chain: list[Any], ctx: OnnxImportContext) -> OnnxImport | None:
    """The rearrange that ``chain`` computes, or None (MaxViT's window reverse followed by its grid partition
    is two: the grid splits the axes the windows merged otherwise)."""
    kinds = {n.op_type for n in chain}
    shape = ctx.shape(chain[0].inputs[0]) if chain else None
    if kinds != {"Reshape", "Transpose"} or shape is None or not computed(ctx, chain[0].inputs[:1]) \
            or not all(_batch_kept(n, ctx) for n in chain):
        return None
    letters = iter("chw" if len(shape) == 3 else "abcdefgh")
    axes = [[next(letters) if dim != 1 else "1"] for dim in shape]
    sizes = {"1": 1} | {axis[0]: dim for axis, dim in zip(axes, shape)}
    inputs = [list(axis) for axis in axes]

    def split(name: str, first: int) -> list[str]:
        parts = [f"{name}{k}" for k in (1, 2)]
        sizes.update({parts[0]: first, parts[1]: sizes.pop(name) // first})
        for group in inputs:
            if name in group:
                group[group.index(name):group.index(name) + 1] = parts
        return parts

    for step in chain:
        if step.op_type == "Transpose":
            axes = [axes[p - 1] for p in step.attr("perm")[1:]]
        else:
            regrouped = _regroup(axes, sizes, ctx.shape(step.outputs[0]) or (), split)
            if regrouped is None:
                return None
            axes = regrouped
    written = [_written(g) for g in inputs], [_written(g) for g in axes]
    given = tuple((name, sizes[name]) for group in inputs if len(group) > 1 for name in group[1:] if name != "1")
    return OnnxImport("rearrange", chain[0].inputs[:1], {"pattern": f"{' '.join(written[0])} -> {' '.join(written[1])}",
                                                         "sizes": given}, absorbed=tuple(chain[:-1]))


def _strided(part: str, ctx: OnnxImportContext, slices: list[Any]) -> tuple[str, dict[int, tuple[int, int]]] | None:
    """The value a chain of ``Slice`` s (a start and a step, to the end) reads, and per per-sample axis the offset
    and step kept: ``x[1::2, 0::2]`` is ``{0: (1, 2), 1: (0, 2)}``. The chain's Slices join ``slices``."""
    chain, value = [], part
    while (node := ctx.producer(value)) is not None and node.op_type == "Slice":
        chain.append(node)
        value = node.inputs[0]
    kept: dict[int, tuple[int, int]] = {}
    for node in reversed(chain):  # from the source: each Slice acts on the one before's output
        shape = ctx.shape(node.inputs[0])
        bounds = [ctx.const(v) if v else None for v in node.inputs[1:5]]
        if shape is None or len(bounds) != 4 or any(b is None for b in bounds):
            return None
        for start, stop, axis, step in zip(*(b.reshape(-1).tolist() for b in bounds)):  # type: ignore[union-attr]
            axis = axis + len(shape) + 1 if axis < 0 else axis
            if not 1 <= axis <= len(shape) or step < 1 or not 0 <= start < step or stop < shape[axis - 1]:
                return None
            offset, stride = kept.get(axis - 1, (0, 1))
            kept[axis - 1] = (offset + start * stride, stride * step)
        if node not in slices:
            slices.append(node)
    return value, kept


def _rearrange_from_slices(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Concat`` over the last axis of the p x q strided parts of an H x W x C grid (Swin's patch merging:
    ``x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]``) -> ``rearrange("(h p) (w q) c -> h w (q p c)")``
    (or ``(p q c)`` in the other order), checked by ONNX's reference evaluator against NumPy."""
    import numpy as np

    shape = ctx.shape(node.outputs[0])
    if shape is None or len(shape) != 3 or int(node.attr("axis", 0)) not in (-1, 3) or len(node.inputs) < 2:
        return None
    readers: list[Any] = [node]
    parts = [_strided(value, ctx, readers) for value in node.inputs]
    if any(p is None for p in parts) or len({p[0] for p in parts}) != 1:  # type: ignore[index]
        return None
    source = parts[0][0]  # type: ignore[index]
    grid = ctx.shape(source)
    kept = [p[1] for p in parts]  # type: ignore[index]
    if grid is None or len(grid) != 3 or any(set(k) != {0, 1} for k in kept):
        return None
    p, q = kept[0][0][1], kept[0][1][1]
    offsets = [(k[0][0], k[1][0]) for k in kept]
    if any((k[0][1], k[1][1]) != (p, q) for k in kept) or grid[0] % p or grid[1] % q:
        return None
    if offsets == [(i, j) for j in range(q) for i in range(p)]:
        order = "q p c"
    elif offsets == [(i, j) for i in range(p) for j in range(q)]:
        order = "p q c"
    else:
        return None
    if any(ctx.absorb(r.outputs[0], *readers) is None for r in readers[1:]):
        return None
    h, w, c = grid
    x = np.random.default_rng(0).standard_normal((1, *grid)).astype(np.float32)
    moved = (0, 1, 3, 4, 2, 5) if order == "q p c" else (0, 1, 3, 2, 4, 5)
    want = x.reshape(1, h // p, p, w // q, q, c).transpose(moved).reshape(1, *shape)
    if not np.array_equal(evaluate(ctx, readers, {source: x}, node.outputs[0]), want):
        return ctx.fail(node, "it ends strided Slices like a patch merging's that compute something else")
    return OnnxImport("rearrange", [source], {"pattern": f"(h p) (w q) c -> h w ({order})",
                                              "sizes": (("p", p), ("q", q))}, absorbed=tuple(readers[1:]))


def _rearrange_plan(layer: Any, shape: Shape) -> Rearrangement:
    return plan_rearrange(layer.attrs["pattern"], tuple(layer.attrs["sizes"]), shape)


register(OpDef(
    name="rearrange", family="tokens",
    summary="einops' rearrange over the per-sample axes: split, move and group axes (no Caffe layer).",
    example='patches: rearrange("c (h p) (w q) -> (h w) (p q c)", p=4, q=4)',
    args=(Arg("pattern", "string", doc="einops notation without the batch axis: names, (groups), 1"),
          Arg("sizes", "sizes", (), "the size of each split axis the input does not fix: p=16, q=16",
              positional=False)),
    infer=lambda attrs, inputs: plan_rearrange(attrs["pattern"], tuple(attrs["sizes"]), inputs[0]).output,
    pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=_rearrange_torch, imports=("import einops",)),
        executor=ExecutorLowering(lower=lambda layer, ctx: _restructure_executor(
            layer, ctx, *_rearrange_plan(layer, ctx.input_shape(layer, 0)).steps)),
        onnx=lambda layer, ctx: _restructure_onnx(layer, ctx, *_rearrange_plan(layer, ctx.input_shape(layer, 0)).steps),
        from_onnx={"Transpose": _rearrange_from_onnx, "Reshape": _rearrange_from_onnx,
                   "Concat": _rearrange_from_slices},
        reference=lambda layer, xs, w, F: _rearrange_reference(layer, xs[0]),
    ),
))


def _rearrange_reference(layer: Any, x: Any) -> Any:
    import einops

    pattern = layer.attrs["pattern"]
    left, right = (side.strip() for side in pattern.split("->"))
    batch = _batch_name(pattern)
    return einops.rearrange(x, f"{batch} {left} -> {batch} {right}", **dict(layer.attrs["sizes"]))


# select: one index along an axis ---------------------------------------------------------------------

def _select_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_min_rank(x, 2)
    axis = normalize_axis(attrs["axis"], len(x))
    if not -x[axis] <= attrs["index"] < x[axis]:
        raise ShapeError(f"index {attrs['index']} is out of range for axis {attrs['axis']} of size {x[axis]}",
                         arg="index", expected=f"an index from {-x[axis]} to {x[axis] - 1}",
                         received=format_shape(x))
    return x[:axis] + x[axis + 1:]


def _select_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    axis = normalize_axis(layer.attrs["axis"], len(ctx.input_shape(layer, 0)))
    index = ctx.int(layer.attrs["index"])
    return f"{args[0]}[:, {index}]" if axis == 0 else f"{args[0]}.select({axis + 1}, {index})"


def _select_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    axis = normalize_axis(layer.attrs["axis"], len(ctx.input_shape(layer, 0)))
    ctx.node("Gather", [ctx.inputs[0], ctx.constant(layer.attrs["index"], integer=True)], axis=axis + 1)


def _select_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    axis = normalize_axis(layer.attrs["axis"], len(ctx.input_shape(layer, 0)))
    return ExecutorKernel(f"rt.select({ctx.inputs[0]}, {ctx.lit(axis + 1)}, {ctx.lit(layer.attrs['index'])}, "
                          "out={out})", "select")


def _select_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Gather`` of a computed value at one constant index (a 0-d indices tensor) along a per-sample axis."""
    index = ctx.const(node.inputs[1])
    shape = ctx.shape(node.inputs[0])
    axis = int(node.attr("axis", 0))
    if index is None or index.ndim != 0 or shape is None or not computed(ctx, node.inputs[:1]):
        return ctx.fail(node, "only a Gather of a computed value at one constant index is imported (as select)")
    axis = axis + len(shape) + 1 if axis < 0 else axis
    if axis == 0:
        return ctx.fail(node, "a Gather along the batch axis is not a layer")
    return OnnxImport("select", node.inputs[:1], {"index": int(index), "axis": axis - 1})


register(OpDef(
    name="select", family="tokens",
    summary="The slice at one index along an axis, which is dropped: ViT's x[:, 0] is select(0) (no Caffe layer).",
    example="first: select(0, axis=0)",
    args=(Arg("index", "int", doc="the index along the axis; negative counts from the end"),
          Arg("axis", "int", 0, "the per-sample axis (0 = the first after the batch; -1 = the last)")),
    infer=_select_infer,
    pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=_select_torch),
        executor=ExecutorLowering(lower=_select_executor),
        onnx=_select_onnx,
        from_onnx={"Gather": _select_from_onnx},
        reference=lambda layer, xs, w, F: xs[0].select(normalize_axis(layer.attrs["axis"], xs[0].dim() - 1) + 1,
                                                       layer.attrs["index"]),
    ),
))


# linear: nn.Linear over the last axis ---------------------------------------------------------------

def _linear_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    return (*x[:-1], attrs["out"])


def _linear_params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    shape = (attrs["out"], inputs[0][-1])
    params: dict[str, Shape] = {"weight": shape[::-1] if attrs["layout"] == "conv1d" else shape}
    if attrs["bias"]:
        params["bias"] = (attrs["out"],)
    return params


CONV1D = '''
class Conv1D(nn.Module):
    """GPT-2's Conv1D (Hugging Face's transformers.pytorch_utils.Conv1D): a linear layer over the last axis whose
    weight is (in, out)."""

    def __init__(self, nx: int, nf: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.empty(nf)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = torch.addmm(self.bias, rows, self.weight) if self.bias is not None else rows @ self.weight
        return out.view(*x.shape[:-1], -1)
'''


def _linear_torch_module(layer: Any, ctx: TorchContext) -> str:
    bias = "" if "bias" in layer.params else ", bias=False"
    kind = "Conv1D" if layer.attrs["layout"] == "conv1d" else "nn.Linear"
    return f"{kind}({ctx.int(ctx.input_shape(layer, 0)[-1])}, {ctx.int(layer.attrs['out'])}{bias})"


def _linear_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    ident = ctx.ident
    return ExecutorKernel(
        code=(f"rt.linear_last({ctx.inputs[0]}, self.{ident}_w, self.{ident}_b, {epilogue_args(ctx.epilogue)}, "
              "out={out})"),
        kernel="linear" + "+bias" * ctx.has_bias(layer),
        setup=(*ctx.weights_setup(layer),
               *((f"self.{ident}_w = rt.pretranspose(self.{ident}_w)",) if layer.attrs["layout"] != "conv1d" else ())),
    )


def _linear_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    """``MatMul`` by the transposed weight (by the weight itself for GPT-2's Conv1D layout), then ``Add`` of the
    bias: torch's export of nn.Linear on 3-D input."""
    weight = ctx.initializer(layer, "weight")
    if layer.attrs["layout"] != "conv1d":
        weight = ctx.node("Transpose", [weight], output=f"{layer.name}.weight_t", perm=[1, 0])
    if "bias" not in layer.params:
        ctx.node("MatMul", [ctx.inputs[0], weight])
        return
    product = ctx.node("MatMul", [ctx.inputs[0], weight], output=f"{layer.name}.product")
    ctx.node("Add", [product, ctx.initializer(layer, "bias")])


def _linear_import(ctx: OnnxImportContext, matmul: OnnxNodeView, bias: str | None,
                   absorbed: tuple[Any, ...]) -> OnnxImport | None:
    """``MatMul(x, W^T)`` over the last axis of x (rank 2 or more after the batch; fc takes vectors)."""
    weight = ctx.const(matmul.inputs[1])
    shape = ctx.shape(matmul.inputs[0])
    if weight is None or weight.ndim != 2 or shape is None or len(shape) < 2 \
            or not computed(ctx, matmul.inputs[:1]):
        return None
    attrs: dict[str, Any] = {"out": int(weight.shape[1]), "bias": bias is not None}
    params = {"weight": weight.T, **({"bias": bias} if bias is not None else {})}
    return OnnxImport("linear", matmul.inputs[:1], attrs, params, absorbed)


def _linear_from_add(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Add(MatMul(x, W^T), b)``: torch's export of nn.Linear on a token tensor, and alexdsl's."""
    for product, bias in (node.inputs[:2], node.inputs[1::-1]):
        matmul = producer_of(ctx, product, "MatMul")
        value = ctx.const(bias)
        weight = ctx.const(matmul.inputs[1]) if matmul is not None else None
        if value is not None and weight is not None and weight.ndim == 2 and value.shape == (weight.shape[1],):
            return _linear_import(ctx, matmul, bias, (matmul,))
    return None


register(OpDef(
    name="linear", family="tokens",
    summary="nn.Linear over the last axis of a tensor of any rank: weight (out, in), bias (out) (no Caffe layer).",
    example="proj: linear(8)",
    args=(Arg("out", "int", doc="the size of the last axis of the output", min=1),
          Arg("bias", "bias", True, "false for no bias, or the bias filler"),
          Arg("layout", "choice", "linear", "the weight's layout: linear, (out, in) as nn.Linear's; conv1d, (in, out) "
              "as GPT-2's Conv1D (transformer.h.0.attn.c_attn.weight is 768x2304)", choices=("linear", "conv1d"),
              positional=False)),
    infer=_linear_infer,
    params=_linear_params,
    macs=lambda attrs, inputs, output: numel(output) * inputs[0][-1],
    default_fillers=WEIGHT_AND_BIAS,
    pattern=Pattern.OUT_ELEMWISE_FUSABLE,
    per_token=last_axis,
    lower=Lowerings(
        torch=TorchLowering(module=_linear_torch_module, forward=call_module, overwritable_output=True,
                            definitions=lambda layer: CONV1D if layer.attrs["layout"] == "conv1d" else ""),
        executor=ExecutorLowering(lower=_linear_executor, epilogues=EVERY_EPILOGUE),
        onnx=_linear_onnx,
        from_onnx={"Add": _linear_from_add, "MatMul": lambda node, ctx: _linear_import(ctx, node, None, ())},
        reference=lambda layer, xs, w, F: F.linear(
            xs[0], w["weight"].T if layer.attrs["layout"] == "conv1d" else w["weight"], w.get("bias")),
    ),
))


# permute and reshape ----------------------------------------------------------------------------------

def _permutation(attrs: Attrs, x: Shape) -> tuple[int, ...]:
    dims = tuple(normalize_axis(d, len(x), "dims") for d in attrs["dims"])
    if sorted(dims) != list(range(len(x))):
        raise ShapeError(f"dims {tuple(attrs['dims'])} are not a permutation of the {len(x)} axes of "
                         f"{format_shape(x)}", arg="dims", expected=f"each of 0..{len(x) - 1} once",
                         received=str(tuple(attrs["dims"])))
    return dims


def _permute_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    x = inputs[0]
    return tuple(x[d] for d in _permutation(attrs, x))


def _permute_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    dims = _permutation(layer.attrs, ctx.input_shape(layer, 0))
    ctx.node("Transpose", ctx.inputs, perm=[0, *_batch_axes(dims)])


def _permute_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Transpose`` that keeps the batch axis first."""
    perm = [int(p) for p in node.attr("perm", ())]
    if not perm or perm[0] != 0 or not computed(ctx, node.inputs[:1]):
        return ctx.fail(node, "only a Transpose that keeps the batch axis first is imported (as permute)")
    return OnnxImport("permute", node.inputs[:1], {"dims": tuple(p - 1 for p in perm[1:])})


register(OpDef(
    name="permute", family="tokens",
    summary="The per-sample axes in a new order, as torch.permute without the batch axis (no Caffe layer).",
    example="moved: permute((1, 2, 0))",
    args=(Arg("dims", "ints", doc="the input axis at each output position: (1, 2, 0) moves CxHxW to HxWxC"),),
    infer=_permute_infer,
    pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: (
            f"{args[0]}.permute(0, "
            f"{', '.join(ctx.int(d) for d in _batch_axes(_permutation(layer.attrs, ctx.input_shape(layer, 0))))})")),
        executor=ExecutorLowering(lower=lambda layer, ctx: _restructure_executor(
            layer, ctx, ctx.input_shape(layer, 0), _permutation(layer.attrs, ctx.input_shape(layer, 0)))),
        onnx=_permute_onnx,
        from_onnx={"Transpose": lambda node, ctx: _permute_from_onnx(node, ctx)},
        reference=lambda layer, xs, w, F: xs[0].permute(
            0, *_batch_axes(_permutation(layer.attrs, tuple(xs[0].shape[1:])))),
    ),
))


def _reshape_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    x, shape = inputs[0], tuple(attrs["shape"])
    if numel(shape) != numel(x):
        raise ShapeError(f"cannot reshape {format_shape(x)} ({numel(x)} elements) to {format_shape(shape)} "
                         f"({numel(shape)} elements)", arg="shape", expected=f"a shape of {numel(x)} elements",
                         received=format_shape(shape))
    return shape


def _dims(shape: Shape) -> str:
    return ", ".join(str(int(d)) for d in shape)


def _reshape_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Reshape`` of a computed value to a known per-sample shape that keeps the batch axis (``0``, ``-1``, or the
    batch size 1 import infers shapes with, a dynamic batch folded, and as many elements per sample)."""
    target = ctx.const(node.inputs[1])
    shape = ctx.shape(node.outputs[0])
    source = ctx.shape(node.inputs[0])
    if target is None or shape is None or source is None or not computed(ctx, node.inputs[:1]) \
            or int(target.reshape(-1)[0]) not in (-1, 0, 1) or numel(shape) != numel(source):
        return ctx.fail(node, "only a Reshape that keeps the batch axis is imported (as reshape)")
    return OnnxImport("reshape", node.inputs[:1], {"shape": tuple(int(d) for d in shape)})


def _unsqueeze_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Unsqueeze``/``Squeeze`` of a computed value at axes after the batch (the stacked branches of SKNet's
    selective kernel: ``torch.stack`` exports ``Unsqueeze`` + ``Concat``) -> reshape to the output's shape."""
    axes = axes_of(node, ctx.const)
    shape, source = ctx.shape(node.outputs[0]), ctx.shape(node.inputs[0])
    rank = len((shape if node.op_type == "Unsqueeze" else source) or ()) + 1  # of the tensor the axes index
    if not shape or source is None or axes is None or not computed(ctx, node.inputs[:1]) \
            or any(a % rank == 0 for a in axes):
        return ctx.fail(node, f"only an {node.op_type} of given axes after the batch is imported (as reshape)")
    return OnnxImport("reshape", node.inputs[:1], {"shape": tuple(int(d) for d in shape)})


register(OpDef(
    name="reshape", family="tokens",
    summary="The same elements in another per-sample shape, as torch.reshape after the batch axis (no Caffe "
            "layer).",
    example="grid: fc8 -> reshape(2x5)",
    args=(Arg("shape", "shape", doc="the per-sample shape, of as many elements as the input"),),
    infer=_reshape_infer,
    pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"{args[0]}.reshape(-1, {_dims(layer.shape)})"),
        executor=ExecutorLowering(
            lower=lambda layer, ctx: ExecutorKernel(f"{ctx.inputs[0]}.reshape(n, {_dims(layer.shape)})", "view",
                                                    note="reshape (a view)"),
            alias=True),
        onnx=lambda layer, ctx: ctx.node("Reshape", [ctx.inputs[0], ctx.constant([-1, *layer.shape], integer=True)]),
        from_onnx={"Reshape": lambda node, ctx: _reshape_from_onnx(node, ctx),
                   "Unsqueeze": _unsqueeze_from_onnx, "Squeeze": _unsqueeze_from_onnx},
        reference=lambda layer, xs, w, F: xs[0].reshape(-1, *layer.shape),
    ),
))


# roll: a cyclic shift -----------------------------------------------------------------------------------

def _roll_axes(attrs: Attrs, x: Shape) -> tuple[int, ...]:
    shifts, axes = tuple(attrs["shifts"]), tuple(attrs["axes"])
    if len(shifts) != len(axes):
        raise ShapeError(f"roll has {len(shifts)} shifts for {len(axes)} axes", arg="axes",
                         expected="one shift per axis, as roll((-3, -3), axes=(0, 1))",
                         received=f"shifts={shifts}, axes={axes}")
    normal = tuple(normalize_axis(a, len(x), "axes") for a in axes)
    if len(set(normal)) != len(normal):
        raise ShapeError(f"roll names an axis twice in axes={axes}", arg="axes", expected="distinct axes")
    return normal


def _roll_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    _roll_axes(attrs, inputs[0])
    return inputs[0]


def _roll_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    axes = _batch_axes(_roll_axes(layer.attrs, ctx.input_shape(layer, 0)))
    shifts = tuple(int(ctx.int(s)) for s in layer.attrs["shifts"])
    return f"torch.roll({args[0]}, {shifts!r}, {tuple(axes)!r})"


def _roll_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    """Per axis, the last ``shift`` elements ``Slice`` d before the first ones and ``Concat`` -ed."""
    shape = ctx.input_shape(layer, 0)
    moves = [(a, s % shape[a]) for a, s in zip(_roll_axes(layer.attrs, shape), layer.attrs["shifts"], strict=True)]
    moves = [(a, k) for a, k in moves if k]
    value = ctx.inputs[0]
    if not moves:
        ctx.node("Identity", [value])
        return
    for i, (axis, k) in enumerate(moves):
        size, last = shape[axis], i == len(moves) - 1
        parts = [ctx.node("Slice", [value, ctx.constant([start], integer=True), ctx.constant([stop], integer=True),
                                    ctx.constant([axis + 1], integer=True)], output=f"{layer.name}.{tag}{i}")
                 for start, stop, tag in ((size - k, size, "tail"), (0, size - k, "head"))]
        value = ctx.node("Concat", parts, output=None if last else f"{layer.name}.rolled{i}", axis=axis + 1)


def _roll_step(concat: OnnxNodeView, ctx: OnnxImportContext) -> tuple[str, int, int, tuple[Any, ...]] | None:
    """``Concat(Slice(x, s:), Slice(x, :s))`` along one axis (torch's and alexdsl's export of a roll by -s):
    x, the per-sample axis, the shift (the shorter way round) and the two Slices."""
    if len(concat.inputs) != 2:
        return None
    parts = [producer_of(ctx, value, "Slice", concat) for value in concat.inputs]
    if any(p is None or len(p.inputs) < 4 for p in parts) or parts[0].inputs[0] != parts[1].inputs[0]:
        return None
    shape = ctx.shape(parts[0].inputs[0])
    bounds = []
    for part in parts:
        starts, ends, axes, *steps = (ctx.const(v) if v else None for v in part.inputs[1:5])
        if any(b is None or b.size != 1 for b in (starts, ends, axes)) or shape is None \
                or any(s is not None and int(s.reshape(-1)[0]) != 1 for s in steps):
            return None
        axis = int(axes.reshape(-1)[0])
        axis = axis + len(shape) + 1 if axis < 0 else axis
        if not 1 <= axis <= len(shape):
            return None
        size = shape[axis - 1]
        start, stop = (min(max(v + size if v < 0 else v, 0), size) for v in (int(starts[0]), int(ends[0])))
        bounds.append((axis, start, stop))
    (axis, start, stop), (axis2, start2, stop2) = bounds
    size = shape[axis - 1]
    joined = int(concat.attr("axis", 0))
    if axis != axis2 or joined not in (axis, axis - len(shape) - 1) or stop != size or start2 != 0 \
            or stop2 != start or not 0 < start < size:
        return None
    return parts[0].inputs[0], axis - 1, -start if 2 * start <= size else size - start, tuple(parts)


def _roll_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """One ``Concat`` of two ``Slice`` s per axis rolled (the outer one the anchor) -> roll(shifts, axes), checked by
    ONNX's reference evaluator against NumPy's roll."""
    step = _roll_step(node, ctx)
    if step is None:
        return None
    source, axis, shift, absorbed = step
    shifts, axes = [shift], [axis]
    inner = ctx.absorb(source, *absorbed)
    while inner is not None and inner.op_type == "Concat" and (step := _roll_step(inner, ctx)) is not None \
            and step[1] not in axes:
        source, absorbed = step[0], (*absorbed, inner, *step[3])
        shifts.insert(0, step[2])
        axes.insert(0, step[1])
        inner = ctx.absorb(source, *step[3])
    import numpy as np

    shape = ctx.shape(source)
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    want = np.roll(x, shifts, [a + 1 for a in axes])
    if not np.array_equal(evaluate(ctx, [*absorbed, node], {source: x}, node.outputs[0]), want):
        return ctx.fail(node, "it ends Slices and Concats like a roll's that compute something else")
    return OnnxImport("roll", [source], {"shifts": tuple(shifts), "axes": tuple(axes)}, absorbed=absorbed)


register(OpDef(
    name="roll", family="tokens",
    summary="A cyclic shift along axes, as torch.roll: Swin's shifted windows (no Caffe layer).",
    example="shifted: roll((-1, -1), axes=(1, 2))",
    args=(Arg("shifts", "ints", doc="the shift along each axis; elements leaving one end come back at the other"),
          Arg("axes", "ints", doc="the per-sample axes shifted, one per shift")),
    infer=_roll_infer,
    pattern=Pattern.INJECTIVE,
    lower=Lowerings(
        torch=TorchLowering(forward=_roll_torch),
        executor=ExecutorLowering(lower=lambda layer, ctx: ExecutorKernel(
            f"rt.roll({ctx.inputs[0]}, {ctx.lit(tuple(layer.attrs['shifts']))}, "
            f"{ctx.lit(tuple(_batch_axes(_roll_axes(layer.attrs, ctx.input_shape(layer, 0)))))}, out={{out}})",
            "roll")),
        onnx=_roll_onnx,
        from_onnx={"Concat": _roll_from_onnx},
        reference=lambda layer, xs, w, F: xs[0].roll(
            tuple(layer.attrs["shifts"]), tuple(_batch_axes(_roll_axes(layer.attrs, tuple(xs[0].shape[1:]))))),
    ),
))


# matmul: batched matrix products ---------------------------------------------------------------------

def _matmul_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    a, b = inputs
    for which, x in (("a", a), ("b", b)):
        if len(x) < 2:
            raise ShapeError(f"matmul's {which} has rank {len(x)}; it multiplies matrices (the last two axes)",
                             expected="inputs of rank 2 or more: ...xMxK and ...xKxN", received=format_shape(x))
    if a[-1] != b[-2]:
        raise ShapeError(f"matmul of {format_shape(a)} and {format_shape(b)}: a's last axis ({a[-1]}) is not b's "
                         f"second to last ({b[-2]})", expected="...xMxK and ...xKxN",
                         received=f"{format_shape(a)}, {format_shape(b)}")
    lead = broadcast_shapes("matmul", [a[:-2], b[:-2]])
    return (*lead, a[-2], b[-1])


def _matmul_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``MatMul`` of two computed values (a constant operand is a linear's weight)."""
    found = operands(ctx, node)
    return OnnxImport("matmul", found[0], absorbed=found[1]) if found else None


register(OpDef(
    name="matmul", family="tokens",
    summary="The matrix product of the last two axes, batched over the others with NumPy broadcasting, as "
            "torch.matmul (no Caffe layer).",
    example="scores: matmul(b1, b3)",
    args=(), inputs=(2, 2),
    infer=_matmul_infer,
    macs=lambda attrs, inputs, output: numel(output) * inputs[0][-1],
    pattern=Pattern.OPAQUE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: (
            f"torch.matmul({', '.join(aligned(layer, args, ctx.input_shape))})")),
        executor=ExecutorLowering(lower=lambda layer, ctx: ExecutorKernel(
            f"rt.matmul({', '.join(aligned(layer, list(ctx.inputs), ctx.input_shape))}, out={{out}})", "matmul")),
        onnx=lambda layer, ctx: ctx.node("MatMul", onnx_aligned(layer, ctx)),
        from_onnx={"MatMul": _matmul_from_onnx},
        reference=lambda layer, xs, w, F: reference_aligned(layer, xs)[0] @ reference_aligned(layer, xs)[1],
    ),
))
