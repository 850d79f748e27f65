"""What an op's kernel, written once against an array module ``xp`` (NumPy or CuPy), needs.

An op module declares its math as an :class:`~alexdsl.ops.lowering.XpKernel`; the executor runs it (float32,
NumPy or CuPy) and ``compare`` runs it in float64 on NumPy as the op's reference. NumPy and CuPy are
imported when a kernel first runs, never when the registry loads.

>>> import numpy as np
>>> array_module(np.zeros(2)) is np
True
>>> in_float64(lambda wide: wide * 3, np.array([0.1], np.float32), None).dtype
dtype('float32')
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import Any

Array = Any  # numpy.ndarray or cupy.ndarray


@cache
def _numpy() -> ModuleType:
    import numpy

    return numpy


def array_module(x: Array = None) -> ModuleType:
    """The array library that owns ``x``: ``cupy`` for a CuPy array, else ``numpy``. A NumPy array is
    recognised first, in a few hundred nanoseconds (``cupy.get_array_module`` takes microseconds)."""
    numpy = _numpy()
    if x is None or isinstance(x, numpy.ndarray):
        return numpy
    cupy = sys.modules.get("cupy")  # a CuPy array exists only once CuPy is imported
    return cupy if cupy is not None and isinstance(x, cupy.ndarray) else numpy


CHUNK = 1 << 16
"""Elements per piece of a float64 kernel on NumPy: its temporaries stay in cache and are never fresh pages."""


def in_float64(kernel: Callable[[Array], Array], x: Array, out: Array | None) -> Array:
    """``kernel`` (float64 array -> float64 array of its own) over ``x`` in float64, rounded once into ``x``'s
    dtype, into ``out`` when given; on NumPy piece by piece (:data:`CHUNK`)."""
    import numpy

    xp = array_module(x)
    out = xp.empty_like(x) if out is None else out
    if xp is not numpy or not (x.flags.c_contiguous and out.flags.c_contiguous):
        out[...] = kernel(x.astype(xp.float64))
        return out
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for start in range(0, flat_x.size, CHUNK):
        flat_out[start : start + CHUNK] = kernel(flat_x[start : start + CHUNK].astype(numpy.float64))
    return out


def narrowed(y: Array, x: Array, out: Array | None) -> Array:
    """``y`` in ``x``'s dtype, into ``out`` when given (rounded once)."""
    if out is None:
        return y.astype(x.dtype, copy=False)
    out[...] = y
    return out
