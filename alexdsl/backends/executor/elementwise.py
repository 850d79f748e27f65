"""Elementwise kernels: the activations and the arithmetic with broadcasting (add, multiply, subtract, divide).

Every activation takes ``out=`` and runs in place when ``out`` is its input, so the executor
applies them in the epilogue of the op before them (:func:`activate`).

>>> import numpy as np
>>> relu6(np.array([-1.0, 3.0, 9.0])).tolist()
[0.0, 3.0, 6.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy

from alexdsl.backends.executor.arrays import Activation, Array, array_module, parallel_for


def relu(x: Array, *, out: Array | None = None) -> Array:
    """max(x, 0); ``out=x`` runs in place."""
    return array_module(x).maximum(x, 0, out=out)


def leaky_relu(x: Array, slope: float = 0.01, *, out: Array | None = None) -> Array:
    """x if x > 0 else slope * x, as max(x, 0) + slope * min(x, 0) (one term is 0: exact, no select)."""
    return _positive_plus(x, _scaled_negative(x, x.dtype.type(slope)), out)


def _scaled_negative(x: Array, slope: Array) -> Array:
    """slope * min(x, 0), a new array."""
    negative = array_module(x).minimum(x, 0)
    negative *= slope
    return negative


def _positive_plus(x: Array, negative: Array, out: Array | None) -> Array:
    """max(x, 0) + ``negative`` into ``out`` (which may be ``x``)."""
    y = array_module(x).maximum(x, 0, out=out)
    y += negative
    return y


def _exp_neg_abs(x: Array) -> Array:
    """exp(-|x|) in (0, 1], a new array: an exponential that never overflows, exact argument."""
    xp = array_module(x)
    t = xp.abs(x)
    xp.negative(t, out=t)
    return xp.exp(t, out=t)


def _narrowed(y: Array, x: Array, out: Array | None) -> Array:
    """``y`` in ``x``'s dtype, into ``out`` when given (rounded once)."""
    if out is None:
        return y.astype(x.dtype, copy=False)
    out[...] = y
    return out


def sigmoid(x: Array, *, out: Array | None = None) -> Array:
    """Logistic function 1 / (1 + exp(-x)), a few ulps from the truth in both tails (``0.5 * (tanh(x / 2) + 1)``
    cancelled to 0 below -17). Below -88.7 exp(-x) is inf and the result, under 3e-39, is 0, as in torch."""
    e = _one_plus_exp_minus(x, out)
    return array_module(x).divide(1, e, out=e)


def _one_plus_exp_minus(x: Array, out: Array | None = None) -> Array:
    """1 + exp(-x), into ``out`` when given; exp(-x) overflows to inf (below -88.7 in float32) silently."""
    e = array_module(x).negative(x, out=out)
    with numpy.errstate(over="ignore"):
        array_module(x).exp(e, out=e)
    e += 1
    return e


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
    """x * sigmoid(x) (swish), as x / (1 + exp(-x)) (see :func:`sigmoid`)."""
    return array_module(x).divide(x, _one_plus_exp_minus(x), out=out)


_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def erfc(x: Array) -> Array:
    """The complementary error function, to 1.2e-7 relative (Numerical Recipes' Chebyshev fit).

    Written against ``xp`` so it runs on NumPy (which has no erf) and CuPy alike; erfc(-z) = 2 - erfc(z).
    """
    xp = array_module(x)
    z = xp.abs(x)
    t = z * x.dtype.type(0.5)
    t += 1
    xp.divide(1, t, out=t)
    poly = t * x.dtype.type(0.17087277)
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368):
        poly += x.dtype.type(c)
        poly *= t
    poly -= x.dtype.type(1.26551223)
    z *= z
    poly -= z
    r = xp.exp(poly, out=poly)
    r *= t
    xp.copysign(r, x, out=r)
    r += xp.signbit(x) * x.dtype.type(2)
    return r


def gelu(x: Array, approximate: str = "none", *, out: Array | None = None) -> Array:
    """Gaussian error linear unit, as torch: x * Phi(x) with Phi(x) = erfc(-x / sqrt 2) / 2, or its tanh
    approximation x * (1 + tanh(u)) / 2 = x / (1 + exp(-2u)), u = sqrt(2 / pi) * (x + 0.044715 x^3).

    Computed in float64 and rounded once: in the negative tail the result's relative error is the argument's
    absolute error times |x| (or 2|u|), which float32 rounding of x / sqrt 2 or u would make tens of ulps.
    """
    return _in_float64(_gelu_tanh if approximate == "tanh" else _gelu_erf, x, out)


def _gelu_erf(x: Array) -> Array:
    phi = erfc(x * -_SQRT_HALF)
    phi *= 0.5
    phi *= x
    return phi


def _gelu_tanh(x: Array) -> Array:
    two_u = x * x
    two_u *= 2 * _SQRT_2_OVER_PI * 0.044715
    two_u += 2 * _SQRT_2_OVER_PI
    two_u *= x
    return array_module(x).divide(x, _one_plus_exp_minus(two_u, out=two_u), out=two_u)


CHUNK = 1 << 16
"""Elements per piece of a float64 kernel on NumPy: its temporaries stay in cache and are never fresh pages."""


def _in_float64(kernel: Callable[[Array], Array], x: Array, out: Array | None) -> Array:
    """``kernel`` (float64 array -> float64 array of its own) over ``x`` in float64, rounded once into ``x``'s
    dtype, into ``out`` when given; on NumPy piece by piece (:data:`CHUNK`)."""
    xp = array_module(x)
    out = xp.empty_like(x) if out is None else out
    if xp is not numpy or not (x.flags.c_contiguous and out.flags.c_contiguous):
        out[...] = kernel(x.astype(xp.float64))
        return out
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for start in range(0, flat_x.size, CHUNK):
        flat_out[start : start + CHUNK] = kernel(flat_x[start : start + CHUNK].astype(numpy.float64))
    return out


def elu(x: Array, alpha: float = 1.0, *, out: Array | None = None) -> Array:
    """x if x > 0 else alpha * (exp(x) - 1), as max(x, 0) + alpha * expm1(min(x, 0))."""
    negative = array_module(x).minimum(x, 0)
    array_module(x).expm1(negative, out=negative)
    negative *= x.dtype.type(alpha)
    return _positive_plus(x, negative, out)


def softplus(x: Array, beta: float = 1.0, threshold: float = 20.0, *, out: Array | None = None) -> Array:
    """log(1 + exp(beta * x)) / beta, and x where beta * x > threshold (torch's), as
    max(bx, 0) + log1p(exp(-|bx|)): no overflow, accurate in both tails; in float64 when beta != 1, whose
    rounded product the exponential would magnify."""
    if beta != 1:
        return _in_float64(lambda wide: _softplus(wide, beta, threshold), x, out)
    return _narrowed(_softplus(x, beta, threshold), x, out)


def _softplus(x: Array, beta: float, threshold: float) -> Array:
    xp = array_module(x)
    bx = x * x.dtype.type(beta) if beta != 1 else x
    soft = _exp_neg_abs(bx)
    xp.log1p(soft, out=soft)
    soft += xp.maximum(bx, 0)
    if beta != 1:
        soft /= x.dtype.type(beta)
    if math.exp(-threshold) >= threshold * float(xp.finfo(soft.dtype).eps) / 4:  # else x + that rounds to x
        xp.copyto(soft, x, where=bx > threshold)
    return soft


def mish(x: Array, *, out: Array | None = None) -> Array:
    """x * tanh(softplus(x))."""
    xp = array_module(x)
    t = xp.tanh(softplus(x))
    return xp.multiply(x, t, out=out)


def prelu(x: Array, weight: Array, *, out: Array | None = None) -> Array:
    """x if x > 0 else weight * x, with one slope per channel (axis 1) or one shared."""
    slope = weight.reshape((1, -1) + (1,) * (x.ndim - 2)) if weight.size > 1 else weight.reshape(())
    return _positive_plus(x, _scaled_negative(x, slope), out)


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
