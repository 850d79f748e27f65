"""Attention over token tensors: multi-head self-attention with nn.MultiheadAttention's parameters, and
scaled dot-product attention over separately projected queries, keys and values.

Tokens are the second-to-last axis and features the last: a per-sample shape ``(..., L, E)``, where the
leading axes (windows, for Swin) are batched over. ``heads`` splits the features into ``heads`` groups
of ``E / heads``, the way ``nn.MultiheadAttention`` and torchvision's Swin and MaxViT split them.

>>> from alexdsl.ops.registry import lookup
>>> sdpa = lookup("sdpa")
>>> sdpa.infer({"heads": 3, "causal": False, "scale": None}, [(64, 49, 96), (64, 49, 96), (64, 49, 96), (3, 49, 49)])
(64, 49, 96)
>>> sdpa.macs({"heads": 3}, [(64, 49, 96)] * 3, (64, 49, 96)) == 2 * 64 * 49 * 49 * 96
True
"""

from __future__ import annotations

from typing import Any

from alexdsl.ops.contexts import ExecutorContext, OnnxExportContext, OnnxImportContext, OnnxNodeView, TorchContext
from alexdsl.ops.fillers import Filler
from alexdsl.ops.lowering import ExecutorKernel, ExecutorLowering, Lowerings, OnnxImport, Pattern, TorchLowering
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, format_shape, numel, register
from alexdsl.ops.windows import relative_position_index, shifted_window_mask


def _tokens(shape: Shape, what: str) -> None:
    """A ShapeError unless ``shape`` is (..., L, E): at least tokens x features."""
    if len(shape) < 2:
        raise ShapeError(f"expects {what} of tokens x features (..., L, E), of rank 2 or more",
                         expected="LxE, or ...xLxE (windows x tokens x features)", received=format_shape(shape))


def _per_head(features: int, heads: int, what: str) -> int:
    """The features of one head; a ShapeError naming ``heads`` when they do not divide evenly."""
    if features % heads:
        raise ShapeError(f"{what} has {features} features, which {heads} heads do not divide evenly",
                         arg="heads", expected=f"features a multiple of heads={heads}", received=f"{features}")
    return features // heads


def _broadcasts_to(shape: Shape, target: Shape) -> bool:
    """Whether ``shape`` broadcasts (NumPy's rules, aligned from the right) to ``target`` without growing it."""
    return len(shape) <= len(target) and all(d in (1, t) for d, t in zip(reversed(shape), reversed(target)))


def _after_batch(arg: str, missing: int) -> str:
    """``arg`` given ``missing`` axes of size 1 after the batch, to align it from the right with a higher rank."""
    return f"{arg}[:{', None' * missing}]" if missing else arg


# scaled dot-product attention --------------------------------------------------------------------------

def scores_shape(heads: int, q: Shape, k: Shape) -> Shape:
    """The per-sample shape of the attention scores: (..., heads, Lq, Lk)."""
    return (*q[:-2], heads, q[-2], k[-2])


def _sdpa_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    q, k, v, *additive = inputs
    heads = attrs["heads"]
    for name, shape in (("q", q), ("k", k), ("v", v)):
        _tokens(shape, f"{name} (input {'qkv'.index(name) + 1})")
    if not (q[:-2] == k[:-2] == v[:-2]):
        raise ShapeError("q, k and v must have the same leading axes (the ... of (..., L, features))",
                         expected="equal leading axes", received=", ".join(format_shape(s) for s in (q, k, v)))
    if k[-2] != v[-2]:
        raise ShapeError(f"k has {k[-2]} tokens but v has {v[-2]}: each key needs its value",
                         expected="k and v with the same number of tokens", received=f"{format_shape(k)}, "
                                                                                       f"{format_shape(v)}")
    if q[-1] != k[-1]:
        raise ShapeError(f"q has {q[-1]} features but k has {k[-1]}: scores are products of the two",
                         expected="q and k with the same features", received=f"{format_shape(q)}, {format_shape(k)}")
    _per_head(q[-1], heads, "q")
    _per_head(v[-1], heads, "v")
    scores = scores_shape(heads, q, k)
    for i, shape in enumerate(additive, start=4):
        if not _broadcasts_to(shape, scores):
            raise ShapeError(f"input {i} ({format_shape(shape)}) does not broadcast to the attention scores "
                             f"{format_shape(scores)} (..., heads, Lq, Lk)",
                             expected=f"a shape that broadcasts to {format_shape(scores)}: aligned from the right, "
                                      "each axis equal or 1", received=format_shape(shape))
    return (*q[:-1], v[-1])


def _sdpa_macs(attrs: Attrs, inputs: list[Shape], output: Shape) -> int:
    """The two products: Q K^T (Lq x Lk x d per head) and the weights times V (Lq x Lk x dv per head)."""
    q, k, v = inputs[:3]
    return numel(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


def _sdpa_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    """``F.scaled_dot_product_attention`` over the heads, the additive inputs summed as ``attn_mask``; a causal
    mask joins them as ``-inf`` above the diagonal (torch takes either a mask or ``is_causal``)."""
    a = layer.attrs
    heads = a["heads"]
    q, k, v = (ctx.input_shape(layer, i) for i in range(3))

    def split(arg: str, features: int) -> str:  # (N, ..., L, heads*d) -> (N, ..., heads, L, d)
        return f"{arg}.unflatten(-1, ({ctx.int(heads)}, {ctx.int(features // heads)})).transpose(-3, -2)"

    rank = len(scores_shape(heads, q, k))
    terms = [_after_batch(arg, rank - len(ctx.input_shape(layer, i))) for i, arg in enumerate(args[3:], start=3)]
    if a["causal"] and terms:
        terms.append(f"{args[0]}.new_full(({ctx.int(q[-2])}, {ctx.int(k[-2])}), float('-inf')).triu(1)")
    options = [f"attn_mask={' + '.join(terms)}"] if terms else []
    if a["causal"] and not terms:
        options.append("is_causal=True")
    if a["scale"] is not None:
        options.append(f"scale={ctx.float(a['scale'])}")
    return (f"F.scaled_dot_product_attention({split(args[0], q[-1])}, {split(args[1], k[-1])}, "
            f"{split(args[2], v[-1])}{''.join(', ' + o for o in options)}).transpose(-3, -2).flatten(-2)")


def _sdpa_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> list[OnnxImport] | None:
    """torch's export of Swin's window attention (:mod:`alexdsl.ops.window_attention_onnx`), else alexdsl's
    export of sdpa (:mod:`alexdsl.ops.attention_onnx`); both modules read this one's bias and mask."""
    from alexdsl.ops.attention_onnx import sdpa_from_onnx
    from alexdsl.ops.window_attention_onnx import window_attention_from_onnx

    return window_attention_from_onnx(node, ctx) or sdpa_from_onnx(node, ctx)


def _own_attention_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """alexdsl's export of attention (:mod:`alexdsl.ops.attention_onnx`)."""
    from alexdsl.ops.attention_onnx import attention_from_onnx

    return attention_from_onnx(node, ctx)


def _torch_attention_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """torch's export of nn.MultiheadAttention (:mod:`alexdsl.ops.attention_onnx`)."""
    from alexdsl.ops.attention_onnx import torch_attention_from_onnx

    return torch_attention_from_onnx(node, ctx)


def _sdpa_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    a = layer.attrs
    return ExecutorKernel(
        f"rt.sdpa({', '.join(ctx.inputs)}, heads={ctx.lit(a['heads'])}, scale={ctx.lit(a['scale'])}, "
        f"causal={ctx.lit(a['causal'])}, out={{out}})", "sdpa")


def _cacheable(layer: Any, shapes: list[Shape]) -> bool:
    """Whether a cached decoder can run this sdpa: causal self-attention of q, k and v (L x features each, the
    same L), nothing added to the scores."""
    return layer.attrs["causal"] and len(shapes) == 3 and all(len(s) == 2 and s[0] == shapes[0][0] for s in shapes)


def _sdpa_decode(layer: Any, ctx: ExecutorContext) -> ExecutorKernel | None:
    """Causal self-attention over a key/value cache: the new tokens' keys and values are written into the cache at
    ``offset`` and the queries attend to every cached token up to their own. None for any other attention
    (non-causal, or with added terms: each token would see later ones, or the terms span the sequence)."""
    a = layer.attrs
    shapes = [ctx.input_shape(layer, i) for i in range(len(layer.inputs))]
    if not _cacheable(layer, shapes):
        return None
    cache = ctx.cache(layer, (shapes[1], shapes[2]))
    return ExecutorKernel(
        f"rt.cached_sdpa({', '.join(ctx.inputs)}, {cache}, {ctx.offset}, heads={ctx.lit(a['heads'])}, "
        f"scale={ctx.lit(a['scale'])}, out={{out}})", "cached_sdpa")


CACHED_SDPA = '''
def cached_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor],
                offset: int, heads: int, scale: float | None = None) -> torch.Tensor:
    """Causal attention of the new tokens q, k, v (N, L, heads * d), the first at position offset: their keys and
    values are written into the cache (N, longest, features) at offset, then each query attends to the cached
    tokens up to its own."""
    keys, values = cache
    end = offset + q.shape[1]
    keys[:, offset:end] = k
    values[:, offset:end] = v
    mask = torch.ones(q.shape[1], end, dtype=torch.bool, device=q.device).tril(offset)
    return F.scaled_dot_product_attention(*(x.unflatten(-1, (heads, -1)).transpose(1, 2)
                                            for x in (q, keys[:, :end], values[:, :end])),
                                          attn_mask=mask, scale=scale).transpose(1, 2).flatten(-2)
'''


def _sdpa_torch_decode(layer: Any, args: list[str], ctx: TorchContext) -> str | None:
    """:data:`CACHED_SDPA` for causal self-attention; None for any other (see :func:`_sdpa_decode`)."""
    if not _cacheable(layer, [ctx.input_shape(layer, i) for i in range(len(layer.inputs))]):
        return None
    cache = ctx.cache(layer, (ctx.input_shape(layer, 1), ctx.input_shape(layer, 2)))
    scale = "None" if layer.attrs["scale"] is None else ctx.float(layer.attrs["scale"])
    return (f"cached_sdpa({', '.join(args)}, {cache}, {ctx.offset}, {ctx.int(layer.attrs['heads'])}, "
            f"scale={scale})")


def onnx_sdpa(layer: Any, ctx: OnnxExportContext, q: str, k: str, v: str, additive: list[tuple[str, int]], *,
              heads: int, q_shape: Shape, k_shape: Shape, v_shape: Shape, causal: bool, scale: float | None,
              output: str | None = None) -> str:
    """Scaled dot-product attention as ONNX opset-17 nodes (Reshape, Transpose, MatMul, Add, Softmax);
    ``additive`` holds each added value and its per-sample rank. Returns the output's value."""
    name, lead = layer.name, q_shape[:-2]
    rank = len(lead) + 4  # (N, ..., L, heads, d)
    tokens_first, heads_first = list(range(len(lead) + 1)), [rank - 2, rank - 3, rank - 1]

    def split(value: str, shape: Shape, tag: str, perm: list[int]) -> str:
        dims = ctx.constant([-1, *lead, shape[-2], heads, shape[-1] // heads], integer=True)
        heads_view = ctx.node("Reshape", [value, dims], output=f"{name}.{tag}_heads")
        return ctx.node("Transpose", [heads_view], output=f"{name}.{tag}_t", perm=tokens_first + perm)

    d = q_shape[-1] // heads
    factor = ctx.constant(d ** -0.5 if scale is None else scale)
    queries = ctx.node("Mul", [split(q, q_shape, "q", heads_first), factor], output=f"{name}.q_scaled")
    keys = split(k, k_shape, "k", [rank - 2, rank - 1, rank - 3])  # (N, ..., heads, d, Lk)
    scores = ctx.node("MatMul", [queries, keys], output=f"{name}.scores")
    for i, (value, value_rank) in enumerate(additive):
        missing = rank - 1 - value_rank
        if missing:
            axes = ctx.constant(list(range(1, missing + 1)), integer=True)
            value = ctx.node("Unsqueeze", [value, axes], output=f"{name}.input{i + 4}_aligned")
        scores = ctx.node("Add", [scores, value], output=f"{name}.scores{i + 1}")
    if causal:
        lq, lk = q_shape[-2], k_shape[-2]
        upper = [[float("-inf") if j > i else 0.0 for j in range(lk)] for i in range(lq)]
        scores = ctx.node("Add", [scores, ctx.constant(upper)], output=f"{name}.scores_causal")
    weights = ctx.node("Softmax", [scores], output=f"{name}.weights", axis=-1)
    mixed = ctx.node("MatMul", [weights, split(v, v_shape, "v", heads_first)], output=f"{name}.mixed")
    merged = ctx.node("Transpose", [mixed], output=f"{name}.merged", perm=tokens_first + heads_first)
    dims = ctx.constant([-1, *lead, q_shape[-2], v_shape[-1]], integer=True)
    return ctx.node("Reshape", [merged, dims], output=output)


def _sdpa_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    a = layer.attrs
    q, k, v = (ctx.input_shape(layer, i) for i in range(3))
    additive = [(value, len(ctx.input_shape(layer, i))) for i, value in enumerate(ctx.inputs[3:], start=3)]
    onnx_sdpa(layer, ctx, *ctx.inputs[:3], additive, heads=a["heads"], q_shape=q, k_shape=k, v_shape=v,
              causal=a["causal"], scale=a["scale"])


def reference_sdpa(q: Any, k: Any, v: Any, additive: list[Any], *, heads: int, causal: bool,
                   scale: float | None, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    """Scaled dot-product attention written out with torch: scores, mask, softmax, weighted sum of values."""
    def split(x: Any) -> Any:
        return x.unflatten(-1, (heads, x.shape[-1] // heads)).transpose(-3, -2)

    qh, kh, vh = split(q), split(k), split(v)
    scores = (qh * (qh.shape[-1] ** -0.5 if scale is None else scale)) @ kh.transpose(-2, -1)
    for term in additive:
        scores = scores + term.reshape(term.shape[0], *[1] * (scores.dim() - term.dim()), *term.shape[1:])
    if causal:
        scores = scores.masked_fill(scores.new_ones(scores.shape[-2:], dtype=bool).triu(1), float("-inf"))
    return (F.softmax(scores, dim=-1) @ vh).transpose(-3, -2).flatten(-2)


register(OpDef(
    name="sdpa",
    family="attention",
    summary="Scaled dot-product attention over heads: softmax(q k^T * scale + additive inputs) v, inputs "
            "(..., L, heads*d), extra inputs added to the scores (..., heads, Lq, Lk) with NumPy broadcasting.",
    example="attn: sdpa(branch, shortcut, last, heads=4)",
    args=(
        Arg("heads", "int", doc="attention heads: q, k and v features split into heads groups", min=1,
            positional=False),
        Arg("causal", "bool", False, "mask the scores above the diagonal (a token sees no later token)",
            positional=False),
        Arg("scale", "float", None, "factor of q k^T (default: d ** -0.5, d the features of one head)", min=0,
            positional=False),
    ),
    infer=_sdpa_infer,
    inputs=(3, None),
    macs=_sdpa_macs,
    pattern=Pattern.OPAQUE,
    lower=Lowerings(
        torch=TorchLowering(forward=_sdpa_torch, decode=_sdpa_torch_decode, decode_definitions=CACHED_SDPA),
        executor=ExecutorLowering(lower=_sdpa_executor, decode=_sdpa_decode),
        onnx=_sdpa_onnx,
        from_onnx={"Reshape": _sdpa_from_onnx},
        reference=lambda layer, xs, w, F: reference_sdpa(*xs[:3], xs[3:], heads=layer.attrs["heads"],
                                                         causal=layer.attrs["causal"], scale=layer.attrs["scale"],
                                                         F=F),
    ),
))


# multi-head self-attention ----------------------------------------------------------------------------

def _attention_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    _tokens(x, "an input")
    _per_head(x[-1], attrs["heads"], "the input")
    return x


def _attention_params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    e = inputs[0][-1]
    params: dict[str, Shape] = {"in_proj_weight": (3 * e, e)}
    if attrs["bias"]:
        params["in_proj_bias"] = (3 * e,)
    params["out_proj.weight"] = (e, e)
    if attrs["bias"]:
        params["out_proj.bias"] = (e,)
    return params


def _attention_macs(attrs: Attrs, inputs: list[Shape], output: Shape) -> int:
    """The projections (3 E^2 in, E^2 out per token) and the two products of sdpa (L E each per token)."""
    (x,) = inputs
    tokens, e = numel(x[:-1]), x[-1]
    return tokens * (4 * e * e + 2 * x[-2] * e)


def _attention_module(layer: Any, ctx: TorchContext) -> str:
    a = layer.attrs
    options = "".join([f", dropout={ctx.float(a['dropout'])}" if a["dropout"] else "",
                       "" if a["bias"] else ", bias=False"])
    return f"nn.MultiheadAttention({ctx.int(ctx.input_shape(layer, 0)[-1])}, {ctx.int(a['heads'])}{options}, " \
           "batch_first=True)"


def _attention_forward(layer: Any, args: list[str], ctx: TorchContext) -> str:
    """Self-attention: the input is query, key and value; leading axes beyond (N, L, E) ride in the batch."""
    x = args[0]
    if len(ctx.input_shape(layer, 0)) == 2:
        return f"{ctx.module(layer)}({x}, {x}, {x}, need_weights=False)[0]"
    flat = f"{x}.flatten(0, -3)"
    return f"{ctx.module(layer)}({flat}, {flat}, {flat}, need_weights=False)[0].view_as({x})"


def _attention_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    ident = ctx.ident
    bias = "bias" if layer.attrs["bias"] else None
    w = {name: ctx.weight(layer, name) if bias or "bias" not in name else "None"
         for name in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")}
    return ExecutorKernel(
        f"rt.attention({ctx.inputs[0]}, self.{ident}_in_w, self.{ident}_in_b, self.{ident}_out_w, "
        f"self.{ident}_out_b, heads={ctx.lit(layer.attrs['heads'])}, out={{out}})", "attention",
        setup=(f"self.{ident}_in_w = rt.pretranspose({w['in_proj_weight']})",
               f"self.{ident}_in_b = {w['in_proj_bias']}",
               f"self.{ident}_out_w = rt.pretranspose({w['out_proj.weight']})",
               f"self.{ident}_out_b = {w['out_proj.bias']}"))


def _attention_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    name, shape, heads = layer.name, ctx.input_shape(layer, 0), layer.attrs["heads"]
    e = shape[-1]

    def project(value: str, weight: str, bias: str, tag: str, last: bool = False) -> str:
        """``value @ weight^T + bias``; the last node's output is the layer's when ``last``."""
        transposed = ctx.node("Transpose", [ctx.initializer(layer, weight)], output=f"{name}.{tag}_weight_t",
                              perm=[1, 0])
        biased = layer.attrs["bias"]
        product = ctx.node("MatMul", [value, transposed], output=None if last and not biased else f"{name}.{tag}")
        if not biased:
            return product
        return ctx.node("Add", [product, ctx.initializer(layer, bias)], output=None if last else f"{name}.{tag}_biased")

    qkv = project(ctx.inputs[0], "in_proj_weight", "in_proj_bias", "in_proj")
    axis = ctx.constant([-1], integer=True)
    q, k, v = (ctx.node("Slice", [qkv, ctx.constant([i * e], integer=True), ctx.constant([(i + 1) * e], integer=True),
                                  axis], output=f"{name}.{tag}")
               for i, tag in enumerate("qkv"))
    mixed = onnx_sdpa(layer, ctx, q, k, v, [], heads=heads, q_shape=shape, k_shape=shape, v_shape=shape,
                      causal=False, scale=None, output=f"{name}.attended")
    project(mixed, "out_proj.weight", "out_proj.bias", "out_proj", last=True)


def _attention_reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    q, k, v = F.linear(xs[0], w["in_proj_weight"], w.get("in_proj_bias")).chunk(3, dim=-1)
    mixed = reference_sdpa(q, k, v, [], heads=layer.attrs["heads"], causal=False, scale=None, F=F)
    return F.linear(mixed, w["out_proj.weight"], w.get("out_proj.bias"))


XAVIER_AVERAGE = Filler("xavier", (("variance_norm", "average"),))
"""torch's xavier_uniform_: +-sqrt(6 / (fan_in + fan_out)), what nn.MultiheadAttention gives its in_proj_weight."""

register(OpDef(
    name="attention",
    family="attention",
    summary="Multi-head self-attention over (..., L, E) with nn.MultiheadAttention's parameters "
            "(in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias): torchvision ViT's self_attention.",
    example="attn: attention(4)",
    args=(
        Arg("heads", "int", doc="attention heads; E must be a multiple", min=1),
        Arg("dropout", "float", 0.0, "dropout on the attention weights while training", min=0, max=1),
        Arg("bias", "bool", True, "false: projections without biases (no in_proj_bias, out_proj.bias)"),
    ),
    infer=_attention_infer,
    params=_attention_params,
    macs=_attention_macs,
    default_fillers={"in_proj_weight": XAVIER_AVERAGE, "in_proj_bias": Filler("constant", (("value", 0.0),)),
                     "out_proj.weight": XAVIER_AVERAGE, "out_proj.bias": Filler("constant", (("value", 0.0),))},
    pattern=Pattern.OPAQUE,
    lower=Lowerings(
        torch=TorchLowering(module=_attention_module, forward=_attention_forward),
        executor=ExecutorLowering(lower=_attention_executor),
        onnx=_attention_onnx,
        from_onnx={"Transpose": _torch_attention_from_onnx, "Add": _own_attention_from_onnx},
        reference=_attention_reference,
    ),
))


# Swin's and MaxViT's relative position bias ----------------------------------------------------------

def _batched_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    """The layer's module called with no input, its batch of 1 expanded over the batch (a view)."""
    return f"{ctx.module(layer)}().expand({ctx.batch_size()}{', -1' * len(layer.shape)})"


def _batched_onnx(layer: Any, ctx: OnnxExportContext, value: str) -> None:
    """The layer's value: ``value`` (batch 1) expanded over the batch."""
    dims = ctx.constant(list(layer.shape), integer=True)
    shape = ctx.node("Concat", [ctx.batch_size(), dims], output=f"{layer.name}.shape", axis=0)
    ctx.node("Expand", [value, shape])


def _bias_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    tokens = attrs["window"] ** 2
    return (attrs["heads"], tokens, tokens)


def _bias_params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    return {"relative_position_bias_table": ((2 * attrs["window"] - 1) ** 2, attrs["heads"])}


def _bias_buffers(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    tokens = attrs["window"] ** 2
    return {"relative_position_index": (tokens, tokens) if attrs["index"] == "square" else (tokens * tokens,)}


RELATIVE_POSITION_BIAS = '''
class RelativePositionBias(nn.ModuleDict):
    """Swin's and MaxViT's relative position bias: a learned table with one row of heads values per offset between
    two tokens of a w x w window, gathered by the offset of each pair of tokens into (1, heads, w*w, w*w). A
    ModuleDict, so that the attention's own modules (qkv, proj) sit beside it, as in torchvision."""

    def __init__(self, window: int, heads: int, flat: bool) -> None:
        super().__init__()
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = coords[:, :, None] - coords[:, None, :] + window - 1  # (2, w*w, w*w): row and column offsets
        index = relative[0] * (2 * window - 1) + relative[1]
        self.register_buffer("relative_position_index", index.flatten() if flat else index)

    def forward(self) -> torch.Tensor:
        tokens = self.window**2
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()]
        return bias.view(tokens, tokens, -1).permute(2, 0, 1).unsqueeze(0)
'''


def _bias_module(layer: Any, ctx: TorchContext) -> str:
    a = layer.attrs
    return f"RelativePositionBias({ctx.int(a['window'])}, {ctx.int(a['heads'])}, flat={a['index'] == 'flat'})"


def _bias_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    """The bias is a constant of the weights: gathered once at setup, copied to every sample at each call."""
    ident = ctx.ident
    table, index = (ctx.weight(layer, name) for name in ("relative_position_bias_table", "relative_position_index"))
    return ExecutorKernel(
        f"rt.copy_constant(self.{ident}_bias, out={{out}})", "relative_position_bias",
        setup=(f"self.{ident}_bias = rt.relative_position_bias({table}, {index}, {ctx.lit(layer.attrs['window'])})",))


def _bias_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    """Gather the table's rows by the index (stored as the initializer of its state key, cast to int64)."""
    name, heads, tokens = layer.name, layer.attrs["heads"], layer.attrs["window"] ** 2
    index = ctx.node("Cast", [ctx.initializer(layer, "relative_position_index")], output=f"{name}.index", to=7)
    flat = ctx.node("Reshape", [index, ctx.constant([-1], integer=True)], output=f"{name}.index_flat")
    rows = ctx.node("Gather", [ctx.initializer(layer, "relative_position_bias_table"), flat], output=f"{name}.rows",
                    axis=0)
    square = ctx.node("Reshape", [rows, ctx.constant([1, tokens, tokens, heads], integer=True)],
                      output=f"{name}.square")
    _batched_onnx(layer, ctx, ctx.node("Transpose", [square], output=f"{name}.bias", perm=[0, 3, 1, 2]))


def _bias_reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    tokens = layer.attrs["window"] ** 2
    rows = w["relative_position_bias_table"][w["relative_position_index"].long().flatten()]
    return rows.reshape(tokens, tokens, -1).permute(2, 0, 1).unsqueeze(0)


register(OpDef(
    name="relative_position_bias",
    family="attention",
    summary="Swin's and MaxViT's relative position bias of a w x w window: a learned table gathered by torchvision's "
            "relative_position_index into heads x w^2 x w^2 (no input; the same for every sample).",
    example="bias: relative_position_bias(7, 3)",
    args=(
        Arg("window", "int", doc="the window's side w, in tokens", min=1, max=64),
        Arg("heads", "int", doc="attention heads: one bias per head", min=1),
        Arg("index", "choice", "flat", "the index buffer's shape: flat (w^4, Swin) or square (w^2 x w^2, MaxViT)",
            choices=("flat", "square")),
    ),
    infer=_bias_infer,
    inputs=(0, 0),
    params=_bias_params,
    buffers=_bias_buffers,
    buffer_values=lambda attrs: {"relative_position_index": relative_position_index(attrs["window"],
                                                                                    attrs["index"] == "square")},
    default_fillers={"relative_position_bias_table": Filler("gaussian", (("std", 0.02), ("mean", 0.0)))},
    pattern=Pattern.OPAQUE,
    lower=Lowerings(
        torch=TorchLowering(module=_bias_module, forward=_batched_torch,
                            definitions=RELATIVE_POSITION_BIAS, holds_children=True),
        executor=ExecutorLowering(lower=_bias_executor),
        onnx=_bias_onnx,
        reference=_bias_reference,
    ),
))


# Swin's shifted-window mask -----------------------------------------------------------------------------

def _mask_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (height, width), window, shift = attrs["size"], attrs["window"], attrs["shift"]
    if height % window or width % window:
        raise ShapeError(f"a {height}x{width} map does not split into {window}x{window} windows", arg="window",
                         expected=f"a map size that is a multiple of window={window}", received=f"{height}x{width}",
                         hint="torchvision pads the map to a multiple of the window first (pad, then the mask)")
    if shift >= window:
        raise ShapeError(f"shift={shift} is not less than window={window}", arg="shift",
                         expected=f"0 <= shift < {window}", received=f"shift={shift}")
    tokens = window * window
    return ((height // window) * (width // window), 1, tokens, tokens)


def _mask_values(layer: Any) -> Any:
    (height, width), window, shift = layer.attrs["size"], layer.attrs["window"], layer.attrs["shift"]
    return shifted_window_mask(height, width, window, shift)


SHIFTED_WINDOW_MASK = '''
class ShiftedWindowMask(nn.Module):
    """Swin's attention mask for shifted windows, built as torchvision builds it: (1, windows, 1, w*w, w*w),
    -100 between two tokens of a window that the cyclic shift brought from different regions, else 0. A buffer
    outside the state_dict."""

    def __init__(self, height: int, width: int, window: int, shift: int) -> None:
        super().__init__()
        regions = torch.zeros(height, width)
        slices = ((0, -window), (-window, -shift), (-shift, None))
        for count, (rows, cols) in enumerate((rows, cols) for rows in slices for cols in slices):
            regions[rows[0] : rows[1], cols[0] : cols[1]] = count
        windows = regions.view(height // window, window, width // window, window).permute(0, 2, 1, 3)
        windows = windows.reshape(-1, window * window)
        differs = windows.unsqueeze(1) - windows.unsqueeze(2)
        mask = torch.zeros_like(differs).masked_fill(differs != 0, -100.0)
        self.register_buffer("mask", mask.unsqueeze(1).unsqueeze(0), persistent=False)

    def forward(self) -> torch.Tensor:
        return self.mask
'''


def _mask_module(layer: Any, ctx: TorchContext) -> str:
    (height, width), window, shift = layer.attrs["size"], layer.attrs["window"], layer.attrs["shift"]
    return f"ShiftedWindowMask({', '.join(ctx.int(v) for v in (height, width, window, shift))})"


def _mask_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    (height, width), window, shift = layer.attrs["size"], layer.attrs["window"], layer.attrs["shift"]
    values = ", ".join(ctx.lit(v) for v in (height, width, window, shift))
    return ExecutorKernel(f"rt.copy_constant(self.{ctx.ident}_mask, out={{out}})", "window_mask",
                          setup=(f"self.{ctx.ident}_mask = self.const(rt.shifted_window_mask({values}))",))


def _mask_reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    import torch

    return torch.from_numpy(_mask_values(layer)[None])


register(OpDef(
    name="window_mask",
    family="attention",
    summary="Swin's shifted-window attention mask as torchvision builds it: windows x 1 x w^2 x w^2 of 0 and -100 "
            "(no input, no parameters; the same for every sample).",
    example="mask: window_mask(14, 7, 3)",
    args=(
        Arg("size", "pair", doc="the feature map's height and width, in tokens (after any padding)", min=1),
        Arg("window", "int", doc="the window's side w", min=1),
        Arg("shift", "int", doc="the cyclic shift, in tokens (torchvision: window // 2)", min=0),
    ),
    infer=_mask_infer,
    inputs=(0, 0),
    pattern=Pattern.OPAQUE,
    lower=Lowerings(
        torch=TorchLowering(module=_mask_module, forward=_batched_torch,
                            definitions=SHIFTED_WINDOW_MASK),
        executor=ExecutorLowering(lower=_mask_executor),
        onnx=lambda layer, ctx: _batched_onnx(layer, ctx, ctx.constant(_mask_values(layer)[None],
                                                                       output=f"{layer.name}.mask")),
        reference=_mask_reference,
    ),
))
