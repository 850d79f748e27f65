"""Optional GPU-only fused kernels (CuPy ``RawKernel``), each replacing a few xp passes.

They are off by default: the portable kernels of :mod:`alexdsl.backends.executor.runtime`
run on CuPy as they are.  Set ``ALEXDSL_CUDA_KERNELS=1`` to use these where they apply
(float32 and float64 arrays); each has a GPU test against the xp reference
(``tests/test_kernels.py``, marked ``gpu``), and ``tests/test_cuda_sources.py`` compiles
every source with NVRTC wherever the NVRTC library is installed, GPU or not.

* :func:`im2col_wide` -- channel-major columns read straight from the unpadded input
  (zero padding by bounds checks): one pass instead of a padded copy plus a strided copy.
* :func:`transpose_bias_relu` -- the wide GEMM's epilogue (transpose to NCHW, bias, ReLU).
* :func:`bias_relu_` -- the in-place GEMM epilogue (bias add + ReLU) in one pass.
* :func:`lrn` -- cross-channel LRN in one pass (running window sum, power and divide fused),
  in place or not.
* :func:`pool2d` -- max or average pooling in one pass instead of one per kernel tap.
* :func:`depthwise_conv2d` -- a depthwise convolution (one thread per output, bias and ReLU fused)
  instead of the xp path's per-tap passes (:mod:`alexdsl.backends.executor.depthwise`).

Every kernel is a grid-stride loop (over its output; for LRN, over pixels) with 64-bit
indices; ``{T}`` in a source is replaced by the element type.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy

from alexdsl.backends.executor.arrays import cupy_module

if TYPE_CHECKING:
    from alexdsl.backends.executor.conv import ConvPlan
    from alexdsl.backends.executor.pool import PoolPlan

Array = Any
THREADS = 256
C_TYPES = {"float32": "float", "float64": "double"}
NEG_INF = {"float32": "__int_as_float(0xff800000)", "float64": "__longlong_as_double(0xfff0000000000000LL)"}

IM2COL_WIDE = r"""
extern "C" __global__ void alexdsl_im2col_wide(
        const {T}* __restrict__ x, {T}* __restrict__ cols, long long total,
        int n, int c, int h, int w, int oh, int ow, int kh, int kw,
        int sh, int sw, int ph, int pw, int dh, int dw) {
    // cols is (c, kh, kw, n, oh, ow); x is (n, c, h, w)
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
            i += (long long)blockDim.x * gridDim.x) {
        long long r = i;
        const int ox = r % ow; r /= ow;
        const int oy = r % oh; r /= oh;
        const int b = r % n; r /= n;
        const int j = r % kw; r /= kw;
        const int k = r % kh; r /= kh;
        const int ch = (int)r;
        const int iy = oy * sh - ph + k * dh;
        const int ix = ox * sw - pw + j * dw;
        {T} v = ({T})0;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
            v = x[(((long long)b * c + ch) * h + iy) * w + ix];
        }
        cols[i] = v;
    }
}
"""

TRANSPOSE_BIAS_RELU = r"""
extern "C" __global__ void alexdsl_transpose_bias_relu(
        const {T}* __restrict__ src, const {T}* __restrict__ bias, {T}* __restrict__ out,
        long long total, int n, int c, long long plane, int relu) {
    // out (n, c, plane) = src (c, n, plane) transposed, + bias[c], then ReLU
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
            i += (long long)blockDim.x * gridDim.x) {
        const long long p = i % plane;
        const long long rest = i / plane;
        const int ch = rest % c;
        const int b = rest / c;
        {T} v = src[((long long)ch * n + b) * plane + p];
        if (bias != nullptr) v += bias[ch];
        if (relu && v < ({T})0) v = ({T})0;
        out[i] = v;
    }
}
"""

BIAS_RELU = r"""
extern "C" __global__ void alexdsl_bias_relu(
        {T}* __restrict__ y, const {T}* __restrict__ bias, long long total, int c, long long plane, int relu) {
    // y (n, c, plane) in place: y = relu(y + bias[c])
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
            i += (long long)blockDim.x * gridDim.x) {
        {T} v = y[i];
        if (bias != nullptr) v += bias[(i / plane) % c];
        if (relu && v < ({T})0) v = ({T})0;
        y[i] = v;
    }
}
"""

LRN_MAX_SIZE = 63  # the window must fit the ring of originals below (64 entries)

LRN = r"""
extern "C" __global__ void alexdsl_lrn(
        const {T}* x, {T}* out, long long pixels, int c, long long plane,
        int size, double scale, double beta, double k) {
    // Caffe/torch cross-channel LRN, window ch - size/2 .. ch + (size-1)/2, zero-padded.
    // One thread walks the channels of one pixel with a running sum of squares; it keeps the
    // original values it has read in a ring, so out may be x (in place).
    const int half = size / 2, after = (size - 1) / 2;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < pixels;
            i += (long long)blockDim.x * gridDim.x) {
        const long long base = (i / plane) * c * plane + i % plane;
        double ring[64];
        double acc = 0.0;
        for (int j = 0; j <= after && j < c; ++j) {
            const double v = (double)x[base + j * plane];
            ring[j & 63] = v;
            acc += v * v;
        }
        for (int ch = 0; ch < c; ++ch) {
            if (ch > 0) {
                const int ahead = ch + after, behind = ch - half - 1;
                if (ahead < c) {
                    const double v = (double)x[base + ahead * plane];
                    ring[ahead & 63] = v;
                    acc += v * v;
                }
                if (behind >= 0) acc -= ring[behind & 63] * ring[behind & 63];
            }
            out[base + ch * plane] = ({T})(ring[ch & 63] / pow(k + scale * max(acc, 0.0), beta));
        }
    }
}
"""

POOL2D = r"""
extern "C" __global__ void alexdsl_{OP}_pool2d(
        const {T}* __restrict__ x, {T}* __restrict__ out, const {T}* __restrict__ inv_divisor,
        long long total, int h, int w, int oh, int ow, int kh, int kw, int sh, int sw, int ph, int pw) {
    // one output pixel per step; taps outside the input are skipped (= -inf / 0 padding)
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
            i += (long long)blockDim.x * gridDim.x) {
        const int ox = i % ow;
        const int oy = (i / ow) % oh;
        const {T}* plane = x + (i / ((long long)oh * ow)) * h * w;
        const int y0 = oy * sh - ph, x0 = ox * sw - pw;
        {T} acc = {INIT};
        for (int ky = max(y0, 0); ky < min(y0 + kh, h); ++ky) {
            for (int kx = max(x0, 0); kx < min(x0 + kw, w); ++kx) {
                const {T} v = plane[ky * w + kx];
                {COMBINE};
            }
        }
        out[i] = {RESULT};
    }
}
"""

MAX_POOL2D = (
    POOL2D.replace("{OP}", "max")
    .replace("{INIT}", "{NEG_INF}")
    .replace("{COMBINE}", "acc = (v > acc || v != v) ? v : acc")  # NaN propagates, as in torch
    .replace("{RESULT}", "acc")
)
AVG_POOL2D = (
    POOL2D.replace("{OP}", "avg")
    .replace("{INIT}", "({T})0")
    .replace("{COMBINE}", "acc += v")
    .replace("{RESULT}", "acc * inv_divisor[oy * ow + ox]")
)

SOURCES = {
    "alexdsl_im2col_wide": IM2COL_WIDE,
    "alexdsl_transpose_bias_relu": TRANSPOSE_BIAS_RELU,
    "alexdsl_bias_relu": BIAS_RELU,
    "alexdsl_lrn": LRN,
    "alexdsl_max_pool2d": MAX_POOL2D,
    "alexdsl_avg_pool2d": AVG_POOL2D,
}


def source(name: str, dtype: str) -> str:
    """The CUDA C source of kernel ``name`` for ``dtype`` (float32 or float64)."""
    return SOURCES[name].replace("{NEG_INF}", NEG_INF[dtype]).replace("{T}", C_TYPES[dtype])


def enabled() -> bool:
    """True when CuPy is importable and ``ALEXDSL_CUDA_KERNELS=1``."""
    return cupy_module is not None and os.environ.get("ALEXDSL_CUDA_KERNELS", "") == "1"


def fused_kernels(xp: ModuleType, *arrays: Array | None) -> ModuleType | None:
    """This module when its kernels are switched on and fit ``arrays`` (the callers' dispatch), else None."""
    if xp is numpy or not supports(*arrays):
        return None
    return sys.modules[__name__]


def supports(*arrays: Array) -> bool:
    """Whether the kernels apply: switched on, and C-contiguous float32/float64 CuPy arrays."""
    return enabled() and all(
        a is None or (a.dtype.name in C_TYPES and a.flags.c_contiguous and isinstance(a, cupy_module.ndarray))
        for a in arrays
    )


@cache
def _kernel(name: str, dtype: str) -> Any:
    return cupy_module.RawKernel(source(name, dtype), name)


def _launch(name: str, dtype: Any, total: int, *args: Any) -> None:
    blocks = max(1, min((total + THREADS - 1) // THREADS, 65535 * 8))
    _kernel(name, numpy.dtype(dtype).name)((blocks,), (THREADS,), args)


def _i32(v: int) -> numpy.int32:
    return numpy.int32(v)


def im2col_wide(plan: ConvPlan, x: Array, cols: Array) -> Array:
    """Columns ``(C*kh*kw, N*OH*OW)`` of contiguous ``x`` into contiguous ``cols`` (same size)."""
    n = x.shape[0]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = plan.kernel, plan.stride, plan.pad, plan.dilation
    total = cols.size
    _launch(
        "alexdsl_im2col_wide", x.dtype, total,
        x, cols, numpy.int64(total), *map(_i32, (n, plan.in_channels, plan.height, plan.width)),
        *map(_i32, (plan.out_h, plan.out_w, kh, kw, sh, sw, ph, pw, dh, dw)),
    )  # fmt: skip
    return cols


def transpose_bias_relu(src: Array, bias: Array | None, relu: bool, out: Array) -> Array:
    """``out (N, C, P) = relu(src (C, N, P) transposed + bias)`` in one pass."""
    c, n, plane = src.shape
    _launch(
        "alexdsl_transpose_bias_relu", out.dtype, out.size,
        src, bias, out, numpy.int64(out.size), _i32(n), _i32(c), numpy.int64(plane), _i32(relu),
    )  # fmt: skip
    return out


def bias_relu_(y: Array, bias: Array | None, relu: bool) -> Array:
    """In place on contiguous ``y`` (N, C, ...): ``y = relu(y + bias)`` in one pass."""
    c = y.shape[1]
    plane = y.size // (y.shape[0] * c) if y.size else 1
    _launch(
        "alexdsl_bias_relu", y.dtype, y.size,
        y, bias, numpy.int64(y.size), _i32(c), numpy.int64(plane), _i32(relu),
    )  # fmt: skip
    return y


def lrn(x: Array, size: int, alpha: float, beta: float, k: float, out: Array) -> Array:
    """Caffe/torch cross-channel LRN of contiguous NC... ``x`` into ``out`` (may be ``x``); ``size <= 63``."""
    n, c = x.shape[:2]
    plane = x.size // (n * c) if x.size else 1
    _launch(
        "alexdsl_lrn", x.dtype, n * plane,
        x, out, numpy.int64(n * plane), _i32(c), numpy.int64(plane), _i32(size),
        numpy.float64(alpha / size), numpy.float64(beta), numpy.float64(k),
    )  # fmt: skip
    return out


def pool2d(kind: str, plan: PoolPlan, x: Array, out: Array, inv_divisor: Array | None = None) -> Array:
    """Max (``kind="max"``) or average pooling of contiguous NCHW ``x`` in one pass.

    Average pooling multiplies by ``inv_divisor``, the ``(OH, OW)`` table of
    ``1 / plan.divisor(...)`` in ``x``'s dtype.
    """
    (kh, kw), (sh, sw), (ph, pw) = plan.kernel, plan.stride, plan.pad
    _launch(
        f"alexdsl_{kind}_pool2d", x.dtype, out.size,
        x, out, inv_divisor, numpy.int64(out.size),
        *map(_i32, (plan.height, plan.width, plan.out_h, plan.out_w, kh, kw, sh, sw, ph, pw)),
    )  # fmt: skip
    return out


DEPTHWISE_CONV2D = r"""
extern "C" __global__ void alexdsl_depthwise_conv2d(
        const {T}* __restrict__ x, const {T}* __restrict__ weight, const {T}* __restrict__ bias,
        {T}* __restrict__ out, long long total, int c, int h, int w, int multiplier, int oh, int ow,
        int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int relu) {
    // out (n, c * multiplier, oh, ow): output channel o reads input channel o / multiplier with
    // its own (kh, kw) taps; taps outside the input are skipped (= zero padding)
    const int channels = c * multiplier;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
            i += (long long)blockDim.x * gridDim.x) {
        const int ox = i % ow;
        const int oy = (i / ow) % oh;
        const long long plane = i / ((long long)oh * ow);
        const int o = plane % channels;
        const {T}* src = x + ((plane / channels) * c + o / multiplier) * (long long)h * w;
        const {T}* taps = weight + (long long)o * kh * kw;
        {T} acc = ({T})0;
        for (int ky = 0; ky < kh; ++ky) {
            const int iy = oy * sh - ph + ky * dh;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < kw; ++kx) {
                const int ix = ox * sw - pw + kx * dw;
                if (ix >= 0 && ix < w) acc += taps[ky * kw + kx] * src[(long long)iy * w + ix];
            }
        }
        if (bias != nullptr) acc += bias[o];
        if (relu && acc < ({T})0) acc = ({T})0;
        out[i] = acc;
    }
}
"""

SOURCES["alexdsl_depthwise_conv2d"] = DEPTHWISE_CONV2D


def depthwise_conv2d(plan: ConvPlan, x: Array, weight: Array, bias: Array | None, relu: bool, out: Array) -> Array:
    """Depthwise conv (``plan.groups == C``) of contiguous NCHW ``x`` into ``out``, bias and ReLU fused.

    One thread per output element loops over the taps; ``weight`` is ``(C * multiplier, 1, kh, kw)``.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = plan.kernel, plan.stride, plan.pad, plan.dilation
    c = plan.in_channels
    _launch(
        "alexdsl_depthwise_conv2d", x.dtype, out.size,
        x, weight, bias, out, numpy.int64(out.size),
        *map(_i32, (c, plan.height, plan.width, plan.out_channels // c, plan.out_h, plan.out_w)),
        *map(_i32, (kh, kw, sh, sw, ph, pw, dh, dw)), _i32(relu),
    )  # fmt: skip
    return out
