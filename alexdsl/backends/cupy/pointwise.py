"""Elementwise kernels (activations, arithmetic with broadcasting) and the channel plumbing (concat, shuffle).

Every activation takes ``out=`` and runs in place when ``out`` is its input, so the executor
applies them in the epilogue of the op before them (:func:`activate`).

>>> import numpy as np
>>> relu6(np.array([-1.0, 3.0, 9.0])).tolist()
[0.0, 3.0, 6.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable

from alexdsl.backends.cupy.arrays import Activation, Array, array_module, parallel_for


def channel_shuffle(x: Array, groups: int, *, out: Array | None = None) -> Array:
    """ShuffleNet's channel shuffle: (N, g, C/g, ...) transposed to (N, C/g, g, ...)."""
    n, c = x.shape[:2]
    src = x.reshape(n, groups, c // groups, *x.shape[2:]).swapaxes(1, 2)
    if out is None:
        return array_module(x).ascontiguousarray(src).reshape(x.shape)
    out.reshape(n, c // groups, groups, *x.shape[2:])[...] = src
    return out


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
