"""CPU kernels compiled by Numba: the optional ``numba`` extra (``pip install -e '.[numba]'``).

Importing this module imports Numba; the NumPy path asks :func:`alexdsl.backends.executor.arrays.numba_kernels`
for it, which imports it on first use and returns None without Numba (or with ``ALEXDSL_NUMBA=0``),
and the kernels fall back to plain NumPy. Every kernel here releases the GIL (``nogil``), so
:func:`~alexdsl.backends.executor.arrays.parallel_for` runs slices of its work on several threads,
and is compiled once per dtype, then cached on disk beside this file.

``fastmath={"contract"}`` only lets LLVM fuse a multiply and an add into one FMA (one rounding
instead of two); it allows no reordering. Indices are unsigned (``uintp``) so that Numba emits no
negative-index wraparound, which would keep the inner loops from vectorising.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numba
import numpy
from numba import uintp
from numba.extending import intrinsic

DTYPES = ("float32", "float64")  # what the kernels are compiled for; float16 stays on NumPy


DEPTHWISE_LANES = 16  # runs are rounded up to whole vectors of this many elements (the buffers have room)
DEPTHWISE_BLOCK = 1024  # output elements per block when the taps take several passes: 4 KiB of float32, in L1
DEPTHWISE_SHORT_ROW = 16  # rows shorter than this go to their phases by an index map, one loop a plane, not one a row


@numba.njit(nogil=True, cache=True, fastmath={"contract"}, boundscheck=False)
def depthwise_conv2d(
    x: numpy.ndarray,
    weight: numpy.ndarray,
    bias: numpy.ndarray,
    out: numpy.ndarray,
    lo: int,
    hi: int,
    stride: tuple[int, int],
    pad: tuple[int, int],
    dilation: tuple[int, int],
    relu: bool,
) -> None:  # pragma: no cover - compiled; tests/test_depthwise.py checks it against torch
    """Output planes ``lo..hi`` (of ``N * O``) of a depthwise convolution, with bias and ReLU.

    ``x`` (N, C, H, W) and ``out`` (N, O, OH, OW) are C-contiguous, ``weight`` is (O, kh, kw),
    ``bias`` is (O,) or empty; output channel ``o`` reads input channel ``o // (O / C)``.

    Each input plane is split once into ``sh * sw`` phase planes of the unpadded input (row ``m``,
    column ``n`` of phase ``(a, b)`` holds ``x[sh*m + a, sw*n + b]``; with stride 1 that is the
    plane itself), every row ``pitch = max(OW, ceil(W / sw))`` apart, with zero rows above and
    below. Output ``k = r * pitch + c`` then reads, for each tap, element ``k + base`` of one phase
    plane, the same ``base`` for every output: a tap is a run of multiply-adds over the whole
    plane. A tap whose column falls outside the plane (the padding, or the previous or next row)
    is dropped by a mask per kernel column (:func:`_depthwise_keep`); columns past the input's
    are never written, so they read 0. Where ``pitch == OW`` (stride 1 with "same" padding,
    stride 2 with half the input's width) the run writes ``out`` directly, nothing copied out.
    A 3x3 or 5x5 kernel takes one pass, its taps in registers (:func:`_depthwise_3x3`,
    :func:`_depthwise_5x5`); others a pass per kernel column, over blocks of
    :data:`DEPTHWISE_BLOCK` outputs (a one-pass 7x7 kernel was faster on 7x7 maps only, and
    tripled the compile time). Stride-2 float32 rows of even width are split a column pair at a
    time (see :func:`_depthwise_split`), rows under :data:`DEPTHWISE_SHORT_ROW` by an index map.
    """
    n, c, h, w = x.shape
    o, kh, kw = weight.shape
    multiplier = o // c
    oh, ow = out.shape[2], out.shape[3]
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    pitch = max(ow, (w + sw - 1) // sw)
    row_shift, row_phase = _depthwise_shifts(kh, dh, ph, sh)
    col_shift, col_phase = _depthwise_shifts(kw, dw, pw, sw)
    top, lead = max(0, -row_shift.min()), max(0, -col_shift.min())
    plane_rows = top + max((h + sh - 1) // sh, oh + max(0, row_shift.max())) + 1
    first = lead + top * pitch  # where phase plane (0, 0)'s first row starts
    bases = numpy.empty(kh * kw, numpy.intp)
    for i in range(kh):
        for j in range(kw):
            phase = row_phase[i] * sw + col_phase[j]
            bases[i * kw + j] = first + (phase * plane_rows + row_shift[i]) * pitch + col_shift[j]
    run = (oh * pitch + DEPTHWISE_LANES - 1) // DEPTHWISE_LANES * DEPTHWISE_LANES
    keep = _depthwise_keep(col_shift, pitch, run)
    # zero rows and columns are never written: they stay 0
    phases = numpy.zeros(lead + sh * sw * plane_rows * pitch + max(0, col_shift.max()) + DEPTHWISE_LANES, x.dtype)
    acc = numpy.empty(run, out.dtype)
    flat_x, flat_w, flat_out = x.reshape(-1), weight.reshape(-1), out.reshape(-1)
    pairs, words = flat_x[: flat_x.size - flat_x.size % 2].view(numpy.uint64), phases.view(numpy.uint32)
    short = w < DEPTHWISE_SHORT_ROW and not (sh == 1 and sw == 1 and pitch == w)
    source_at = numpy.empty(h * w if short else 0, numpy.uintp)  # input element -> its place in the phases
    for y in range(h if short else 0):
        for col in range(w):
            phase = y % sh * sw + col % sw
            source_at[y * w + col] = first + (phase * plane_rows + y // sh) * pitch + col // sw
    zero = out.dtype.type(0)
    size = oh * ow
    for p in range(lo, hi):
        image, channel = p // o, p % o
        if p == lo or channel % multiplier == 0:  # a new input channel: its phase planes
            source = (image * c + channel // multiplier) * h * w
            _depthwise_split(flat_x, source, h, w, sh, sw, plane_rows, pitch, first, phases, pairs, words, source_at)
        start = bias[channel] if bias.size else zero
        tap0 = channel * kh * kw
        # straight into out where its rows are the run's, and the run's rounding lands in this call's next planes
        direct = pitch == ow and p * size + run <= hi * size
        dst, at = (flat_out, uintp(p * size)) if direct else (acc, uintp(0))
        if kh == 3 and kw == 3:
            _depthwise_3x3(dst, at, phases, bases, flat_w, tap0, keep, run, start, relu)
        elif kh == 5 and kw == 5:
            _depthwise_5x5(dst, at, phases, bases, flat_w, tap0, keep, run, start, relu)
        else:
            for k0 in range(0, run, DEPTHWISE_BLOCK):
                k1 = min(run, k0 + DEPTHWISE_BLOCK)
                for k in range(uintp(k0), uintp(k1)):
                    dst[at + k] = start
                for j in range(kw):
                    _depthwise_column(dst, at, phases, bases, flat_w, tap0, j, kh, kw, keep, run, k0, k1)
                if relu:
                    for k in range(uintp(k0), uintp(k1)):
                        value = dst[at + k]
                        dst[at + k] = value if value > zero else zero
        if direct:
            continue
        to = uintp(p * size)
        if pitch == ow:
            for k in range(uintp(size)):
                flat_out[to + k] = acc[k]
            continue
        for r in range(uintp(oh)):
            row, target = r * uintp(pitch), to + r * uintp(ow)
            for k in range(uintp(ow)):
                flat_out[target + k] = acc[row + k]


@numba.njit(nogil=True, cache=True, inline="always")
def _depthwise_shifts(size: int, dilation: int, pad: int, stride: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Per kernel tap along one axis, its offset ``tap * dilation - pad`` as ``shift * stride + phase``
    (``0 <= phase < stride``): output ``q`` reads element ``q + shift`` of phase ``phase``."""
    shift, phase = numpy.empty(size, numpy.intp), numpy.empty(size, numpy.intp)
    for i in range(size):
        offset = i * dilation - pad
        shift[i], phase[i] = offset // stride, offset % stride
    return shift, phase


@numba.njit(nogil=True, cache=True, inline="always")
def _depthwise_keep(col_shift: numpy.ndarray, pitch: int, run: int) -> numpy.ndarray:
    """``keep[j * run + k]``: whether kernel column ``j`` of output ``k`` (column ``k % pitch``) reads
    inside its row of the phase plane (else it is padding, or it would read the row before or after)."""
    keep = numpy.empty(col_shift.size * run, numpy.uint8)
    pattern = numpy.empty(pitch, numpy.uint8)  # one row's, copied to every row (faster than a test per element)
    for j in range(col_shift.size):
        first, stop = max(0, -col_shift[j]), min(pitch, pitch - col_shift[j])  # the columns that read inside
        for col in range(pitch):
            pattern[col] = first <= col < stop
        for row in range(0, run, pitch):
            at = uintp(j * run + row)
            for col in range(uintp(min(pitch, run - row))):
                keep[at + col] = pattern[col]
    return keep


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _depthwise_split(
    flat_x: numpy.ndarray,
    source: int,
    h: int,
    w: int,
    sh: int,
    sw: int,
    plane_rows: int,
    pitch: int,
    first: int,
    phases: numpy.ndarray,
    pairs: numpy.ndarray,
    words: numpy.ndarray,
    source_at: numpy.ndarray,
) -> None:  # pragma: no cover - compiled
    """The input plane at ``source`` into the phase planes of :func:`depthwise_conv2d` (``plane_rows`` rows of
    ``pitch`` each, the first of phase (0, 0) at ``first``); one copy when they are the plane itself.

    ``pairs`` and ``words`` are ``flat_x`` as 64-bit and ``phases`` as 32-bit integers: a float32 stride-2 row
    with an even width is split a pair of columns at a time, which vectorises (a strided loop does not). Planes
    with short rows go through ``source_at`` (each input element's place), one loop a plane, not one a row."""
    if source_at.size:
        for k in range(uintp(h * w)):
            phases[source_at[k]] = flat_x[uintp(source) + k]
        return
    if sh == 1 and sw == 1 and pitch == w:
        for k in range(uintp(h * w)):
            phases[uintp(first) + k] = flat_x[uintp(source) + k]
        return
    plane = uintp(plane_rows * pitch)
    for y in range(h):
        a, m = (0, y) if sh == 1 else ((y & 1, y >> 1) if sh == 2 else (y % sh, y // sh))  # row m of row phase a
        start, to = uintp(source + y * w), uintp(first + (a * sw * plane_rows + m) * pitch)
        if sw == 1:
            for k in range(uintp(w)):
                phases[to + k] = flat_x[start + k]
        elif sw == 2 and w % 2 == 0 and flat_x.itemsize == 4:  # a float32 pair as one word, its halves to the phases
            half, pair0 = uintp(w // 2), uintp(start // 2)
            for k in range(half):
                pair = pairs[pair0 + k]
                words[to + k] = numpy.uint32(pair & 0xFFFFFFFF)
                words[to + plane + k] = numpy.uint32(pair >> 32)
        elif sw == 2:  # even and odd columns in one pass
            half = uintp(w // 2)
            for k in range(half):
                phases[to + k] = flat_x[start + 2 * k]
                phases[to + plane + k] = flat_x[start + 2 * k + 1]
            if w % 2:
                phases[to + half] = flat_x[start + 2 * half]
        else:
            for b in range(sw):
                for k in range(uintp((w - b + sw - 1) // sw)):
                    phases[to + uintp(b) * plane + k] = flat_x[start + k * uintp(sw) + uintp(b)]


@numba.njit(nogil=True, cache=True, fastmath={"contract"}, boundscheck=False, inline="always")
def _depthwise_3x3(
    dst: numpy.ndarray,
    at: int,
    phases: numpy.ndarray,
    bases: numpy.ndarray,
    flat_w: numpy.ndarray,
    tap0: int,
    keep: numpy.ndarray,
    run: int,
    start: float,
    relu: bool,
) -> None:  # pragma: no cover - compiled
    """``dst[at:at + run]`` of a 3x3 kernel (weights ``flat_w[tap0:tap0 + 9]``) in one pass: one load per tap and
    one store per output, the sum of each kernel column dropped where :func:`_depthwise_keep` says so."""
    b0, b1, b2, b3, b4 = uintp(bases[0]), uintp(bases[1]), uintp(bases[2]), uintp(bases[3]), uintp(bases[4])
    b5, b6, b7, b8 = uintp(bases[5]), uintp(bases[6]), uintp(bases[7]), uintp(bases[8])
    w0, w1, w2, w3, w4 = flat_w[tap0], flat_w[tap0 + 1], flat_w[tap0 + 2], flat_w[tap0 + 3], flat_w[tap0 + 4]
    w5, w6, w7, w8 = flat_w[tap0 + 5], flat_w[tap0 + 6], flat_w[tap0 + 7], flat_w[tap0 + 8]
    size, middle_keep, right_keep = uintp(run), uintp(run), uintp(2 * run)
    zero = dst.dtype.type(0)
    for k in range(size):
        left = w0 * phases[b0 + k] + w3 * phases[b3 + k] + w6 * phases[b6 + k]
        middle = w1 * phases[b1 + k] + w4 * phases[b4 + k] + w7 * phases[b7 + k]
        right = w2 * phases[b2 + k] + w5 * phases[b5 + k] + w8 * phases[b8 + k]
        value = start + (left if keep[k] else zero) + (middle if keep[middle_keep + k] else zero)
        value += right if keep[right_keep + k] else zero
        dst[at + k] = (value if value > zero else zero) if relu else value


@numba.njit(nogil=True, cache=True, fastmath={"contract"}, boundscheck=False, inline="always")
def _depthwise_5x5(
    dst: numpy.ndarray,
    at: int,
    phases: numpy.ndarray,
    bases: numpy.ndarray,
    flat_w: numpy.ndarray,
    tap0: int,
    keep: numpy.ndarray,
    run: int,
    start: float,
    relu: bool,
) -> None:  # pragma: no cover - compiled
    """As :func:`_depthwise_3x3`, a 5x5 kernel (weights ``flat_w[tap0:tap0 + 25]``): one pass instead of one a
    kernel column (about 1.5x faster on EfficientNet-B0's 7x7 maps)."""
    b0, b1, b2, b3 = uintp(bases[0]), uintp(bases[1]), uintp(bases[2]), uintp(bases[3])
    b4, b5, b6, b7 = uintp(bases[4]), uintp(bases[5]), uintp(bases[6]), uintp(bases[7])
    b8, b9, b10, b11 = uintp(bases[8]), uintp(bases[9]), uintp(bases[10]), uintp(bases[11])
    b12, b13, b14, b15 = uintp(bases[12]), uintp(bases[13]), uintp(bases[14]), uintp(bases[15])
    b16, b17, b18, b19 = uintp(bases[16]), uintp(bases[17]), uintp(bases[18]), uintp(bases[19])
    b20, b21, b22, b23 = uintp(bases[20]), uintp(bases[21]), uintp(bases[22]), uintp(bases[23])
    b24 = uintp(bases[24])
    w0, w1, w2, w3 = flat_w[tap0], flat_w[tap0 + 1], flat_w[tap0 + 2], flat_w[tap0 + 3]
    w4, w5, w6, w7 = flat_w[tap0 + 4], flat_w[tap0 + 5], flat_w[tap0 + 6], flat_w[tap0 + 7]
    w8, w9, w10, w11 = flat_w[tap0 + 8], flat_w[tap0 + 9], flat_w[tap0 + 10], flat_w[tap0 + 11]
    w12, w13, w14, w15 = flat_w[tap0 + 12], flat_w[tap0 + 13], flat_w[tap0 + 14], flat_w[tap0 + 15]
    w16, w17, w18, w19 = flat_w[tap0 + 16], flat_w[tap0 + 17], flat_w[tap0 + 18], flat_w[tap0 + 19]
    w20, w21, w22, w23 = flat_w[tap0 + 20], flat_w[tap0 + 21], flat_w[tap0 + 22], flat_w[tap0 + 23]
    w24 = flat_w[tap0 + 24]
    size = uintp(run)
    keep1, keep2, keep3, keep4 = uintp(run), uintp(2 * run), uintp(3 * run), uintp(4 * run)
    zero = dst.dtype.type(0)
    for k in range(size):
        value = start
        column = w0 * phases[b0 + k] + w5 * phases[b5 + k] + w10 * phases[b10 + k]
        column += w15 * phases[b15 + k] + w20 * phases[b20 + k]
        value += column if keep[k] else zero
        column = w1 * phases[b1 + k] + w6 * phases[b6 + k] + w11 * phases[b11 + k]
        column += w16 * phases[b16 + k] + w21 * phases[b21 + k]
        value += column if keep[keep1 + k] else zero
        column = w2 * phases[b2 + k] + w7 * phases[b7 + k] + w12 * phases[b12 + k]
        column += w17 * phases[b17 + k] + w22 * phases[b22 + k]
        value += column if keep[keep2 + k] else zero
        column = w3 * phases[b3 + k] + w8 * phases[b8 + k] + w13 * phases[b13 + k]
        column += w18 * phases[b18 + k] + w23 * phases[b23 + k]
        value += column if keep[keep3 + k] else zero
        column = w4 * phases[b4 + k] + w9 * phases[b9 + k] + w14 * phases[b14 + k]
        column += w19 * phases[b19 + k] + w24 * phases[b24 + k]
        value += column if keep[keep4 + k] else zero
        dst[at + k] = (value if value > zero else zero) if relu else value


@numba.njit(nogil=True, cache=True, fastmath={"contract"}, boundscheck=False, inline="always")
def _depthwise_column(
    dst: numpy.ndarray,
    at: int,
    phases: numpy.ndarray,
    bases: numpy.ndarray,
    flat_w: numpy.ndarray,
    tap0: int,
    j: int,
    kh: int,
    kw: int,
    keep: numpy.ndarray,
    run: int,
    k0: int,
    k1: int,
) -> None:  # pragma: no cover - compiled
    """Kernel column ``j`` on outputs ``k0..k1`` of ``dst[at:]``, added to it: its seven taps in one pass for 7
    rows (ConvNeXt's 7x7 kernels), else one pass a tap (kernels other than 3x3, 5x5 and 7x7 are rare)."""
    mask, zero = uintp(j * run), dst.dtype.type(0)
    lo, hi, t, b = uintp(k0), uintp(k1), tap0 + j, bases[j:]
    if kh != 7:
        for i in range(kh):
            weight, base = flat_w[t + i * kw], uintp(b[i * kw])
            for k in range(lo, hi):
                dst[at + k] += weight * phases[base + k] if keep[mask + k] else zero
        return
    w0, w1, w2, w3 = flat_w[t], flat_w[t + kw], flat_w[t + 2 * kw], flat_w[t + 3 * kw]
    w4, w5, w6 = flat_w[t + 4 * kw], flat_w[t + 5 * kw], flat_w[t + 6 * kw]
    b0, b1, b2, b3 = uintp(b[0]), uintp(b[kw]), uintp(b[2 * kw]), uintp(b[3 * kw])
    b4, b5, b6 = uintp(b[4 * kw]), uintp(b[5 * kw]), uintp(b[6 * kw])
    for k in range(lo, hi):
        value = w0 * phases[b0 + k] + w1 * phases[b1 + k] + w2 * phases[b2 + k] + w3 * phases[b3 + k]
        value += w4 * phases[b4 + k] + w5 * phases[b5 + k] + w6 * phases[b6 + k]
        dst[at + k] += value if keep[mask + k] else zero


@numba.njit(nogil=True, cache=True, boundscheck=False)
def im2col(
    planes: numpy.ndarray, cols: numpy.ndarray, lo: int, hi: int, kernel: tuple[int, int], stride: tuple[int, int],
    dilation: tuple[int, int], out_width: int,
) -> None:  # pragma: no cover - compiled; tests/test_native_team.py checks it against the NumPy copy
    """im2col of input planes ``lo..hi`` of ``planes`` (N*C, H, W), padded already: row ``(p * kh + i) * kw + j`` of
    ``cols`` (N*C*kh*kw, OH*OW) holds tap ``(i, j)`` of plane ``p`` at every output pixel (the strided copy of
    :meth:`alexdsl.backends.executor.conv.ConvPlan.im2col`)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    out_height = cols.shape[1] // out_width
    for p in range(lo, hi):
        for i in range(kh):
            for j in range(kw):
                row = cols[(p * kh + i) * kw + j]
                for y in range(out_height):
                    source = planes[p, y * sh + i * dh]
                    first = y * out_width
                    for x in range(out_width):
                        row[first + x] = source[x * sw + j * dw]


@numba.njit(nogil=True, cache=True, inline="always", boundscheck=False)
def _tile_rows(x: numpy.ndarray, rows: numpy.ndarray, image: int, channel: int, first: int, pw: int,
               ) -> None:  # pragma: no cover - compiled
    """Rows ``first..`` of one channel plane of ``x`` (N, C, H, W) into ``rows`` (a Winograd tile row's input rows),
    column ``k`` of ``rows`` holding column ``k - pw``; zero outside the plane (the padding)."""
    h, w = x.shape[2], x.shape[3]
    zero = x.dtype.type(0)
    for i in range(rows.shape[0]):
        y = first + i
        for k in range(rows.shape[1]):
            col = k - pw
            rows[i, k] = x[image, channel, y, col] if 0 <= y < h and 0 <= col < w else zero


@numba.njit(nogil=True, cache=True, fastmath={"contract"}, boundscheck=False)
def winograd_input(
    x: numpy.ndarray, tiles: numpy.ndarray, lo: int, hi: int, pad: tuple[int, int], grid: tuple[int, int]
) -> None:  # pragma: no cover - compiled; tests/test_kernels.py checks the convolution against torch
    """Winograd F(2x2, 3x3): ``B^T d B`` of every 4x4 input tile of channels ``lo..hi``.

    ``x`` is (N, C, H, W); ``tiles`` is (16, C, N * TH * TW) for ``grid`` (TH, TW), tile ``(ty, tx)``
    of image ``n`` reading padded rows ``2ty..2ty+3`` and columns ``2tx..2tx+3`` (zero outside the
    image). A row of tiles is done at once, from four input rows, so the stores are contiguous.
    """
    n, c, h, w = x.shape
    (ph, pw), (tiles_h, tiles_w) = pad, grid
    pitch = 2 * tiles_w + 2
    rows = numpy.zeros((4, pitch), x.dtype)
    diff = numpy.empty((4, pitch), x.dtype)
    for channel in range(lo, hi):
        for image in range(n):
            for ty in range(tiles_h):
                _tile_rows(x, rows, image, channel, 2 * ty - ph, pw)
                for k in range(pitch):  # B^T along the rows of the tile
                    diff[0, k] = rows[0, k] - rows[2, k]
                    diff[1, k] = rows[1, k] + rows[2, k]
                    diff[2, k] = rows[2, k] - rows[1, k]
                    diff[3, k] = rows[1, k] - rows[3, k]
                first = (image * tiles_h + ty) * tiles_w
                for i in range(4):  # B along its columns
                    for tx in range(tiles_w):
                        q = uintp(2 * tx)
                        tiles[4 * i, channel, first + tx] = diff[i, q] - diff[i, q + 2]
                        tiles[4 * i + 1, channel, first + tx] = diff[i, q + 1] + diff[i, q + 2]
                        tiles[4 * i + 2, channel, first + tx] = diff[i, q + 2] - diff[i, q + 1]
                        tiles[4 * i + 3, channel, first + tx] = diff[i, q + 1] - diff[i, q + 3]


@numba.njit(nogil=True, cache=True, fastmath={"contract"}, boundscheck=False)
def winograd_output(
    products: numpy.ndarray, bias: numpy.ndarray, out: numpy.ndarray, lo: int, hi: int, relu: bool,
    residual: numpy.ndarray,
) -> None:  # pragma: no cover - compiled; tests/test_kernels.py checks the convolution against torch
    """Winograd F(2x2, 3x3): ``A^T M A`` + bias (+ ``residual``) (+ ReLU) of output channels ``lo..hi`` into ``out``
    (N, O, OH, OW); ``residual`` is of ``out``'s shape, or empty for none.

    ``products`` is (16, O, N * TH * TW), the 16 GEMMs' results; the last tile row and column are
    cropped where OH or OW is odd.
    """
    n, o, oh, ow = out.shape
    tiles_h, tiles_w = (oh + 1) // 2, (ow + 1) // 2
    zero = out.dtype.type(0)
    m = products
    for channel in range(lo, hi):
        shift = bias[channel] if bias.size else zero
        for image in range(n):
            for ty in range(tiles_h):
                for tx in range(tiles_w):
                    t = (image * tiles_h + ty) * tiles_w + tx
                    top0 = m[0, channel, t] + m[4, channel, t] + m[8, channel, t]
                    top1 = m[1, channel, t] + m[5, channel, t] + m[9, channel, t]
                    top2 = m[2, channel, t] + m[6, channel, t] + m[10, channel, t]
                    top3 = m[3, channel, t] + m[7, channel, t] + m[11, channel, t]
                    low0 = m[4, channel, t] - m[8, channel, t] - m[12, channel, t]
                    low1 = m[5, channel, t] - m[9, channel, t] - m[13, channel, t]
                    low2 = m[6, channel, t] - m[10, channel, t] - m[14, channel, t]
                    low3 = m[7, channel, t] - m[11, channel, t] - m[15, channel, t]
                    y00 = top0 + top1 + top2 + shift
                    y01 = top1 - top2 - top3 + shift
                    y10 = low0 + low1 + low2 + shift
                    y11 = low1 - low2 - low3 + shift
                    y, col = 2 * ty, 2 * tx
                    if residual.size:  # the tile's cropped outputs read 0 (they are never written)
                        y00 += residual[image, channel, y, col]
                        y01 += residual[image, channel, y, col + 1] if col + 1 < ow else zero
                        y10 += residual[image, channel, y + 1, col] if y + 1 < oh else zero
                        y11 += residual[image, channel, y + 1, col + 1] if y + 1 < oh and col + 1 < ow else zero
                    if relu:
                        y00, y01, y10, y11 = max(y00, zero), max(y01, zero), max(y10, zero), max(y11, zero)
                    out[image, channel, y, col] = y00
                    if col + 1 < ow:
                        out[image, channel, y, col + 1] = y01
                    if y + 1 < oh:
                        out[image, channel, y + 1, col] = y10
                        if col + 1 < ow:
                            out[image, channel, y + 1, col + 1] = y11



@numba.njit(nogil=True, cache=True, fastmath={"contract"}, boundscheck=False)
def winograd4_input(
    x: numpy.ndarray, tiles: numpy.ndarray, lo: int, hi: int, pad: tuple[int, int], grid: tuple[int, int]
) -> None:  # pragma: no cover - compiled; tests/test_kernels.py checks the convolution against torch
    """Winograd F(4x4, 3x3) (points 0, 1, -1, 1/2, -2 and infinity): ``B^T d B`` of every 6x6 input tile of channels
    ``lo..hi``, ``B^T``'s rows scaled by powers of 2 to integers (``G``'s rows by the inverse, so nothing changes but
    the exponents).

    ``x`` is (N, C, H, W); ``tiles`` is (36, C, N * TH * TW) for ``grid`` (TH, TW), tile ``(ty, tx)`` of image ``n``
    reading padded rows ``4ty..4ty+5`` and columns ``4tx..4tx+5`` (zero outside the image). A row of tiles is done
    at once, from six input rows, so the stores are contiguous.
    """
    n, c, h, w = x.shape
    (ph, pw), (tiles_h, tiles_w) = pad, grid
    pitch = 4 * tiles_w + 2
    rows = numpy.zeros((6, pitch), x.dtype)
    mixed = numpy.empty((6, pitch), x.dtype)
    for channel in range(lo, hi):
        for image in range(n):
            for ty in range(tiles_h):
                _tile_rows(x, rows, image, channel, 4 * ty - ph, pw)
                for k in range(pitch):  # B^T along the rows of the tile
                    r0, r1, r2, r3, r4, r5 = rows[0, k], rows[1, k], rows[2, k], rows[3, k], rows[4, k], rows[5, k]
                    mixed[0, k] = 2 * (r0 + r4) + 3 * (r3 - r1) - 4 * r2
                    mixed[1, k] = 2 * (r4 - r1) + r2 + 5 * r3
                    mixed[2, k] = 2 * (r1 + r4) - 5 * r2 + r3
                    mixed[3, k] = 2 * (r3 - r1) + (r4 - r2)
                    mixed[4, k] = 2 * (r4 - r2) + (r1 - r3)
                    mixed[5, k] = 2 * (r1 + r5) + 3 * (r4 - r2) - 4 * r3
                first = (image * tiles_h + ty) * tiles_w
                for i in range(6):  # B along its columns
                    for tx in range(tiles_w):
                        q = uintp(4 * tx)
                        d0, d1, d2 = mixed[i, q], mixed[i, q + 1], mixed[i, q + 2]
                        d3, d4, d5 = mixed[i, q + 3], mixed[i, q + 4], mixed[i, q + 5]
                        t = first + tx
                        tiles[6 * i, channel, t] = 2 * (d0 + d4) + 3 * (d3 - d1) - 4 * d2
                        tiles[6 * i + 1, channel, t] = 2 * (d4 - d1) + d2 + 5 * d3
                        tiles[6 * i + 2, channel, t] = 2 * (d1 + d4) - 5 * d2 + d3
                        tiles[6 * i + 3, channel, t] = 2 * (d3 - d1) + (d4 - d2)
                        tiles[6 * i + 4, channel, t] = 2 * (d4 - d2) + (d1 - d3)
                        tiles[6 * i + 5, channel, t] = 2 * (d1 + d5) + 3 * (d4 - d2) - 4 * d3


@numba.njit(nogil=True, cache=True, fastmath={"contract"}, boundscheck=False)
def winograd4_output(
    products: numpy.ndarray, bias: numpy.ndarray, out: numpy.ndarray, lo: int, hi: int, relu: bool,
    residual: numpy.ndarray,
) -> None:  # pragma: no cover - compiled; tests/test_kernels.py checks the convolution against torch
    """Winograd F(4x4, 3x3): ``A^T M A`` + bias (+ ``residual``) (+ ReLU) of output channels ``lo..hi`` into ``out``
    (N, O, OH, OW); ``residual`` is of ``out``'s shape, or empty for none.

    ``products`` is (36, O, N * TH * TW), the 36 GEMMs' results; a row of tiles is done at once (``A^T`` down each
    tile's columns, then ``A`` along its rows into a row buffer), and the last tile row and column are cropped where
    OH or OW is not a multiple of 4.
    """
    n, o, oh, ow = out.shape
    tiles_h, tiles_w = (oh + 3) // 4, (ow + 3) // 4
    mixed = numpy.empty((4, 6, tiles_w), out.dtype)
    line = numpy.empty((4, 4 * tiles_w), out.dtype)
    zero = out.dtype.type(0)
    m = products
    for channel in range(lo, hi):
        shift = bias[channel] if bias.size else zero
        for image in range(n):
            for ty in range(tiles_h):
                first = (image * tiles_h + ty) * tiles_w
                for j in range(6):  # A^T down the columns of every tile in the row
                    for tx in range(tiles_w):
                        t = first + tx
                        m0, m1, m2 = m[j, channel, t], m[6 + j, channel, t], m[12 + j, channel, t]
                        m3, m4, m5 = m[18 + j, channel, t], m[24 + j, channel, t], m[30 + j, channel, t]
                        s12, d12 = m1 + m2, m1 - m2
                        mixed[0, j, tx] = (m0 + s12) + (m3 + m4)
                        mixed[1, j, tx] = d12 + (0.5 * m3 - 2 * m4)
                        mixed[2, j, tx] = s12 + (0.25 * m3 + 4 * m4)
                        mixed[3, j, tx] = d12 + (0.125 * m3 - 8 * m4) + m5
                for i in range(4):  # A along the rows
                    for tx in range(tiles_w):
                        m0, m1, m2 = mixed[i, 0, tx], mixed[i, 1, tx], mixed[i, 2, tx]
                        m3, m4, m5 = mixed[i, 3, tx], mixed[i, 4, tx], mixed[i, 5, tx]
                        s12, d12 = m1 + m2, m1 - m2
                        q = uintp(4 * tx)
                        line[i, q] = (m0 + s12) + (m3 + m4) + shift
                        line[i, q + 1] = d12 + (0.5 * m3 - 2 * m4) + shift
                        line[i, q + 2] = s12 + (0.25 * m3 + 4 * m4) + shift
                        line[i, q + 3] = d12 + (0.125 * m3 - 8 * m4) + m5 + shift
                for i in range(min(4, oh - 4 * ty)):
                    y = 4 * ty + i
                    if residual.size:
                        for k in range(ow):
                            line[i, k] += residual[image, channel, y, k]
                    if relu:
                        for k in range(ow):
                            value = line[i, k]
                            out[image, channel, y, k] = value if value > zero else zero
                    else:
                        for k in range(ow):
                            out[image, channel, y, k] = line[i, k]


# Elementwise kernels: each element in float64 and rounded once into the output's dtype, in one pass. ---------
#
# libm's exp and erfc are scalar calls that keep a loop from vectorising (slower than NumPy's SIMD passes), and
# Python's error model adds a zero check to every division: so ``error_model="numpy"`` and an exponential of
# multiplies and adds only, which LLVM vectorises.

_LOG2E_64 = 1 / math.log(2.0)
_LN2_HI_64 = 0.6931471803691238  # ln 2 to 32 bits: k * _LN2_HI_64 is exact for every |k| < 2^11
_LN2_LO_64 = 1.9082149292705877e-10  # ln 2 - _LN2_HI_64
_ROUNDER_64 = 1.5 * 2.0**52  # t + _ROUNDER_64 rounds t (|t| < 2^51) to an integer, which its low bits hold
_ROUNDER_BITS_64 = numpy.int64(0x4338000000000000)


def _bit_cast(source: numba.types.Type, target: numba.types.Type) -> Callable[..., Any]:
    """A Numba intrinsic that reads a ``source`` scalar's bits as a ``target`` of the same width (which
    vectorises): an integer's as an IEEE float, or back."""
    @intrinsic
    def cast(typingctx, value):  # noqa: ANN001, ANN202 - a Numba intrinsic
        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return cast


_float64_from_bits = _bit_cast(numba.types.int64, numba.types.float64)
_bits_of_float64 = _bit_cast(numba.types.float64, numba.types.int64)
_float32_from_bits = _bit_cast(numba.types.int32, numba.types.float32)
_bits_of_float32 = _bit_cast(numba.types.float32, numba.types.int32)


_SQRT_HALF = math.sqrt(0.5)
_TWO_SQRT_2_OVER_PI = 2 * math.sqrt(2.0 / math.pi)


@numba.njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy", inline="always")
def _exp(y: float, floor: float) -> float:  # pragma: no cover - compiled
    """exp(y) in float64 to about 1e-14 relative for y in [floor, 709] (clamped there; a NaN passes through):
    y = k ln 2 + r with |r| <= ln 2 / 2, exp(r) by its Taylor series to degree 11, times 2^k built from its bits.
    Multiplies, adds and bit casts only, so a loop over elements vectorises; ``floor`` of at least -708 keeps
    every value normal (a subnormal one costs ~100x)."""
    y = floor if y < floor else (709.0 if y > 709.0 else y)
    rounded = y * _LOG2E_64 + _ROUNDER_64
    k = _bits_of_float64(rounded) - _ROUNDER_BITS_64
    kf = rounded - _ROUNDER_64
    r = (y - kf * _LN2_HI_64) - kf * _LN2_LO_64
    p = 1.0 + r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (
        1 / 5040 + r * (1 / 40320 + r * (1 / 362880 + r * (1 / 3628800 + r * (1 / 39916800)))))))))))
    return p * _float64_from_bits((k + 1023) << 52)


@numba.njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy", boundscheck=False)
def gelu_erf_range(values: numpy.ndarray, lo: int, hi: int, floor: float) -> None:  # pragma: no cover - compiled
    """x * erfc(-x / sqrt 2) / 2 in place over flat elements ``lo..hi``, with :func:`alexdsl.ops.activation.erfc`'s
    fit, in float64; ``floor``: the least argument of :func:`_exp`."""
    for i in range(uintp(lo), uintp(hi)):
        wide = numpy.float64(values[i])
        z = -wide * _SQRT_HALF
        magnitude = abs(z)
        t = 1.0 / (1.0 + 0.5 * magnitude)
        poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (
            0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
        tail = t * _exp(poly - magnitude * magnitude, floor)
        values[i] = 0.5 * wide * (tail if z >= 0 else 2.0 - tail)


@numba.njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy", boundscheck=False)
def gelu_tanh_range(values: numpy.ndarray, lo: int, hi: int, floor: float) -> None:  # pragma: no cover - compiled
    """x / (1 + exp(-2u)), u = sqrt(2 / pi) * (x + 0.044715 x^3), in place over flat elements ``lo..hi``."""
    for i in range(uintp(lo), uintp(hi)):
        wide = numpy.float64(values[i])
        values[i] = wide / (1.0 + _exp(-_TWO_SQRT_2_OVER_PI * (wide + 0.044715 * wide * wide * wide), floor))


# Epilogues in float32: a per-channel bias and an activation in one pass (a conv's output, or an activation alone).
#
# Each activation here compiles an op's xp kernel (alexdsl.ops.activation, ``XpKernel(..., compiled=True)``) under
# its name in FORMS. It computes in float32, as NumPy's passes do (16 lanes of AVX-512, where float64 has 8), in one
# pass instead of NumPy's two to five: ReLU6, hardsigmoid and hardswish round exactly as those passes; sigmoid and
# SiLU use _exp_nonpositive below (within 3 ulps of the float64 truth over the contract tests' extreme inputs).

FORM_BIAS, FORM_RELU, FORM_RELU6, FORM_HARDSIGMOID, FORM_HARDSWISH, FORM_SIGMOID, FORM_SILU = range(7)
FORMS = {"bias": FORM_BIAS, "relu": FORM_RELU, "relu6": FORM_RELU6, "hardsigmoid": FORM_HARDSIGMOID,
         "hardswish": FORM_HARDSWISH, "sigmoid": FORM_SIGMOID, "silu": FORM_SILU}
"""The epilogue forms :func:`bias_activation` computes, by the name of the op kernel each compiles."""

_F32 = numpy.float32
_ZERO, _ONE, _HALF, _THREE, _SIX = _F32(0), _F32(1), _F32(0.5), _F32(3), _F32(6)
_LOG2E = _F32(1 / math.log(2.0))
_LN2_HI = _F32(0.693359375)  # ln 2 in 9 bits: k * _LN2_HI is exact for every |k| <= 128
_LN2_LO = _F32(-2.12194440e-4)  # ln 2 - _LN2_HI
_ROUNDER = _F32(1.5 * 2**23)  # t + _ROUNDER rounds t (|t| < 2^22) to an integer, which its low bits hold
_ROUNDER_BITS = numpy.int32(0x4B400000)
_EXP_FLUSH = _F32(-88.72)  # exp(t) below this is under 3.0e-39: 0 (as exp(-x) overflowing makes sigmoid(x) in torch)
_TWO_TO_MINUS_64 = _F32(2.0**-64)
# Cephes' expf polynomial on |r| <= ln 2 / 2: exp(r) = 1 + r + r^2 (P5 + r (P4 + ...)), about 1 ulp
_P0, _P1, _P2 = _F32(1.9875691500e-4), _F32(1.3981999507e-3), _F32(8.3334519073e-3)
_P3, _P4, _P5 = _F32(4.1665795894e-2), _F32(1.6666665459e-1), _F32(5.0000001201e-1)
_FLOAT32_MATH = {"fastmath": {"contract"}, "error_model": "numpy"}


@numba.njit(nogil=True, cache=True, inline="always", **_FLOAT32_MATH)
def _exp_nonpositive(t: float) -> float:  # pragma: no cover - compiled
    """exp(t) in float32 for t <= 0, about 1 ulp; 0 below -88.72 (and for a NaN: the caller passes its NaN on).

    t = k ln 2 + r with |r| <= ln 2 / 2, exp(r) by Cephes' polynomial, times 2^(k + 64) built from its bits and
    2^-64 (both normal for every k down to -128, so exp(t) is right down to its subnormal range). Multiplies, adds
    and bit casts only: a loop over elements vectorises."""
    clamped = t if t > _EXP_FLUSH else _EXP_FLUSH
    rounded = clamped * _LOG2E + _ROUNDER
    k = _bits_of_float32(rounded) - _ROUNDER_BITS
    kf = rounded - _ROUNDER
    r = (clamped - kf * _LN2_HI) - kf * _LN2_LO
    p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * (r * r) + r + _ONE
    e = p * _float32_from_bits((k + numpy.int32(127 + 64)) << numpy.int32(23)) * _TWO_TO_MINUS_64
    return e if t > _EXP_FLUSH else _ZERO


@numba.njit(nogil=True, cache=True, inline="always", **_FLOAT32_MATH)
def _sigmoid(x: float) -> float:  # pragma: no cover - compiled
    """1 / (1 + exp(-x)) as 1 / (1 + e) or e / (1 + e) with e = exp(-|x|), which never overflows."""
    e = _exp_nonpositive(-abs(x))
    y = (_ONE if x >= _ZERO else e) / (_ONE + e)
    return y if x == x else x


@numba.njit(nogil=True, cache=True, inline="always", **_FLOAT32_MATH)
def _silu(x: float) -> float:  # pragma: no cover - compiled
    """x * sigmoid(x) as x / (1 + e) or x e / (1 + e) with e = exp(-|x|)."""
    e = _exp_nonpositive(-abs(x))
    y = (x if x >= _ZERO else x * e) / (_ONE + e)
    return y if x == x else x


@numba.njit(nogil=True, cache=True, inline="always", **_FLOAT32_MATH)
def _relu6(x: float) -> float:  # pragma: no cover - compiled
    return _ZERO if x < _ZERO else (_SIX if x > _SIX else x)  # a NaN passes, as through numpy.clip


@numba.njit(nogil=True, cache=True, inline="always", **_FLOAT32_MATH)
def _hardsigmoid(x: float) -> float:  # pragma: no cover - compiled
    return _relu6(x + _THREE) / _SIX


@numba.njit(nogil=True, cache=True, boundscheck=False, **_FLOAT32_MATH)
def bias_activation(
    values: numpy.ndarray, bias: numpy.ndarray, plane: int, form: int, lo: int, hi: int, residual: numpy.ndarray
) -> None:  # pragma: no cover - compiled; tests/test_ops_contract.py and tests/test_kernels.py check it
    """``y = act(y + bias[c] + residual)`` in place over flat elements ``lo..hi`` of float32 ``values``, in float32.

    ``act`` is the epilogue ``form`` (:data:`FORMS`: ``"bias"`` is none); element ``i`` is in plane ``i // plane``,
    of channel ``(i // plane) % bias.size``; an empty ``bias`` adds nothing, and so does an empty ``residual``
    (else the flat elements of a tensor of ``values``' shape, added after the bias, a plane at a time while it is
    in cache, rounded as the add op rounds). Planes are (N, C) planes of an NCHW output; for an activation alone,
    ``plane`` is the whole array.
    """
    channels, size, end = uintp(bias.size), uintp(plane), uintp(hi)
    start = uintp(lo)
    while start < end:
        index = start // size
        stop = min(end, (index + uintp(1)) * size)
        shift = bias[index % channels] if channels else _ZERO
        if residual.size:
            for i in range(start, stop):
                values[i] = (values[i] + shift) + residual[i]
            if form == FORM_BIAS:
                start = stop
                continue
            shift = _ZERO
        if form == FORM_RELU:
            for i in range(start, stop):
                v = values[i] + shift
                values[i] = _ZERO if v < _ZERO else v
        elif form == FORM_RELU6:
            for i in range(start, stop):
                values[i] = _relu6(values[i] + shift)
        elif form == FORM_HARDSIGMOID:
            for i in range(start, stop):
                values[i] = _hardsigmoid(values[i] + shift)
        elif form == FORM_HARDSWISH:
            for i in range(start, stop):
                v = values[i] + shift
                values[i] = v * _hardsigmoid(v)
        elif form == FORM_SIGMOID:
            for i in range(start, stop):
                values[i] = _sigmoid(values[i] + shift)
        elif form == FORM_SILU:
            for i in range(start, stop):
                values[i] = _silu(values[i] + shift)
        else:
            for i in range(start, stop):
                values[i] += shift
        start = stop


@numba.njit(nogil=True, cache=True, boundscheck=False, **_FLOAT32_MATH)
def bias_activation_rows(
    values: numpy.ndarray, bias: numpy.ndarray, form: int, lo: int, hi: int, residual: numpy.ndarray
) -> None:  # pragma: no cover - compiled; tests/test_native_team.py checks it against the NumPy passes
    """:func:`bias_activation` for a fully connected layer's rows ``lo..hi`` of float32 ``values`` (N, C), ``bias``
    (C,): ``y = act(y + bias + residual)`` (an empty ``residual`` adds nothing; else (N, C)), a row at a time, the
    sums rounded as the NumPy passes round them."""
    width = values.shape[1]
    flat, empty = values.reshape(-1), numpy.empty(0, values.dtype)
    for r in range(lo, hi):
        row = values[r]
        if residual.size:
            added = residual[r]
            for j in range(width):
                row[j] = (row[j] + bias[j]) + added[j]
        else:
            for j in range(width):
                row[j] += bias[j]
        if form != FORM_BIAS:
            bias_activation(flat, empty, width, form, r * width, (r + 1) * width, empty)


@numba.njit(nogil=True, cache=True, boundscheck=False)
def scale_planes(
    values: numpy.ndarray, scales: numpy.ndarray, plane: int, lo: int, hi: int, out: numpy.ndarray
) -> None:  # pragma: no cover - compiled; tests/test_kernels.py checks it against numpy.multiply
    """``out = values * scales[p]`` over planes ``p`` in ``lo..hi`` of the flat ``values`` and ``out`` (``plane``
    elements each; ``out`` may be ``values``): squeeze-excitation's ``x * gate``, (N, C, H, W) times (N, C, 1, 1)."""
    size = uintp(plane)
    in_place = values.ctypes.data == out.ctypes.data  # one array: a loop LLVM vectorises without an overlap check
    for p in range(uintp(lo), uintp(hi)):
        scale = scales[p]
        if in_place:
            for i in range(p * size, (p + uintp(1)) * size):
                out[i] *= scale
        else:
            for i in range(p * size, (p + uintp(1)) * size):
                out[i] = values[i] * scale


# The layer norm over channels (LayerNorm2d): statistics and normalisation of a block while it is in cache. --------

LAYER_NORM_PIXELS = 64  # pixels per block of the channel layer norm: C x 64 float32 (768 channels: 192 KiB, in L2)


@numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def layer_norm_channels(
    x: numpy.ndarray, weight: numpy.ndarray, bias: numpy.ndarray, eps: float, out: numpy.ndarray, lo: int, hi: int
) -> None:  # pragma: no cover - compiled; tests/test_kernels.py checks it against the NumPy kernel
    """LayerNorm over the channels of ``x`` (N, C, P) into ``out`` (the same shape, may be ``x``) for blocks ``lo..hi``
    of :data:`LAYER_NORM_PIXELS` pixels (image by image), with per-channel ``weight`` and ``bias``.

    The operations and their order are :func:`alexdsl.backends.executor.norm.layer_norm`'s NumPy passes (sums
    over the channels one channel after another, no FMA contraction), so the result is theirs bit for bit, in
    three passes over a block that stays in cache instead of seven over the whole array.
    """
    n, c, p = x.shape
    block = uintp(LAYER_NORM_PIXELS)
    per_image = (uintp(p) + block - uintp(1)) // block
    count, epsilon = x.dtype.type(c), x.dtype.type(eps)
    mean = numpy.empty(block, x.dtype)
    spread = numpy.empty(block, x.dtype)
    values, target = x.reshape(-1), out.reshape(-1)
    for b in range(uintp(lo), uintp(hi)):
        first = b % per_image * block
        width = min(block, uintp(p) - first)
        start = b // per_image * uintp(c * p) + first  # channel 0 of the block
        for k in range(width):
            mean[k] = values[start + k]
        for ch in range(uintp(1), uintp(c)):
            at = start + ch * uintp(p)
            for k in range(width):
                mean[k] += values[at + k]
        for k in range(width):
            mean[k] /= count
            d = values[start + k] - mean[k]
            spread[k] = d * d
        for ch in range(uintp(1), uintp(c)):
            at = start + ch * uintp(p)
            for k in range(width):
                d = values[at + k] - mean[k]
                spread[k] += d * d
        for k in range(width):
            spread[k] = math.sqrt(spread[k] / count + epsilon)  # float32 ops, then the correctly rounded root
        for ch in range(uintp(c)):
            at, w, s = start + ch * uintp(p), weight[ch], bias[ch]
            for k in range(width):
                target[at + k] = (values[at + k] - mean[k]) / spread[k] * w + s


# Max and average pooling: per output row, its window's rows combined at input resolution, then its columns. -------


@numba.njit(nogil=True, cache=True, inline="always")
def _max_nan(a: float, b: float) -> float:  # pragma: no cover - compiled
    """The larger of ``a`` and ``b``, NaN where either is NaN (as ``numpy.maximum`` and torch's max pooling);
    ``b if b > a else a`` would drop a NaN ``b``. Compares and a select: a loop of it vectorises."""
    return b if b > a or b != b else a


@numba.njit(nogil=True, cache=True, inline="always")
def _pool_combine(a: float, b: float, average: bool) -> float:  # pragma: no cover - compiled
    """``a + b`` for average pooling, else :func:`_max_nan`."""
    return a + b if average else _max_nan(a, b)


@numba.njit(nogil=True, cache=True, inline="always")
def _pair_half(pair: int, high: bool) -> float:  # pragma: no cover - compiled
    """The float32 in the low (column ``2c``) or high (column ``2c + 1``) half of a 64-bit pair of columns."""
    return _float32_from_bits(numpy.int32(pair >> 32 if high else pair & 0xFFFFFFFF))


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _pool_rows(
    flat_x: numpy.ndarray, line: numpy.ndarray, at: int, width: int, src: int, rows: int, w: int, average: bool
) -> None:  # pragma: no cover - compiled
    """``line[at:at + width]`` = the ``rows`` input rows from ``flat_x[src:]`` (``w`` apart) combined column by
    column: three rows (3x3 windows) in one pass, others one pass a row."""
    pitch = uintp(w)
    if rows == 3:
        a, b = src, src + pitch
        c = b + pitch  # not src + 2 * pitch: a signed 2 makes the index signed, and the loads gathers
        for k in range(uintp(width)):
            line[at + k] = _pool_combine(_pool_combine(flat_x[a + k], flat_x[b + k], average), flat_x[c + k], average)
        return
    for k in range(uintp(width)):
        line[at + k] = flat_x[src + k]
    for i in range(uintp(1), uintp(rows)):
        row = src + i * pitch
        for k in range(uintp(width)):
            line[at + k] = _pool_combine(line[at + k], flat_x[row + k], average)


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _pool_columns(
    line: numpy.ndarray, flat_out: numpy.ndarray, dst: int, ow: int, kw: int, step: int, average: bool
) -> None:  # pragma: no cover - compiled
    """``flat_out[dst:dst + ow]``: output column ``c`` combines ``line[c * step:c * step + kw]``, three columns in
    one pass, other widths a pass a kernel column (``step`` a literal 1 where the stride is 1, so LLVM sees
    contiguous loads)."""
    count, s = uintp(ow), uintp(step)
    if kw == 3:
        for c in range(count):
            at = c * s
            flat_out[dst + c] = _pool_combine(_pool_combine(line[at], line[at + 1], average), line[at + 2], average)
        return
    for c in range(count):
        flat_out[dst + c] = line[c * s]
    for j in range(uintp(1), uintp(kw)):
        for c in range(count):
            flat_out[dst + c] = _pool_combine(flat_out[dst + c], line[c * s + j], average)


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _pool_column_pairs(
    pairs: numpy.ndarray, flat_out: numpy.ndarray, dst: int, ow: int, kw: int, average: bool
) -> None:  # pragma: no cover - compiled
    """:func:`_pool_columns` with stride 2 on a float32 ``line`` read as 64-bit column pairs (``pairs``): kernel
    column ``j`` of output ``c`` is half ``j % 2`` of pair ``c + j // 2``, so every load is contiguous and the
    halves are a shift and a truncation (strided float loads compile to gathers: in an earlier version of the
    kernel ResNet's stem pool took 0.70 ms that way, 0.36 ms this way, one thread). Three columns in one pass,
    as there."""
    count = uintp(ow)
    if kw == 3:
        for c in range(count):
            pair = pairs[c]
            value = _pool_combine(_pair_half(pair, False), _pair_half(pair, True), average)
            flat_out[dst + c] = _pool_combine(value, _pair_half(pairs[c + uintp(1)], False), average)
        return
    for c in range(count):
        flat_out[dst + c] = _pair_half(pairs[c], False)
    for j in range(uintp(1), uintp(kw)):
        base = j >> uintp(1)
        if j & uintp(1):
            for c in range(count):
                flat_out[dst + c] = _pool_combine(flat_out[dst + c], _pair_half(pairs[base + c], True), average)
        else:
            for c in range(count):
                flat_out[dst + c] = _pool_combine(flat_out[dst + c], _pair_half(pairs[base + c], False), average)


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _pool_plane_3x3(
    flat_x: numpy.ndarray,
    flat_out: numpy.ndarray,
    flat_div: numpy.ndarray,
    plane: int,
    rows: numpy.ndarray,
    edges: numpy.ndarray,
    h: int,
    w: int,
    average: bool,
) -> None:  # pragma: no cover - compiled
    """One plane (at ``plane`` in ``flat_x`` and ``flat_out``) of a 3x3 stride-1 pool with padding 1 (H x W to
    H x W: Inception's branch pools) in runs over the whole plane, not row by row (2.4 to 3.7x faster on 28x28 to
    7x7 maps, where a row's own loops cost more than its work): the rows of every output row into
    ``rows[1:1 + H * W]``, one run for the output rows whose three input rows are all inside the image; then
    each output from its left, middle and right neighbour there, the left (``edges`` bit 1) and right (bit 2)
    ones only inside the image. The same operations in the same order as the row-by-row path."""
    pitch = uintp(w)
    if h == 1:
        _pool_rows(flat_x, rows, uintp(1), w, plane, 1, w, average)
    else:
        _pool_rows(flat_x, rows, uintp(1), w, plane, 2, w, average)
        _pool_rows(flat_x, rows, uintp(1) + pitch, (h - 2) * w, plane, 3, w, average)
        _pool_rows(flat_x, rows, uintp(1) + uintp(h - 1) * pitch, w, plane + uintp(h - 2) * pitch, 2, w, average)
    empty = rows.dtype.type(0) if average else rows.dtype.type(-numpy.inf)
    for m in range(uintp(h * w)):
        left = rows[m] if edges[m] & 1 else empty
        right = rows[m + uintp(2)] if edges[m] & 2 else empty
        value = _pool_combine(_pool_combine(left, rows[m + uintp(1)], average), right, average)
        flat_out[plane + m] = value * flat_div[m] if average else value


@numba.njit(nogil=True, cache=True, boundscheck=False)
def pool2d(
    x: numpy.ndarray,
    out: numpy.ndarray,
    lo: int,
    hi: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    divisor: numpy.ndarray,
) -> None:  # pragma: no cover - compiled; tests/test_kernels.py checks it against torch
    """Max pooling, or average pooling where ``divisor`` is not empty, of planes ``lo..hi`` of ``x`` (N*C, H, W)
    into ``out`` (N*C, OH, OW), both C-contiguous, windows as :class:`alexdsl.backends.executor.pool.PoolPlan`
    defines them (``out``'s size gives the rounding); every window holds an input pixel (pad <= kernel / 2).

    Per output row, the max (or sum) over its window's input rows inside the image, at input resolution, into a
    row buffer whose padding columns (and the ceil mode's overhang) hold ``-inf`` (or 0): contiguous, it
    vectorises. Then per kernel column the max (or sum) into the output row, from the buffer read as 64-bit
    column pairs where the stride is 2 in float32. 3x3 stride-1 pools with padding 1 go a whole plane at a time
    instead (:func:`_pool_plane_3x3`). An average is the sum times ``divisor`` (OH, OW), the reciprocals of
    :meth:`~alexdsl.backends.executor.pool.PoolPlan.divisor`. A NaN in a window gives NaN.
    """
    h, w = x.shape[1], x.shape[2]
    oh, ow = out.shape[1], out.shape[2]
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    average = divisor.size > 0
    empty = x.dtype.type(0) if average else x.dtype.type(-numpy.inf)
    flat_x, flat_out, flat_div = x.reshape(-1), out.reshape(-1), divisor.reshape(-1)
    if kh == kw == 3 and sh == sw == 1 and ph == pw == 1:
        rows = numpy.full(h * w + 2, empty, x.dtype)
        edges = numpy.empty(h * w, numpy.uint8)
        for m in range(h * w):
            edges[m] = (m % w > 0) | (m % w < w - 1) << 1
        for p in range(lo, hi):
            _pool_plane_3x3(flat_x, flat_out, flat_div, uintp(p * h * w), rows, edges, h, w, average)
        return
    span = (ow - 1) * sw + kw  # buffer columns the windows reach, the left padding first
    width = min(w, span - pw)  # input columns they reach
    paired = sw == 2 and x.itemsize == 4
    line = numpy.full(max(span, 2 * (ow + kw // 2)), empty, x.dtype)  # room for the pairs the last window reads
    pairs = line.view(numpy.uint64) if paired else numpy.empty(0, numpy.uint64)
    at = uintp(pw)
    for p in range(lo, hi):
        plane = uintp(p * h * w)
        for r in range(oh):
            top = r * sh - ph
            first, last = max(top, 0), min(top + kh, h)
            _pool_rows(flat_x, line, at, width, plane + uintp(first * w), last - first, w, average)
            dst = uintp((p * oh + r) * ow)
            if sw == 1:
                _pool_columns(line, flat_out, dst, ow, kw, 1, average)
            elif paired:
                _pool_column_pairs(pairs, flat_out, dst, ow, kw, average)
            else:
                _pool_columns(line, flat_out, dst, ow, kw, sw, average)
            if average:
                scale = uintp(r * ow)
                for c in range(uintp(ow)):
                    flat_out[dst + c] *= flat_div[scale + c]
