"""CPU kernels compiled by Numba: the optional ``numba`` extra (``pip install -e '.[numba]'``).

Importing this module imports Numba; the NumPy path asks :func:`alexdsl.backends.cupy.arrays.numba_kernels`
for it, which imports it on first use and returns None without Numba (or with ``ALEXDSL_NUMBA=0``),
and the kernels fall back to plain NumPy. Every kernel here releases the GIL (``nogil``), so
:func:`~alexdsl.backends.cupy.arrays.parallel_for` runs slices of its work on several threads,
and is compiled once per dtype, then cached on disk beside this file.

``fastmath={"contract"}`` only lets LLVM fuse a multiply and an add into one FMA (one rounding
instead of two); it allows no reordering. Indices are unsigned (``uintp``) so that Numba emits no
negative-index wraparound, which would keep the inner loops from vectorising.
"""

from __future__ import annotations

import numba
import numpy
from numba import uintp

DTYPES = ("float32", "float64")  # what the kernels are compiled for; float16 stays on NumPy


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
    and columns ``b::sw`` of the padded plane), so that every kernel tap becomes one run of
    ``OH * pitch`` consecutive multiply-adds over one phase plane, whatever the stride and
    dilation: the run covers whole rows of ``pitch`` columns, of which the first ``OW`` are
    kept. The accumulator row block stays in L1.
    """
    n, c, h, w = x.shape
    o, kh, kw = weight.shape
    multiplier = o // c
    oh, ow = out.shape[2], out.shape[3]
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    rows = (h + 2 * ph - 1) // sh + 2  # one spare row: the last tap's run ends in it
    pitch = (w + 2 * pw + sw - 1) // sw
    plane = rows * pitch
    run = oh * pitch
    phases = numpy.zeros(sh * sw * plane, x.dtype)  # borders are never written: they stay zero
    acc = numpy.empty(run, out.dtype)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    zero = out.dtype.type(0)
    for p in range(lo, hi):
        image, channel = p // o, p % o
        if p == lo or channel % multiplier == 0:  # a new input channel: its phase planes
            source = (image * c + channel // multiplier) * h * w
            for a in range(sh):
                for r in range(rows):
                    y = r * sh + a - ph
                    if y < 0 or y >= h:
                        continue
                    for b in range(sw):
                        first = max(0, (pw - b + sw - 1) // sw)
                        last = max(first, min(pitch, (w - 1 + pw - b) // sw + 1))
                        to = uintp(((a * sw + b) * rows + r) * pitch)
                        start = uintp(source + y * w + b - pw)
                        for k in range(uintp(first), uintp(last)):
                            phases[to + k] = flat_x[start + k * uintp(sw)]
        start_value = bias[channel] if bias.size else zero
        for q in range(uintp(run)):
            acc[q] = start_value
        for i in range(kh):
            for j in range(kw):
                tap = weight[channel, i, j]
                phase = (i * dh) % sh * sw + (j * dw) % sw
                base = uintp((phase * rows + (i * dh) // sh) * pitch + (j * dw) // sw)
                for q in range(uintp(run)):
                    acc[q] += tap * phases[base + q]
        target = p * oh * ow
        for r in range(oh):
            row, to = uintp(r * pitch), uintp(target + r * ow)
            if relu:
                for k in range(uintp(ow)):
                    value = acc[row + k]
                    flat_out[to + k] = value if value > zero else zero
            else:
                for k in range(uintp(ow)):
                    flat_out[to + k] = acc[row + k]
