"""Language models: token embeddings, positions, RMS normalisation, rotary position embeddings, grouped-query
attention's repeated key/value heads, and scores over the vocabulary with a tied embedding table.

Token ids come from a ``tokens(N)`` input (int64 in torch and ONNX; the NumPy/CuPy executor holds them as
floats, exact below 2**24, and rounds them when it looks them up). Every op here acts on the last axis of
a token tensor (L x D), as Hugging Face's GPT-2 and Llama do.

>>> [round(f, 6) for f in rope_frequencies(8, 10000.0)]
[1.0, 0.1, 0.01, 0.001]
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from alexdsl.ops.contexts import ExecutorContext, OnnxExportContext, OnnxImportContext, OnnxNodeView, TorchContext
from alexdsl.ops.fillers import Filler
from alexdsl.ops.from_onnx import computed, producer_of
from alexdsl.ops.lowering import (
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
    expect_rank,
    format_shape,
    last_axis,
    numel,
    register,
)

ONNX_INT64 = 7
"""``TensorProto.INT64``: what ``Cast`` turns token ids into for ``Gather``."""


def _expect_tokens(shape: Shape, what: str = "input") -> None:
    """A ShapeError unless ``shape`` is LxD (tokens x features)."""
    expect_rank(shape, 2, what)


# embedding: a row of a learned table per token id --------------------------------------------------------

def _embedding_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (ids,) = inputs
    if len(ids) != 1:
        raise ShapeError("expects token ids, a sequence (L)", expected="L, such as a tokens(1024) input",
                         received=format_shape(ids))
    return (ids[0], attrs["dim"])


def _embedding_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    ids = ctx.node("Cast", ctx.inputs, output=f"{layer.name}.ids", to=ONNX_INT64)
    ctx.node("Gather", [ctx.initializer(layer, "weight"), ids], axis=0)


def _embedding_from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Gather(table, ids)`` along axis 0 of a constant 2-D table (nn.Embedding's export), the ``Cast`` of the
    ids before it taken over."""
    table = ctx.const(node.inputs[0])
    if table is None or table.ndim != 2 or int(node.attr("axis", 0)) != 0 or not computed(ctx, node.inputs[1:]):
        return None
    ids, absorbed = node.inputs[1], ()
    cast = producer_of(ctx, ids, "Cast")
    if cast is not None:
        ids, absorbed = cast.inputs[0], (cast,)
    if len(ctx.shape(ids) or ()) != 1:
        return ctx.fail(node, "only a Gather of a table by a sequence of ids (N, L) is imported (as embedding)")
    return OnnxImport("embedding", [ids], {"vocab": int(table.shape[0]), "dim": int(table.shape[1])},
                      {"weight": node.inputs[0]}, absorbed)


def _embedding_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    return ExecutorKernel(f"rt.embedding({ctx.inputs[0]}, self.{ctx.ident}_w, out={{out}})", "embedding",
                          setup=(f"self.{ctx.ident}_w = {ctx.weight(layer, 'weight')}",))


register(OpDef(
    name="embedding", family="language",
    summary="A learned row per token id (nn.Embedding; key weight (vocab, dim)): ids L -> LxD (no Caffe layer).",
    example="wte: ids -> embedding(10, 6)",
    args=(Arg("vocab", "int", doc="the number of rows: ids run from 0 to vocab - 1", min=1),
          Arg("dim", "int", doc="the width of each row", min=1)),
    infer=_embedding_infer,
    params=lambda attrs, inputs: {"weight": (attrs["vocab"], attrs["dim"])},
    macs=lambda attrs, inputs, output: 0,
    default_fillers={"weight": Filler("gaussian", (("std", 0.02), ("mean", 0.0)))},
    pattern=Pattern.INJECTIVE,
    per_token=lambda attrs, inputs: True,
    lower=Lowerings(
        torch=TorchLowering(module=lambda layer, ctx: f"nn.Embedding({ctx.int(layer.attrs['vocab'])}, "
                                                      f"{ctx.int(layer.attrs['dim'])})",
                            forward=lambda layer, args, ctx: f"{ctx.module(layer)}({args[0]}.long())"),
        executor=ExecutorLowering(lower=_embedding_executor),
        onnx=_embedding_onnx,
        from_onnx={"Gather": _embedding_from_onnx},
        reference=lambda layer, xs, w, F: F.embedding(xs[0].round().long(), w["weight"]),
    ),
))


# positions: 0 .. L-1, what a learned position embedding looks up -----------------------------------------

def _positions_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    if not x:
        raise ShapeError("expects a sequence (L or LxD)", expected="an input of rank 1 or more", received="scalar")
    return (x[0],)


def _positions_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    """The constant 0..L-1 expanded to the batch: the batch size is the first entry of the input's Shape."""
    batch = ctx.node("Shape", ctx.inputs, output=f"{layer.name}.input_shape", start=0, end=1)
    shape = ctx.node("Concat", [batch, ctx.constant([layer.shape[0]], integer=True)],
                     output=f"{layer.name}.shape", axis=0)
    ctx.node("Expand", [ctx.constant(list(range(layer.shape[0]))), shape])


def _positions_reference(x: Any) -> Any:
    import torch

    return torch.arange(x.shape[1], dtype=torch.float32).expand(x.shape[0], -1)


register(OpDef(
    name="positions", family="language",
    summary="The positions 0, 1, ... L-1 of a sequence (L or LxD) as token ids, for a learned position "
            "embedding (GPT-2's wpe) (no Caffe layer).",
    example="pos: ids -> positions",
    args=(),
    infer=_positions_infer,
    pattern=Pattern.OPAQUE,
    lower=Lowerings(
        torch=TorchLowering(
            forward=lambda layer, args, ctx: (
                f"torch.arange({args[0]}.shape[1], device={args[0]}.device).expand({args[0]}.shape[0], -1)"),
            decode=lambda layer, args, ctx: (
                f"torch.arange({ctx.offset}, {ctx.offset} + {args[0]}.shape[1], device={args[0]}.device)"
                f".expand({args[0]}.shape[0], -1)")),
        executor=ExecutorLowering(
            lower=lambda layer, ctx: ExecutorKernel(f"rt.positions({ctx.inputs[0]}, out={{out}})", "positions"),
            decode=lambda layer, ctx: ExecutorKernel(
                f"rt.positions({ctx.inputs[0]}, offset={ctx.offset}, out={{out}})", "positions")),
        onnx=_positions_onnx,
        reference=lambda layer, xs, w, F: _positions_reference(xs[0]),
    ),
))


# rmsnorm: Llama's RMSNorm over the last axis ---------------------------------------------------------------

def _rmsnorm_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    if not x:
        raise ShapeError("expects a tensor with a last axis", received="scalar")
    return x


def _rmsnorm_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    """x * 1/sqrt(mean(x*x, last axis) + eps) * weight (RMSNormalization needs opset 23)."""
    x = ctx.inputs[0]
    name = layer.name
    square = ctx.node("Mul", [x, x], output=f"{name}.square")
    mean = ctx.node("ReduceMean", [square], output=f"{name}.mean", axes=[-1], keepdims=1)
    shifted = ctx.node("Add", [mean, ctx.constant(float(layer.attrs["eps"]))], output=f"{name}.shifted")
    root = ctx.node("Sqrt", [shifted], output=f"{name}.root")
    inverse = ctx.node("Reciprocal", [root], output=f"{name}.inverse")
    normed = ctx.node("Mul", [x, inverse], output=f"{name}.normed")
    ctx.node("Mul", [normed, ctx.initializer(layer, "weight")])


def _rmsnorm_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    return ExecutorKernel(
        f"rt.rms_norm({ctx.inputs[0]}, self.{ctx.ident}_w, {ctx.lit(float(layer.attrs['eps']))}, out={{out}})",
        "rms_norm", setup=(f"self.{ctx.ident}_w = {ctx.weight(layer, 'weight')}",))


def _rmsnorm_reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    """LlamaRMSNorm: the variance in float32, ``weight * x * rsqrt(variance + eps)``."""
    import torch

    x = xs[0].to(torch.float32)
    variance = x.pow(2).mean(-1, keepdim=True)
    return w["weight"] * (x * torch.rsqrt(variance + layer.attrs["eps"]))


register(OpDef(
    name="rmsnorm", family="language",
    summary="Root-mean-square normalisation over the last axis with a learned scale (Llama's RMSNorm, "
            "nn.RMSNorm; key weight) (no Caffe layer).",
    example="norm: seq -> rmsnorm(eps=1e-6)",
    args=(Arg("eps", "float", 1e-6, "added to the mean square", min=0),),
    infer=_rmsnorm_infer,
    params=lambda attrs, inputs: {"weight": (inputs[0][-1],)},
    default_fillers={"weight": Filler("constant", (("value", 1.0),))},
    pattern=Pattern.OPAQUE,
    per_token=last_axis,
    lower=Lowerings(
        torch=TorchLowering(module=lambda layer, ctx: f"nn.RMSNorm({ctx.int(layer.shape[-1])}, "
                                                      f"eps={ctx.float(layer.attrs['eps'])})",
                            forward=call_module),
        executor=ExecutorLowering(lower=_rmsnorm_executor),
        onnx=_rmsnorm_onnx,
        reference=_rmsnorm_reference,
    ),
))


# rope: rotary position embeddings, Hugging Face's rotate-half layout -----------------------------------------

def rope_frequencies(dim: int, theta: float, scaling: str = "none", factor: float = 8.0,
                     low_freq_factor: float = 1.0, high_freq_factor: float = 4.0,
                     original_length: int = 8192) -> list[float]:
    """The ``dim // 2`` inverse frequencies of rotary embeddings, in float32 as Hugging Face computes them:
    ``1 / theta ** (2i / dim)``, with Llama 3's smoothing of the low frequencies when ``scaling`` is llama3."""
    import numpy  # lazily: `alexdsl --help` and `shapes` load the registry without NumPy

    f32 = numpy.float32
    exponents = numpy.arange(0, dim, 2, dtype=numpy.int64).astype(f32) / f32(dim)
    inv = f32(1.0) / (f32(theta) ** exponents)
    if scaling == "llama3":
        low_wavelen = f32(original_length / low_freq_factor)
        high_wavelen = f32(original_length / high_freq_factor)
        wavelen = f32(2 * math.pi) / inv
        scaled = numpy.where(wavelen > low_wavelen, inv / f32(factor), inv).astype(f32)
        smooth = ((f32(original_length) / wavelen - f32(low_freq_factor))
                  / f32(high_freq_factor - low_freq_factor)).astype(f32)
        smoothed = ((f32(1) - smooth) * scaled / f32(factor) + smooth * scaled).astype(f32)
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = numpy.where(medium, smoothed, scaled).astype(f32)
    return [float(v) for v in inv]


def rope_table(length: int, inv_freq: list[float]) -> numpy.ndarray:  # noqa: F821 - a string annotation
    """cos and sin of position * frequency, each frequency twice (Hugging Face's layout), in float32:
    (2, length, 2 * len(inv_freq))."""
    import numpy

    freqs = numpy.asarray(inv_freq, numpy.float32)
    angles = numpy.arange(length, dtype=numpy.float32)[:, None] * freqs[None, :]
    doubled = numpy.concatenate([angles, angles], axis=-1)
    return numpy.stack([numpy.cos(doubled), numpy.sin(doubled)])


def _rope_frequencies(layer: Any) -> list[float]:
    a = layer.attrs
    return rope_frequencies(layer.shape[-1] // a["heads"], a["theta"], a["scaling"], a["factor"],
                            a["low_freq_factor"], a["high_freq_factor"], a["original_length"])


def _rope_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    _expect_tokens(x)
    heads = attrs["heads"]
    if x[-1] % heads or (x[-1] // heads) % 2:
        raise ShapeError(f"{x[-1]} features do not split into {heads} heads of an even width", arg="heads",
                         expected="heads x an even head width", received=format_shape(x))
    return x


ROTARY_EMBEDDING = '''
class RotaryEmbedding(nn.Module):
    """Hugging Face's rotary position embedding of each head: x * cos + rotate_half(x) * sin, where rotate_half
    swaps the halves of a head and negates the new first half. The cos and sin of every position up to
    ``length`` are buffers outside the state_dict."""

    def __init__(self, heads: int, inv_freq: list[float], length: int) -> None:
        super().__init__()
        self.heads = heads
        angles = torch.arange(length).float()[:, None] * torch.tensor(inv_freq)[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos()[:, None, :], persistent=False)
        self.register_buffer("sin", angles.sin()[:, None, :], persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        heads = x.unflatten(-1, (self.heads, -1))
        half = heads.shape[-1] // 2
        rotated = torch.cat((-heads[..., half:], heads[..., :half]), dim=-1)
        end = offset + x.shape[1]  # the tokens of x are at positions offset to end - 1
        return (heads * self.cos[offset:end] + rotated * self.sin[offset:end]).flatten(-2)
'''


def _rope_torch_module(layer: Any, ctx: TorchContext) -> str:
    freqs = ", ".join(repr(f) for f in _rope_frequencies(layer))
    return f"RotaryEmbedding({ctx.int(layer.attrs['heads'])}, [{freqs}], {ctx.int(layer.shape[0])})"


def _rope_executor(layer: Any, ctx: ExecutorContext, offset: str = "") -> ExecutorKernel:
    """rt.rope with a table of every position the layer sees; in a cached decoder, from position ``offset``."""
    freqs = ctx.lit(_rope_frequencies(layer))
    at = f", offset={offset}" if offset else ""
    return ExecutorKernel(
        f"rt.rope({ctx.inputs[0]}, self.{ctx.ident}_table, {ctx.lit(layer.attrs['heads'])}{at}, out={{out}})", "rope",
        setup=(f"self.{ctx.ident}_table = rt.rope_table({ctx.lit(layer.shape[0])}, {freqs}, self.xp, self.dtype)",))


def _rope_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    """Reshape to heads, halves swapped with the first negated, times the sin table plus x times the cos table."""
    length, width = layer.shape
    heads = layer.attrs["heads"]
    dim = width // heads
    name = layer.name
    table = rope_table(length, _rope_frequencies(layer))
    cos = ctx.constant(table[0][:, None, :].tolist(), output=f"{name}.cos")
    sin = ctx.constant(table[1][:, None, :].tolist(), output=f"{name}.sin")
    split = ctx.node("Reshape", [ctx.inputs[0], ctx.constant([0, length, heads, dim], integer=True)],
                     output=f"{name}.heads")
    first = ctx.node("Slice", [split, *(ctx.constant([v], integer=True) for v in (0, dim // 2, -1))],
                     output=f"{name}.first")
    second = ctx.node("Slice", [split, *(ctx.constant([v], integer=True) for v in (dim // 2, dim, -1))],
                      output=f"{name}.second")
    negated = ctx.node("Neg", [second], output=f"{name}.negated")
    rotated = ctx.node("Concat", [negated, first], output=f"{name}.rotated", axis=-1)
    straight = ctx.node("Mul", [split, cos], output=f"{name}.straight")
    turned = ctx.node("Mul", [rotated, sin], output=f"{name}.turned")
    total = ctx.node("Add", [straight, turned], output=f"{name}.sum")
    ctx.node("Reshape", [total, ctx.constant([0, length, width], integer=True)])


def _rope_reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    """Hugging Face's apply_rotary_pos_emb on (N, heads, L, D), with its rotary embedding's cos and sin."""
    import torch

    a = layer.attrs
    x = xs[0]
    n, length, width = x.shape
    dim = width // a["heads"]
    inv_freq = 1.0 / (a["theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if a["scaling"] == "llama3":
        low_wavelen = a["original_length"] / a["low_freq_factor"]
        high_wavelen = a["original_length"] / a["high_freq_factor"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / a["factor"], inv_freq)
        smooth = (a["original_length"] / wavelen - a["low_freq_factor"]) / (a["high_freq_factor"]
                                                                              - a["low_freq_factor"])
        smoothed = (1 - smooth) * scaled / a["factor"] + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv_freq = torch.where(medium, smoothed, scaled)
    freqs = inv_freq[:, None] @ torch.arange(length).float()[None, :]
    emb = torch.cat((freqs.T, freqs.T), dim=-1)
    q = x.view(n, length, a["heads"], dim).transpose(1, 2)
    rotated = torch.cat((-q[..., dim // 2:], q[..., :dim // 2]), dim=-1)
    return (q * emb.cos() + rotated * emb.sin()).transpose(1, 2).reshape(n, length, width)


register(OpDef(
    name="rope", family="language",
    summary="Rotary position embeddings of every head of a token tensor (LxD, D = heads x head width), "
            "Hugging Face's rotate-half layout; apply it to q and k (no parameters, no Caffe layer).",
    example="rot: seq -> rope(2, theta=10000)",
    args=(Arg("heads", "int", doc="the heads the last axis holds; each is rotated on its own", min=1),
          Arg("theta", "float", 10000.0, "the base of the frequencies (rope_theta)", min=1),
          Arg("scaling", "choice", "none", "none, or llama3: Llama 3's frequency scaling (rope_scaling)",
              choices=("none", "llama3")),
          Arg("factor", "float", 8.0, "llama3 scaling: the factor low frequencies are divided by", min=1),
          Arg("low_freq_factor", "float", 1.0, "llama3 scaling: low_freq_factor", min=0),
          Arg("high_freq_factor", "float", 4.0, "llama3 scaling: high_freq_factor", min=0),
          Arg("original_length", "int", 8192, "llama3 scaling: original_max_position_embeddings", min=1)),
    infer=_rope_infer,
    macs=lambda attrs, inputs, output: 2 * inputs[0][0] * inputs[0][1],
    pattern=Pattern.OPAQUE,
    lower=Lowerings(
        torch=TorchLowering(module=_rope_torch_module, definitions=ROTARY_EMBEDDING,
                            decode=lambda layer, args, ctx: f"{ctx.module(layer)}({args[0]}, {ctx.offset})"),
        executor=ExecutorLowering(lower=_rope_executor,
                                  decode=lambda layer, ctx: _rope_executor(layer, ctx, ctx.offset)),
        onnx=_rope_onnx,
        reference=_rope_reference,
    ),
))


# unembed: scores over the vocabulary with an embedding's table (tied weights) ----------------------------------

def _unembed_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    if not x:
        raise ShapeError("expects a tensor with a last axis", received="scalar")
    return (*x[:-1], attrs["vocab"])


def _owner(layer: Any) -> Any:
    """The layer whose weight this one uses, as the lowering contexts name it (by its name)."""
    return SimpleNamespace(name=layer.params["weight"].tied.rsplit(".", 1)[0])


def _unembed_executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    return ExecutorKernel(f"rt.unembed({ctx.inputs[0]}, self.{ctx.ident}_w, out={{out}})", "unembed",
                          setup=(f"self.{ctx.ident}_w = {ctx.weight(layer, 'weight')}.T.copy()",))


def _unembed_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    weight = ctx.node("Transpose", [ctx.initializer(layer, "weight")], output=f"{layer.name}.weight_t", perm=[1, 0])
    ctx.node("MatMul", [ctx.inputs[0], weight])


register(OpDef(
    name="unembed", family="language",
    summary="Scores over the vocabulary, x @ E^T, with the table E of the embedding that tied= names, stored and "
            "counted once (GPT-2's and Llama's tied lm_head) (no Caffe layer).",
    example='logits: seq -> unembed(10, tied="table")',
    args=(Arg("vocab", "int", doc="the rows of the tied table: the scores per token", min=1),
          Arg("tied", "string", doc="the layer whose weight (vocab x D) this one uses: an embedding",
              names_layer=True)),
    infer=_unembed_infer,
    params=lambda attrs, inputs: {"weight": (attrs["vocab"], inputs[0][-1])},
    macs=lambda attrs, inputs, output: numel(output) * inputs[0][-1],
    default_fillers={"weight": Filler("gaussian", (("std", 0.02), ("mean", 0.0)))},
    pattern=Pattern.OPAQUE,
    per_token=last_axis,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: (
            f"F.linear({args[0]}, {ctx.module(_owner(layer))}.weight)")),
        executor=ExecutorLowering(lower=_unembed_executor),
        onnx=_unembed_onnx,
        reference=lambda layer, xs, w, F: F.linear(xs[0], w["weight"]),
    ),
))


# repeat_kv: grouped-query attention's key/value heads, each repeated for its group of query heads -------------

def _repeat_kv_infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    _expect_tokens(x)
    if x[-1] % attrs["heads"]:
        raise ShapeError(f"{x[-1]} features do not split into {attrs['heads']} key/value heads", arg="heads",
                         expected="heads x the head width", received=format_shape(x))
    return (x[0], x[1] * attrs["groups"])


def _repeat_kv_torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    heads, groups = layer.attrs["heads"], layer.attrs["groups"]
    dim = layer.shape[-1] // (heads * groups)
    return (f"{args[0]}.unflatten(-1, ({ctx.int(heads)}, {ctx.int(dim)})).repeat_interleave({ctx.int(groups)}, "
            "dim=-2).flatten(-2)")


def _repeat_kv_onnx(layer: Any, ctx: OnnxExportContext) -> None:
    """Reshape to (N, L, heads, 1, d), Expand the 1 to the groups, Reshape back to (N, L, heads * groups * d)."""
    length, _ = layer.shape
    heads, groups = layer.attrs["heads"], layer.attrs["groups"]
    dim = layer.shape[-1] // (heads * groups)
    split = ctx.node("Reshape", [ctx.inputs[0], ctx.constant([0, length, heads, 1, dim], integer=True)],
                     output=f"{layer.name}.heads")
    ones = ctx.constant([1, 1, 1, groups, 1], integer=True)
    repeated = ctx.node("Expand", [split, ones], output=f"{layer.name}.repeated")
    ctx.node("Reshape", [repeated, ctx.constant([0, length, layer.shape[-1]], integer=True)])


register(OpDef(
    name="repeat_kv", family="language",
    summary="Grouped-query attention: each of the key/value heads repeated for its group of query heads, as "
            "Hugging Face's repeat_kv: Lx(heads*d) -> Lx(heads*groups*d) (no Caffe layer).",
    example="kv: seq -> repeat_kv(2, groups=3)",
    args=(Arg("heads", "int", doc="the key/value heads the last axis holds", min=1),
          Arg("groups", "int", doc="query heads per key/value head (num_attention_heads / num_key_value_heads)",
              min=1)),
    infer=_repeat_kv_infer,
    pattern=Pattern.INJECTIVE,
    per_token=last_axis,
    lower=Lowerings(
        torch=TorchLowering(forward=_repeat_kv_torch),
        executor=ExecutorLowering(lower=lambda layer, ctx: ExecutorKernel(
            f"rt.repeat_kv({ctx.inputs[0]}, {ctx.lit(layer.attrs['heads'])}, {ctx.lit(layer.attrs['groups'])}, "
            "out={out})", "repeat_kv")),
        onnx=_repeat_kv_onnx,
        reference=lambda layer, xs, w, F: _repeat_kv_reference(xs[0], layer.attrs["heads"], layer.attrs["groups"]),
    ),
))


def _repeat_kv_reference(x: Any, heads: int, groups: int) -> Any:
    """Hugging Face's repeat_kv on (N, heads, L, d), with the heads moved there and back."""
    n, length, width = x.shape
    states = x.view(n, length, heads, width // heads).transpose(1, 2)
    expanded = states[:, :, None, :, :].expand(n, heads, groups, length, width // heads)
    return expanded.reshape(n, heads * groups, length, width // heads).transpose(1, 2).reshape(n, length, -1)
