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

import numba
import numpy
from llvmlite import ir
from numba import uintp
from numba.extending import intrinsic

DTYPES = ("float32", "float64")  # what the kernels are compiled for; float16 stays on NumPy


DEPTHWISE_ROW_BLOCK = 512  # accumulator elements per block of output rows: 2 KiB of float32, in L1
DEPTHWISE_LANES = 16  # runs are rounded up to whole vectors of this many elements (the buffers have room)
DEPTHWISE_SHORT_ROW = 16  # rows shorter than this are copied by an index map, one loop a plane, not one a row


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

    Each input plane is split once into ``sh * sw`` zero-bordered phase planes (rows ``a::sh``
    and columns ``b::sw`` of the padded plane), so that every kernel tap reads one run of
    consecutive elements of one phase plane, whatever the stride and dilation: the run covers
    whole rows of ``pitch`` columns, of which the first ``OW`` are kept (with stride 1 a row's
    right border is the next row's left border, so rows are ``W + pw`` apart). The output plane
    is done in blocks of rows whose accumulator (:data:`DEPTHWISE_ROW_BLOCK` elements) stays in
    L1, each block with every tap, four taps a pass (one load and store of the accumulator per
    four multiply-adds, in the taps' order: the sums round as with one tap a pass). Short rows
    (7x7 and 14x14 maps) move in and out through index maps, one loop a plane.
    """
    n, c, h, w = x.shape
    o, kh, kw = weight.shape
    multiplier = o // c
    oh, ow = out.shape[2], out.shape[3]
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    rows = (h + 2 * ph - 1) // sh + 2  # one spare row: the last tap's run ends in it
    pitch = max(w + pw, ow) if sw == 1 else (w + 2 * pw + sw - 1) // sw
    plane = rows * pitch
    taps = kh * kw
    offsets = numpy.empty(taps, numpy.intp)  # where each tap's run starts, for output row 0
    for i in range(kh):
        for j in range(kw):
            phase = (i * dh) % sh * sw + (j * dw) % sw
            offsets[i * kw + j] = (phase * rows + (i * dh) // sh) * pitch + (j * dw) // sw
    block = max(1, min(oh, DEPTHWISE_ROW_BLOCK // pitch))
    phases = numpy.zeros(sh * sw * plane + pitch + DEPTHWISE_LANES, x.dtype)  # borders are never written: stay 0
    acc = numpy.empty(block * pitch + DEPTHWISE_LANES, out.dtype)
    padded = numpy.zeros(pitch * sw + sw, x.dtype)  # one padded input row, for _depthwise_phase_rows
    short_in, short_out = w < DEPTHWISE_SHORT_ROW, ow < DEPTHWISE_SHORT_ROW
    source_at = numpy.empty(h * w if short_in else 0, numpy.uintp)  # input element -> its phase plane position
    for y in range(h if short_in else 0):
        for col in range(w):
            a, b = (y + ph) % sh, (col + pw) % sw
            source_at[y * w + col] = ((a * sw + b) * rows + (y + ph) // sh) * pitch + (col + pw) // sw
    kept_at = numpy.empty(block * ow if short_out else 0, numpy.uintp)  # output element of a block -> its acc
    for k in range(kept_at.size):
        kept_at[k] = k // ow * pitch + k % ow
    flat_x, flat_w, flat_out = x.reshape(-1), weight.reshape(-1), out.reshape(-1)
    zero = out.dtype.type(0)
    for p in range(lo, hi):
        image, channel = p // o, p % o
        if p == lo or channel % multiplier == 0:  # a new input channel: its phase planes
            source = uintp((image * c + channel // multiplier) * h * w)
            if short_in:
                for k in range(uintp(h * w)):
                    phases[source_at[k]] = flat_x[source + k]
            else:
                _depthwise_phase_rows(flat_x, source, h, w, (sh, sw), (ph, pw), rows, pitch, padded, phases)
        start_value = bias[channel] if bias.size else zero
        tap0 = channel * taps
        for r0 in range(0, oh, block):
            count = min(block, oh - r0)
            run, shift = uintp((count * pitch + DEPTHWISE_LANES - 1) // DEPTHWISE_LANES * DEPTHWISE_LANES), r0 * pitch
            for q in range(run):
                acc[q] = start_value
            t = 0
            while t + 4 <= taps:
                w0, w1, w2, w3 = flat_w[tap0 + t], flat_w[tap0 + t + 1], flat_w[tap0 + t + 2], flat_w[tap0 + t + 3]
                b0, b1 = uintp(offsets[t] + shift), uintp(offsets[t + 1] + shift)
                b2, b3 = uintp(offsets[t + 2] + shift), uintp(offsets[t + 3] + shift)
                for q in range(run):
                    value = acc[q] + w0 * phases[b0 + q] + w1 * phases[b1 + q]
                    acc[q] = value + w2 * phases[b2 + q] + w3 * phases[b3 + q]
                t += 4
            while t < taps:
                w0, b0 = flat_w[tap0 + t], uintp(offsets[t] + shift)
                for q in range(run):
                    acc[q] += w0 * phases[b0 + q]
                t += 1
            target = uintp((p * oh + r0) * ow)
            if short_out:
                for k in range(uintp(count * ow)):
                    value = acc[kept_at[k]]
                    flat_out[target + k] = value if value > zero or not relu else zero
                continue
            for r in range(uintp(count)):
                row, to = uintp(r * pitch), target + uintp(r * ow)
                if relu:
                    for k in range(uintp(ow)):
                        value = acc[row + k]
                        flat_out[to + k] = value if value > zero else zero
                else:
                    for k in range(uintp(ow)):
                        flat_out[to + k] = acc[row + k]


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _depthwise_phase_rows(
    flat_x: numpy.ndarray,
    source: int,
    h: int,
    w: int,
    stride: tuple[int, int],
    pad: tuple[int, int],
    rows: int,
    pitch: int,
    padded: numpy.ndarray,
    phases: numpy.ndarray,
) -> None:  # pragma: no cover - compiled
    """The input plane at ``source`` into the phase planes of :func:`depthwise_conv2d`, a row at a time.

    With stride > 1 each row goes through ``padded``, one zero-bordered row (its borders are never written).
    """
    (sh, sw), (ph, pw) = stride, pad
    plane = rows * pitch
    for y in range(h):
        r = y + ph  # padded row r is row r // sh of the phase planes (r % sh, b)
        start, to = uintp(source + y * w), uintp((r % sh * sw * rows + r // sh) * pitch)
        if sw == 1:  # straight into the phase plane, inside its zero border
            for k in range(uintp(w)):
                phases[to + uintp(pw) + k] = flat_x[start + k]
            continue
        for k in range(uintp(w)):
            padded[uintp(pw) + k] = flat_x[start + k]
        if sw == 2:  # one interleaved pass (vectorised), not one strided pass per column phase
            for k in range(uintp(pitch)):
                phases[to + k] = padded[2 * k]
                phases[to + uintp(plane) + k] = padded[2 * k + 1]
        else:
            for b in range(sw):
                for k in range(uintp(pitch)):
                    phases[to + uintp(b * plane) + k] = padded[k * uintp(sw) + uintp(b)]


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
    products: numpy.ndarray, bias: numpy.ndarray, out: numpy.ndarray, lo: int, hi: int, relu: bool
) -> None:  # pragma: no cover - compiled; tests/test_kernels.py checks the convolution against torch
    """Winograd F(2x2, 3x3): ``A^T M A`` + bias (+ ReLU) of output channels ``lo..hi`` into ``out`` (N, O, OH, OW).

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
                    if relu:
                        y00, y01, y10, y11 = max(y00, zero), max(y01, zero), max(y10, zero), max(y11, zero)
                    y, col = 2 * ty, 2 * tx
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
    products: numpy.ndarray, bias: numpy.ndarray, out: numpy.ndarray, lo: int, hi: int, relu: bool
) -> None:  # pragma: no cover - compiled; tests/test_kernels.py checks the convolution against torch
    """Winograd F(4x4, 3x3): ``A^T M A`` + bias (+ ReLU) of output channels ``lo..hi`` into ``out`` (N, O, OH, OW).

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


@intrinsic
def _float64_from_bits(typingctx, bits):  # noqa: ANN001, ANN202 - a Numba intrinsic
    """The float64 whose IEEE bits are the int64 ``bits`` (a bit cast, which vectorises)."""
    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.bitcast(args[0], ir.DoubleType())

    return numba.types.float64(numba.types.int64), codegen


@intrinsic
def _bits_of_float64(typingctx, value):  # noqa: ANN001, ANN202 - a Numba intrinsic
    """The IEEE bits of the float64 ``value``, as an int64."""
    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.bitcast(args[0], ir.IntType(64))

    return numba.types.int64(numba.types.float64), codegen


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


@intrinsic
def _float32_from_bits(typingctx, bits):  # noqa: ANN001, ANN202 - a Numba intrinsic
    """The float32 whose IEEE bits are the int32 ``bits`` (a bit cast, which vectorises)."""
    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.bitcast(args[0], ir.FloatType())

    return numba.types.float32(numba.types.int32), codegen


@intrinsic
def _bits_of_float32(typingctx, value):  # noqa: ANN001, ANN202 - a Numba intrinsic
    """The IEEE bits of the float32 ``value``, as an int32."""
    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.bitcast(args[0], ir.IntType(32))

    return numba.types.int32(numba.types.float32), codegen


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
    values: numpy.ndarray, bias: numpy.ndarray, plane: int, form: int, lo: int, hi: int
) -> None:  # pragma: no cover - compiled; tests/test_ops_contract.py and tests/test_kernels.py check it
    """``y = act(y + bias[c])`` in place over flat elements ``lo..hi`` of float32 ``values``, in float32.

    ``act`` is the epilogue ``form`` (:data:`FORMS`: ``"bias"`` is none); element ``i`` is in plane ``i // plane``,
    of channel ``(i // plane) % bias.size``; an empty ``bias`` adds nothing. Planes are (N, C) planes of an NCHW
    output; for an activation alone, ``plane`` is the whole array.
    """
    channels, size, end = uintp(bias.size), uintp(plane), uintp(hi)
    start = uintp(lo)
    while start < end:
        index = start // size
        stop = min(end, (index + uintp(1)) * size)
        shift = bias[index % channels] if channels else _ZERO
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
