"""The native thread team: Numba's OpenMP threads run the executor's GEMMs and compiled kernels on several threads.

Importing this module imports Numba (the optional ``numba`` extra); :func:`alexdsl.backends.executor.arrays.
on_native_team` imports it on first use. A call runs on the team where :func:`available` says so: Numba's
threading layer is OpenMP (libgomp, whose threads spin for about 10 ms after each parallel region, so handing
work to them costs about 2 us where waking a Python pool thread costs tens), and the loaded BLAS is an ILP64
OpenBLAS (NumPy's wheels) whose ``cblas_sgemm`` the team's threads call on their own part of each float32 GEMM
(:func:`gemm`), BLAS pinned to one thread (its own threads spin as well, and the two teams on the same cores
slowed batch 1 twentyfold).

The other kernels here give range ``bounds[t]..bounds[t + 1]`` to team thread ``t`` and call the serial kernel of
:mod:`alexdsl.backends.executor.numba_kernels` on it, so they compute what one thread computes, bit for bit.
"""

from __future__ import annotations

import ctypes
from functools import cache

import llvmlite.binding
import numba
import numpy
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from alexdsl.backends.executor import numba_kernels as serial

SGEMM_SYMBOL, SGEMV_SYMBOL = "alexdsl_cblas_sgemm64", "alexdsl_cblas_sgemv64"
"""The names the compiled GEMMs call ``cblas_sgemm`` and ``cblas_sgemv`` by (bound to the loaded OpenBLAS's at
import), so that the kernels cached on disk do not depend on which NumPy build's symbols they are."""
_OPENBLAS_NAMES = ("scipy_cblas_{}64_", "cblas_{}64_")  # ILP64 OpenBLAS in NumPy 2's and NumPy 1's wheels
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _openblas_functions() -> tuple[int, int] | None:
    """The addresses of the loaded OpenBLAS's ILP64 ``cblas_sgemm`` and ``cblas_sgemv`` (threadpoolctl finds the
    library), or None."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for info in threadpool_info():
        if info.get("internal_api") != "openblas":
            continue
        try:
            library = ctypes.CDLL(info["filepath"])
        except OSError:
            continue
        for pattern in _OPENBLAS_NAMES:
            gemm_f, gemv_f = (getattr(library, pattern.format(name), None) for name in ("sgemm", "sgemv"))
            if gemm_f is not None and gemv_f is not None:
                return tuple(ctypes.cast(f, ctypes.c_void_p).value for f in (gemm_f, gemv_f))
    return None


_ADDRESSES = _openblas_functions()
if _ADDRESSES is not None:
    llvmlite.binding.add_symbol(SGEMM_SYMBOL, _ADDRESSES[0])
    llvmlite.binding.add_symbol(SGEMV_SYMBOL, _ADDRESSES[1])


@intrinsic
def _sgemm(typingctx, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):  # noqa: ANN001, ANN202 - an intrinsic
    """``C = op(A) @ op(B)`` (row-major, float32, no scaling) by the OpenBLAS ``cblas_sgemm`` bound to
    :data:`SGEMM_SYMBOL`; matrices by address, sizes and strides as int64."""
    signature = types.void(types.int32, types.int32, types.int64, types.int64, types.int64, types.uintp,
                           types.int64, types.uintp, types.int64, types.uintp, types.int64)

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        i32, i64, f32, pointer = ir.IntType(32), ir.IntType(64), ir.FloatType(), ir.IntType(8).as_pointer()
        function_type = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, f32, pointer, i64, pointer,
                                                        i64, f32, pointer, i64])
        function = cgutils.get_or_insert_function(builder.module, function_type, SGEMM_SYMBOL)
        ta, tb, rows, cols, inner, a_at, a_ld, b_at, b_ld, c_at, c_ld = args
        builder.call(function, [i32(_ROW_MAJOR), ta, tb, rows, cols, inner, f32(1.0), builder.inttoptr(a_at, pointer),
                                a_ld, builder.inttoptr(b_at, pointer), b_ld, f32(0.0),
                                builder.inttoptr(c_at, pointer), c_ld])
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def _sgemv(typingctx, trans, m, n, a, lda, x, incx, y):  # noqa: ANN001, ANN202 - an intrinsic
    """``y = op(A) @ x`` (row-major ``A`` (m, n), float32, ``y`` contiguous) by the OpenBLAS ``cblas_sgemv`` bound to
    :data:`SGEMV_SYMBOL`."""
    signature = types.void(types.int32, types.int64, types.int64, types.uintp, types.int64, types.uintp, types.int64,
                           types.uintp)

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        i32, i64, f32, pointer = ir.IntType(32), ir.IntType(64), ir.FloatType(), ir.IntType(8).as_pointer()
        function_type = ir.FunctionType(ir.VoidType(), [i32, i32, i64, i64, f32, pointer, i64, pointer, i64, f32,
                                                        pointer, i64])
        function = cgutils.get_or_insert_function(builder.module, function_type, SGEMV_SYMBOL)
        op, rows, cols, a_at, a_ld, x_at, x_inc, y_at = args
        builder.call(function, [i32(_ROW_MAJOR), op, rows, cols, f32(1.0), builder.inttoptr(a_at, pointer), a_ld,
                                builder.inttoptr(x_at, pointer), x_inc, f32(0.0), builder.inttoptr(y_at, pointer),
                                i64(1)])
        return context.get_dummy_value()

    return signature, codegen


BY_COLUMNS = 19  # the field of a :func:`gemm` layout that says whether the team splits C's columns (else rows)


@numba.njit(nogil=True, cache=True, parallel=True)
def gemm(layout: numpy.ndarray, bounds: numpy.ndarray) -> None:  # pragma: no cover - compiled
    """``C[i, j] = op(A[i, j]) @ op(B[i, j])`` for every matrix of a batch of up to two dimensions, float32, team
    thread ``t`` computing units ``bounds[t]..bounds[t + 1]``: rows of every C (unit ``(i * b2 + j) * m + r``)
    where ``layout[BY_COLUMNS]`` is 0, else columns (unit ``(i * b2 + j) * n + c``).

    ``layout`` (int64, :func:`cblas_layout`): trans A, trans B (CBLAS codes), m, n, k, the batch's two sizes, then
    per operand A, B, C its address (bytes), its strides along the two batch dimensions and its leading dimension
    (elements), then the split.
    """
    for t in prange(bounds.size - 1):
        _gemm_units(layout, bounds[t], bounds[t + 1])


@numba.njit(nogil=True, cache=True, parallel=True)
def gemm_bias_activation(layout, bounds, values, bias, plane, form, residual):  # noqa: ANN001, ANN201 # pragma: no cover
    """:func:`gemm`, then each thread's :func:`.numba_kernels.bias_activation` on the part of C it computed, in one
    team region: C's rows are the (N, C) planes of ``values`` (a conv's output); split by columns, C is one
    matrix (a batch of one)."""
    rows, by_columns = layout[2], layout[BY_COLUMNS] != 0
    for t in prange(bounds.size - 1):
        _gemm_units(layout, bounds[t], bounds[t + 1])
        if by_columns:
            for row in range(rows):
                serial.bias_activation(values, bias, plane, form, row * plane + bounds[t], row * plane + bounds[t + 1],
                                       residual)
        else:
            serial.bias_activation(values, bias, plane, form, bounds[t] * plane, bounds[t + 1] * plane, residual)


@numba.njit(nogil=True, cache=True, inline="always")
def _gemm_units(layout: numpy.ndarray, unit: int, end: int) -> None:  # pragma: no cover - compiled
    """:func:`gemm`'s units ``unit..end`` on the calling thread."""
    ta, tb, m, n, k, inner = layout[0], layout[1], layout[2], layout[3], layout[4], layout[6]
    a, a_outer, a_inner, lda = layout[7], layout[8], layout[9], layout[10]
    b, b_outer, b_inner, ldb = layout[11], layout[12], layout[13], layout[14]
    c, c_outer, c_inner, ldc = layout[15], layout[16], layout[17], layout[18]
    by_columns = layout[BY_COLUMNS] != 0
    span = n if by_columns else m
    while unit < end:
        matrix, first = unit // span, unit % span
        count = min(span - first, end - unit)
        i, j = matrix // inner, matrix % inner
        a_at = a + 4 * (i * a_outer + j * a_inner)
        b_at = b + 4 * (i * b_outer + j * b_inner)
        c_at = c + 4 * (i * c_outer + j * c_inner)
        if by_columns and m == 1:  # a row vector times a matrix: GEMV, each thread streaming its columns' weights
            b_at += 4 * first * (ldb if tb == _TRANS else 1)
            c_at += 4 * first
            x_inc = lda if ta == _TRANS else 1
            if tb == _TRANS:  # stored (n, k): y = B_stored x
                _sgemv(numpy.int32(_NO_TRANS), count, k, numba.uintp(b_at), ldb, numba.uintp(a_at), x_inc,
                       numba.uintp(c_at))
            else:  # stored (k, n): y = B_stored^T x
                _sgemv(numpy.int32(_TRANS), k, count, numba.uintp(b_at), ldb, numba.uintp(a_at), x_inc,
                       numba.uintp(c_at))
        elif by_columns:
            b_at += 4 * first * (ldb if tb == _TRANS else 1)
            c_at += 4 * first
            _sgemm(numpy.int32(ta), numpy.int32(tb), m, count, k, numba.uintp(a_at), lda, numba.uintp(b_at), ldb,
                   numba.uintp(c_at), ldc)
        else:
            a_at += 4 * first * (1 if ta == _TRANS else lda)
            c_at += 4 * first * ldc
            _sgemm(numpy.int32(ta), numpy.int32(tb), count, n, k, numba.uintp(a_at), lda, numba.uintp(b_at), ldb,
                   numba.uintp(c_at), ldc)
        unit += count


def cblas_layout(a: numpy.ndarray, b: numpy.ndarray, out: numpy.ndarray) -> tuple[numpy.ndarray, int, int] | None:
    """:func:`gemm`'s ``layout`` for ``out[...] = a @ b`` of float32 arrays (``a`` (..., m, k), ``b`` (..., k, n),
    leading dimensions broadcast to ``out``'s (..., m, n)), with the number of matrices and units per matrix to
    split, or None where CBLAS cannot take it (more than two batch dimensions of size over 1, a matrix with no unit
    stride, ``out`` not row-major): the caller runs ``numpy.matmul``."""
    if out.ndim < 2 or a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        return None
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if out.shape[-2:] != (m, n):
        return None
    if out.size == m * n and a.size == m * k and b.size == k * n and a.flags.c_contiguous \
            and b.flags.c_contiguous and out.flags.c_contiguous:  # one matrix each, row-major: most calls
        by_columns = _by_columns(m, n, k)
        return numpy.array((_NO_TRANS, _NO_TRANS, m, n, k, 1, 1, a.ctypes.data, 0, 0, max(1, k), b.ctypes.data, 0,
                            0, max(1, n), out.ctypes.data, 0, 0, max(1, n), by_columns), dtype=numpy.int64), \
            1, n if by_columns else m
    batch_axes = [axis for axis, size in enumerate(out.shape[:-2]) if size > 1]
    if len(batch_axes) > 2:
        return None
    sizes = [out.shape[axis] for axis in batch_axes]
    outer, inner = ([1, 1] + sizes)[-2:]
    fields = [m, n, k, outer, inner]
    codes = []
    for array, rows, cols in ((a, m, k), (b, k, n), (out, m, n)):
        lead = out.ndim - array.ndim  # the axes ``array`` lacks on the left broadcast
        steps = []
        for axis in batch_axes:
            own = axis - lead
            if own < 0 or array.shape[own] == 1:
                steps.append(0)
            elif array.shape[own] == out.shape[axis] and array.strides[own] % 4 == 0:
                steps.append(array.strides[own] // 4)
            else:
                return None
        outer_step, inner_step = ([0, 0] + steps)[-2:]
        row_stride, col_stride = array.strides[-2], array.strides[-1]
        if row_stride % 4 or col_stride % 4:
            return None
        row_stride, col_stride = row_stride // 4, col_stride // 4
        if (col_stride == 1 or cols == 1) and (row_stride >= cols or rows == 1):
            code, ld = _NO_TRANS, max(1, cols, row_stride if rows > 1 else cols)
        elif array is not out and (row_stride == 1 or rows == 1) and (col_stride >= rows or cols == 1):
            code, ld = _TRANS, max(1, rows, col_stride if cols > 1 else rows)
        else:
            return None
        codes.append(code)
        fields += [array.ctypes.data, outer_step, inner_step, ld]
    by_columns = _by_columns(m, n, k)
    layout = numpy.array([codes[0], codes[1], *fields, int(by_columns)], dtype=numpy.int64)
    return layout, outer * inner, n if by_columns else m


MIN_SPLIT_ROWS = 16  # a split by rows (columns) of C cuts at multiples of this many, where each part gets one


def _by_columns(m: int, n: int, k: int) -> bool:
    """Whether the team splits a GEMM ``(m, k) @ (k, n)`` by columns of C, not rows: where C has more columns than
    rows. OpenBLAS packs B at each call, so a split by rows packs all of B on every thread, and a split by columns
    all of A (two threads, one matrix, best of 30: ViT's 197x768 @ 768x3072 5.4 ms by columns against 6.0 by rows,
    MobileNetV2's stem 32x27 @ 27x12544 0.15 against 0.19, ResNet's 64x147 @ 147x12544 1.36 against 1.52; the
    other way, 1280x320 @ 320x49 0.24 by rows against 0.31)."""
    return n > m


def split(units: int, threads: int, align: int = 1) -> numpy.ndarray:
    """``threads + 1`` bounds that cut ``units`` into even runs, each boundary a multiple of ``align`` where it can.

    >>> split(100, 2, 16).tolist()
    [0, 48, 100]
    """
    if units < threads * align:
        align = 1
    if threads == 2:
        return numpy.array((0, (units // 2 + align // 2) // align * align, units), dtype=numpy.int64)
    cuts = [min(units, (units * t // threads + align // 2) // align * align) for t in range(threads + 1)]
    cuts[-1] = units
    return numpy.array(cuts, dtype=numpy.int64)


@numba.njit(nogil=True, cache=True, parallel=True)
def bias_activation(values, bias, plane, form, bounds, residual):  # noqa: ANN001, ANN201 # pragma: no cover
    """:func:`.numba_kernels.bias_activation` on the team, elements ``bounds[t]..bounds[t + 1]`` each."""
    for t in prange(bounds.size - 1):
        serial.bias_activation(values, bias, plane, form, bounds[t], bounds[t + 1], residual)


@numba.njit(nogil=True, cache=True, parallel=True)
def bias_activation_rows(values, bias, form, bounds, residual):  # noqa: ANN001, ANN201 # pragma: no cover
    """:func:`.numba_kernels.bias_activation_rows` on the team, rows ``bounds[t]..bounds[t + 1]`` each."""
    for t in prange(bounds.size - 1):
        serial.bias_activation_rows(values, bias, form, bounds[t], bounds[t + 1], residual)


@numba.njit(nogil=True, cache=True, parallel=True)
def scale_planes(values, scales, plane, bounds, out):  # noqa: ANN001, ANN201 # pragma: no cover
    """:func:`.numba_kernels.scale_planes` on the team, planes ``bounds[t]..bounds[t + 1]`` each."""
    for t in prange(bounds.size - 1):
        serial.scale_planes(values, scales, plane, bounds[t], bounds[t + 1], out)


@numba.njit(nogil=True, cache=True, parallel=True)
def depthwise_conv2d(x, taps, shift, out, bounds, stride, pad, dilation, relu, form):  # noqa: ANN001, ANN201 # pragma: no cover
    """:func:`.numba_kernels.depthwise_conv2d` on the team, output planes ``bounds[t]..bounds[t + 1]`` each, then
    (``form`` >= 0) each thread's :func:`.numba_kernels.bias_activation` of that form on its planes, in cache."""
    values, empty = out.reshape(-1), numpy.empty(0, out.dtype)
    plane = out.shape[2] * out.shape[3]
    for t in prange(bounds.size - 1):
        serial.depthwise_conv2d(x, taps, shift, out, bounds[t], bounds[t + 1], stride, pad, dilation, relu)
        if form >= 0:
            serial.bias_activation(values, empty, plane, form, bounds[t] * plane, bounds[t + 1] * plane, empty)


@numba.njit(nogil=True, cache=True, parallel=True)
def im2col(planes, cols, bounds, kernel, stride, dilation, out_width):  # noqa: ANN001, ANN201 # pragma: no cover
    """:func:`.numba_kernels.im2col` on the team, input planes ``bounds[t]..bounds[t + 1]`` each."""
    for t in prange(bounds.size - 1):
        serial.im2col(planes, cols, bounds[t], bounds[t + 1], kernel, stride, dilation, out_width)


@numba.njit(nogil=True, cache=True, parallel=True)
def pool2d(x, out, bounds, kernel, stride, pad, divisor):  # noqa: ANN001, ANN201 # pragma: no cover
    """:func:`.numba_kernels.pool2d` on the team, planes ``bounds[t]..bounds[t + 1]`` each."""
    for t in prange(bounds.size - 1):
        serial.pool2d(x, out, bounds[t], bounds[t + 1], kernel, stride, pad, divisor)


@numba.njit(nogil=True, cache=True, parallel=True)
def winograd_input(x, tiles, bounds, pad, grid, four):  # noqa: ANN001, ANN201 # pragma: no cover
    """:func:`.numba_kernels.winograd_input` (``winograd4_input`` where ``four``) on the team, by channels."""
    for t in prange(bounds.size - 1):
        if four:
            serial.winograd4_input(x, tiles, bounds[t], bounds[t + 1], pad, grid)
        else:
            serial.winograd_input(x, tiles, bounds[t], bounds[t + 1], pad, grid)


@numba.njit(nogil=True, cache=True, parallel=True)
def winograd_output(products, bias, out, bounds, relu, residual, four):  # noqa: ANN001, ANN201 # pragma: no cover
    """:func:`.numba_kernels.winograd_output` (``winograd4_output`` where ``four``) on the team, by channels."""
    for t in prange(bounds.size - 1):
        if four:
            serial.winograd4_output(products, bias, out, bounds[t], bounds[t + 1], relu, residual)
        else:
            serial.winograd_output(products, bias, out, bounds[t], bounds[t + 1], relu, residual)


@numba.njit(nogil=True, cache=True, parallel=True)
def layer_norm_channels(x, weight, bias, eps, out, bounds):  # noqa: ANN001, ANN201 # pragma: no cover
    """:func:`.numba_kernels.layer_norm_channels` on the team, blocks ``bounds[t]..bounds[t + 1]`` each."""
    for t in prange(bounds.size - 1):
        serial.layer_norm_channels(x, weight, bias, eps, out, bounds[t], bounds[t + 1])


@numba.njit(nogil=True, cache=True, parallel=True)
def gelu(values, bounds, floor, approximate):  # noqa: ANN001, ANN201 # pragma: no cover
    """:func:`.numba_kernels.gelu_erf_range` (``gelu_tanh_range`` where ``approximate``) on the team."""
    for t in prange(bounds.size - 1):
        if approximate:
            serial.gelu_tanh_range(values, bounds[t], bounds[t + 1], floor)
        else:
            serial.gelu_erf_range(values, bounds[t], bounds[t + 1], floor)


@numba.njit(nogil=True, cache=True, parallel=True)
def _probe(values):  # noqa: ANN001, ANN201 # pragma: no cover - compiled
    for t in prange(values.size):
        values[t] = t


@cache
def available() -> bool:
    """Whether calls can run on the team: an ILP64 OpenBLAS to call, threadpoolctl to pin it, and Numba's threading
    layer OpenMP once a parallel region has run (Numba picks it unless TBB is installed or ``NUMBA_THREADING_LAYER``
    says otherwise; its ``workqueue`` layer sleeps between regions, so waking it costs as much as the thread pool)."""
    if _ADDRESSES is None:
        return False
    _probe(numpy.zeros(2, numpy.int64))
    return numba.threading_layer() == "omp"


def team_size(threads: int) -> int:
    """The team's threads for a call with ``threads``: Numba starts ``NUMBA_NUM_THREADS`` (the CPU count) at most."""
    return max(1, min(threads, numba.config.NUMBA_NUM_THREADS))


def set_team_size(threads: int) -> None:
    numba.set_num_threads(threads)

