"""Normalisation kernels: local response normalisation, batchnorm as a per-channel affine, layer and group norm.

>>> import numpy as np
>>> x = np.full((1, 2, 1, 1), 3.0, np.float32)
>>> channel_affine(x, np.array([2.0, 1.0], np.float32), np.array([1.0, 0.0], np.float32)).ravel().tolist()
[7.0, 3.0]
"""

from __future__ import annotations

import numpy

from alexdsl.backends.executor import cuda
from alexdsl.backends.executor.arrays import Array, array_module, kernel, numba_kernels, parallel_for
from alexdsl.backends.executor.compiled import is_float32_numpy


def lrn(
    x: Array, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, *, out: Array | None = None
) -> Array:
    """Cross-channel local response norm, Caffe semantics = torch ``local_response_norm``.

    ``y = x / (k + alpha/size * sum_{window} x^2) ** beta`` with the window
    ``c - size//2 .. c + (size-1)//2`` zero-padded at the channel ends.
    """
    xp = array_module(x)
    if out is None:
        out = xp.empty_like(x)
    fused = cuda.fused_kernels(xp, x, out)
    if fused is not None and size <= fused.LRN_MAX_SIZE:
        return fused.lrn(x, size, alpha, beta, k, out)
    c = x.shape[1]
    lo, hi = size // 2, (size - 1) // 2

    def chunk(n0: int, n1: int) -> None:
        xs = x[n0:n1]
        sq = xs * xs
        acc = sq.copy()  # the centre tap covers every channel
        for off in range(-lo, hi + 1):
            a, b = max(0, -off), min(c, c - off)
            if off and a < b:
                acc[:, a:b] += sq[:, a + off : b + off]
        acc *= alpha / size
        acc += k
        if beta == 0.75:  # d**0.75 = sqrt(d) * sqrt(sqrt(d)), much cheaper than pow
            xp.sqrt(acc, out=sq)
            xp.sqrt(sq, out=acc)
            acc *= sq
        elif beta == 0.5:
            xp.sqrt(acc, out=acc)
        elif beta != 1.0:
            xp.power(acc, beta, out=acc)
        xp.divide(xs, acc, out=out[n0:n1])

    # NumPy passes alone, writing out[n0:n1]: a kernel to a replay's tape (arrays.KernelTape)
    parallel_for(xp, x.shape[0], 4 * x.size, lambda n0, n1: kernel(chunk, n0, n1))
    return out


def batchnorm_affine(
    mean: Array, var: Array, weight: Array | None = None, bias: Array | None = None, eps: float = 1e-5
) -> tuple[Array, Array]:
    """Per-channel (scale, shift) of an inference batchnorm, in ``mean``'s dtype."""
    xp = array_module(mean)
    scale = 1.0 / xp.sqrt(var.astype(xp.float64) + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale.astype(mean.dtype), shift.astype(mean.dtype)


def channel_affine(x: Array, scale: Array, shift: Array | None, *, out: Array | None = None) -> Array:
    """``x * scale + shift`` per channel (axis 1; no shift when None); ``out=x`` runs in place."""
    xp = array_module(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = xp.multiply(x, scale.reshape(shape), out=out)
    if shift is not None:
        out += shift.reshape(shape)
    return out


def layer_norm(x: Array, weight: Array | None, bias: Array | None, eps: float = 1e-5, *,
               out: Array | None = None) -> Array:
    """Normalise every pixel over the channels (axis 1) with a per-channel scale and shift (LayerNorm2d).

    With Numba, NumPy float32 and both affine terms: the compiled kernel
    (:func:`.numba_kernels.layer_norm_channels`, bit for bit these passes) on blocks of pixels, over the pool.
    """
    xp = array_module(x)
    compiled = _compiled_layer_norm(x, weight, bias, eps, out)
    if compiled is not None:
        return compiled
    mean = x.mean(axis=1, keepdims=True)
    centred = x - mean
    var = xp.mean(centred * centred, axis=1, keepdims=True)
    var += x.dtype.type(eps)
    xp.sqrt(var, out=var)
    out = xp.divide(centred, var, out=out)
    return _scale_and_shift(out, weight, bias)


def _compiled_layer_norm(x: Array, weight: Array | None, bias: Array | None, eps: float,
                         out: Array | None) -> Array | None:
    """:func:`layer_norm` by the compiled kernel into ``out`` (or a new array), or None where the NumPy passes run:
    no Numba, not float32 NumPy arrays, an affine term missing, an ``out`` that is not C-contiguous, or one pixel
    an image ((N, C) or (N, C, 1, 1), a classifier head's): there NumPy's sums over the channels are pairwise,
    which the kernel's channel-by-channel sums are not (a head's 1,000-odd channels summed in a row made an
    imported InceptionNeXt's float32 error 3.5x larger)."""
    if not (isinstance(x, numpy.ndarray) and x.dtype == numpy.float32 and x.ndim >= 2
            and x.size > x.shape[0] * x.shape[1] and is_float32_numpy(weight) and is_float32_numpy(bias)):
        return None
    kernels = numba_kernels(x.dtype)
    if kernels is None:
        return None
    if out is None:
        out = numpy.empty(x.shape, x.dtype)
    elif not (is_float32_numpy(out) and out.shape == x.shape):
        return None
    n, c = x.shape[:2]
    flat, target = numpy.ascontiguousarray(x).reshape(n, c, -1), out.reshape(n, c, -1)
    blocks = n * -(-flat.shape[2] // kernels.LAYER_NORM_PIXELS)
    parallel_for(numpy, blocks, 3 * x.size, lambda lo, hi: kernels.layer_norm_channels(
        flat, weight, bias, eps, target, lo, hi),
        lambda team, bounds: team.layer_norm_channels(flat, weight, bias, eps, target, bounds))
    return out


def _scale_and_shift(out: Array, weight: Array | None, bias: Array | None) -> Array:
    """``out * weight + bias`` per channel (dimension 1), in place; either may be None."""
    shape = (1, -1) + (1,) * (out.ndim - 2)
    if weight is not None:
        out *= weight.reshape(shape)
    if bias is not None:
        out += bias.reshape(shape)
    return out


def group_norm(x: Array, groups: int, weight: Array | None, bias: Array | None, eps: float = 1e-5, *,
               out: Array | None = None) -> Array:
    """Normalise each group of channels over its channels and pixels, then scale and shift per channel."""
    xp = array_module(x)
    n = x.shape[0]
    grouped = x.reshape(n, groups, -1)
    mean = grouped.mean(axis=2, keepdims=True)
    centred = grouped - mean
    var = xp.mean(centred * centred, axis=2, keepdims=True)
    var += x.dtype.type(eps)
    xp.sqrt(var, out=var)
    centred /= var
    if out is None:
        out = xp.empty_like(x)
    out[...] = centred.reshape(x.shape)
    return _scale_and_shift(out, weight, bias)
