"""Compiled variants of op kernels (the optional Numba extra), and the executor's choice between them and the ops'
xp kernels. An op declares ``XpKernel(..., compiled=True)`` (the ops import no backend); this module holds a
function of the kernel's name and signature that runs :mod:`.numba_kernels` on NumPy arrays."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

import numpy

from alexdsl.backends.executor.arrays import Array, numba_kernels, parallel_for


def with_compiled(kernel: Any) -> Callable[..., Array]:
    """The function an op's :class:`~alexdsl.ops.lowering.XpKernel` runs as in the executor (``rt.<name>``): its xp
    ``function``, or, where it declares a ``compiled`` variant, one that runs the variant (this module's function
    of the same name) on C-contiguous NumPy float32 arrays, and the xp function on everything else (CuPy, float16
    and float64, strided views, no Numba, ``ALEXDSL_NUMBA=0``): the variants round a float64 computation accurate
    to about 1e-12 once to float32, which a float64 result would not hide."""
    function = kernel.function
    if not kernel.compiled:
        return function
    variant = globals()[kernel.name]

    @wraps(function)
    def run(x: Array, *args: Any, out: Array | None = None) -> Array:
        compiled = (isinstance(x, numpy.ndarray) and x.dtype == numpy.float32 and x.flags.c_contiguous
                    and numba_kernels(x.dtype) is not None)
        if compiled and (out is None or (isinstance(out, numpy.ndarray) and out.flags.c_contiguous
                                         and out.dtype == x.dtype and out.shape == x.shape)):
            return variant(x, *args, out=out)
        return function(x, *args, out=out)

    return run


EXP_FLOOR = -120.0
"""The least argument the kernels' exponential takes: below exp(-120) = 7.7e-53, erfc's tail times x / 2 (at most
sqrt 2 times it) rounds to 0 in float32, and no intermediate becomes subnormal (which made ConvNeXt's large
activations ~100x slower per element)."""


def gelu(x: numpy.ndarray, approximate: str = "none", *, out: numpy.ndarray | None = None) -> numpy.ndarray:
    """:func:`alexdsl.ops.activation.gelu` compiled (:mod:`.numba_kernels`) for float32: one pass, per element in
    float64, on the thread pool.

    ``x`` and ``out`` (when given: ``x`` itself, or of its shape and dtype) are C-contiguous. The kernels run in
    place, on ``out`` after a copy of ``x`` into it: with two arrays LLVM cannot know that they are the same
    (in place) or apart, and checks at run time, which kept the in-place loop from vectorising (7x slower).
    """
    out = x.copy() if out is None else out
    if out is not x:
        out[...] = x
    kernels = numba_kernels(out.dtype)
    kernel = kernels.gelu_tanh_range if approximate == "tanh" else kernels.gelu_erf_range
    values, floor = out.reshape(-1), EXP_FLOOR
    parallel_for(numpy, values.size, 8 * values.size, lambda lo, hi: kernel(values, lo, hi, floor))
    return out
