"""Attention kernels: scaled dot-product attention as two batched GEMMs around a numerically stable softmax,
and multi-head self-attention (the input projection, sdpa, the output projection).

Arrays are token tensors with the batch first: ``(N, ..., L, heads * d)``. The leading axes are folded
into one batch of GEMMs; the scores ``(B, heads, Lq, Lk)`` are the one temporary of a layer's size.

>>> import numpy as np
>>> q = np.zeros((1, 2, 4), np.float32)  # equal scores: every token takes the mean of the values
>>> v = np.arange(8, dtype=np.float32).reshape(1, 2, 4)
>>> sdpa(q, q, v, heads=2).tolist()
[[[2.0, 3.0, 4.0, 5.0], [2.0, 3.0, 4.0, 5.0]]]
"""

from __future__ import annotations

from alexdsl.backends.executor.arrays import Array, array_module, matmul
from alexdsl.ops.attention import shifted_window_mask  # noqa: F401 - the runtime's name: the mask's values


def _heads(x: Array, heads: int) -> Array:
    """(N, ..., L, heads*d) -> (B, heads, L, d), B the batch times the leading axes (a view where it can be)."""
    *_, tokens, features = x.shape
    return x.reshape(-1, tokens, heads, features // heads).transpose(0, 2, 1, 3)


def _aligned(term: Array, rank: int) -> Array:
    """An added term (batch first, per-sample axes aligned from the right) given size-1 axes after the batch."""
    return term.reshape(term.shape[0], *(1,) * (rank - term.ndim), *term.shape[1:])


def sdpa(q: Array, k: Array, v: Array, *additive: Array, heads: int, scale: float | None = None,
         causal: bool = False, past: int = 0, out: Array | None = None) -> Array:
    """softmax(q k^T * scale + sum(additive), masked above the diagonal when ``causal``) v, per head.

    ``q``: (N, ..., Lq, heads*d), ``k``: (N, ..., Lk, heads*d), ``v``: (N, ..., Lk, heads*dv); each added
    term broadcasts (per sample, NumPy's rules) to the scores (N, ..., heads, Lq, Lk). ``scale`` defaults to
    d ** -0.5. ``past``: the query tokens come after that many keys (a cached decoder's), so the causal mask
    lets query i see keys up to ``past + i``. Returns (N, ..., Lq, heads*dv), into ``out`` when given.
    """
    xp = array_module(q)
    lq, lk, d = q.shape[-2], k.shape[-2], q.shape[-1] // heads
    queries = _heads(q, heads)
    scaled = xp.empty(queries.shape, dtype=q.dtype)
    xp.multiply(queries, q.dtype.type(d ** -0.5 if scale is None else scale), out=scaled)
    scores = matmul(scaled, _heads(k, heads).transpose(0, 1, 3, 2),  # (B, heads, Lq, Lk)
                    out=xp.empty((*queries.shape[:-1], lk), dtype=q.dtype))
    if additive:
        full = scores.reshape(*q.shape[:-2], heads, lq, lk)
        for term in additive:
            full += _aligned(term, full.ndim)
    if causal:
        scores[..., xp.triu(xp.ones((lq, lk), dtype=bool), 1 + past)] = -xp.inf
    scores -= scores.max(axis=-1, keepdims=True)
    xp.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    values = _heads(v, heads)
    mixed = matmul(scores, values, out=xp.empty((*scores.shape[:-1], values.shape[-1]), dtype=q.dtype))
    if out is None:
        out = xp.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype)
    out.reshape(mixed.shape[0], lq, heads, -1)[...] = mixed.transpose(0, 2, 1, 3)
    return out


def cached_sdpa(q: Array, k: Array, v: Array, cache: tuple[Array, Array], offset: int, *, heads: int,
                scale: float | None = None, out: Array | None = None) -> Array:
    """Causal :func:`sdpa` of the new tokens (``q``, ``k``, ``v``: (N, L, features), at positions ``offset`` on)
    over a key/value ``cache`` ((N, longest, features) each): ``k`` and ``v`` are written into it at ``offset``,
    then the queries attend to the cached tokens 0 to ``offset + L - 1``."""
    keys, values = cache
    end = offset + q.shape[-2]
    keys[:, offset:end] = k
    values[:, offset:end] = v
    return sdpa(q, keys[:, :end], values[:, :end], heads=heads, scale=scale, causal=True, past=offset, out=out)


def attention(x: Array, in_weight: Array, in_bias: Array | None, out_weight: Array, out_bias: Array | None, *,
              heads: int, out: Array | None = None) -> Array:
    """nn.MultiheadAttention's self-attention on ``x`` (N, ..., L, E), weights pre-transposed (in, out)
    (:func:`alexdsl.backends.executor.conv.pretranspose`): ``x in_weight + in_bias`` split into q, k and v,
    :func:`sdpa`, then ``@ out_weight + out_bias``."""
    xp = array_module(x)
    features = x.shape[-1]
    tokens = x.reshape(-1, features)
    qkv = matmul(tokens, in_weight, out=xp.empty((tokens.shape[0], in_weight.shape[1]), dtype=x.dtype))
    if in_bias is not None:
        qkv += in_bias
    qkv = qkv.reshape(*x.shape[:-1], 3 * features)
    mixed = sdpa(qkv[..., :features], qkv[..., features:2 * features], qkv[..., 2 * features:], heads=heads)
    if out is None:
        out = xp.empty(x.shape, dtype=x.dtype)
    matmul(mixed.reshape(-1, features), out_weight, out=out.reshape(-1, features))
    if out_bias is not None:
        out += out_bias
    return out



def relative_position_bias(table: Array, index: Array, window: int) -> Array:
    """The (1, heads, w^2, w^2) bias: the rows of ``table`` ((2w-1)^2, heads) that ``index`` (any shape of w^4
    entries, integer or integer-valued floats) picks, one per pair of tokens."""
    xp = array_module(table)
    tokens = window * window
    rows = table[index.reshape(-1).astype(xp.int64)]
    return xp.ascontiguousarray(rows.reshape(tokens, tokens, -1).transpose(2, 0, 1))[None]


def copy_constant(value: Array, *, out: Array) -> Array:
    """``value`` (a constant of the weights, batch 1) written into every sample of ``out``."""
    out[...] = value
    return out
