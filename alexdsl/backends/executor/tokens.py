"""Kernels for tensors of any rank (token tensors such as 197x768): learned tensors broadcast over the batch,
rearrangements, selection, linear layers and layer norms over the last axis.

Axes here count the batch (axis 0), as NumPy's do; the ops' lowerings add 1 to the per-sample axes.

>>> import numpy as np
>>> x = np.arange(12, dtype=np.float32).reshape(1, 2, 6)
>>> rearrange(x, (2, 3, 2), (1, 0, 2), out=np.empty((1, 3, 4), np.float32))[0].tolist()
[[0.0, 1.0, 6.0, 7.0], [2.0, 3.0, 8.0, 9.0], [4.0, 5.0, 10.0, 11.0]]
"""

from __future__ import annotations

from typing import Any

from alexdsl.backends.executor import arrays
from alexdsl.backends.executor.arrays import Activation, Array, array_module
from alexdsl.backends.executor.conv import linear


def broadcast_batch(tensor: Array, *, out: Array) -> Array:
    """``tensor`` (batch axis 1) copied to every sample of ``out``."""
    out[...] = tensor
    return out


def rearrange(x: Array, elementary: tuple[int, ...], perm: tuple[int, ...], *, out: Array) -> Array:
    """einops' rearrange, planned at compile time: each sample viewed as its ``elementary`` axes, those axes
    taken in the order ``perm``, and the result written into ``out`` (whose shape groups them)."""
    moved = x.reshape(x.shape[0], *elementary).transpose(0, *(p + 1 for p in perm))
    out.reshape(moved.shape)[...] = moved
    return out


def select(x: Array, axis: int, index: int, *, out: Array) -> Array:
    """``x`` at ``index`` along ``axis`` (which is dropped), as ``x[:, index]`` for axis 1."""
    out[...] = x[(slice(None),) * axis + (index,)]
    return out


def roll(x: Array, shifts: tuple[int, ...], axes: tuple[int, ...], *, out: Array) -> Array:
    """``x`` rolled by ``shifts`` along ``axes`` (torch.roll)."""
    out[...] = array_module(x).roll(x, shifts, axes)
    return out


def matmul(a: Array, b: Array, *, out: Array) -> Array:
    """The batched matrix product over the last two axes, NumPy's broadcasting over the others."""
    return arrays.matmul(a, b, out=out)


def linear_last(x: Array, weight_t: Array, bias: Array | None, *, relu: bool = False, act: Activation | None = None,
                out: Array) -> Array:
    """nn.Linear over the last axis of ``x`` (any rank): one GEMM over every row; ``weight_t`` is (in, out)."""
    linear(x.reshape(-1, x.shape[-1]), weight_t, bias, relu=relu, act=act, transposed=True,
           out=out.reshape(-1, out.shape[-1]))
    return out


def layer_norm_last(x: Array, weight: Array, bias: Array, eps: float = 1e-5, *, out: Array | None = None) -> Array:
    """nn.LayerNorm over the last axis of ``x`` (any rank) with a scale and shift of that axis' size.

    Two reading passes for the statistics (the row sums, then the squared deviations as one dot per row)
    and four elementwise passes, without a temporary of ``x``'s size (``mean``, ``x - mean`` and the
    ``mean`` of its square took 1.3x as long); ``out=x`` runs in place. float16 is normalised in float32.
    The rows are normalised in a C-contiguous array (``out`` when it is one), so that they are views of it.
    """
    xp = array_module(x)
    if out is None or not out.flags.c_contiguous:
        result = xp.empty(x.shape, dtype=x.dtype)
        layer_norm_last(x, weight, bias, eps, out=result)
        if out is None:
            return result
        out[...] = result
        return out
    size = x.shape[-1]
    if x.dtype.itemsize < 4:
        out[...] = layer_norm_last(x.astype(xp.float32), weight.astype(xp.float32), bias.astype(xp.float32), eps)
        return out
    rows, normed = x.reshape(-1, size), out.reshape(-1, size)
    mean = rows.sum(axis=1)  # pairwise, as NumPy's mean: a BLAS product's float32 sum lost 2x more to an offset
    mean /= size  # not times 1 / size, which float32 rounds: a row far from 0 would carry that error
    xp.subtract(rows, mean[:, None], out=normed)
    var = _row_dots(xp, normed)
    var /= size
    var += x.dtype.type(eps)
    xp.sqrt(var, out=var)
    normed /= var[:, None]
    normed *= weight
    normed += bias
    return out


def _row_dots(xp: Any, rows: Array) -> Array:
    """Each row's dot product with itself: ``vecdot`` where the array library has it (NumPy 2), else einsum."""
    vecdot = getattr(xp, "vecdot", None)
    return vecdot(rows, rows) if vecdot is not None else xp.einsum("ij,ij->i", rows, rows)
