"""The executor's elementwise steps: an activation as a producer's epilogue (:func:`activate`), and the
arithmetic with broadcasting (add, multiply, subtract, divide): each its op's xp kernel (in
:mod:`alexdsl.ops.arith`) with the fused epilogue.

The activations themselves are their ops' xp kernels (:class:`~alexdsl.ops.lowering.XpKernel`, in
:mod:`alexdsl.ops.activation`); each takes ``out=`` and runs in place when ``out`` is its input,
so a producer applies it to its own output.

>>> import numpy as np
>>> from alexdsl.ops.activation import relu6
>>> add(np.array([-1.0, 2.0]), np.array([-1.0, 3.0]), act=relu6).tolist()
[0.0, 5.0]
"""

from __future__ import annotations

import numpy

from alexdsl.backends.executor.arrays import Activation, Array, array_module, numba_kernels, parallel_for
from alexdsl.ops.arith import broadcast_add, broadcast_divide, broadcast_multiply, broadcast_subtract


def activate(y: Array, act: Activation | None) -> Array:
    """The epilogue activation ``act`` in place on ``y``, split over the batch on the thread pool (NumPy)."""
    if act is None:
        return y

    def chunk(lo: int, hi: int) -> None:
        part = y[lo:hi]
        act(part, out=part)

    parallel_for(array_module(y), y.shape[0], y.size, chunk)
    return y


def add(*inputs: Array, relu: bool = False, act: Activation | None = None, out: Array | None = None) -> Array:
    """The add op's kernel (any number of arrays, NumPy broadcasting); optional fused ReLU or ``act``."""
    out = broadcast_add(*inputs, out=out)
    if relu:
        array_module(out).maximum(out, 0, out=out)
    return activate(out, act)


def multiply(*inputs: Array, act: Activation | None = None, out: Array | None = None) -> Array:
    """The mul op's kernel (NumPy broadcasting, no broadcast copy: squeeze-excitation's ``x * gate``), then ``act``.

    With Numba, squeeze-excitation's float32 ``(N, C, H, W) * (N, C, 1, 1)`` runs as a compiled pass over the
    thread pool or the native team, plane by plane (:func:`.numba_kernels.scale_planes`, numpy.multiply's bits).
    """
    if not _scaled_planes(inputs, out):
        out = broadcast_multiply(*inputs, out=out)
    return activate(out, act)


def _scaled_planes(inputs: tuple[Array, ...], out: Array | None) -> bool:
    """``out = x * gate`` by planes where ``inputs`` is ``(x, gate)`` or ``(gate, x)``, float32 C-contiguous NumPy
    arrays of shapes ``(N, C, H, W)`` and ``(N, C, 1, 1)``, and ``out`` one of x's shape (may be x); whether it
    ran."""
    if len(inputs) != 2 or out is None or not isinstance(out, numpy.ndarray) or out.dtype != numpy.float32:
        return False
    x, gate = inputs if inputs[0].ndim == 4 and inputs[0].shape[2:] != (1, 1) else inputs[::-1]
    if not (isinstance(x, numpy.ndarray) and isinstance(gate, numpy.ndarray) and x.ndim == 4
            and gate.shape == (*x.shape[:2], 1, 1) and out.shape == x.shape and x.dtype == gate.dtype == out.dtype
            and x.flags.c_contiguous and gate.flags.c_contiguous and out.flags.c_contiguous):
        return False
    kernels = numba_kernels(x.dtype)
    if kernels is None:
        return False
    values, scales, target = x.reshape(-1), gate.reshape(-1), out.reshape(-1)
    plane = x.shape[2] * x.shape[3]
    parallel_for(numpy, scales.size, x.size, lambda lo, hi: kernels.scale_planes(values, scales, plane, lo, hi, target),
                 lambda team, bounds: team.scale_planes(values, scales, plane, bounds, target))
    return True


def subtract(a: Array, b: Array, *, act: Activation | None = None, out: Array | None = None) -> Array:
    """The sub op's kernel, ``a - b`` (NumPy broadcasting), then ``act``."""
    return activate(broadcast_subtract(a, b, out=out), act)


def divide(a: Array, b: Array, *, act: Activation | None = None, out: Array | None = None) -> Array:
    """The div op's kernel, ``a / b`` (NumPy broadcasting), then ``act``."""
    return activate(broadcast_divide(a, b, out=out), act)
