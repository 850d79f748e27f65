"""torch's export of Swin's shifted-window attention, imported as the layers examples/swin_t.adsl writes.

torchvision's ``shifted_window_attention`` exports (TorchScript, opset 17, shapes folded by
:func:`alexdsl.interop.onnx_graph.read_onnx`) as one subgraph from the grid to the grid: the window
partition (``Reshape`` to ``(B, H/w, w, W/w, w, C)``, ``Transpose``, ``Reshape`` that merges the batch
and the windows), the qkv ``MatMul`` + ``Add``, its split into q, k and v (``Reshape``, ``Transpose``,
``Gather``), ``q * d^-0.5 @ k^T``, the relative position bias (folded to a constant: the table gathered
by the index), the shifted-window mask (a constant), ``Softmax``, ``@ v``, the projection and the window
reverse. It is anchored at that last ``Reshape`` and becomes::

    windows: rearrange("(h p) (w q) c -> (h w) (p q) c", p=7, q=7)
    attn:    relative_position_bias(7, heads)     # the table recovered from the folded bias
    mask:    window_mask(56, 7, 3)                # only where the subgraph adds a mask
    qkv:     linear(3 * c) | chunk(3, axis=-1)
    sdpa:    sdpa(q, k, v, attn, mask, heads=heads)
    proj:    linear(c)
    grid:    rearrange("(h w) (p q) c -> (h p) (w q) c", h=n, p=7, q=7)

Its parameters keep torch's keys (``<block>.attn.qkv.weight``, ``<block>.attn.relative_position_bias_table``,
``<block>.attn.relative_position_index``). Before it is accepted, the matched subgraph is run by ONNX's
reference evaluator on a random grid and compared with those layers computed in NumPy, as the
``attention`` import checks nn.MultiheadAttention's subgraph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from alexdsl.ops.attention_onnx import reference
from alexdsl.ops.contexts import OnnxImportContext, OnnxNodeView
from alexdsl.ops.from_onnx import agrees, evaluate, f32, near
from alexdsl.ops.lowering import OnnxImport
from alexdsl.ops.windows import relative_position_index, shifted_window_mask

BODY_OPS = frozenset({"Reshape", "Transpose", "MatMul", "Add", "Mul", "Div", "Gather", "Softmax", "Split",
                      "Squeeze"})
"""What torch writes between the window partition and the window reverse."""
MAX_BODY = 80  # nodes of one window attention (torch 2.x writes 28 with a mask)


@dataclass
class WindowAttention:
    """What a matched subgraph computes, in the terms of alexdsl's layers."""

    grid: tuple[int, int, int]  # H, W, C of the input grid
    window: int
    heads: int
    qkv: tuple[np.ndarray, str | None]  # the (3C, C) weight, the bias's value (None: no bias)
    proj: tuple[np.ndarray, str | None]
    bias: np.ndarray  # (heads, L, L)
    mask: np.ndarray | None  # (windows, 1, L, L)
    scale: float  # of q k^T


def _body(anchor: OnnxNodeView, ctx: OnnxImportContext) -> tuple[str, list[OnnxNodeView]] | None:
    """The nodes from the anchor back to the one computed value they read (the grid), or None."""
    nodes, pending, entries = [anchor], [anchor], set()
    while pending:
        for value in pending.pop().inputs:
            if not value or ctx.const(value) is not None:
                continue
            node = ctx.producer(value)
            if node is None or node.op_type not in BODY_OPS:
                entries.add(value)
            elif all(node is not n for n in nodes):
                if len(nodes) >= MAX_BODY:
                    return None
                nodes.append(node)
                pending.append(node)
    if len(entries) != 1 or not any(n.op_type == "Softmax" for n in nodes):
        return None
    for node in nodes[1:]:  # nothing outside reads what the subgraph computes inside
        if ctx.absorb(node.outputs[0], *nodes) is None or len(node.outputs) != 1 and node.op_type != "Split":
            return None
    return entries.pop(), nodes


def _linear(matmul: OnnxNodeView, body: list[OnnxNodeView], ctx: OnnxImportContext) -> tuple[np.ndarray, str | None]:
    """nn.Linear's (out, in) weight and its bias's value (None without an ``Add`` of one)."""
    weight = ctx.const(matmul.inputs[1])
    for add in ctx.readers(matmul.outputs[0]):
        bias = [v for v in add.inputs if ctx.const(v) is not None]
        if add.op_type == "Add" and any(add is n for n in body) and len(bias) == 1 \
                and ctx.const(bias[0]).shape == (weight.shape[1],):
            return np.ascontiguousarray(weight.T), bias[0]
    return np.ascontiguousarray(weight.T), None


def _read(entry: str, body: list[OnnxNodeView], ctx: OnnxImportContext) -> WindowAttention | str:
    """The subgraph's window, heads, weights, bias and mask; a message saying what does not fit otherwise."""
    grid = ctx.shape(entry)
    scores = ctx.shape(next(n for n in body if n.op_type == "Softmax").outputs[0])
    if grid is None or len(grid) != 3 or scores is None or len(scores) < 3:
        return "its input is not a grid of tokens (H x W x C)"
    height, width, channels = grid
    heads, tokens = scores[-3], scores[-1]
    window = math.isqrt(tokens)
    if window * window != tokens or height % window or width % window or channels % heads:
        return f"its {tokens} tokens per window do not tile the {height}x{width} grid"
    linears: dict[tuple[int, ...], tuple[np.ndarray, str | None]] = {}
    for node in body:
        weight = ctx.const(node.inputs[1]) if node.op_type == "MatMul" else None
        if weight is not None and weight.ndim == 2:
            linears[weight.shape] = _linear(node, body, ctx)
    qkv, proj = linears.get((channels, 3 * channels)), linears.get((channels, channels))
    if qkv is None or proj is None or len(linears) != 2:
        return "its projections are not a qkv MatMul (C x 3C) and an output MatMul (C x C)"
    windows = (height // window) * (width // window)
    bias = mask = None
    scale = (channels // heads) ** -0.5
    for node in body:
        constant = [ctx.const(v) for v in node.inputs if v and ctx.const(v) is not None]
        if len(constant) != 1:
            continue
        value = constant[0]
        if node.op_type == "Add" and value.ndim >= 3 and value.size == heads * tokens * tokens:
            bias = value.reshape(heads, tokens, tokens)
        elif node.op_type == "Add" and value.ndim >= 3 and value.size == windows * tokens * tokens:
            mask = value.reshape(windows, 1, tokens, tokens)
        elif node.op_type in ("Mul", "Div") and value.size == 1:
            factor = float(value.reshape(-1)[0])
            scale = factor if node.op_type == "Mul" else 1 / factor
    if bias is None:
        return "it adds no relative position bias (heads x L x L) to the scores"
    return WindowAttention((height, width, channels), window, heads, qkv, proj, bias, mask, scale)


def _table(found: WindowAttention) -> np.ndarray | None:
    """The relative position bias table whose rows, gathered by torchvision's index, are the folded bias."""
    window, tokens = found.window, found.window ** 2
    index = relative_position_index(window, square=False)
    rows = found.bias.transpose(1, 2, 0).reshape(tokens * tokens, found.heads)
    table = np.zeros(((2 * window - 1) ** 2, found.heads), dtype=np.float32)
    table[index] = rows
    return table if np.array_equal(table[index], rows) else None


def _shift(found: WindowAttention) -> int | None:
    """The shift whose torchvision mask the subgraph adds."""
    height, width, _ = found.grid
    for shift in range(1, found.window):
        if np.array_equal(found.mask, shifted_window_mask(height, width, found.window, shift)):
            return shift
    return None


def window_attention(x: np.ndarray, found: WindowAttention, weights: dict[str, np.ndarray]) -> np.ndarray:
    """What the layers compute, in NumPy, on a batch of grids ``x`` (N, H, W, C)."""
    (height, width, channels), window, heads = found.grid, found.window, found.heads
    rows, cols = height // window, width // window
    windows = x.reshape(-1, rows, window, cols, window, channels).transpose(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(-1, rows * cols, window * window, channels)
    qkv = windows @ weights["qkv.weight"].T + weights.get("qkv.bias", 0)
    q, k, v = np.split(qkv, 3, axis=-1)
    added = [term[None] for term in (found.bias, found.mask) if term is not None]  # each with a batch axis of 1
    mixed = reference(q, k, v, added, heads, found.scale, causal=False)
    out = mixed @ weights["proj.weight"].T + weights.get("proj.bias", 0)
    return out.reshape(-1, rows, cols, window, window, channels).transpose(0, 1, 3, 2, 4, 5).reshape(x.shape)


def _computes(entry: str, body: list[OnnxNodeView], ctx: OnnxImportContext, found: WindowAttention) -> bool:
    """Whether the nodes, run by ONNX's reference evaluator on a random grid, compute what the layers do."""
    x = np.random.default_rng(0).standard_normal((1, *found.grid)).astype(np.float32)
    got = evaluate(ctx, body, {entry: x}, body[0].outputs[0])
    weights = {f"{name}.weight": weight for name, (weight, _) in (("qkv", found.qkv), ("proj", found.proj))}
    weights.update({f"{name}.bias": ctx.const(bias) for name, (_, bias) in (("qkv", found.qkv), ("proj", found.proj))
                    if bias is not None})
    want = window_attention(x, found, weights)
    return agrees(got, want)


def window_attention_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> list[OnnxImport] | None:
    """torch's export of torchvision's ``shifted_window_attention``, anchored at the window reverse's last
    ``Reshape`` -> rearrange, linear, chunk, relative_position_bias, window_mask, sdpa, linear, rearrange."""
    matched = _body(node, ctx)
    if matched is None:
        return None
    entry, body = matched
    if ctx.shape(entry) != ctx.shape(node.outputs[0]):  # from the grid back to the grid, not a part of it
        return None
    found = _read(entry, body, ctx)
    if isinstance(found, str):
        return ctx.fail(node, f"it ends a subgraph like Swin's window attention, but {found}")
    table = _table(found)
    shift = _shift(found) if found.mask is not None else 0
    if table is None or shift is None:
        return ctx.fail(node, "it ends a subgraph like Swin's window attention whose "
                              + ("bias is not a relative position table gathered by torchvision's index"
                                 if table is None else "mask is not torchvision's shifted-window mask"))
    if not _computes(entry, body, ctx, found):
        return ctx.fail(node, "it ends a subgraph like Swin's window attention that does not compute it")
    return _layers(node, entry, body, found, table, shift)


def _layers(node: OnnxNodeView, entry: str, body: list[OnnxNodeView], found: WindowAttention, table: np.ndarray,
            shift: int) -> list[OnnxImport]:
    (height, width, channels), window, heads = found.grid, found.window, found.heads
    out = node.outputs[0]
    value = {part: f"{out}#{part}" for part in ("windows", "qkv", "q", "k", "v", "bias", "mask", "sdpa", "proj")}

    def linear(name: str, source: str, features: int) -> OnnxImport:
        weight, bias = getattr(found, name)
        return OnnxImport("linear", [source], {"out": features, "bias": bias is not None},
                          {"weight": weight, **({"bias": bias} if bias is not None else {})}, output=value[name],
                          name=name)

    layers = [
        OnnxImport("rearrange", [entry], {"pattern": "(h p) (w q) c -> (h w) (p q) c",
                                          "sizes": (("p", window), ("q", window))},
                   output=value["windows"], name="windows"),
        OnnxImport("relative_position_bias", [], {"window": window, "heads": heads},
                   {"relative_position_bias_table": table,
                    "relative_position_index": relative_position_index(window, square=False)},
                   output=value["bias"], name=""),
        linear("qkv", value["windows"], 3 * channels),
        *(OnnxImport("channel_chunk", [value["qkv"]], {"chunks": 3, "index": i, "axis": -1}, output=value[part],
                     name=f"qkv.{i}") for i, part in enumerate("qkv")),
    ]
    additive = [value["bias"]]
    if found.mask is not None:
        layers.append(OnnxImport("window_mask", [], {"size": (height, width), "window": window, "shift": shift},
                                 output=value["mask"], name="mask"))
        additive.append(value["mask"])
    scale = None if near(found.scale, (channels // heads) ** -0.5) else f32(found.scale)
    layers += [
        OnnxImport("sdpa", [value["q"], value["k"], value["v"], *additive], {"heads": heads, "scale": scale},
                   output=value["sdpa"], name="sdpa"),
        linear("proj", value["sdpa"], channels),
        OnnxImport("rearrange", [value["proj"]], {"pattern": "(h w) (p q) c -> (h p) (w q) c",
                                                  "sizes": (("h", height // window), ("p", window), ("q", window))},
                   absorbed=tuple(body[1:]), name="grid"),
    ]
    return layers
