"""Direct depthwise convolution (``groups == in_channels``), without a network-wide im2col.

Output channel ``o`` reads input channel ``o // multiplier`` (torch's layout for
``out_channels = multiplier * in_channels``), so each input channel is its own tiny
convolution.  im2col + GEMM builds a ``kh*kw``-times larger copy of the whole input and
then runs ``C`` GEMMs of one row each over it; here, instead:

* NumPy with Numba (the optional ``numba`` extra; :func:`_compiled_planes`): a compiled kernel
  over phase planes of the input whose rows are as long as the output's, so that each output
  plane is one run of multiply-adds written straight into ``out``, 3x3 and 5x5 kernels with all
  their taps in registers (:func:`.numba_kernels.depthwise_conv2d`; 4-11x faster than the
  columns below on the depthwise layers of MobileNetV2, EfficientNet-B0 and ConvNeXt-T at
  batch 1, one thread, before its rewrite for registers, which made it 1.05-2.3x faster again on
  MobileNetV2's 3x3 layers; docs/performance.md).
* NumPy without it (:func:`_columns_by_blocks`): per block of one image's channels small enough to
  stay in the L2 cache, the padded block, its ``(kh*kw, OH*OW)`` columns per channel, one
  ``(multiplier, kh*kw)`` GEMM per channel (a single batched matmul) and the epilogue, the
  blocks spread over the thread pool.  Accumulating tap by tap (``y += w[tap] * window``)
  is 2-5x slower on NumPy, which has no fused multiply-add: two passes and a temporary per tap.
* CuPy: with ``ALEXDSL_CUDA_KERNELS=1`` one RawKernel, one thread per output element
  (:func:`alexdsl.backends.executor.cuda.depthwise_conv2d`); otherwise :func:`_taps`, one
  multiply-add of a strided window of the unpadded input per tap (about 2*kh*kw launches,
  no copy of the input).

>>> import numpy as np
>>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
>>> depthwise_conv2d(x, np.ones((1, 1, 2, 2), np.float32), stride=(2, 2)).tolist()
[[[[10.0, 18.0], [42.0, 50.0]]]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy

from alexdsl.backends.executor import cuda
from alexdsl.backends.executor.arrays import (
    Activation,
    Array,
    array_module,
    as_strided,
    blas_pinned,
    numba_kernels,
    parallel_for,
    tap_windows,
)

if TYPE_CHECKING:
    from types import ModuleType

    from alexdsl.backends.executor.conv import ConvPlan



BLOCK_COLUMNS = 1 << 18  # column elements per NumPy block (1 MiB of float32): half a core's L2

__all__ = ["depthwise_conv2d"]


def depthwise_conv2d(
    x: Array,
    weight: Array,
    bias: Array | None = None,
    stride: tuple[int, int] = (1, 1),
    pad: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    *,
    relu: bool = False,
    act: Activation | None = None,
    plan: ConvPlan | None = None,
    out: Array | None = None,
) -> Array:
    """``torch.nn.functional.conv2d(x, weight, bias, stride, pad, dilation, groups=C)``.

    ``weight`` is ``(C * multiplier, 1, kh, kw)``; ``out``, when given, must be C-contiguous.
    The epilogue is the one of :func:`~alexdsl.backends.executor.runtime.conv2d`: bias, then ReLU
    when ``relu``, then ``act(y, out=y)`` in place when given (on NumPy block by block, while
    the block is in cache).
    """
    xp = array_module(x)
    n, c, h, w = x.shape
    o = weight.shape[0]
    if plan is None:
        from alexdsl.backends.executor.conv import ConvPlan

        plan = ConvPlan(c, h, w, o, weight.shape[2:], stride, pad, dilation, c)
    expected = (plan.groups, plan.in_channels, plan.height, plan.width, plan.out_channels, 1, *plan.kernel)
    if expected != (c, c, h, w, *weight.shape):
        raise ValueError(
            f"depthwise_conv2d needs groups == in_channels and a (O, 1, kh, kw) weight that fit the plan; got "
            f"input {x.shape}, weight {weight.shape}, plan {plan.in_channels}x{plan.height}x{plan.width} -> "
            f"{plan.out_channels}, kernel {plan.kernel}, groups={plan.groups}"
        )
    if out is None:
        out = xp.empty((n, o, plan.out_h, plan.out_w), dtype=x.dtype)
    elif not out.flags.c_contiguous:
        raise ValueError("depthwise_conv2d writes into a C-contiguous out only")
    fused = cuda.fused_kernels(xp, x, weight, bias, out)
    if fused is not None:
        fused.depthwise_conv2d(plan, x, weight, bias, relu, out)
        if act is not None:
            act(out, out=out)
        return out
    compiled = numba_kernels(x.dtype) if xp is numpy else None
    if compiled is not None:
        _compiled_planes(compiled, plan, x, weight, bias, relu, act, out)
    elif xp is numpy:
        _columns_by_blocks(plan, x, weight, bias, relu, act, out)
    else:
        _taps(xp, plan, x, weight, bias, relu, act, out)
    return out


def _epilogue(xp: Any, y: Array, relu: bool, act: Activation | None) -> None:
    if relu:
        xp.maximum(y, 0, out=y)
    if act is not None:
        act(y, out=y)


def _compiled_planes(
    compiled: Any,
    plan: ConvPlan,
    x: Array,
    weight: Array,
    bias: Array | None,
    relu: bool,
    act: Activation | None,
    out: Array,
) -> None:
    """NumPy with Numba: the compiled kernel (:func:`.numba_kernels.depthwise_conv2d`) on each thread's share of the
    output planes (output channels, so batch 1 splits too), in one call, then ``act`` on that share.

    ``act`` on blocks of about 32K outputs, each right after the kernel wrote it (to find it in cache), measured
    1.0 to 1.8x slower than after the whole share on every depthwise layer of MobileNetV2, EfficientNet-B0 and
    ConvNeXt-T at batch 1, one thread (each call of the kernel sets up its phase planes and masks).
    """
    n, o = out.shape[:2]
    (kh, kw), (oh, ow) = plan.kernel, (plan.out_h, plan.out_w)
    x = numpy.ascontiguousarray(x)
    taps = numpy.ascontiguousarray(weight.reshape(o, kh, kw))
    shift = numpy.empty(0, x.dtype) if bias is None else numpy.ascontiguousarray(bias)
    planes = out.reshape(n * o, oh * ow)

    def run(lo: int, hi: int) -> None:
        compiled.depthwise_conv2d(x, taps, shift, out, lo, hi, plan.stride, plan.pad, plan.dilation, relu)
        if act is not None:
            act(planes[lo:hi], out=planes[lo:hi])

    form = compiled.FORMS.get(getattr(act, "epilogue_form", None), -1) if x.dtype == numpy.float32 else -1

    def on_team(team: ModuleType, bounds: numpy.ndarray) -> None:
        team.depthwise_conv2d(x, taps, shift, out, bounds, plan.stride, plan.pad, plan.dilation, relu,
                              form if act is not None else -1)
        if act is not None and form < 0:
            act(planes, out=planes)

    parallel_for(numpy, n * o, out.size * kh * kw, run, on_team)


def _columns_by_blocks(
    plan: ConvPlan, x: Array, weight: Array, bias: Array | None, relu: bool, act: Activation | None, out: Array
) -> None:
    """NumPy: per block of one image's channels (:data:`BLOCK_COLUMNS`), columns in cache and one matmul.

    Each thread pads its blocks into a zero-bordered buffer of its own (whose border is
    never written), copies the block's columns ``(channels, kh*kw, OH*pitch)`` out of it as a
    strided view and multiplies them by the ``(channels, multiplier, kh*kw)`` weights.

    With stride 1 a column is ``OH`` whole padded rows in a row (``pitch`` = padded width;
    one spare zero row below keeps the last tap's run inside the buffer): the copy moves
    runs of ``OH*pitch`` elements instead of ``OW``, and the epilogue drops the ``pitch - OW``
    extra columns the GEMM computed (25-35% faster on 7x7 and 14x14 maps, 5-10% on 112x112).
    Otherwise the columns are ``OH*OW`` and the GEMM writes ``out`` directly.
    """
    np = numpy
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = plan.kernel, plan.stride, plan.pad, plan.dilation
    m, oh, ow = plan.out_channels // c, plan.out_h, plan.out_w
    whole_rows = (sh, sw) == (1, 1)
    pitch = w + 2 * pw if whole_rows else ow
    channels = max(1, min(c, BLOCK_COLUMNS // (kh * kw * oh * pitch)))
    per_image = -(-c // channels)
    out5 = out.reshape(n, c, m, oh, ow)
    w3 = weight.reshape(c, m, kh * kw)
    b4 = None if bias is None else bias.reshape(c, m, 1, 1)

    def windows(src: Array) -> Array:  # (..., C, kh, kw, OH*pitch) or (..., C, kh, kw, OH, OW) of (..., C, H', W')
        *lead, s_c, s_h, s_w = src.strides
        if whole_rows:
            shape, strides = (oh * pitch,), (s_w,)
        else:
            shape, strides = (oh, ow), (s_h * sh, s_w * sw)
        return as_strided(np, src, (*src.shape[:-2], kh, kw, *shape), (*lead, s_c, s_h * dh, s_w * dw, *strides))

    padding = whole_rows or (ph, pw) != (0, 0)
    unpadded = None if padding else windows(x)

    def run(lo: int, hi: int) -> None:
        padded = np.zeros((channels, h + 2 * ph + whole_rows, w + 2 * pw), x.dtype) if padding else None
        padded_windows = None if padded is None else windows(padded)
        cols = np.empty((channels, kh, kw, oh * pitch), x.dtype)
        rows = np.empty((channels, m, oh * pitch), x.dtype) if whole_rows else None
        for block in range(lo, hi):
            image, c0 = divmod(block, per_image)
            c0 *= channels
            count = min(c, c0 + channels) - c0
            if padded_windows is None:
                view = unpadded[image, c0 : c0 + count]
            else:
                padded[:count, ph : ph + h, pw : pw + w] = x[image, c0 : c0 + count]
                view = padded_windows[:count]
            cols[:count].reshape(view.shape)[...] = view
            y = out5[image, c0 : c0 + count]
            product = y.reshape(count, m, oh * ow) if rows is None else rows[:count]
            np.matmul(w3[c0 : c0 + count], cols[:count].reshape(count, kh * kw, oh * pitch), out=product)
            if rows is not None:  # keep the first OW of every pitch-wide row
                product = product.reshape(count, m, oh, pitch)[..., :ow]
            if b4 is not None:
                np.add(product.reshape(y.shape), b4[c0 : c0 + count], out=y)
            elif rows is not None:
                y[...] = product
            _epilogue(np, y, relu, act)

    with blas_pinned():  # the blocks run on every core already
        parallel_for(np, n * per_image, out.size * kh * kw, run)


def _taps(
    xp: Any,
    plan: ConvPlan,
    x: Array,
    weight: Array,
    bias: Array | None,
    relu: bool,
    act: Activation | None,
    out: Array,
) -> None:
    """The whole batch at once: ``out = bias``, then per tap ``out[window] += w[tap] * x[window]``.

    Every tap reads the unpadded input (:func:`tap_windows`), so nothing the size of the
    input is copied: the only temporary is one product the size of the output.
    """
    n, c = x.shape[:2]
    m, oh, ow = plan.out_channels // c, plan.out_h, plan.out_w
    y = out.reshape(n, c, m, oh, ow)
    src = x.reshape(n, c, 1, *x.shape[2:])
    w5 = weight.reshape(c, m, -1, 1, 1)
    product = xp.empty_like(y)
    if bias is None:
        y.fill(0)
    else:
        y[...] = bias.reshape(c, m, 1, 1)
    for tap, out_rows, out_cols, in_rows, in_cols in tap_windows(
        plan.height, plan.width, oh, ow, plan.kernel, plan.stride, plan.pad, plan.dilation
    ):
        part = product[..., out_rows, out_cols]
        xp.multiply(src[..., in_rows, in_cols], w5[:, :, tap], out=part)
        y[..., out_rows, out_cols] += part
    _epilogue(xp, out, relu, act)
