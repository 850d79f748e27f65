"""Attention read back from ONNX: alexdsl's own export of ``sdpa`` and ``attention``
(:func:`alexdsl.ops.attention.onnx_sdpa`), and torch's export of ``nn.MultiheadAttention``.

``sdpa`` exports as ``Reshape``/``Transpose`` of q, k and v into heads, ``Mul`` by the scale, ``MatMul``, one
``Add`` per additive input (after an ``Unsqueeze`` aligning its rank), ``Softmax``, ``MatMul`` by v, and a
``Transpose``/``Reshape`` merging the heads; anchored at that last ``Reshape`` it becomes one sdpa layer.
An additive input the reader folded to a constant is the layer that computed it: a relative position bias
(its table and index are still initializers named after it, and gathering one by the other must give the
constant) or Swin's shifted-window mask (the constant must be torchvision's mask). ``attention`` exports as
its in-projection (``MatMul`` + ``Add``), three ``Slice`` s, that sdpa and its out-projection; anchored at
the out-projection's ``Add`` it becomes one attention layer with nn.MultiheadAttention's keys. Each match
is run by ONNX's reference evaluator on random inputs and compared with what the layers compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from alexdsl.ops.contexts import OnnxImportContext, OnnxNodeView
from alexdsl.ops.from_onnx import agrees, evaluate, f32, near, producer_of, scalar
from alexdsl.ops.lowering import OnnxImport
from alexdsl.ops.windows import shifted_window_mask


@dataclass
class Sdpa:
    """A matched sdpa export: its inputs, attributes and nodes (the anchor not included)."""

    q: str
    k: str
    v: str
    additive: list[str]  # the values added to the scores, in order (their rank-aligning Unsqueeze left out)
    heads: int
    scale: float
    causal: bool
    nodes: list[Any]


def _heads(value: str, reader: Any, ctx: OnnxImportContext) -> tuple[str, int, list[Any]] | None:
    """``Transpose(Reshape(x, [-1, ..., L, heads, d]))``: x, heads and the two nodes."""
    transpose = producer_of(ctx, value, "Transpose", reader)
    reshape = producer_of(ctx, transpose.inputs[0], "Reshape", transpose) if transpose is not None else None
    dims = ctx.const(reshape.inputs[1]) if reshape is not None else None
    if dims is None or dims.ndim != 1 or len(dims) < 4:
        return None
    return reshape.inputs[0], int(dims[-2]), [transpose, reshape]


def read_sdpa(anchor: OnnxNodeView, ctx: OnnxImportContext) -> Sdpa | None:
    """The sdpa whose export ends at ``anchor``, or None."""
    merged = producer_of(ctx, anchor.inputs[0], "Transpose", anchor) if anchor.op_type == "Reshape" else None
    mixed = producer_of(ctx, merged.inputs[0], "MatMul", merged) if merged is not None else None
    softmax = producer_of(ctx, mixed.inputs[0], "Softmax", mixed) if mixed is not None else None
    v = _heads(mixed.inputs[1], mixed, ctx) if mixed is not None else None
    if softmax is None or v is None or int(softmax.attr("axis", -1)) != -1:
        return None
    nodes = [merged, mixed, softmax, *v[2]]
    scores, reader, additive = softmax.inputs[0], softmax, []
    while (add := producer_of(ctx, scores, "Add", reader)) is not None:
        nodes.append(add)
        value = add.inputs[1]
        aligned = producer_of(ctx, value, "Unsqueeze", add)
        if aligned is not None:
            nodes.append(aligned)
            value = aligned.inputs[0]
        additive.insert(0, value)
        scores, reader = add.inputs[0], add
    product = producer_of(ctx, scores, "MatMul", reader)
    scaled = producer_of(ctx, product.inputs[0], "Mul", product) if product is not None else None
    q = _heads(scaled.inputs[0], scaled, ctx) if scaled is not None else None
    k = _heads(product.inputs[1], product, ctx) if product is not None else None
    factor = scalar(ctx, scaled.inputs[1]) if scaled is not None else None
    if q is None or k is None or factor is None or not q[1] == k[1] == v[1]:
        return None
    nodes += [product, scaled, *q[2], *k[2]]
    causal = bool(additive) and _is_causal(ctx.const(additive[-1]), ctx.shape(q[0]), ctx.shape(k[0]))
    return Sdpa(q[0], k[0], v[0], additive[:-1] if causal else additive, q[1], factor, causal, nodes)


def _is_causal(value: np.ndarray | None, q: tuple[int, ...] | None, k: tuple[int, ...] | None) -> bool:
    if value is None or q is None or k is None:
        return False
    upper = np.triu(np.full((q[-2], k[-2]), -np.inf, dtype=np.float32), 1)
    return value.shape == upper.shape and bool(np.array_equal(value, upper))


def reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, additive: list[np.ndarray], heads: int, scale: float,
              causal: bool) -> np.ndarray:
    """sdpa in NumPy on batched inputs, each additive input aligned after the batch axis as alexdsl aligns it."""
    def split(t: np.ndarray) -> np.ndarray:
        return t.reshape(*t.shape[:-1], heads, -1).swapaxes(-2, -3)

    qh, kh, vh = split(q), split(k), split(v)
    scores = qh @ kh.swapaxes(-1, -2) * np.float32(scale)
    for value in additive:
        scores = scores + value.reshape(value.shape[0], *(1,) * (scores.ndim - value.ndim), *value.shape[1:])
    if causal:
        scores = scores + np.triu(np.full(scores.shape[-2:], -np.inf, dtype=np.float32), 1)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    mixed = (scores / scores.sum(axis=-1, keepdims=True)) @ vh
    return mixed.swapaxes(-2, -3).reshape(*q.shape[:-1], v.shape[-1])


def _computes(anchor: OnnxNodeView, found: Sdpa, ctx: OnnxImportContext) -> bool:
    rng = np.random.default_rng(0)
    feeds = {value: rng.standard_normal((1, *ctx.shape(value))).astype(np.float32)  # type: ignore[misc]
             for value in dict.fromkeys([found.q, found.k, found.v, *found.additive]) if ctx.const(value) is None}
    got = evaluate(ctx, [*found.nodes, anchor], feeds, anchor.outputs[0])
    additive = [feeds[v] if v in feeds else ctx.const(v) for v in found.additive]
    want = reference(feeds[found.q], feeds[found.k], feeds[found.v], additive, found.heads, found.scale, found.causal)
    return agrees(got, want)


TABLE, INDEX = "relative_position_bias_table", "relative_position_index"


def _constant_layer(value: str, ctx: OnnxImportContext, tokens: int) -> OnnxImport | None:
    """The layer that computed a constant added to the scores: a relative position bias (the table initializer,
    gathered by the index beside it, gives the constant) or a shifted-window mask (torchvision's values; alexdsl's
    export names its constant ``<layer>.mask``)."""
    array = ctx.const(value)
    window = math.isqrt(tokens)
    if array is None or window * window != tokens:
        return None
    for table_name in ctx.constants_ending(f".{TABLE}"):
        layer = table_name[: -len(TABLE) - 1]
        table, index = ctx.const(table_name), ctx.const(f"{layer}.{INDEX}")
        if table is None or index is None or table.ndim != 2 or index.size != tokens * tokens \
                or array.size != tokens * tokens * table.shape[1]:
            continue
        gathered = table[index.reshape(-1).astype(np.int64)].reshape(tokens, tokens, -1).transpose(2, 0, 1)
        if np.array_equal(array.reshape(gathered.shape), gathered):
            return OnnxImport("relative_position_bias", [], {"window": window, "heads": table.shape[1],
                                                             "index": "square" if index.ndim == 2 else "flat"},
                              {TABLE: table_name, INDEX: f"{layer}.{INDEX}"}, output=f"{value}#bias")
    side = math.isqrt(array.size // (tokens * tokens)) * window  # a square map of windows
    for shift in range(1, window):
        mask = shifted_window_mask(side, side, window, shift)
        if array.size == mask.size and np.array_equal(array.reshape(mask.shape), mask):
            return OnnxImport("window_mask", [], {"size": (side, side), "window": window, "shift": shift},
                              output=f"{value}#mask", name=value.removesuffix(".mask"))
    return None


def sdpa_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> list[OnnxImport] | None:
    """alexdsl's export of sdpa, anchored at its last ``Reshape`` -> sdpa, and a relative_position_bias or
    window_mask layer for each additive input folded to a constant."""
    found = read_sdpa(node, ctx)
    if found is None:
        return None
    q, k = ctx.shape(found.q), ctx.shape(found.k)
    layers, additive = [], []
    for value in found.additive:
        if ctx.const(value) is not None:  # its layer's output: the constant's shape has the alignment's axes
            layer = _constant_layer(value, ctx, k[-2]) if q is not None and k is not None and q[-2] == k[-2] else None
            if layer is None:
                return ctx.fail(node, "it ends an sdpa that adds a constant alexdsl has no layer for")
            layers.append(layer)
            value = layer.output
        additive.append(value)
    if not _computes(node, found, ctx):
        return ctx.fail(node, "it ends nodes like sdpa's export that compute something else")
    d = (q[-1] if q else 0) // found.heads
    scale = None if near(found.scale, d ** -0.5) else f32(found.scale)
    return [*layers, OnnxImport("sdpa", [found.q, found.k, found.v, *additive],
                                {"heads": found.heads, "causal": found.causal, "scale": scale},
                                absorbed=tuple(found.nodes))]


def attention_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """alexdsl's export of attention, anchored at the out-projection's ``Add`` -> attention with
    nn.MultiheadAttention's keys."""
    out = _projection(node, ctx, 1)
    sdpa = ctx.absorb(out[0].inputs[0], out[0]) if out is not None else None
    found = read_sdpa(sdpa, ctx) if sdpa is not None and sdpa.op_type == "Reshape" else None
    if out is None or found is None or found.additive or found.causal:
        return None
    slices = [ctx.absorb(value, *found.nodes) for value in (found.q, found.k, found.v)]
    if any(s is None or s.op_type != "Slice" for s in slices) or len({s.inputs[0] for s in slices}) != 1:
        return None
    inner = _projection(ctx.absorb(slices[0].inputs[0], *slices), ctx, 3)
    if inner is None:
        return None
    params = {"in_proj_weight": inner[2], "in_proj_bias": inner[3], "out_proj.weight": out[2], "out_proj.bias": out[3]}
    body = [inner[0], inner[1], *slices, *found.nodes, sdpa, out[0], node]
    if not _mha_computes(inner[0], sorted(body, key=lambda n: n.index), ctx, found.heads, params):
        return ctx.fail(node, "it ends nodes like attention's export that compute something else")
    return OnnxImport("attention", [inner[0].inputs[0]], {"heads": found.heads}, params, tuple(body[:-1]))


def _projection(add: OnnxNodeView | None, ctx: OnnxImportContext, times: int) -> tuple[Any, Any, Any, str] | None:
    """``Add(MatMul(x, W^T), b)`` with W (E, times * E): the MatMul, the Add, W^T and b's value."""
    if add is None or add.op_type != "Add":
        return None
    matmul = producer_of(ctx, add.inputs[0], "MatMul", add)
    weight = ctx.const(matmul.inputs[1]) if matmul is not None else None
    bias = ctx.const(add.inputs[1])
    if weight is None or bias is None or weight.ndim != 2 or bias.shape != (weight.shape[1],) \
            or weight.shape[1] != times * weight.shape[0]:
        return None
    return matmul, add, np.ascontiguousarray(weight.T), add.inputs[1]


# torch's export of nn.MultiheadAttention (batch_first self-attention, need_weights=False): the tokens are
# transposed to (L, N, E), projected by one MatMul (+ Add), split into q, k, v per head, scaled, multiplied,
# soft-maxed, merged, projected by a Gemm and transposed back. The converter anchors at that last Transpose,
# takes every node back to the first Transpose, and checks numerically that they compute attention.
MHA_NODES = frozenset({"Transpose", "MatMul", "Add", "Reshape", "Unsqueeze", "Squeeze", "Gather", "Mul", "Div",
                       "Softmax", "Gemm", "Slice", "Split", "Identity"})
MAX_MHA_NODES = 64


def _mha_body(node: OnnxNodeView, ctx: OnnxImportContext) -> tuple[OnnxNodeView, list[OnnxNodeView]] | None:
    """The first Transpose of the subgraph ending at ``node``, and every node from it to ``node``; None when
    the nodes between read another computed value or a node outside reads one of theirs."""
    entry, body, todo = None, [node], [node]
    while todo:
        current = todo.pop()
        for value in current.inputs:
            if not value or ctx.const(value) is not None:
                continue
            found = ctx.producer(value)
            if found is None or found.op_type not in MHA_NODES or len(body) > MAX_MHA_NODES:
                return None
            if any(found is b for b in body):
                continue
            body.append(found)
            if found.op_type == "Transpose" and list(found.attr("perm", [])) == [1, 0, 2] \
                    and ctx.producer(found.inputs[0]) is not None and any(
                        r.op_type == "MatMul" for r in ctx.readers(found.outputs[0])):
                if entry is not None and entry is not found:
                    return None  # two ways in: not self-attention
                entry = found
                continue
            todo.append(found)
    if entry is None or any(ctx.absorb(out, *body) is None for b in body[1:] for out in b.outputs if out):
        return None
    return entry, body


def _mha_weights(body: list[OnnxNodeView], ctx: OnnxImportContext, e: int) -> dict[str, Any] | None:
    """nn.MultiheadAttention's four tensors, from the in-projection MatMul and Add and the out-projection Gemm."""
    params: dict[str, Any] = {}
    for n in body:
        w = ctx.const(n.inputs[1]) if n.op_type in ("MatMul", "Gemm") and len(n.inputs) > 1 else None
        if n.op_type == "MatMul" and w is not None and w.shape == (e, 3 * e):
            params["in_proj_weight"] = np.ascontiguousarray(w.T)
            for add in ctx.readers(n.outputs[0]):
                bias = [v for v in add.inputs if ctx.const(v) is not None]
                if add.op_type == "Add" and len(bias) == 1 and ctx.const(bias[0]).shape == (3 * e,):
                    params["in_proj_bias"] = bias[0]
        elif n.op_type == "Gemm" and w is not None and w.shape == (e, e) and len(n.inputs) == 3 \
                and n.attr("transB", 0) == 1 and not n.attr("transA", 0) \
                and n.attr("alpha", 1.0) == 1.0 and n.attr("beta", 1.0) == 1.0:
            params["out_proj.weight"], params["out_proj.bias"] = n.inputs[1], n.inputs[2]
    return params if len(params) == 4 else None


MAX_CHECKED = 64  # subgraph structures remembered as computing attention
_checked: dict[tuple[Any, ...], bool] = {}


def _mha_structure(entry: OnnxNodeView, ordered: list[OnnxNodeView], ctx: OnnxImportContext,
                   heads: int) -> tuple[Any, ...]:
    """The subgraph with its weights left out: nodes, attributes, wiring, and the values of small constants (a
    model's encoder layers share one, so one check covers them all)."""
    position = {out: i for i, n in enumerate(ordered) for out in n.outputs}
    wiring = []
    for n in ordered:
        inputs = []
        for v in n.inputs:
            const = ctx.const(v) if v else None
            inputs.append("x" if v == entry.inputs[0] else position.get(v) if const is None else
                          (const.shape, const.tobytes() if const.size <= 64 else "weight"))
        wiring.append((n.op_type, repr(sorted(n.attrs.items())), tuple(inputs)))
    return heads, ctx.shape(entry.inputs[0]), tuple(wiring)


def _mha_agrees(entry: OnnxNodeView, body: list[OnnxNodeView], ctx: OnnxImportContext, heads: int,
                params: dict[str, Any]) -> bool:
    """Whether the nodes, run by ONNX's reference evaluator on a random input, compute multi-head attention
    (checked once per structure: the weights are random to the check)."""
    ordered = sorted(body, key=lambda n: n.index)
    structure = _mha_structure(entry, ordered, ctx, heads)
    if structure not in _checked:
        if len(_checked) >= MAX_CHECKED:
            _checked.clear()
        _checked[structure] = _mha_computes(entry, ordered, ctx, heads, params)
    return _checked[structure]


def _mha_computes(entry: OnnxNodeView, ordered: list[OnnxNodeView], ctx: OnnxImportContext, heads: int,
                  params: dict[str, Any]) -> bool:
    """Whether ``ordered``, run by ONNX's reference evaluator on a random input, computes attention."""
    shape = ctx.shape(entry.inputs[0])
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    got = evaluate(ctx, ordered, {entry.inputs[0]: x}, ordered[-1].outputs[0])
    weight = {k: v if not isinstance(v, str) else ctx.const(v) for k, v in params.items()}
    q, k, v = np.split(x @ weight["in_proj_weight"].T + weight["in_proj_bias"], 3, axis=-1)
    mixed = reference(q, k, v, [], heads, (x.shape[-1] // heads) ** -0.5, causal=False)
    want = mixed @ weight["out_proj.weight"].T + weight["out_proj.bias"]
    return agrees(got, want)


def torch_attention_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """torch's export of ``nn.MultiheadAttention(batch_first=True)`` called as ``mha(x, x, x)``, anchored at its
    last Transpose -> attention, with its keys (``in_proj_weight`` from the transposed MatMul weight)."""
    if list(node.attr("perm", [])) != [1, 0, 2]:
        return None
    found = _mha_body(node, ctx)
    if found is None:
        return None
    entry, body = found
    shape = ctx.shape(entry.inputs[0])
    softmax = [n for n in body if n.op_type == "Softmax"]
    scores = ctx.shape(softmax[0].outputs[0]) if len(softmax) == 1 else None
    if shape is None or len(shape) < 2 or scores is None or len(scores) < 3:
        return None
    e, heads = shape[-1], scores[-3]
    params = _mha_weights(body, ctx, e)
    if params is None or e % heads:
        return ctx.fail(node, "it ends a subgraph like nn.MultiheadAttention's, but its projections are not "
                              "an in-projection MatMul + Add and an out-projection Gemm")
    if not _mha_agrees(entry, body, ctx, heads, params):
        return ctx.fail(node, "it ends a subgraph like nn.MultiheadAttention's that does not compute attention")
    return OnnxImport("attention", [entry.inputs[0]], {"heads": heads}, params, tuple(body[1:]))
