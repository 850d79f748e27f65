"""The executor's elementwise steps: an activation as a producer's epilogue (:func:`activate`), and the
arithmetic with broadcasting (add, multiply, subtract, divide) with its fused epilogue.

The activations themselves are their ops' xp kernels (:class:`~alexdsl.ops.lowering.XpKernel`, in
:mod:`alexdsl.ops.activation`); each takes ``out=`` and runs in place when ``out`` is its input,
so a producer applies it to its own output.

>>> import numpy as np
>>> from alexdsl.ops.activation import relu6
>>> add(np.array([-1.0, 2.0]), np.array([-1.0, 3.0]), act=relu6).tolist()
[0.0, 5.0]
"""

from __future__ import annotations

from alexdsl.backends.executor.arrays import Activation, Array, array_module, parallel_for


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
    """Elementwise sum of any number of arrays (NumPy broadcasting); optional fused ReLU or ``act``."""
    if not inputs:
        raise ValueError("add needs at least one input")
    xp = array_module(inputs[0])
    if len(inputs) == 1:
        if out is None:
            out = inputs[0].copy()
        else:
            out[...] = inputs[0]
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


def divide(a: Array, b: Array, *, act: Activation | None = None, out: Array | None = None) -> Array:
    """``a / b`` elementwise (NumPy broadcasting)."""
    out = array_module(a).divide(a, b, out=out)
    return activate(out, act)
