"""Executor kernels for language models: embedding lookup, positions, RMS normalisation, rotary embeddings.

Written once against ``xp`` (NumPy or CuPy). Token ids arrive as floats (the executor keeps every
activation in its float dtype; ids below 2**24 are exact in float32) and are rounded to integers here.

>>> import numpy as np
>>> table = np.arange(6, dtype=np.float32).reshape(3, 2)
>>> embedding(np.array([[2.0, 0.0]], np.float32), table).tolist()
[[[4.0, 5.0], [0.0, 1.0]]]
"""

from __future__ import annotations

import numpy

from alexdsl.backends.executor.arrays import Array, array_module, matmul
from alexdsl.ops import language


def embedding(ids: Array, weight: Array, *, out: Array | None = None) -> Array:
    """``weight[ids]``: one row of the table per id; an id outside the table is an error."""
    xp = array_module(weight)
    index = xp.rint(ids).astype(xp.intp)
    if index.size and (int(index.min()) < 0 or int(index.max()) >= weight.shape[0]):
        raise ValueError(f"token id out of range: ids must be from 0 to {weight.shape[0] - 1}, "
                         f"got {int(index.min())} to {int(index.max())}")
    return xp.take(weight, index, axis=0, out=out)


def positions(x: Array, *, offset: int = 0, out: Array | None = None) -> Array:
    """offset, offset + 1, ... offset + L-1 along the first per-sample axis of ``x`` (N, L, ...), for every sample:
    (N, L)."""
    xp = array_module(x)
    n, length = x.shape[:2]
    if out is None:
        out = xp.empty((n, length), dtype=x.dtype)
    out[...] = xp.arange(offset, offset + length, dtype=out.dtype)
    return out


def rms_norm(x: Array, weight: Array, eps: float, *, out: Array | None = None) -> Array:
    """``weight * x / sqrt(mean(x**2) + eps)`` over the last axis (Llama's RMSNorm)."""
    xp = array_module(x)
    mean_square = xp.mean(x * x, axis=-1, keepdims=True)
    mean_square += x.dtype.type(eps)
    inverse = 1 / xp.sqrt(mean_square)
    out = xp.multiply(x, inverse, out=out)
    out *= weight
    return out


def rope_table(length: int, inv_freq: list[float], xp: object = numpy, dtype: object = numpy.float32) -> Array:
    """cos and sin of every position (:func:`alexdsl.ops.language.rope_table`) as an array of ``xp``."""
    return xp.asarray(language.rope_table(length, inv_freq), dtype=dtype)  # type: ignore[attr-defined]


def rope(x: Array, table: Array, heads: int, *, offset: int = 0, out: Array | None = None) -> Array:
    """Rotate every head of ``x`` (N, L, heads * D) by its position (``offset`` + its index):
    ``x * cos + rotate_half(x) * sin``, where rotate_half swaps the halves of each head and negates the new first
    half."""
    xp = array_module(x)
    n, length, width = x.shape
    dim = width // heads
    half = dim // 2
    split = x.reshape(n, length, heads, dim)
    cos, sin = table[0, offset:offset + length, None, :], table[1, offset:offset + length, None, :]
    result = (out if out is not None else xp.empty_like(x)).reshape(n, length, heads, dim)
    xp.multiply(split, cos, out=result)
    result[..., :half] -= split[..., half:] * sin[..., :half]
    result[..., half:] += split[..., :half] * sin[..., half:]
    return result.reshape(n, length, width)


def unembed(x: Array, weight_t: Array, *, out: Array | None = None) -> Array:
    """``x @ weight_t`` over the last axis: scores over the vocabulary from an embedding's transposed table."""
    if out is None:
        out = array_module(x).empty((*x.shape[:-1], weight_t.shape[-1]), dtype=x.dtype)
    return matmul(x, weight_t, out=out)


def repeat_kv(x: Array, heads: int, groups: int, *, out: Array | None = None) -> Array:
    """Each of the ``heads`` key/value heads of ``x`` (N, L, heads * d) repeated ``groups`` times in place:
    (N, L, heads * groups * d)."""
    xp = array_module(x)
    n, length, width = x.shape
    split = x.reshape(n, length, heads, 1, width // heads)
    if out is None:
        out = xp.empty((n, length, width * groups), dtype=x.dtype)
    out.reshape(n, length, heads, groups, width // heads)[...] = split
    return out
