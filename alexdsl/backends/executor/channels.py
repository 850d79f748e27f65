"""Kernels across the channel axis (1): concat and ShuffleNet's channel shuffle (softmax is its op's xp kernel, in
:mod:`alexdsl.ops.activation`).

>>> import numpy as np
>>> channel_shuffle(np.arange(4.0).reshape(1, 4, 1, 1), 2).ravel().tolist()
[0.0, 2.0, 1.0, 3.0]
"""

from __future__ import annotations

from alexdsl.backends.executor.arrays import Array, array_module


def concat(inputs: list[Array] | tuple[Array, ...], *, axis: int = 1, out: Array | None = None) -> Array:
    """Concatenate along ``axis`` (the channels, 1, by default); an input of batch 1 is broadcast over the batch."""
    xp = array_module(inputs[0])
    if out is None:
        return xp.concatenate(list(inputs), axis=axis)
    axis %= out.ndim
    start = 0
    for part in inputs:
        size = part.shape[axis]
        out[(slice(None),) * axis + (slice(start, start + size),)] = part
        start += size
    return out


def channel_shuffle(x: Array, groups: int, *, out: Array | None = None) -> Array:
    """ShuffleNet's channel shuffle: (N, g, C/g, ...) transposed to (N, C/g, g, ...)."""
    n, c = x.shape[:2]
    src = x.reshape(n, groups, c // groups, *x.shape[2:]).swapaxes(1, 2)
    if out is None:
        return array_module(x).ascontiguousarray(src).reshape(x.shape)
    out.reshape(n, c // groups, groups, *x.shape[2:])[...] = src
    return out

