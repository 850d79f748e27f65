"""Optional GPU-only fused kernels (CuPy ``ElementwiseKernel``), each replacing a few xp passes.

They are off by default: the portable kernels of :mod:`alexdsl.backends.cupy.runtime`
run on CuPy as they are.  Set ``ALEXDSL_CUDA_KERNELS=1`` to use these where they apply;
each has a GPU test against the xp reference (tests/test_kernels.py, marked ``gpu``).

* :func:`bias_relu_` -- the GEMM epilogue (bias add + ReLU) in one pass instead of two.
* :func:`lrn` -- cross-channel LRN in one pass (window sum, power and divide fused)
  instead of about ten elementwise kernels and two temporaries.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from alexdsl.backends.cupy import runtime as rt

Array = Any


def enabled() -> bool:
    """True when CuPy is importable and ``ALEXDSL_CUDA_KERNELS=1``."""
    return rt._cupy is not None and os.environ.get("ALEXDSL_CUDA_KERNELS", "") == "1"


@cache
def _bias_relu_kernel() -> Any:
    return rt._cupy.ElementwiseKernel(
        "T b, bool relu",
        "T y",
        "T v = y + b; y = (relu && v < (T)0) ? (T)0 : v;",
        "alexdsl_bias_relu",
    )


@cache
def _lrn_kernel() -> Any:
    return rt._cupy.ElementwiseKernel(
        "raw T x, int32 channels, int32 plane, int32 size, float64 scale, float64 beta, float64 k",
        "T y",
        """
        const int per_image = channels * plane;
        const int n = i / per_image;
        const int c = (i % per_image) / plane;
        const int p = i % plane;
        const int lo = max(c - size / 2, 0);
        const int hi = min(c + (size - 1) / 2, channels - 1);
        double acc = 0.0;
        for (int j = lo; j <= hi; ++j) {
            const double v = (double)x[(n * channels + j) * plane + p];
            acc += v * v;
        }
        y = (T)((double)x[i] / pow(k + scale * acc, beta));
        """,
        "alexdsl_lrn",
    )


def bias_relu_(y: Array, bias: Array | None, relu: bool) -> Array:
    """In place on CuPy ``y`` (N, C, ...): ``y = relu(y + bias)`` in one kernel."""
    cp = rt._cupy
    b = cp.zeros(y.shape[1], dtype=y.dtype) if bias is None else bias
    _bias_relu_kernel()(b.reshape((1, -1) + (1,) * (y.ndim - 2)), relu, y)
    return y


def lrn(x: Array, size: int, alpha: float, beta: float, k: float, out: Array | None = None) -> Array:
    """Caffe/torch cross-channel LRN on a contiguous CuPy NCHW array, one kernel."""
    cp = rt._cupy
    x = cp.ascontiguousarray(x)
    if out is None:
        out = cp.empty_like(x)
    plane = x.shape[2] * x.shape[3] if x.ndim == 4 else 1
    if out is x:  # the kernel reads neighbours: never in place
        tmp = cp.empty_like(x)
        _lrn_kernel()(x, x.shape[1], plane, size, alpha / size, beta, k, tmp)
        out[...] = tmp
        return out
    _lrn_kernel()(x, x.shape[1], plane, size, alpha / size, beta, k, out)
    return out
