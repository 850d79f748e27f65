"""Pooling kernels: max, average (with Caffe's and torch's divisor), adaptive and global average.

Max and average pooling run, on NumPy with Numba (C-contiguous float32 or float64 input and output), the
compiled kernel :func:`.numba_kernels.pool2d` over the thread pool by planes; otherwise (no Numba,
``ALEXDSL_NUMBA=0``, float16, strided arrays) one NumPy pass per kernel tap on cache-sized blocks of planes
(:func:`_combine_taps`), and on CuPy the fused CUDA kernel or those passes on the whole batch.

>>> import numpy as np
>>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
>>> max_pool2d(x, (2, 2), (2, 2), (0, 0)).tolist()
[[[[5.0, 7.0], [13.0, 15.0]]]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy

from alexdsl.backends.executor import cuda
from alexdsl.backends.executor.arrays import (
    Array,
    array_module,
    as_pair,
    kernel,
    numba_kernels,
    parallel_for,
    tap_windows,
)
from alexdsl.shape_math import pool_output_size


@dataclass
class PoolPlan:
    """Output size, the kernel taps (:meth:`taps`) and (for average pooling) the divisor table.

    Padding, and with ceil rounding the part of the last window past the padded input, is
    ``-inf`` for max and ``0`` for average: neither changes the result, so the kernels skip
    those taps instead of padding a copy; with floor rounding pixels no window reaches are
    never read.
    """

    height: int
    width: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int] = (0, 0)
    ceil_mode: bool = False
    out_h: int = field(init=False)
    out_w: int = field(init=False)

    def __post_init__(self) -> None:
        self.kernel, self.stride, self.pad = as_pair(self.kernel), as_pair(self.stride), as_pair(self.pad)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        self.out_h = pool_output_size(self.height, kh, sh, ph, self.ceil_mode)
        self.out_w = pool_output_size(self.width, kw, sw, pw, self.ceil_mode)
        if self.out_h < 1 or self.out_w < 1:
            raise ValueError(f"pooling output would be {self.out_h}x{self.out_w}")

    def divisor(self, count_include_pad: bool) -> numpy.ndarray:
        """(OH, OW) window sizes torch divides by (windows clipped to input + padding)."""

        def sizes(out: int, k: int, s: int, p: int, size: int) -> numpy.ndarray:
            start = numpy.arange(out) * s - p
            end = numpy.minimum(start + k, size + p)
            if not count_include_pad:
                start, end = numpy.maximum(start, 0), numpy.minimum(end, size)
            return (end - start).astype(numpy.float64)

        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        return numpy.outer(sizes(self.out_h, kh, sh, ph, self.height), sizes(self.out_w, kw, sw, pw, self.width))

    def taps(self) -> tuple[tuple[int, slice, slice, slice, slice], ...]:
        """The kernel taps as :func:`~alexdsl.backends.executor.arrays.tap_windows` gives them.

        Each tap reaches only the output pixels whose input pixel is inside the image, so
        padding (``-inf`` for max, ``0`` for average) needs no padded copy: it never wins.
        """
        return tap_windows(self.height, self.width, self.out_h, self.out_w, self.kernel, self.stride, self.pad, (1, 1))


def _pool_setup(
    x: Array, kernel: Any, stride: Any, pad: Any, ceil_mode: bool, plan: PoolPlan | None, out: Array | None
) -> tuple[ModuleType, PoolPlan, Array]:
    """The array module, the plan (built unless given; stride defaults to the kernel) and the output."""
    xp = array_module(x)
    if plan is None:
        plan = PoolPlan(x.shape[2], x.shape[3], kernel, kernel if stride is None else stride, pad, ceil_mode)
    if out is None:
        out = xp.empty((x.shape[0], x.shape[1], plan.out_h, plan.out_w), dtype=x.dtype)
    return xp, plan, out


BLOCK_BYTES = 1 << 19  # input + output bytes per NumPy block of channels: a quarter of a core's L2


def _combine_taps(
    xp: ModuleType,
    plan: PoolPlan,
    x: Array,
    out: Array,
    combine: Callable[[Array, Array], None],
    empty: float,
    scale: Array | None = None,
) -> Array:
    """``out`` = every tap of ``x`` combined in place by ``combine(part, tap)``, then ``*= scale``.

    One block of channel planes at a time, all taps while the block is in cache (on NumPy;
    CuPy takes the whole batch as one block). The block starts as a tap that reaches every
    output pixel, or as ``empty`` where none does; no padded copy of the input is made.
    """
    n, c, h, w = x.shape
    planes, rows = x.reshape(n * c, h, w), out.reshape(n * c, plan.out_h, plan.out_w)
    taps = plan.taps()
    first = next((t for t in taps if (t[1], t[2]) == (slice(0, plan.out_h), slice(0, plan.out_w))), None)
    per_block = n * c
    if xp is numpy:
        per_block = max(1, BLOCK_BYTES // ((h * w + plan.out_h * plan.out_w) * x.itemsize))

    def chunk(lo: int, hi: int) -> None:
        for start in range(lo, hi, per_block):
            src, dst = planes[start : min(hi, start + per_block)], rows[start : min(hi, start + per_block)]
            if first is None:
                dst.fill(empty)
            else:
                dst[...] = src[:, first[3], first[4]]
            for tap in taps:
                if tap is not first:
                    _, out_rows, out_cols, in_rows, in_cols = tap
                    combine(dst[:, out_rows, out_cols], src[:, in_rows, in_cols])
            if scale is not None:
                dst *= scale

    parallel_for(xp, n * c, x.size, chunk)
    return out


def _compiled_pool(plan: PoolPlan, x: Array, out: Array, divisor: Array | None = None) -> bool:
    """Max pooling (average with ``divisor``, the reciprocals of :meth:`PoolPlan.divisor`) by the compiled kernel
    (:func:`.numba_kernels.pool2d`), split over the thread pool by planes, where it applies: NumPy arrays, C-contiguous
    ``x`` and ``out`` of one dtype the kernels are compiled for, Numba there, every window holding an input pixel
    (padding at most half the kernel, as the op checks). Returns whether it ran."""
    arrays = (x, out) if divisor is None else (x, out, divisor)
    if not all(isinstance(a, numpy.ndarray) and a.flags.c_contiguous for a in arrays) or out.dtype != x.dtype:
        return False
    if divisor is not None and divisor.size != plan.out_h * plan.out_w:  # (OH, OW), not a broadcast
        return False
    kernels = numba_kernels(x.dtype)
    if kernels is None or any(2 * p > k for p, k in zip(plan.pad, plan.kernel, strict=True)):
        return False
    n, c, h, w = x.shape
    planes, rows = x.reshape(n * c, h, w), out.reshape(n * c, plan.out_h, plan.out_w)
    scale = numpy.empty((0, 0), x.dtype) if divisor is None else divisor.astype(x.dtype, copy=False)
    parallel_for(numpy, n * c, x.size, lambda lo, hi: kernels.pool2d(
        planes, rows, lo, hi, plan.kernel, plan.stride, plan.pad, scale),
        lambda team, bounds: team.pool2d(planes, rows, bounds, plan.kernel, plan.stride, plan.pad, scale))
    return True


def max_pool2d(
    x: Array,
    kernel: tuple[int, int],
    stride: tuple[int, int] | None = None,
    pad: tuple[int, int] = (0, 0),
    ceil_mode: bool = False,
    *,
    plan: PoolPlan | None = None,
    out: Array | None = None,
) -> Array:
    """Max pooling identical to ``torch.nn.functional.max_pool2d`` (padding is -inf)."""
    xp, plan, out = _pool_setup(x, kernel, stride, pad, ceil_mode, plan, out)
    fused = cuda.fused_kernels(xp, x, out)
    if fused is not None:
        return fused.pool2d("max", plan, x, out)
    if _compiled_pool(plan, x, out):
        return out
    return _combine_taps(xp, plan, x, out, lambda part, tap: xp.maximum(part, tap, out=part), -numpy.inf)


def avg_pool2d(
    x: Array,
    kernel: tuple[int, int],
    stride: tuple[int, int] | None = None,
    pad: tuple[int, int] = (0, 0),
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    *,
    plan: PoolPlan | None = None,
    divisor: Array | None = None,
    out: Array | None = None,
) -> Array:
    """Average pooling identical to ``torch.nn.functional.avg_pool2d``.

    Windows are clipped to input + padding (ceil mode's extra right column does not
    count); ``count_include_pad=False`` divides by the in-image part only.
    ``divisor`` may be the precomputed ``1 / plan.divisor(...)`` on the right device.
    """
    xp, plan, out = _pool_setup(x, kernel, stride, pad, ceil_mode, plan, out)
    if divisor is None:
        divisor = xp.asarray((1.0 / plan.divisor(count_include_pad)).astype(x.dtype))
    fused = cuda.fused_kernels(xp, x, out, divisor)
    if fused is not None:
        return fused.pool2d("avg", plan, x, out, divisor)
    if _compiled_pool(plan, x, out, divisor):
        return out
    return _combine_taps(xp, plan, x, out, lambda part, tap: xp.add(part, tap, out=part), 0.0, divisor)


def _adaptive_matrix(size: int, out: int) -> numpy.ndarray:
    """(out, size) averaging matrix with torch's bins floor(i*H/o) .. ceil((i+1)*H/o)."""
    m = numpy.zeros((out, size), dtype=numpy.float64)
    for i in range(out):
        start = (i * size) // out
        end = -(-((i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_matrices(height: int, width: int, size: tuple[int, int]) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The (OH, H) and (W, OW) averaging matrices of :func:`adaptive_avg_pool2d` (float64, host)."""
    oh, ow = as_pair(size)
    return _adaptive_matrix(height, oh), _adaptive_matrix(width, ow).T.copy()


def adaptive_avg_pool2d(
    x: Array,
    size: tuple[int, int],
    *,
    matrices: tuple[Array, Array] | None = None,
    out: Array | None = None,
) -> Array:
    """``torch.nn.functional.adaptive_avg_pool2d``: two small averaging GEMMs (H then W).

    ``matrices`` may be :func:`adaptive_matrices` already on the device and in ``x``'s dtype.
    """
    xp = array_module(x)
    h, w = x.shape[2], x.shape[3]
    oh, ow = as_pair(size)
    if (oh, ow) == (h, w):
        if out is None:
            return x.copy()
        out[...] = x
        return out
    if matrices is None:
        matrices = tuple(xp.asarray(m.astype(x.dtype)) for m in adaptive_matrices(h, w, (oh, ow)))
    mh, mw = matrices
    rows = xp.matmul(x, mw) if ow != w else x  # (N, C, H, OW)
    result = xp.matmul(mh, rows) if oh != h else rows  # (N, C, OH, OW)
    if out is None:
        return result
    out[...] = result
    return out


def global_avg_pool2d(x: Array, *, out: Array | None = None) -> Array:
    """Mean over H and W, keeping (N, C, 1, 1).

    On NumPy, for contiguous float32 and float64 arrays (float16 would accumulate in float16),
    one matrix-vector product of the (N*C, H*W) planes by ones (BLAS), then a division by H*W:
    3-5x faster than ``numpy.mean`` at batch 1 on EfficientNet-B0's squeeze-excitation inputs.
    """
    xp = array_module(x)
    n, c, h, w = x.shape
    contiguous = x.flags.c_contiguous and (out is None or out.flags.c_contiguous)
    if xp is not numpy or x.dtype.name not in ("float32", "float64") or not contiguous:
        return xp.mean(x, axis=(2, 3), keepdims=True, out=out)
    if out is None:
        out = numpy.empty((n, c, 1, 1), x.dtype)
    kernel(numpy.matmul, x.reshape(n * c, h * w), numpy.ones(h * w, x.dtype), out=out.reshape(n * c))
    kernel(numpy.divide, out, x.dtype.type(h * w), out=out)
    return out
