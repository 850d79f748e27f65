"""Kernels that change the spatial size or the rank: padding, upsampling, reductions over axes.

>>> import numpy as np
>>> x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
>>> pad2d(x, (0, 1, 1, 0)).tolist()
[[[[0.0, 0.0, 1.0], [0.0, 2.0, 3.0], [0.0, 0.0, 0.0]]]]
>>> pad2d(x, (-1, 1, 0, 0)).tolist()
[[[[2.0, 3.0], [0.0, 0.0]]]]
>>> pad2d(x, (1, 0, 0, 1), mode="reflect").tolist(), pad2d(x, (0, 0, 1, 0), mode="replicate").tolist()
([[[[2.0, 3.0, 2.0], [0.0, 1.0, 0.0], [2.0, 3.0, 2.0]]]], [[[[0.0, 0.0, 1.0], [2.0, 2.0, 3.0]]]])
>>> upsample_nearest(x, (2, 1)).tolist()
[[[[0.0, 1.0], [0.0, 1.0], [2.0, 3.0], [2.0, 3.0]]]]
"""

from __future__ import annotations

import numpy

from alexdsl.backends.executor.arrays import Array, array_module, as_pair


def pad2d(x: Array, pads: tuple[int, int, int, int], value: float = 0.0, *, mode: str = "constant",
          out: Array | None = None) -> Array:
    """``F.pad(x, (left, right, top, bottom), value=value, mode=mode)`` of NCHW ``x``; ``pads`` is (top, bottom,
    left, right), a negative one removing rows or columns (nasnet's ``ZeroPad2d((-1, 1, -1, 1))``); ``mode``
    reflect or replicate fills from the input (pads of 0 or more)."""
    top, bottom, left, right = pads
    n, c, h, w = x.shape
    if mode != "constant":
        filled = array_module(x).pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)),
                                     mode={"reflect": "reflect", "replicate": "edge"}[mode])
        if out is None:
            return filled
        out[...] = filled
        return out
    kept = x[:, :, max(-top, 0) : h - max(-bottom, 0), max(-left, 0) : w - max(-right, 0)]
    if out is None:
        out = array_module(x).empty((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
    out[...] = value
    row, column = max(top, 0), max(left, 0)
    out[:, :, row : row + kept.shape[2], column : column + kept.shape[3]] = kept
    return out


def upsample_nearest(x: Array, scale: tuple[int, int], *, out: Array | None = None) -> Array:
    """``F.interpolate(x, scale_factor=scale, mode="nearest")`` for integer scales: each pixel repeated."""
    sh, sw = as_pair(scale)
    n, c, h, w = x.shape
    if out is None:
        out = array_module(x).empty((n, c, h * sh, w * sw), dtype=x.dtype)
    out.reshape(n, c, h, sh, w, sw)[...] = x[:, :, :, None, :, None]
    return out


def _linear_matrix(size: int, scale: int, align_corners: bool) -> numpy.ndarray:
    """(size * scale, size) matrix of torch's linear interpolation along one axis (float64, host)."""
    out = size * scale
    m = numpy.zeros((out, size), dtype=numpy.float64)
    for i in range(out):
        if align_corners:
            src = i * (size - 1) / (out - 1) if out > 1 else 0.0
        else:
            src = max((i + 0.5) / scale - 0.5, 0.0)
        low = min(int(src), size - 1)
        high = min(low + 1, size - 1)
        frac = src - low
        m[i, low] += 1.0 - frac
        m[i, high] += frac
    return m


def bilinear_matrices(height: int, width: int, scale: tuple[int, int],
                      align_corners: bool) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The (OH, H) and (W, OW) matrices of :func:`upsample_bilinear` (float64, host)."""
    sh, sw = as_pair(scale)
    return _linear_matrix(height, sh, align_corners), _linear_matrix(width, sw, align_corners).T.copy()


def upsample_bilinear(x: Array, matrices: tuple[Array, Array], *, out: Array | None = None) -> Array:
    """Bilinear upsampling as two small GEMMs (W then H) with :func:`bilinear_matrices` in ``x``'s dtype."""
    xp = array_module(x)
    mh, mw = matrices
    result = xp.matmul(mh, xp.matmul(x, mw))
    if out is None:
        return result
    out[...] = result
    return out


def reduce(x: Array, kind: str, axes: tuple[int, ...], keepdims: bool, *, out: Array | None = None) -> Array:
    """``x.sum``/``mean``/``amax`` over ``axes`` (of the whole array, batch included)."""
    xp = array_module(x)
    function = {"sum": xp.sum, "mean": xp.mean, "max": xp.max}[kind]
    result = function(x, axis=axes, keepdims=keepdims)
    if out is None:
        return result
    out[...] = result.reshape(out.shape)
    return out
