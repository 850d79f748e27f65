"""Convolution and fully connected kernels: im2col + GEMM in two layouts, and their epilogues.

>>> import numpy as np
>>> x = np.ones((1, 1, 3, 3), np.float32)
>>> conv2d(x, np.ones((1, 1, 2, 2), np.float32)).tolist()
[[[[4.0, 4.0], [4.0, 4.0]]]]
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import numpy

from alexdsl.backends.executor import cuda
from alexdsl.backends.executor.arrays import (
    GEMM_LAYOUTS,
    Activation,
    Array,
    array_module,
    as_pair,
    as_strided,
    blas_one_thread,
    can_pin_blas,
    gemm_layout,
    kernel,
    matmul,
    native_team,
    num_threads,
    numba_kernels,
    parallel_for,
    thread_pool,
)
from alexdsl.backends.executor.compiled import bias_activation_, gemm_bias_activation_
from alexdsl.backends.executor.elementwise import activate, add
from alexdsl.shape_math import conv_output_size


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
    _weights_of: ConvPlan | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.kernel, self.stride = as_pair(self.kernel), as_pair(self.stride)
        self.pad, self.dilation = as_pair(self.pad), as_pair(self.dilation)
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
    def is_winograd(self) -> bool:
        """3x3, stride 1, undilated, one group or groups of at least :data:`WINOGRAD_MIN_GROUP_CHANNELS` input and
        output channels (AlexNet's conv4 and conv5): Winograd F(2x2, 3x3) or F(4x4, 3x3) applies
        (:func:`_conv2d_winograd`)."""
        grouped = self.groups == 1 or min(self.in_channels, self.out_channels) // self.groups >= \
            WINOGRAD_MIN_GROUP_CHANNELS
        return self.kernel == (3, 3) and self.stride == (1, 1) and self.dilation == (1, 1) and grouped

    def winograd_grid(self, tile: int) -> tuple[int, int]:
        """``tile`` x ``tile`` output tiles down and across one image (the last ones cropped where they overhang)."""
        return -(-self.out_h // tile), -(-self.out_w // tile)

    def winograd_tile(self, batch: int) -> int | None:
        """The Winograd output tile this layer takes at ``batch`` (4, 2), or None where im2col's GEMM is as fast."""
        four, two = (batch * math.prod(self.winograd_grid(tile)) for tile in (4, 2))
        small = max(self.out_h, self.out_w) <= WINOGRAD4_MAX_SIZE
        if small and four >= WINOGRAD4_MIN_TILES and 36 * four <= WINOGRAD4_MAX_PRODUCTS * 16 * two:
            return 4
        return 2 if two >= WINOGRAD_MIN_TILES else None

    def winograd_weight(self, weight: Array, tile: int) -> Array:
        """``G g G^T`` of every (output, input) channel pair of ``weight``, as (alpha^2, O, C / groups), computed in
        float64.

        Computed on the first call with a weight array and kept for the next calls with the same
        array (the executor's weights, folded once at setup, are never written again); a new
        array, not one changed in place, makes a new transform.
        """
        if self._weights_of is not None:
            return self._weights_of.winograd_weight(weight, tile)
        cached = self._work.get(f"winograd{tile}")
        if cached is None or cached[0] is not weight:
            g = WINOGRAD_WEIGHT_TRANSFORMS[tile]
            u = numpy.einsum("ai,ocij,bj->aboc", g, weight.astype(numpy.float64), g)
            u = u.reshape(len(g) ** 2, self.out_channels, self.in_channels // self.groups).astype(weight.dtype)
            cached = self._work[f"winograd{tile}"] = (weight, numpy.ascontiguousarray(u))
        return cached[1]

    def for_thread(self) -> ConvPlan:
        """A copy with workspaces of its own, for another thread (a batch shard's); the weight transforms
        (:meth:`winograd_weight`) stay this plan's, computed once for both."""
        twin = replace(self)
        twin._weights_of = self._weights_of or self
        return twin

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
                kernel(xp.copyto, padded[part + (slice(ph, ph + self.height), slice(pw, pw + self.width))], x[part])
            block = src[part]
            view = as_strided(
                xp, block, block.shape[:2] + (kh, kw, oh, ow), (s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw)
            )
            kernel(xp.copyto, cols6[part], view)

        def on_team(team: ModuleType, bounds: numpy.ndarray) -> None:  # the team copies plane by plane
            if padded is not None:
                kernel(xp.copyto, padded[:, :, ph : ph + self.height, pw : pw + self.width], x)
            planes = bounds * c if by_batch else bounds  # bounds over images (or channels) -> over (N*C) planes
            team.im2col(src.reshape(n * c, *src.shape[2:]), cols.reshape(n * self.k_size, oh * ow), planes,
                        (kh, kw), (sh, sw), (dh, dw), ow)

        parallel_for(xp, n if by_batch else c, cols.size, chunk, on_team if src.dtype == numpy.float32 else None)
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
        fused = cuda.fused_kernels(xp, x, cols)
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
        view = as_strided(xp, src, (c, kh, kw, n, oh, ow), (s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw))
        cols.reshape(c, kh, kw, n, oh, ow)[...] = view
        return cols.reshape(rows)


def bias_relu_(
    y: Array, bias: Array | None, relu: bool, act: Activation | None = None, residual: Array | None = None
) -> Array:
    """GEMM epilogue, in place on ``y`` (N, C, ...): add per-channel ``bias``, then ``residual`` (a tensor of
    ``y``'s shape: the add after a conv, fused), then ReLU, then ``act``.

    On NumPy float32 with Numba, one compiled pass where ``act`` has a compiled epilogue form
    (:func:`.compiled.bias_activation_`); otherwise a pass each (ReLU6 after a bias: two, SiLU: five).
    """
    xp = array_module(y)
    if bias is None and not relu and residual is None:
        return activate(y, act)
    fused = cuda.fused_kernels(xp, y, bias) if residual is None else None
    if fused is not None:
        return activate(fused.bias_relu_(y, bias, relu), act)
    if bias_activation_(y, bias, relu, act, residual):
        return y
    b = None if bias is None else bias.reshape((1, -1) + (1,) * (y.ndim - 2))

    def chunk(lo: int, hi: int) -> None:
        part = y[lo:hi]
        if b is not None:
            part += b
        if residual is not None:
            part += residual[lo:hi]
        if relu:
            xp.maximum(part, 0, out=part)

    parallel_for(xp, y.shape[0], y.size, chunk)
    return activate(y, act)


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
    residual: Array | None = None,
    plan: ConvPlan | None = None,
    scratch: Array | None = None,
    out: Array | None = None,
    gemm: str = "auto",
) -> Array:
    """2-D convolution (cross-correlation, like torch) by im2col + GEMM.

    ``weight`` is (O, C/groups, kh, kw) and is only reshaped (a view), never copied.
    ``relu=True`` fuses bias + ReLU into the GEMM epilogue in place; ``act`` is any other
    elementwise activation (an op's declared ``epilogue``), applied in place after the bias (in the same
    pass where it has a compiled form: :func:`bias_relu_`).  ``residual``, a tensor of the output's shape
    (not ``out`` itself), is added after the bias and before the activation: an add after the conv, fused
    (ResNet's shortcut); the GEMM paths and Winograd add it in their epilogue pass, the others
    (depthwise, ``"wide"``, a batch on threads) in a pass of their own.  ``scratch`` is an
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
    xp = array_module(x)
    n, c, h, w = x.shape
    o = weight.shape[0]
    if plan is None:
        plan = ConvPlan(c, h, w, o, weight.shape[2:], stride, pad, dilation, groups)
    elif (c, h, w) != (plan.in_channels, plan.height, plan.width):
        raise ValueError(f"ConvPlan built for {(plan.in_channels, plan.height, plan.width)}, got {(c, h, w)}")
    if residual is not None and tuple(residual.shape) != (n, o, plan.out_h, plan.out_w):
        raise ValueError(f"conv2d's residual must have the output's shape {(n, o, plan.out_h, plan.out_w)}; "
                         f"received {tuple(residual.shape)}")
    compiled = numba_kernels(x.dtype) if gemm == "auto" and xp is numpy and plan.is_winograd else None
    tile = plan.winograd_tile(n) if compiled is not None else None
    if tile is not None:
        if out is None:
            out = xp.empty((n, o, plan.out_h, plan.out_w), dtype=x.dtype)
        return activate(_conv2d_winograd(compiled, x, weight, bias, relu, plan, out, tile, residual), act)
    if gemm == "auto":
        gemm = gemm_layout(xp)
    elif gemm not in GEMM_LAYOUTS:
        raise ValueError(f"unknown gemm layout {gemm!r}: expected 'auto', 'batched' or 'wide'")
    g = plan.groups
    oh, ow = plan.out_h, plan.out_w
    if out is None:
        out = xp.empty((n, o, oh, ow), dtype=x.dtype)
    if residual is not None and (plan.is_depthwise or gemm == "wide" or _on_image_threads(xp, plan, n)):
        conv2d(x, weight, bias, plan=plan, scratch=scratch, out=out, gemm=gemm)
        return add(out, residual, relu=relu, act=act, out=out)
    if plan.is_depthwise:
        from alexdsl.backends.executor.depthwise import depthwise_conv2d

        return activate(depthwise_conv2d(x, weight, bias, relu=relu, plan=plan, out=out), act)
    if gemm == "wide":
        return activate(_conv2d_wide(x, weight, bias, relu, plan, scratch, out), act)
    if plan.is_pointwise:
        if plan.stride == (1, 1) and x.flags.c_contiguous:
            cols = x.reshape(n, c, oh * ow)
        else:  # the strided pixels, copied into the plan's own columns (the same buffer at every call)
            cols = plan._own_cols(xp, n, x.dtype)
            kernel(xp.copyto, cols.reshape(n, c, oh, ow), x[:, :, :: plan.stride[0], :: plan.stride[1]])
    elif _on_image_threads(xp, plan, n):
        return activate(_conv2d_image_threads(x, weight, bias, relu, plan, scratch, out), act)
    else:
        rows = n if scratch is None else scratch.size // plan.cols_size(1)
        if rows < 1:
            raise ValueError(f"scratch of {scratch.size} elements is smaller than one image's columns")
        if rows < n:  # the shared scratch holds `rows` images' columns: run the batch in chunks
            for i in range(0, n, rows):
                conv2d(x[i : i + rows], weight, bias, relu=relu, act=act, plan=plan, scratch=scratch,
                       out=out[i : i + rows], residual=None if residual is None else residual[i : i + rows])
            return out
        cols = plan.im2col(x, scratch)
    k = cols.shape[1]
    if g == 1:
        product = out.reshape(n, o, oh * ow)
        if gemm_bias_activation_(weight.reshape(o, k), cols, product, bias, relu, act, residual):
            return out  # the GEMM and its epilogue in one region of the native team
        matmul(weight.reshape(o, k), cols, out=product)
    else:
        matmul(
            weight.reshape(g, o // g, k // g),
            cols.reshape(n, g, k // g, oh * ow),
            out=out.reshape(n, g, o // g, oh * ow),
        )
    return bias_relu_(out, bias, relu, act, residual)


WINOGRAD_MIN_GROUP_CHANNELS = 32  # a grouped 3x3 conv takes Winograd where each group has this many channels in and out
WINOGRAD_MIN_TILES = 32  # fewer 2x2 tiles in a batch: im2col's GEMM is as fast (ResNet's 7x7 maps at batch 1: 16)
WINOGRAD4_MIN_TILES = 48  # fewer 4x4 tiles in a batch: F(2x2, 3x3) is faster (7x7 maps at batch 1: 4; 28x28: 49)
# F(4x4) where its GEMMs make at most this share of F(2x2)'s multiplications: 0.5625 where 4 divides the output
# size (56x56, 28x28), 0.73 on 13x13 and 14x14 maps (cropped tiles), where its larger transforms eat the gain
WINOGRAD4_MAX_PRODUCTS = 0.6
# F(4x4) on outputs up to 56x56 only, for accuracy: on VGG-16's 112x112 and 224x224 convs as well (13 convs in a
# row, no normalisation) its float32 error was 2.0x onnxruntime's, capped 1.7x (docs/performance.md)
WINOGRAD4_MAX_SIZE = 56
# Transformed tiles + GEMM products of one chunk of images, per thread: up to this many bytes (under one 56x56 image's,
# so those run an image per chunk, in cache) or this many times the transformed weight, if more: each chunk's GEMMs
# read it all again (512 -> 512 channels on 7x7 maps: 38 MB for F(4x4), so a batch of 16 is one chunk)
WINOGRAD_CHUNK_BYTES = 2 << 20
WINOGRAD_CHUNK_WEIGHTS = 2
WINOGRAD_WEIGHT_TRANSFORMS = {  # G of F(m x m, 3x3) by m; the transforms of inputs and outputs are in numba_kernels
    2: numpy.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]]),  # points 0, 1, -1
    # points 0, 1, -1, 1/2, -2: 2.5x less float32 error than Lavin & Gray's 0, 1, -1, 2, -2 (rows 0-2, 4, 5 halved
    # against the Toom-Cook construction's, as B^T's rows are doubled to integers)
    4: numpy.array([[1 / 2, 0.0, 0.0], [1 / 6, 1 / 6, 1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                    [-16 / 15, -8 / 15, -4 / 15], [1 / 30, -1 / 15, 2 / 15], [0.0, 0.0, 1 / 2]]),
}
_thread_work = threading.local()


def _conv2d_winograd(
    compiled: ModuleType, x: Array, weight: Array, bias: Array | None, relu: bool, plan: ConvPlan, out: Array,
    tile: int, residual: Array | None = None,
) -> Array:
    """NumPy with Numba: Winograd F(m x m, 3x3) for ``tile`` m = 2 or 4, 2.25x or 4x fewer multiplications than
    im2col + GEMM.

    Per chunk of images (:data:`WINOGRAD_CHUNK_BYTES`, :data:`WINOGRAD_CHUNK_WEIGHTS`): the compiled input
    transform writes the alpha^2 ``B^T d B`` components (alpha = m + 2) of every alpha x alpha tile
    ``(alpha^2, C, tiles)``, one batched GEMM by the transformed weight (:meth:`ConvPlan.winograd_weight`)
    gives ``(alpha^2, O, tiles)``, and the compiled output transform ``A^T M A`` adds the bias and the
    ``residual``, applies ReLU and writes NCHW. With several chunks and threads, the chunks run on the thread
    pool with BLAS on one thread; with one chunk, the transforms are split over the pool by channels and BLAS
    keeps its threads.
    """
    n, c = x.shape[:2]
    o = plan.out_channels
    u = plan.winograd_weight(weight, tile)
    grid = plan.winograd_grid(tile)
    if tile == 4:
        transform_input, transform_output = compiled.winograd4_input, compiled.winograd4_output
    else:
        transform_input, transform_output = compiled.winograd_input, compiled.winograd_output
    parts, groups = u.shape[0], plan.groups
    per_image = grid[0] * grid[1]
    budget = max(WINOGRAD_CHUNK_BYTES, WINOGRAD_CHUNK_WEIGHTS * u.nbytes)
    images = max(1, min(n, budget // (parts * (c + o) * per_image * x.itemsize)))
    chunks = [(lo, min(n, lo + images)) for lo in range(0, n, images)]
    x = numpy.ascontiguousarray(x)
    shift = numpy.empty(0, x.dtype) if bias is None else numpy.ascontiguousarray(bias)
    added = numpy.empty((0, 0, 0, 0), x.dtype) if residual is None else numpy.ascontiguousarray(residual)
    pad = plan.pad

    def run(lo: int, hi: int, spread: bool = False) -> None:
        """Chunks ``lo..hi``; with ``spread``, each transform split by channels over the thread pool."""
        split = parallel_for if spread else lambda xp, total, work, fn, team: fn(0, total)
        for first, last in chunks[lo:hi]:
            count = (last - first) * per_image
            work = getattr(_thread_work, "winograd", None)
            if work is None or work.size < parts * (c + o) * count or work.dtype != x.dtype:
                work = _thread_work.winograd = numpy.empty(parts * (c + o) * count, x.dtype)
            tiles = work[: parts * c * count].reshape(parts, c, count)
            products = work[parts * c * count : parts * (c + o) * count].reshape(parts, o, count)
            image, y, r = x[first:last], out[first:last], added[first:last] if added.size else added
            split(numpy, c, tiles.size,
                  lambda lo, hi, image=image, tiles=tiles: transform_input(image, tiles, lo, hi, pad, grid),
                  lambda team, bounds, image=image, tiles=tiles: team.winograd_input(
                      image, tiles, bounds, pad, grid, tile == 4))
            matmul(u.reshape(parts, groups, o // groups, c // groups),  # a GEMM per tile component and group
                   tiles.reshape(parts, groups, c // groups, count),
                   out=products.reshape(parts, groups, o // groups, count))
            split(numpy, o, products.size,
                  lambda lo, hi, products=products, y=y, r=r: transform_output(products, shift, y, lo, hi, relu, r),
                  lambda team, bounds, products=products, y=y, r=r: team.winograd_output(
                      products, shift, y, bounds, relu, r, tile == 4))

    pin = blas_one_thread() if len(chunks) > 1 and num_threads() > 1 and native_team() is None else None
    if pin is None:  # one chunk or one thread: BLAS threads for the GEMM, the pool for the transforms
        run(0, len(chunks), spread=True)
    else:  # a chunk per thread, BLAS on one thread
        with pin:
            parallel_for(numpy, len(chunks), x.size + out.size, run)
    return out


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
    fused = cuda.fused_kernels(xp, src, bias, out)
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


def _on_image_threads(xp: ModuleType, plan: ConvPlan, n: int) -> bool:
    """Whether a batch's strided (im2col, not 1x1) conv runs image by image on the pool (BLAS pinned while it
    does): asks threadpoolctl without pinning, which would leave BLAS on one thread for the rest of the process."""
    return (xp is numpy and not plan.is_pointwise and plan.method == "strided" and n > 1 and num_threads() > 1
            and native_team() is None and can_pin_blas())


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
                view = as_strided(numpy, src, (c, kh, kw, oh, ow), (s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw))
                cols.reshape(c, kh, kw, oh, ow)[...] = view
                image_cols = cols.reshape(k, hw)
            y = out[i].reshape(o, hw)
            numpy.matmul(w3, image_cols.reshape(g, k // g, hw), out=y.reshape(g, o // g, hw))
            if b is not None:
                y += b
            if relu:
                numpy.maximum(y, 0, out=y)

    pool = thread_pool(threads)
    bounds = [n * t // threads for t in range(threads + 1)]
    with blas_one_thread():
        futures = [pool.submit(chunk, t, bounds[t], bounds[t + 1]) for t in range(threads)]
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


def fold_affine(weight: Array, bias: Array | None, scale: Array, shift: Array | None) -> tuple[Array, Array]:
    """Fold a per-channel ``y * scale + shift`` into the conv/fc before it: returns new (weight, bias)."""
    xp = array_module(weight)
    scale = scale.reshape(-1)
    b = bias if bias is not None else xp.zeros(weight.shape[0], dtype=weight.dtype)
    new_b = b * scale + (shift.reshape(-1) if shift is not None else 0)
    new_w = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return new_w.astype(weight.dtype), new_b.astype(weight.dtype)




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
    matmul(flat, w, out=out)
    return bias_relu_(out, bias, relu, act)


def pretranspose(weight: Array) -> Array:
    """A contiguous (K, O) copy of an fc weight (O, K), made once at compile time."""
    return array_module(weight).ascontiguousarray(weight.T)
