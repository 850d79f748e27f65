"""Compiled variants of op kernels (the optional Numba extra), and the executor's choice between them and the ops'
xp kernels. An op declares ``XpKernel(..., compiled=True)`` (the ops import no backend); this module holds a
function of the kernel's name and signature that runs :mod:`.numba_kernels` on NumPy arrays."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

import numpy

from alexdsl.backends.executor.arrays import Array, native_team, numba_kernels, parallel_for, team_gemm


def with_compiled(kernel: Any) -> Callable[..., Array]:
    """The function an op's :class:`~alexdsl.ops.lowering.XpKernel` runs as in the executor (``rt.<name>``): its xp
    ``function``, or, where it declares a ``compiled`` variant, one that runs the variant (this module's function
    of the same name) on C-contiguous NumPy float32 arrays, and the xp function on everything else (CuPy, float16
    and float64, strided views, no Numba, ``ALEXDSL_NUMBA=0``): the variants round a float64 computation accurate
    to about 1e-12 once to float32, which a float64 result would not hide, or compute in float32 within a few
    ulps of the float64 truth (the epilogue forms). The function it returns names the variant's epilogue form, if
    it has one (``epilogue_form``: a key of :data:`.numba_kernels.FORMS`), for :func:`bias_activation_`."""
    function = kernel.function
    if not kernel.compiled:
        return function
    variant = globals()[kernel.name]

    @wraps(function)
    def run(x: Array, *args: Any, out: Array | None = None) -> Array:
        compiled = is_float32_numpy(x) and numba_kernels(x.dtype) is not None
        if compiled and (out is None or (isinstance(out, numpy.ndarray) and out.flags.c_contiguous
                                         and out.dtype == x.dtype and out.shape == x.shape)):
            return variant(x, *args, out=out)
        return function(x, *args, out=out)

    run.epilogue_form = getattr(variant, "epilogue_form", None)  # type: ignore[attr-defined]
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
    out = _copied_into(x, out)
    kernels = numba_kernels(out.dtype)
    kernel = kernels.gelu_tanh_range if approximate == "tanh" else kernels.gelu_erf_range
    values, floor = out.reshape(-1), EXP_FLOOR
    parallel_for(numpy, values.size, 8 * values.size, lambda lo, hi: kernel(values, lo, hi, floor),
                 lambda team, bounds: team.gelu(values, bounds, floor, approximate == "tanh"))
    return out


def is_float32_numpy(y: Any) -> bool:
    """Whether ``y`` is what the compiled kernels take: a C-contiguous NumPy float32 array."""
    return isinstance(y, numpy.ndarray) and y.dtype == numpy.float32 and y.flags.c_contiguous


def _copied_into(x: numpy.ndarray, out: numpy.ndarray | None) -> numpy.ndarray:
    """``out`` (a new array where None) holding ``x``, for a kernel that runs in place (``out`` may be ``x``)."""
    out = x.copy() if out is None else out
    if out is not x:
        out[...] = x
    return out


def bias_activation_(y: Array, bias: Array | None, relu: bool, act: Any, residual: Array | None = None) -> bool:
    """``y = act(relu(y + bias + residual))`` in place in one compiled pass (:func:`.numba_kernels.bias_activation`),
    split over the thread pool by (N, C) planes, where it can: ``y`` a C-contiguous NumPy float32 (N, C, H, ...)
    (not a fully connected layer's (N, C), whose planes are single elements), ``bias`` (C,) or None, ``residual``
    None or a C-contiguous float32 of ``y``'s shape, ``act`` None or an ``rt.<name>`` whose compiled variant has
    an epilogue form, not both ``relu`` and ``act``, Numba there. Returns whether it ran; otherwise ``y`` is
    untouched.

    >>> import numpy as np
    >>> from alexdsl.backends.executor import runtime as rt
    >>> y, bias = np.array([[[-2.0, 7.0], [0.5, -1.0]]], np.float32), np.array([1.0, 0.0], np.float32)
    >>> expected = np.clip(y + bias.reshape(1, 2, 1), 0, 6)  # (N, C, P) = (1, 2, 2)
    >>> bias_activation_(y, bias, False, rt.relu6) == (numba_kernels(y.dtype) is not None)  # ran where Numba is
    True
    >>> bool((y == expected).all()) or numba_kernels(y.dtype) is None
    True
    """
    if isinstance(y, numpy.ndarray) and y.ndim == 2 and bias is not None:
        return _rows_bias_activation(y, bias, relu, act, residual)
    epilogue = _epilogue(y, bias, relu, act, residual)
    if epilogue is None or epilogue is True:
        return epilogue is True
    kernels = numba_kernels(y.dtype)
    values, shift, plane, form, added = epilogue
    planes = values.size // plane if plane else 0
    parallel_for(numpy, planes, values.size, lambda lo, hi: kernels.bias_activation(
        values, shift, plane, form, lo * plane, hi * plane, added),
        lambda team, bounds: team.bias_activation(values, shift, plane, form, bounds * plane, added))
    return True


def _rows_bias_activation(y: numpy.ndarray, bias: Array, relu: bool, act: Any, residual: Array | None) -> bool:
    """:func:`bias_activation_` on a fully connected layer's (N, C) output, a row at a time
    (:func:`.numba_kernels.bias_activation_rows`)."""
    name = _form_name(relu, act)
    kernels = numba_kernels(y.dtype)
    if name is None or kernels is None or not is_float32_numpy(y) \
            or not (is_float32_numpy(bias) and bias.shape == y.shape[1:]) \
            or not (residual is None or (is_float32_numpy(residual) and residual.shape == y.shape)):
        return False
    added, form = numpy.empty((0, 0), numpy.float32) if residual is None else residual, kernels.FORMS[name]
    parallel_for(numpy, y.shape[0], y.size, lambda lo, hi: kernels.bias_activation_rows(y, bias, form, lo, hi, added),
                 lambda team, bounds: team.bias_activation_rows(y, bias, form, bounds, added))
    return True


def _form_name(relu: bool, act: Any) -> str | None:
    """The epilogue form (a key of :data:`.numba_kernels.FORMS`) of ReLU or ``act``, ``"bias"`` for neither; None
    where there is none (``act`` without a compiled form, or ReLU and ``act`` both)."""
    if act is None:
        return "relu" if relu else "bias"
    return None if relu else getattr(act, "epilogue_form", None)


Epilogue = tuple[numpy.ndarray, numpy.ndarray, int, int, numpy.ndarray]  # values, bias, plane, form, residual


def _epilogue(y: Array, bias: Array | None, relu: bool, act: Any, residual: Array | None) -> Epilogue | bool | None:
    """:func:`.numba_kernels.bias_activation`'s arguments for :func:`bias_activation_` on ``y``; True where there is
    nothing to do, None where the compiled pass cannot run it."""
    name = _form_name(relu, act)
    if name is None or not is_float32_numpy(y) or y.ndim < 3:
        return None
    kernels = numba_kernels(y.dtype)
    if kernels is None or (bias is not None and not (is_float32_numpy(bias) and bias.size == y.shape[1])):
        return None
    if residual is not None and not (is_float32_numpy(residual) and residual.shape == y.shape):
        return None
    if bias is None and residual is None and name == "bias":
        return True
    empty = numpy.empty(0, numpy.float32)
    values, planes = y.reshape(-1), y.shape[0] * y.shape[1]
    return (values, empty if bias is None else bias, values.size // planes if planes else 0, kernels.FORMS[name],
            empty if residual is None else residual.reshape(-1))


def gemm_bias_activation_(a: Array, b: Array, y: Array, bias: Array | None, relu: bool, act: Any,
                          residual: Array | None = None) -> bool:
    """On the native team (:func:`.arrays.on_native_team`): ``y = a @ b`` ((N, C, P) = (C, K) @ (N, K, P), a conv's
    GEMM) and :func:`bias_activation_`'s epilogue in one team region, each thread's rows of the product then their
    epilogue while they are in its cache. Returns whether it ran; otherwise ``y`` is untouched."""
    if native_team() is None:
        return False
    epilogue = _epilogue(y, bias, relu, act, None if residual is None else residual.reshape(y.shape))
    planned = team_gemm(a, b, y) if epilogue is not None and epilogue is not True else None
    if planned is None:
        return False
    module, layout, bounds, batch = planned
    if layout[module.BY_COLUMNS] and batch > 1:  # a thread's columns of several images are not whole plane runs
        return False
    values, shift, plane, form, added = epilogue
    module.gemm_bias_activation(layout, bounds, values, shift, plane, form, added)
    return True


def _activation(name: str, x: numpy.ndarray, out: numpy.ndarray | None) -> numpy.ndarray:
    """The compiled epilogue form ``name`` alone over ``x`` (C-contiguous float32), into ``out`` (may be ``x``)."""
    out = _copied_into(x, out)
    kernels = numba_kernels(out.dtype)
    values, form, empty = out.reshape(-1), kernels.FORMS[name], numpy.empty(0, out.dtype)
    parallel_for(numpy, values.size, values.size, lambda lo, hi: kernels.bias_activation(
        values, empty, values.size, form, lo, hi, empty),
        lambda team, bounds: team.bias_activation(values, empty, values.size, form, bounds, empty))
    return out


def _epilogue_variant(name: str) -> Callable[..., numpy.ndarray]:
    """The compiled variant of the op kernel ``name`` (:data:`.numba_kernels.FORMS`), for :func:`with_compiled`."""
    def variant(x: numpy.ndarray, *, out: numpy.ndarray | None = None) -> numpy.ndarray:
        return _activation(name, x, out)

    variant.__name__ = variant.__qualname__ = name
    variant.__doc__ = f":func:`alexdsl.ops.activation.{name}` compiled for float32, in one pass (:func:`_activation`)."
    variant.epilogue_form = name  # type: ignore[attr-defined]
    return variant


relu6 = _epilogue_variant("relu6")
hardsigmoid = _epilogue_variant("hardsigmoid")
hardswish = _epilogue_variant("hardswish")
sigmoid = _epilogue_variant("sigmoid")
silu = _epilogue_variant("silu")
