"""Inference kernels written once against an array module ``xp`` (NumPy or CuPy).

Every function takes and returns NCHW arrays of the caller's library; nothing here
imports CuPy unless it is installed.  Kernels that the executor calls in its hot loop
accept ``out=`` (and, for convolution, a :class:`ConvPlan`) so that a compiled
network can run its forward pass without allocating.

>>> import numpy as np
>>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
>>> max_pool2d(x, (2, 2), (2, 2), (0, 0)).tolist()
[[[[5.0, 7.0], [13.0, 15.0]]]]
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy

from alexdsl.shape_math import conv_output_size, pool_output_size

Array = Any  # numpy.ndarray or cupy.ndarray
Activation = Callable[..., Array]  # an elementwise kernel f(x, *, out=None); out=x runs it in place

try:  # pragma: no cover - exercised only where CuPy is installed
    import cupy as _cupy
except Exception:  # noqa: BLE001 - ImportError, or a CUDA runtime that fails to load
    _cupy = None

__all__ = [
    "ConvPlan",
    "PoolPlan",
    "activate",
    "adaptive_avg_pool2d",
    "adaptive_matrices",
    "add",
    "array_module",
    "avg_pool2d",
    "batch_norm_inference",
    "batchnorm_affine",
    "bias_relu_",
    "channel_affine",
    "channel_shuffle",
    "concat",
    "conv2d",
    "dropout",
    "elu",
    "fold_affine",
    "fold_batchnorm",
    "gelu",
    "global_avg_pool2d",
    "group_norm",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "layer_norm",
    "leaky_relu",
    "linear",
    "lrn",
    "max_pool2d",
    "mish",
    "multiply",
    "op_function",
    "prelu",
    "pretranspose",
    "relu",
    "relu6",
    "scratch_rows",
    "sigmoid",
    "silu",
    "softmax",
    "softmax_cross_entropy",
    "softplus",
    "subtract",
    "tanh",
    "topk_accuracy",
]


def array_module(x: Array = None) -> ModuleType:
    """The array library that owns ``x``: ``cupy`` for CuPy arrays, else ``numpy``."""
    if _cupy is not None and x is not None:
        return _cupy.get_array_module(x)
    return numpy


# ---------------------------------------------------------------------------------- CPU threads
#
# On NumPy the GEMMs already use every core (BLAS threads), but copies and elementwise
# passes (im2col, pooling, LRN, the bias+ReLU epilogue) run on one.  Those release the
# GIL, so the executor splits them over the batch (or channels) across a small thread
# pool.  ALEXDSL_NUM_THREADS=1 turns this off.

_POOL: ThreadPoolExecutor | None = None
PARALLEL_MIN_ELEMENTS = 1 << 18


def num_threads() -> int:
    """Threads for the memory-bound NumPy passes (env ALEXDSL_NUM_THREADS, else the CPU count)."""
    env = os.environ.get("ALEXDSL_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def parallel_for(xp: ModuleType, total: int, work: int, fn: Callable[[int, int], None]) -> None:
    """Run ``fn(lo, hi)`` over ``range(total)`` in chunks on the thread pool (NumPy only).

    Falls back to one call when on CuPy, when ``work`` (elements touched) is small, or
    when there is one thread.
    """
    global _POOL
    threads = min(num_threads(), total)
    if xp is not numpy or threads <= 1 or work < PARALLEL_MIN_ELEMENTS:
        fn(0, total)
        return
    if _POOL is None or _POOL._max_workers < threads:
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="alexdsl")
    bounds = [total * i // threads for i in range(threads + 1)]
    futures = [_POOL.submit(fn, lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]
    for future in futures:
        future.result()


SCRATCH_CAP_BYTES = {"numpy": 32 << 20, "cupy": 1 << 30}


def scratch_rows(library: str, batch: int, per_image: int, itemsize: int = 4) -> int:
    """Images whose im2col columns the shared scratch holds at once (``library``: numpy or cupy).

    Enough for every thread (NumPy) and otherwise as many as fit in a cap (32 MiB on
    NumPy, 1 GiB on CuPy); convs run larger batches in chunks of this size.

    >>> scratch_rows("cupy", 256, 1_936_224)  # AlexNet's conv2: 7.4 MiB an image
    138
    """
    if per_image <= 0:
        return 0
    cap = SCRATCH_CAP_BYTES.get(library, SCRATCH_CAP_BYTES["cupy"])
    fit = max(1, cap // (per_image * itemsize))
    if library == "numpy":
        fit = max(fit, num_threads())
    return min(batch, fit)


GEMM_LAYOUTS = ("batched", "wide")


def gemm_layout(xp: ModuleType) -> str:
    """The convolution GEMM layout (see :func:`conv2d`) for library ``xp``.

    ``ALEXDSL_GEMM=batched|wide`` when set, else ``"wide"`` on CuPy and ``"batched"`` on NumPy.
    """
    env = os.environ.get("ALEXDSL_GEMM", "")
    if env in GEMM_LAYOUTS:
        return env
    return "batched" if xp is numpy else "wide"


def _fused_kernels(xp: ModuleType, *arrays: Array | None) -> ModuleType | None:
    """The optional fused CUDA kernels (:mod:`.cuda`) when switched on and fit for ``arrays``."""
    if xp is numpy or os.environ.get("ALEXDSL_CUDA_KERNELS", "") != "1":
        return None
    from alexdsl.backends.cupy import cuda

    return cuda if cuda.supports(*arrays) else None


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def _as_strided(xp: ModuleType, x: Array, shape: tuple[int, ...], strides: tuple[int, ...]) -> Array:
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


# --------------------------------------------------------------------------- convolution


@dataclass
class ConvPlan:
    """Everything about one convolution layer that does not depend on the data.

    Built once per layer at compile time: output size (from :mod:`alexdsl.shape_math`),
    the im2col strategy, and workspaces for the last (library, batch, dtype) seen (the
    zero-bordered padded input and, unless the caller passes shared scratch, the column
    matrix) plus, for ``method="gather"``, the flat index
    table that turns the padded image into columns with one ``take``.

    ``method`` is ``"strided"`` (a strided view copied into the column buffer; works on
    NumPy and CuPy) or ``"gather"`` (an index table; one gather kernel).  A plan is not
    thread-safe: it reuses its workspaces.
    """

    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    method: str = "strided"
    out_h: int = field(init=False)
    out_w: int = field(init=False)
    _work: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.kernel, self.stride = _pair(self.kernel), _pair(self.stride)
        self.pad, self.dilation = _pair(self.pad), _pair(self.dilation)
        if self.method not in ("strided", "gather"):
            raise ValueError(f"unknown im2col method {self.method!r}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels={self.in_channels} and out_channels={self.out_channels}"
            )
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.pad, self.dilation
        self.out_h = conv_output_size(self.height, kh, sh, ph, dh)
        self.out_w = conv_output_size(self.width, kw, sw, pw, dw)
        if self.out_h < 1 or self.out_w < 1:
            raise ValueError(f"convolution output would be {self.out_h}x{self.out_w}")

    @property
    def is_pointwise(self) -> bool:
        """1x1 kernel without padding: the convolution is a plain matmul (no im2col)."""
        return self.kernel == (1, 1) and self.pad == (0, 0)

    @property
    def is_depthwise(self) -> bool:
        """One group per input channel (groups == in_channels > 1): a direct kernel, no im2col (:mod:`.depthwise`)."""
        return self.groups == self.in_channels > 1

    @property
    def k_size(self) -> int:
        """Rows of the column matrix: in_channels * kh * kw."""
        return self.in_channels * self.kernel[0] * self.kernel[1]

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.out_channels, self.out_h, self.out_w)

    def workspace_bytes(self, batch: int, itemsize: int = 4) -> int:
        """Bytes of scratch (padded input + columns) this layer needs at ``batch``."""
        if self.is_pointwise:
            if self.stride == (1, 1):
                return 0
            return batch * self.in_channels * self.out_h * self.out_w * itemsize
        hp, wp = self.height + 2 * self.pad[0], self.width + 2 * self.pad[1]
        padded = batch * self.in_channels * hp * wp if self.pad != (0, 0) else 0
        cols = batch * self.k_size * self.out_h * self.out_w
        return (padded + cols) * itemsize

    def _workspace(self, xp: ModuleType, batch: int, dtype: Any) -> tuple[Array | None, Array | None]:
        """The zero-bordered padded input (first ``batch`` images) and the gather table.

        The padded buffer only grows (its border is never written, so it stays zero), so
        batch chunks of different sizes share it without reallocating.
        """
        key = (xp.__name__, numpy.dtype(dtype).str)
        if self._work.get("key") != key:
            self._work.clear()
            index = xp.asarray(self._index_table()) if self.method == "gather" else None
            self._work.update(key=key, padded=None, index=index, cols=None)
        ph, pw = self.pad
        padded = self._work["padded"]
        if (ph, pw) != (0, 0) and (padded is None or padded.shape[0] < batch):
            shape = (batch, self.in_channels, self.height + 2 * ph, self.width + 2 * pw)
            padded = self._work["padded"] = None  # free the old one first
            padded = self._work["padded"] = xp.zeros(shape, dtype=dtype)
        return (padded[:batch] if padded is not None else None), self._work["index"]

    def _own_cols(self, xp: ModuleType, batch: int, dtype: Any) -> Array:
        cols = self._work.get("cols")
        if cols is None or cols.shape[0] < batch:
            self._work["cols"] = None
            cols = self._work["cols"] = xp.empty((batch, self.k_size, self.out_h * self.out_w), dtype=dtype)
        return cols[:batch]

    def _own_wide(self, xp: ModuleType, batch: int, dtype: Any) -> Array:
        self._workspace(xp, batch, dtype)  # drops buffers of another library or dtype
        wide = self._work.get("wide")
        if wide is None or wide.size < self.wide_size(batch):
            self._work["wide"] = None
            wide = self._work["wide"] = xp.empty(self.wide_size(batch), dtype=dtype)
        return wide

    def _index_table(self) -> numpy.ndarray:
        """Flat indices (K, OH*OW) into one padded image of shape (C, Hp, Wp)."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.pad, self.dilation
        hp, wp = self.height + 2 * ph, self.width + 2 * pw
        c = numpy.arange(self.in_channels).reshape(-1, 1, 1, 1, 1)
        i = numpy.arange(kh).reshape(1, -1, 1, 1, 1) * dh
        j = numpy.arange(kw).reshape(1, 1, -1, 1, 1) * dw
        oh = numpy.arange(self.out_h).reshape(1, 1, 1, -1, 1) * sh
        ow = numpy.arange(self.out_w).reshape(1, 1, 1, 1, -1) * sw
        flat = c * (hp * wp) + (i + oh) * wp + (j + ow)
        return flat.reshape(self.k_size, self.out_h * self.out_w).astype(numpy.intp)

    def cols_size(self, batch: int = 1) -> int:
        """Elements of the column matrix at ``batch`` (0 for the 1x1 fast path)."""
        return 0 if self.is_pointwise else batch * self.k_size * self.out_h * self.out_w

    def wide_size(self, batch: int = 1) -> int:
        """Scratch elements of the channel-major path (:func:`conv2d` with ``gemm="wide"``) at ``batch``.

        The columns ``(K, N*OH*OW)`` plus the GEMM's ``(O, N*OH*OW)`` result, which the
        epilogue transposes into NCHW.
        """
        return batch * (self.k_size + self.out_channels) * self.out_h * self.out_w

    def im2col(self, x: Array, scratch: Array | None = None) -> Array:
        """Columns (N, C*kh*kw, OH*OW) of ``x``.

        Written into ``scratch`` (any 1-D array of at least :meth:`cols_size` elements,
        e.g. one buffer shared by every conv of a network) or the plan's own workspace.
        """
        xp = array_module(x)
        n = x.shape[0]
        padded, index = self._workspace(xp, n, x.dtype)
        if scratch is not None:
            cols = scratch[: self.cols_size(n)].reshape(n, self.k_size, self.out_h * self.out_w)
        else:
            cols = self._own_cols(xp, n, x.dtype)
        ph, pw = self.pad
        src = padded if padded is not None else xp.ascontiguousarray(x)
        if index is not None:
            if padded is not None:
                padded[:, :, ph : ph + self.height, pw : pw + self.width] = x
            xp.take(src.reshape(n, -1), index, axis=1, out=cols)
            return cols
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        c, oh, ow = self.in_channels, self.out_h, self.out_w
        s_n, s_c, s_h, s_w = src.strides
        cols6 = cols.reshape(n, c, kh, kw, oh, ow)
        by_batch = n > 1

        def chunk(lo: int, hi: int) -> None:
            part = (slice(lo, hi), slice(None)) if by_batch else (slice(None), slice(lo, hi))
            if padded is not None:
                padded[part + (slice(ph, ph + self.height), slice(pw, pw + self.width))] = x[part]
            block = src[part]
            view = _as_strided(
                xp, block, block.shape[:2] + (kh, kw, oh, ow), (s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw)
            )
            cols6[part] = view

        parallel_for(xp, n if by_batch else c, cols.size, chunk)
        return cols

    def im2col_wide(self, x: Array, scratch: Array) -> Array:
        """Channel-major columns ``(C*kh*kw, N*OH*OW)`` of ``x``, written into 1-D ``scratch``.

        Row ``(c, i, j)`` holds tap ``(i, j)`` of channel ``c`` for every output pixel of
        every image, so one 2-D GEMM per group covers the whole batch.  A single image
        with a 1x1 stride-1 kernel needs no copy: its columns are ``x`` itself.  Always a
        strided view copy (``method`` applies to :meth:`im2col`), or the fused CUDA kernel.
        """
        xp = array_module(x)
        n = x.shape[0]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        c, oh, ow = self.in_channels, self.out_h, self.out_w
        rows = self.k_size, n * oh * ow
        if self.is_pointwise:
            src = x if self.stride == (1, 1) else x[:, :, ::sh, ::sw]
            if n == 1 and self.stride == (1, 1):
                return xp.ascontiguousarray(x).reshape(rows)
            cols = scratch[: math.prod(rows)]
            cols.reshape(c, n, oh, ow)[...] = src.transpose(1, 0, 2, 3)
            return cols.reshape(rows)
        cols = scratch[: math.prod(rows)]
        fused = _fused_kernels(xp, x, cols)
        if fused is not None:  # one pass from the unpadded input
            return fused.im2col_wide(self, x, cols).reshape(rows)
        padded, _ = self._workspace(xp, n, x.dtype)
        ph, pw = self.pad
        if padded is not None:
            padded[:, :, ph : ph + self.height, pw : pw + self.width] = x
            src = padded
        else:
            src = xp.ascontiguousarray(x)
        s_n, s_c, s_h, s_w = src.strides
        view = _as_strided(xp, src, (c, kh, kw, n, oh, ow), (s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw))
        cols.reshape(c, kh, kw, n, oh, ow)[...] = view
        return cols.reshape(rows)


def bias_relu_(y: Array, bias: Array | None, relu: bool) -> Array:
    """GEMM epilogue, in place on ``y`` (N, C, ...): add per-channel ``bias``, then ReLU."""
    xp = array_module(y)
    if bias is None and not relu:
        return y
    fused = _fused_kernels(xp, y, bias)
    if fused is not None:
        return fused.bias_relu_(y, bias, relu)
    b = None if bias is None else bias.reshape((1, -1) + (1,) * (y.ndim - 2))

    def chunk(lo: int, hi: int) -> None:
        part = y[lo:hi]
        if b is not None:
            part += b
        if relu:
            xp.maximum(part, 0, out=part)

    parallel_for(xp, y.shape[0], y.size, chunk)
    return y


def conv2d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: tuple[int, int] = (1, 1),
    pad: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
    *,
    relu: bool = False,
    act: Activation | None = None,
    plan: ConvPlan | None = None,
    scratch: Array | None = None,
    out: Array | None = None,
    gemm: str = "auto",
) -> Array:
    """2-D convolution (cross-correlation, like torch) by im2col + GEMM.

    ``weight`` is (O, C/groups, kh, kw) and is only reshaped (a view), never copied.
    ``relu=True`` fuses bias + ReLU into the GEMM epilogue in place; ``act`` is any other
    elementwise activation (``alexdsl.ops.activation.EPILOGUES``), applied in place after the bias.  ``scratch`` is an
    optional 1-D buffer for the columns (see :meth:`ConvPlan.cols_size` and
    :meth:`ConvPlan.wide_size`); a batch larger than it runs in chunks.

    ``gemm`` picks the GEMM layout (``"auto"``: :func:`gemm_layout`, i.e. ``"wide"`` on CuPy
    and ``"batched"`` on NumPy unless ``ALEXDSL_GEMM`` says otherwise):

    * ``"batched"``: ``W (g, O/g, K/g) @ cols (N, g, K/g, OH*OW)``, which lands directly in
      NCHW.  1x1 unpadded kernels skip im2col.  On NumPy a batch runs image by image
      on every core (see :func:`_conv2d_image_threads`).
    * ``"wide"``: channel-major columns ``(K, N*OH*OW)`` and one plain 2-D GEMM per group
      for the whole batch (:func:`_conv2d_wide`).  On CuPy that is cuBLAS ``gemmEx``,
      which honours ``CUPY_TF32=1``; a broadcast batched matmul would not.
    """
    if act is not None:
        y = conv2d(x, weight, bias, stride, pad, dilation, groups, relu=relu, plan=plan, scratch=scratch, out=out,
                   gemm=gemm)
        return activate(y, act)
    xp = array_module(x)
    n, c, h, w = x.shape
    o = weight.shape[0]
    if plan is None:
        plan = ConvPlan(c, h, w, o, weight.shape[2:], stride, pad, dilation, groups)
    elif (c, h, w) != (plan.in_channels, plan.height, plan.width):
        raise ValueError(f"ConvPlan built for {(plan.in_channels, plan.height, plan.width)}, got {(c, h, w)}")
    if gemm == "auto":
        gemm = gemm_layout(xp)
    elif gemm not in GEMM_LAYOUTS:
        raise ValueError(f"unknown gemm layout {gemm!r}: expected 'auto', 'batched' or 'wide'")
    g = plan.groups
    oh, ow = plan.out_h, plan.out_w
    if out is None:
        out = xp.empty((n, o, oh, ow), dtype=x.dtype)
    if plan.is_depthwise:
        from alexdsl.backends.cupy.depthwise import depthwise_conv2d

        return depthwise_conv2d(x, weight, bias, relu=relu, plan=plan, out=out)
    if gemm == "wide":
        return _conv2d_wide(x, weight, bias, relu, plan, scratch, out)
    if plan.is_pointwise:
        src = x if plan.stride == (1, 1) else x[:, :, :: plan.stride[0], :: plan.stride[1]]
        cols = xp.ascontiguousarray(src).reshape(n, c, oh * ow)
    elif plan.method == "strided" and _use_image_threads(xp, n):
        return _conv2d_image_threads(x, weight, bias, relu, plan, scratch, out)
    else:
        rows = n if scratch is None else scratch.size // plan.cols_size(1)
        if rows < 1:
            raise ValueError(f"scratch of {scratch.size} elements is smaller than one image's columns")
        if rows < n:  # the shared scratch holds `rows` images' columns: run the batch in chunks
            for i in range(0, n, rows):
                conv2d(x[i : i + rows], weight, bias, relu=relu, plan=plan, scratch=scratch, out=out[i : i + rows])
            return out
        cols = plan.im2col(x, scratch)
    k = cols.shape[1]
    if g == 1:
        xp.matmul(weight.reshape(o, k), cols, out=out.reshape(n, o, oh * ow))
    else:
        xp.matmul(
            weight.reshape(g, o // g, k // g),
            cols.reshape(n, g, k // g, oh * ow),
            out=out.reshape(n, g, o // g, oh * ow),
        )
    return bias_relu_(out, bias, relu)


def _conv2d_wide(
    x: Array, weight: Array, bias: Array | None, relu: bool, plan: ConvPlan, scratch: Array | None, out: Array
) -> Array:
    """Channel-major convolution: per group one 2-D GEMM ``W_g (O/g, K/g) @ cols_g (K/g, N*OH*OW)``.

    For one image the GEMM writes NCHW directly.  For a batch it lands in ``(O, N,
    OH*OW)`` scratch, and the epilogue transposes it into ``out`` while adding the bias
    (the same single pass that would add the bias anyway), then applies the ReLU.
    """
    n = x.shape[0]
    per_image = plan.wide_size(1)
    if scratch is None:
        scratch = plan._own_wide(array_module(x), n, x.dtype)
    rows = scratch.size // per_image
    if rows < 1:
        raise ValueError(f"scratch of {scratch.size} elements is smaller than one image's {per_image}")
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        _conv2d_wide_chunk(x[lo:hi], weight, bias, relu, plan, scratch, out[lo:hi])
    return out


def _conv2d_wide_chunk(
    x: Array, weight: Array, bias: Array | None, relu: bool, plan: ConvPlan, scratch: Array, out: Array
) -> None:
    xp = array_module(x)
    n = x.shape[0]
    o, k, g = plan.out_channels, plan.k_size, plan.groups
    og, kg = o // g, k // g
    hw = plan.out_h * plan.out_w
    cols = plan.im2col_wide(x, scratch)
    start = k * n * hw  # the GEMM result follows the columns in scratch
    result = out.reshape(o, hw) if n == 1 else scratch[start : start + o * n * hw].reshape(o, n * hw)
    w3 = weight.reshape(g, og, kg)
    for i in range(g):
        xp.matmul(w3[i], cols[i * kg : (i + 1) * kg], out=result[i * og : (i + 1) * og])
    if n == 1:
        bias_relu_(out, bias, relu)
    else:
        transpose_bias_relu(result.reshape(o, n, hw), bias, relu, out.reshape(n, o, hw))


def transpose_bias_relu(src: Array, bias: Array | None, relu: bool, out: Array) -> Array:
    """``out (N, C, P) = relu(src (C, N, P) transposed + bias)``: the wide GEMM's epilogue."""
    xp = array_module(src)
    fused = _fused_kernels(xp, src, bias, out)
    if fused is not None:
        return fused.transpose_bias_relu(src, bias, relu, out)
    view = src.transpose(1, 0, 2)
    if bias is None:
        out[...] = view
    else:
        xp.add(view, bias.reshape(1, -1, 1), out=out)
    if relu:
        xp.maximum(out, 0, out=out)
    return out


_BLAS_CONTROLLER: Any = None


def _blas_one_thread() -> Any:
    """A context manager pinning BLAS to one thread (threadpoolctl), or None if unavailable."""
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROLLER = ThreadpoolController()
        except ImportError:
            _BLAS_CONTROLLER = False
    if _BLAS_CONTROLLER is False:
        return None
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


def _use_image_threads(xp: ModuleType, n: int) -> bool:
    return xp is numpy and n > 1 and num_threads() > 1 and _blas_one_thread() is not None


def _conv2d_image_threads(
    x: Array, weight: Array, bias: Array | None, relu: bool, plan: ConvPlan, scratch: Array | None, out: Array
) -> Array:
    """NumPy path for batches: each thread runs im2col + a one-thread GEMM + the epilogue per image.

    The image's columns are still in cache when the GEMM reads them, and the copies run
    on every core instead of one; about 15% faster than one batched multi-thread GEMM
    on a 2-core machine.  Needs threadpoolctl (to pin BLAS to one thread meanwhile).
    """
    n = x.shape[0]
    g, o = plan.groups, plan.out_channels
    k, hw = plan.k_size, plan.out_h * plan.out_w
    threads = min(num_threads(), n)
    per = plan.cols_size(1)
    if scratch is None or scratch.size < threads * per:
        scratch = plan._own_cols(numpy, n, x.dtype).reshape(-1)
    padded, _ = plan._workspace(numpy, threads, x.dtype)  # one padded image per thread
    w3 = weight.reshape(g, o // g, k // g)
    b = None if bias is None else bias.reshape(o, 1)
    (kh, kw), (sh, sw), (dh, dw) = plan.kernel, plan.stride, plan.dilation
    ph, pw = plan.pad
    c, oh, ow = plan.in_channels, plan.out_h, plan.out_w

    def chunk(t: int, lo: int, hi: int) -> None:
        cols = scratch[t * per : (t + 1) * per]
        for i in range(lo, hi):
            if plan.is_pointwise:
                src = x[i] if plan.stride == (1, 1) else x[i, :, ::sh, ::sw]
                image_cols = numpy.ascontiguousarray(src).reshape(k, hw)
            else:
                if padded is not None:
                    padded[t, :, ph : ph + plan.height, pw : pw + plan.width] = x[i]
                    src = padded[t]
                else:
                    src = numpy.ascontiguousarray(x[i])
                s_c, s_h, s_w = src.strides
                view = _as_strided(numpy, src, (c, kh, kw, oh, ow), (s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw))
                cols.reshape(c, kh, kw, oh, ow)[...] = view
                image_cols = cols.reshape(k, hw)
            y = out[i].reshape(o, hw)
            numpy.matmul(w3, image_cols.reshape(g, k // g, hw), out=y.reshape(g, o // g, hw))
            if b is not None:
                y += b
            if relu:
                numpy.maximum(y, 0, out=y)

    global _POOL
    if _POOL is None or _POOL._max_workers < threads:
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="alexdsl")
    bounds = [n * t // threads for t in range(threads + 1)]
    with _blas_one_thread():
        futures = [_POOL.submit(chunk, t, bounds[t], bounds[t + 1]) for t in range(threads)]
        for future in futures:
            future.result()
    return out


def fold_batchnorm(
    weight: Array,
    bias: Array | None,
    mean: Array,
    var: Array,
    gamma: Array | None,
    beta: Array | None,
    eps: float = 1e-5,
) -> tuple[Array, Array]:
    """Fold an inference batchnorm into the preceding conv/fc: returns new (weight, bias).

    ``bn(conv(x)) = conv'(x)`` with ``W' = W * s`` and ``b' = (b - mean) * s + beta``
    where ``s = gamma / sqrt(var + eps)``, per output channel.
    """
    xp = array_module(weight)
    scale = 1.0 / xp.sqrt(var.astype(xp.float64) + eps)
    if gamma is not None:
        scale = scale * gamma
    b = bias if bias is not None else xp.zeros(weight.shape[0], dtype=weight.dtype)
    shift = (b - mean) * scale
    if beta is not None:
        shift = shift + beta
    new_w = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return new_w.astype(weight.dtype), shift.astype(weight.dtype)


# --------------------------------------------------------------------------- pooling


@dataclass
class PoolPlan:
    """Output size, padding geometry and (for average pooling) the divisor table.

    With ceil rounding the padded extent is grown on the right so the last window fits
    (filled with ``-inf`` for max, ``0`` for average); with floor rounding pixels no
    window reaches are cropped.
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
        self.kernel, self.stride, self.pad = _pair(self.kernel), _pair(self.stride), _pair(self.pad)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        self.out_h = pool_output_size(self.height, kh, sh, ph, self.ceil_mode)
        self.out_w = pool_output_size(self.width, kw, sw, pw, self.ceil_mode)
        if self.out_h < 1 or self.out_w < 1:
            raise ValueError(f"pooling output would be {self.out_h}x{self.out_w}")

    @property
    def extent(self) -> tuple[int, int]:
        """Padded height/width the windows span: (out-1)*stride + kernel."""
        return (
            (self.out_h - 1) * self.stride[0] + self.kernel[0],
            (self.out_w - 1) * self.stride[1] + self.kernel[1],
        )

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

    def padded(self, x: Array, fill: float) -> Array:
        """``x`` placed in a ``fill``-valued canvas of size :attr:`extent` at offset pad."""
        xp = array_module(x)
        n, c, h, w = x.shape
        eh, ew = self.extent
        ph, pw = self.pad
        if (ph, pw) == (0, 0) and eh <= h and ew <= w:
            return x
        canvas = xp.full((n, c, eh, ew), fill, dtype=x.dtype)
        hh, ww = min(h, eh - ph), min(w, ew - pw)
        canvas[:, :, ph : ph + hh, pw : pw + ww] = x[:, :, :hh, :ww]
        return canvas

    def window(self, src: Array, i: int, j: int) -> Array:
        """The (N, C, OH, OW) strided slice of kernel tap (i, j)."""
        sh, sw = self.stride
        return src[:, :, i : i + sh * (self.out_h - 1) + 1 : sh, j : j + sw * (self.out_w - 1) + 1 : sw]


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


def _combine_taps(
    xp: ModuleType, plan: PoolPlan, src: Array, out: Array, combine: Callable[[Array, Array], None]
) -> Array:
    """``out`` = tap (0, 0) of the padded ``src``, then ``combine(out, tap)`` in place for every other tap."""
    kh, kw = plan.kernel

    def chunk(lo: int, hi: int) -> None:
        part, block = out[lo:hi], src[lo:hi]
        part[...] = plan.window(block, 0, 0)
        for i in range(kh):
            for j in range(kw):
                if i or j:
                    combine(part, plan.window(block, i, j))

    parallel_for(xp, out.shape[0], src.size, chunk)
    return out


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
    fused = _fused_kernels(xp, x, out)
    if fused is not None:
        return fused.pool2d("max", plan, x, out)
    return _combine_taps(xp, plan, plan.padded(x, -numpy.inf), out, lambda part, tap: xp.maximum(part, tap, out=part))


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
    fused = _fused_kernels(xp, x, out, divisor)
    if fused is not None:
        return fused.pool2d("avg", plan, x, out, divisor)
    _combine_taps(xp, plan, plan.padded(x, 0.0), out, lambda part, tap: xp.add(part, tap, out=part))
    out *= divisor
    return out


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
    oh, ow = _pair(size)
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
    oh, ow = _pair(size)
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
    """Mean over H and W, keeping (N, C, 1, 1)."""
    return array_module(x).mean(x, axis=(2, 3), keepdims=True, out=out)


# --------------------------------------------------------------------------- normalization


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
    fused = _fused_kernels(xp, x, out)
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

    parallel_for(xp, x.shape[0], 4 * x.size, chunk)
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


def fold_affine(weight: Array, bias: Array | None, scale: Array, shift: Array | None) -> tuple[Array, Array]:
    """Fold a per-channel ``y * scale + shift`` into the conv/fc before it: returns new (weight, bias)."""
    xp = array_module(weight)
    scale = scale.reshape(-1)
    b = bias if bias is not None else xp.zeros(weight.shape[0], dtype=weight.dtype)
    new_b = b * scale + (shift.reshape(-1) if shift is not None else 0)
    new_w = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return new_w.astype(weight.dtype), new_b.astype(weight.dtype)


def batch_norm_inference(
    x: Array,
    mean: Array,
    var: Array,
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-5,
    *,
    out: Array | None = None,
) -> Array:
    """Batchnorm with running statistics: ``(x - mean) / sqrt(var + eps) * weight + bias``."""
    scale, shift = batchnorm_affine(mean, var, weight, bias, eps)
    return channel_affine(x, scale.astype(x.dtype), shift.astype(x.dtype), out=out)


def layer_norm(x: Array, weight: Array | None, bias: Array | None, eps: float = 1e-5, *,
               out: Array | None = None) -> Array:
    """Normalise every pixel over the channels (axis 1) with a per-channel scale and shift (LayerNorm2d)."""
    xp = array_module(x)
    mean = x.mean(axis=1, keepdims=True)
    centred = x - mean
    var = xp.mean(centred * centred, axis=1, keepdims=True)
    var += x.dtype.type(eps)
    xp.sqrt(var, out=var)
    out = xp.divide(centred, var, out=out)
    shape = (1, -1) + (1,) * (x.ndim - 2)
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
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if weight is not None:
        out *= weight.reshape(shape)
    if bias is not None:
        out += bias.reshape(shape)
    return out


def channel_shuffle(x: Array, groups: int, *, out: Array | None = None) -> Array:
    """ShuffleNet's channel shuffle: (N, g, C/g, ...) transposed to (N, C/g, g, ...)."""
    n, c = x.shape[:2]
    src = x.reshape(n, groups, c // groups, *x.shape[2:]).swapaxes(1, 2)
    if out is None:
        return array_module(x).ascontiguousarray(src).reshape(x.shape)
    out.reshape(n, c // groups, groups, *x.shape[2:])[...] = src
    return out


# --------------------------------------------------------------------------- dense + pointwise


def linear(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    *,
    relu: bool = False,
    act: Activation | None = None,
    transposed: bool = False,
    out: Array | None = None,
) -> Array:
    """Fully connected: ``x.reshape(N, -1) @ weight.T + bias``; optional fused ReLU or activation ``act``.

    ``weight`` is (O, K) like torch, or (K, O) with ``transposed=True`` (see
    :func:`pretranspose`: a plain NN GEMM, about 25% faster on OpenBLAS than NT).
    """
    xp = array_module(x)
    flat = x.reshape(x.shape[0], -1)
    w = weight if transposed else weight.T
    if out is None:
        out = xp.empty((x.shape[0], w.shape[1]), dtype=x.dtype)
    xp.matmul(flat, w, out=out)
    bias_relu_(out, bias, relu)
    return activate(out, act)


def pretranspose(weight: Array) -> Array:
    """A contiguous (K, O) copy of an fc weight (O, K), made once at compile time."""
    return array_module(weight).ascontiguousarray(weight.T)


def relu(x: Array, *, out: Array | None = None) -> Array:
    """max(x, 0); ``out=x`` runs in place."""
    return array_module(x).maximum(x, 0, out=out)


def leaky_relu(x: Array, slope: float = 0.01, *, out: Array | None = None) -> Array:
    """x if x > 0 else slope * x."""
    xp = array_module(x)
    y = xp.where(x > 0, x, x * x.dtype.type(slope))
    return y if out is None else _copy(y, out)


def _copy(value: Array, out: Array) -> Array:
    out[...] = value
    return out


def sigmoid(x: Array, *, out: Array | None = None) -> Array:
    """Logistic function, overflow-free: 0.5 * (tanh(x / 2) + 1)."""
    xp = array_module(x)
    y = xp.tanh(x * x.dtype.type(0.5), out=out)
    y += 1
    y *= 0.5
    return y


def tanh(x: Array, *, out: Array | None = None) -> Array:
    """Hyperbolic tangent."""
    return array_module(x).tanh(x, out=out)


def relu6(x: Array, *, out: Array | None = None) -> Array:
    """min(max(x, 0), 6)."""
    return array_module(x).clip(x, 0, 6, out=out)


def hardtanh(x: Array, low: float = -1.0, high: float = 1.0, *, out: Array | None = None) -> Array:
    """x clipped to [low, high]."""
    return array_module(x).clip(x, x.dtype.type(low), x.dtype.type(high), out=out)


def hardsigmoid(x: Array, *, out: Array | None = None) -> Array:
    """relu6(x + 3) / 6, as torch."""
    xp = array_module(x)
    out = xp.add(x, x.dtype.type(3), out=out)
    xp.clip(out, 0, 6, out=out)
    out /= x.dtype.type(6)
    return out


def hardswish(x: Array, *, out: Array | None = None) -> Array:
    """x * relu6(x + 3) / 6, as torch."""
    xp = array_module(x)
    gate = hardsigmoid(x)
    return xp.multiply(x, gate, out=out)


def silu(x: Array, *, out: Array | None = None) -> Array:
    """x * sigmoid(x) (swish)."""
    return array_module(x).multiply(x, sigmoid(x), out=out)


_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def erfc(x: Array) -> Array:
    """The complementary error function, to 1.2e-7 relative (Numerical Recipes' Chebyshev fit).

    Written against ``xp`` so it runs on NumPy (which has no erf) and CuPy alike.
    """
    xp = array_module(x)
    z = xp.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = x.dtype.type(0.17087277)
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368,
              -1.26551223):
        poly = poly * t + x.dtype.type(c)
    r = t * xp.exp(poly - z * z)
    return xp.where(x >= 0, r, 2 - r)


def gelu(x: Array, approximate: str = "none", *, out: Array | None = None) -> Array:
    """Gaussian error linear unit, as torch: x * Phi(x), or its tanh approximation."""
    xp = array_module(x)
    if approximate == "tanh":
        inner = x * x
        inner *= x.dtype.type(0.044715)
        inner += 1
        inner *= x
        inner *= x.dtype.type(_SQRT_2_OVER_PI)
        xp.tanh(inner, out=inner)
        inner += 1
        inner *= x.dtype.type(0.5)
        return xp.multiply(x, inner, out=out)
    half = erfc(x * x.dtype.type(-_SQRT_HALF))
    half *= x.dtype.type(0.5)
    return xp.multiply(x, half, out=out)


def elu(x: Array, alpha: float = 1.0, *, out: Array | None = None) -> Array:
    """x if x > 0 else alpha * (exp(x) - 1)."""
    xp = array_module(x)
    negative = xp.expm1(xp.minimum(x, 0))
    negative *= x.dtype.type(alpha)
    y = xp.where(x > 0, x, negative)
    return y if out is None else _copy(y, out)


def softplus(x: Array, beta: float = 1.0, threshold: float = 20.0, *, out: Array | None = None) -> Array:
    """log(1 + exp(beta * x)) / beta, and x where beta * x > threshold (torch's)."""
    xp = array_module(x)
    bx = x * x.dtype.type(beta)
    soft = xp.logaddexp(bx.dtype.type(0), bx)
    if beta != 1:
        soft /= x.dtype.type(beta)
    y = xp.where(bx > threshold, x, soft)
    return y if out is None else _copy(y, out)


def mish(x: Array, *, out: Array | None = None) -> Array:
    """x * tanh(softplus(x))."""
    xp = array_module(x)
    t = xp.tanh(softplus(x))
    return xp.multiply(x, t, out=out)


def prelu(x: Array, weight: Array, *, out: Array | None = None) -> Array:
    """x if x > 0 else weight * x, with one slope per channel (axis 1) or one shared."""
    xp = array_module(x)
    slope = weight.reshape((1, -1) + (1,) * (x.ndim - 2)) if weight.size > 1 else weight.reshape(())
    y = xp.where(x > 0, x, x * slope)
    return y if out is None else _copy(y, out)


def activate(y: Array, act: Activation | None) -> Array:
    """The epilogue activation ``act`` in place on ``y``, split over the batch on the thread pool (NumPy)."""
    if act is None:
        return y

    def chunk(lo: int, hi: int) -> None:
        part = y[lo:hi]
        act(part, out=part)

    parallel_for(array_module(y), y.shape[0], y.size, chunk)
    return y


def softmax(x: Array, axis: int = 1, *, out: Array | None = None) -> Array:
    """Numerically stable softmax along ``axis``."""
    xp = array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True), out=out)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def concat(inputs: list[Array] | tuple[Array, ...], *, out: Array | None = None) -> Array:
    """Concatenate along the channel axis (1)."""
    xp = array_module(inputs[0])
    if out is None:
        return xp.concatenate(list(inputs), axis=1)
    start = 0
    for part in inputs:
        out[:, start : start + part.shape[1]] = part
        start += part.shape[1]
    return out


def add(*inputs: Array, relu: bool = False, act: Activation | None = None, out: Array | None = None) -> Array:
    """Elementwise sum of any number of arrays (NumPy broadcasting); optional fused ReLU or ``act``."""
    if not inputs:
        raise ValueError("add needs at least one input")
    xp = array_module(inputs[0])
    if len(inputs) == 1:
        out = inputs[0].copy() if out is None else _copy(inputs[0], out)
    else:
        out = xp.add(inputs[0], inputs[1], out=out)
    for extra in inputs[2:]:
        out += extra
    if relu:
        xp.maximum(out, 0, out=out)
    return activate(out, act)


def multiply(*inputs: Array, act: Activation | None = None, out: Array | None = None) -> Array:
    """Elementwise product (NumPy broadcasting, no broadcast copy: squeeze-excitation's ``x * gate``)."""
    xp = array_module(inputs[0])
    out = xp.multiply(inputs[0], inputs[1], out=out)
    for extra in inputs[2:]:
        out *= extra
    return activate(out, act)


def subtract(a: Array, b: Array, *, act: Activation | None = None, out: Array | None = None) -> Array:
    """``a - b`` elementwise (NumPy broadcasting)."""
    out = array_module(a).subtract(a, b, out=out)
    return activate(out, act)


def op_function(name: str) -> Callable[..., Array]:
    """The xp function a registered op (a plugin's) declares for the executor."""
    from alexdsl.ops.registry import lookup

    op = lookup(name)
    function = op.lower.executor.function if op is not None and op.lower.executor is not None else None
    if function is None:
        raise ValueError(f"op {name!r} declares no executor function")
    return function


def dropout(x: Array, p: float = 0.5) -> Array:
    """Inference dropout is the identity (the executor drops the layer entirely)."""
    return x


# --------------------------------------------------------------------------- loss + metrics


def softmax_cross_entropy(logits: Array, labels: Array) -> float:
    """Mean cross-entropy of integer ``labels`` under ``softmax(logits)`` (float64 math)."""
    xp = array_module(logits)
    z = logits.reshape(logits.shape[0], -1).astype(xp.float64)
    z = z - z.max(axis=1, keepdims=True)
    logz = xp.log(xp.exp(z).sum(axis=1))
    idx = labels.reshape(-1).astype(xp.int64)
    picked = z[xp.arange(z.shape[0]), idx]
    return float((logz - picked).mean())


def topk_accuracy(logits: Array, labels: Array, k: int = 1) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits (ties: by index)."""
    xp = array_module(logits)
    z = logits.reshape(logits.shape[0], -1)
    idx = labels.reshape(-1).astype(xp.int64)
    target = z[xp.arange(z.shape[0]), idx][:, None]
    # rank = number of classes strictly better, plus equal ones with a smaller index
    cols = xp.arange(z.shape[1])[None, :]
    better = (z > target) | ((z == target) & (cols < idx[:, None]))
    return float((better.sum(axis=1) < k).mean())
