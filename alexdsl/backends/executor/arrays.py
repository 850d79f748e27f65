"""The array module (NumPy or CuPy), the CPU thread pool, and scratch sizing: what every kernel module uses.

Kernels are written once against an array module ``xp``: :func:`array_module` gives the one
that owns an array. On NumPy the GEMMs already use every core (BLAS threads), but copies and
elementwise passes (im2col, pooling, LRN, the epilogues) run on one; they release the GIL,
so :func:`parallel_for` splits them over the batch (or channels) on a small thread pool.
``ALEXDSL_NUM_THREADS=1`` turns this off.

>>> import numpy as np
>>> array_module(np.zeros(2)) is np
True
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache, partial
from types import ModuleType
from typing import Any

import numpy

from alexdsl.ops.xp import Array, array_module  # noqa: F401 - the kernels' array module, written once in ops

Activation = Callable[..., Array]  # an elementwise kernel f(x, *, out=None); out=x runs it in place

try:  # pragma: no cover - exercised only where CuPy is installed
    import cupy as cupy_module
except Exception:  # noqa: BLE001 - ImportError, or a CUDA runtime that fails to load
    cupy_module = None


#
# On NumPy the GEMMs already use every core (BLAS threads), but copies and elementwise
# passes (im2col, pooling, LRN, the bias+ReLU epilogue) run on one.  Those release the
# GIL, so the executor splits them over the batch (or channels) across a small thread
# pool.  ALEXDSL_NUM_THREADS=1 turns this off.

_POOL: ThreadPoolExecutor | None = None
PARALLEL_MIN_ELEMENTS = 1 << 18
_this_thread = threading.local()  # .threads, .numba, .gemm: what settings_read_once fixed on this thread, when set


def num_threads() -> int:
    """Threads for the memory-bound NumPy passes: 1 inside :func:`one_thread`, else env ALEXDSL_NUM_THREADS, else
    the CPU count (as read when this thread entered :func:`settings_read_once`, where it did)."""
    pinned = getattr(_this_thread, "threads", None)
    if pinned is not None:
        return pinned
    env = os.environ.get("ALEXDSL_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


@contextmanager
def settings_read_once(threads: int | None = None) -> Iterator[None]:
    """Within it, this thread reads ``ALEXDSL_NUM_THREADS``, ``ALEXDSL_NUMBA`` and ``ALEXDSL_GEMM`` once, at entry:
    :func:`num_threads` (``threads`` where given), :func:`numba_kernels` and :func:`gemm_layout` answer from what
    it read. An executor call enters it once, so that its layers do not each read the environment (a few hundred
    reads a call on MobileNetV2, about 5% of its time at small sizes).

    >>> with settings_read_once(threads=3):
    ...     num_threads()
    3
    """
    saved = tuple(getattr(_this_thread, name, None) for name in _SETTINGS)
    values = (num_threads() if threads is None else threads, _numba_enabled(), _gemm_env())
    for name, value in zip(_SETTINGS, values, strict=True):
        setattr(_this_thread, name, value)
    try:
        yield
    finally:
        for name, value in zip(_SETTINGS, saved, strict=True):
            setattr(_this_thread, name, value)


_SETTINGS = ("threads", "numba", "gemm")  # what settings_read_once fixes on its thread


def one_thread() -> AbstractContextManager[None]:
    """Within it, :func:`num_threads` is 1 on the calling thread (and only there): a batch shard's thread runs
    every kernel on itself, and never submits work to the pool it may be running on (that could deadlock)."""
    return settings_read_once(threads=1)


def thread_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool for the NumPy passes, with at least ``threads`` workers."""
    global _POOL
    if _POOL is None or _POOL._max_workers < threads:
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="alexdsl", initializer=_one_thread_here)
    return _POOL


def _one_thread_here() -> None:
    """A pool worker's :func:`num_threads` is 1: a kernel it runs (an activation on a block of the depthwise conv's
    planes) runs its own :func:`parallel_for` inline, never waiting on the pool it is part of."""
    _this_thread.threads = 1


TEAM_MIN_ELEMENTS = 1 << 14  # work below which a kernel runs on the calling thread alone on the native team
TEAM_MIN_MACS = 1 << 20  # multiply-adds below which a GEMM runs on the calling thread alone on the native team
# the same for a row vector times a matrix (16 MB of float32 weights): split, MobileNetV2's 1280 -> 1000 classifier
# took 0.097 ms against 0.068 on one thread; AlexNet's fc6 and fc7 (151 and 67 MB) gain from two threads' bandwidth
TEAM_MIN_GEMV = 1 << 22
Team = tuple[ModuleType, int]  # the native team's kernels (:mod:`.native_threads`) and its thread count


def native_team() -> Team | None:
    """The native team this thread's call runs on (:func:`on_native_team`), or None."""
    return getattr(_this_thread, "team", None)


@contextmanager
def on_native_team(when: bool = True) -> Iterator[bool]:
    """Within it (where ``when``, :func:`num_threads` > 1 and :func:`.native_threads.available`), this thread's
    GEMMs (:func:`matmul`) and compiled kernels (:func:`parallel_for`'s ``team`` variant) run on Numba's OpenMP
    threads with BLAS pinned to one thread; every other pass runs on the calling thread. Yields whether it does.

    ``ALEXDSL_NATIVE_THREADS=0`` (or ``ALEXDSL_NUMBA=0``) turns it off: the pool and BLAS's threads, as before.
    """
    threads = num_threads() if when and os.environ.get("ALEXDSL_NATIVE_THREADS", "1") != "0" else 1
    module = _native_module() if threads > 1 and getattr(_this_thread, "team", None) is None else None
    size = module.team_size(threads) if module is not None else 1
    pin = blas_one_thread() if size > 1 else None
    if pin is None:
        yield False
        return
    with pin:
        module.set_team_size(size)
        _this_thread.team = (module, size)
        try:
            yield True
        finally:
            _this_thread.team = None


def _native_module() -> ModuleType | None:
    """:mod:`.native_threads` where the team can run (:func:`.native_threads.available`), else None."""
    if numba_kernels(numpy.float32) is None:
        return None
    if not _TEAM:
        with _TEAM_PROBE:
            if not _TEAM:
                from alexdsl.backends.executor import native_threads

                _TEAM.append(native_threads if native_threads.available() else None)
    return _TEAM[0]


_TEAM: list[ModuleType | None] = []  # the probe's answer, once known
_TEAM_PROBE = threading.Lock()  # one thread probes Numba's threading layer (the workqueue layer aborts on two)


def matmul(a: Array, b: Array, out: Array) -> Array:
    """``numpy.matmul(a, b, out=out)`` (or CuPy's); on the native team (:func:`on_native_team`) a float32 GEMM of
    at least :data:`TEAM_MIN_MACS` multiply-adds is split over the team's threads by rows (or columns) of ``out``,
    each thread calling BLAS on its part (:func:`.native_threads.cblas_layout`; the one-thread result to float32
    rounding: OpenBLAS may pick another kernel for a part than for the whole)."""
    planned = team_gemm(a, b, out)
    if planned is None:
        return kernel(array_module(a).matmul, a, b, out=out)
    module, layout, bounds, _ = planned
    module.gemm(layout, bounds)
    return out


def team_gemm(a: Array, b: Array, out: Array) -> tuple[ModuleType, numpy.ndarray, numpy.ndarray, int] | None:
    """How the native team computes ``out = a @ b`` on this thread's call (:func:`on_native_team`): its kernels
    (:mod:`.native_threads`), :func:`.native_threads.gemm`'s layout and bounds, and the number of matrices; None
    off the team, for a GEMM that is not float32 NumPy or under :data:`TEAM_MIN_MACS` (:data:`TEAM_MIN_GEMV`),
    or one CBLAS cannot take as it is."""
    team = getattr(_this_thread, "team", None)
    if team is None or not (isinstance(out, numpy.ndarray) and out.dtype == a.dtype == b.dtype == numpy.float32) \
            or out.size * a.shape[-1] < (TEAM_MIN_GEMV if out.shape[-2] == 1 else TEAM_MIN_MACS):
        return None
    module, threads = team
    laid = module.cblas_layout(a, b, out)
    if laid is None:
        return None
    tape = getattr(_this_thread, "tape", None)
    if tape is not None:  # the layout holds their addresses, not them: a replay needs them alive
        tape.keep.append((a, b, out))
    layout, batch, per_matrix = laid
    align = per_matrix if batch >= threads else module.MIN_SPLIT_ROWS
    return module, layout, module.split(batch * per_matrix, threads, align), batch


def parallel_for(
    xp: ModuleType,
    total: int,
    work: int,
    fn: Callable[[int, int], None],
    team: Callable[[ModuleType, numpy.ndarray], None] | None = None,
) -> None:
    """Run ``fn(lo, hi)`` over ``range(total)`` in chunks on the thread pool (NumPy only).

    Falls back to one call when on CuPy, when ``work`` (elements touched) is small, or
    when there is one thread. On the native team (:func:`on_native_team`) ``team(kernels, bounds)`` runs the
    compiled kernel's team variant on bounds ``[0, ..., total]``, one range per team thread, where given and
    ``work`` is at least :data:`TEAM_MIN_ELEMENTS`; else ``fn(0, total)`` runs on the calling thread.
    """
    native = getattr(_this_thread, "team", None)
    if native is not None:
        module, threads = native
        if team is not None and min(threads, total) > 1 and work >= TEAM_MIN_ELEMENTS:
            team(module, module.split(total, min(threads, total)))
        else:
            fn(0, total)
        return
    threads = min(num_threads(), total)
    if xp is not numpy or threads <= 1 or work < PARALLEL_MIN_ELEMENTS:
        fn(0, total)
        return
    pool = thread_pool(threads)
    bounds = [total * i // threads for i in range(threads + 1)]
    futures = [pool.submit(fn, lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]
    for future in futures:
        future.result()


SCRATCH_CAP_BYTES = {"numpy": 32 << 20, "cupy": 1 << 30}


def scratch_rows(library: str, batch: int, per_image: int, itemsize: int = 4) -> int:
    """Images whose im2col columns the shared scratch holds at once (``library``: numpy or cupy).

    Enough for every thread (NumPy) and otherwise as many as fit in a cap (32 MiB on
    NumPy, 1 GiB on CuPy); convs run larger batches in chunks of this size.

    >>> scratch_rows("cupy", 256, 1_936_224)  # AlexNet's conv2: 7.4 MiB an image
    138
    """
    if per_image <= 0:
        return 0
    cap = SCRATCH_CAP_BYTES.get(library, SCRATCH_CAP_BYTES["cupy"])
    fit = max(1, cap // (per_image * itemsize))
    if library == "numpy":
        fit = max(fit, num_threads())
    return min(batch, fit)


GEMM_LAYOUTS = ("batched", "wide")


def gemm_layout(xp: ModuleType) -> str:
    """The convolution GEMM layout (see :func:`conv2d`) for library ``xp``.

    ``ALEXDSL_GEMM=batched|wide`` when set, else ``"wide"`` on CuPy and ``"batched"`` on NumPy.
    """
    env = getattr(_this_thread, "gemm", None)
    if env is None:
        env = _gemm_env()
    if env in GEMM_LAYOUTS:
        return env
    return "batched" if xp is numpy else "wide"


def _gemm_env() -> str:
    return os.environ.get("ALEXDSL_GEMM", "")


def as_pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def as_strided(xp: ModuleType, x: Array, shape: tuple[int, ...], strides: tuple[int, ...]) -> Array:
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


_BLAS_CONTROLLER: Any = None


def _blas_controller() -> Any:
    """threadpoolctl's controller of the loaded BLAS, or False without threadpoolctl."""
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROLLER = ThreadpoolController()
        except ImportError:
            _BLAS_CONTROLLER = False
    return _BLAS_CONTROLLER


def can_pin_blas() -> bool:
    """Whether :func:`blas_one_thread` can pin BLAS (threadpoolctl is installed); changes nothing."""
    return _blas_controller() is not False


def blas_one_thread() -> Any:
    """BLAS pinned to one thread (threadpoolctl) until the returned context manager exits, or None if unavailable.

    The pin takes effect at this call, not at ``with``: ask :func:`can_pin_blas` to only know whether it can.
    Pins held at once (calls on several threads of the caller's) share one: the first pins BLAS, the last to exit
    sets it back, so that overlapping calls neither unpin BLAS under each other nor leave it pinned.
    """
    global _pin_holders, _pin_limiter
    controller = _blas_controller()
    if controller is False:
        return None
    with _PIN_LOCK:
        if _pin_holders == 0:
            _pin_limiter = controller.limit(limits=1, user_api="blas")
        _pin_holders += 1
    return _BlasPin()


_PIN_LOCK = threading.Lock()
_pin_holders = 0  # the pins held now, on any thread
_pin_limiter: Any = None  # threadpoolctl's limiter of the pin they share


class _BlasPin:
    """One holder of the shared pin (:func:`blas_one_thread`); leaving its ``with`` releases it."""

    def __enter__(self) -> _BlasPin:
        return self

    def __exit__(self, *exc: object) -> None:
        global _pin_holders, _pin_limiter
        with _PIN_LOCK:
            _pin_holders -= 1
            if _pin_holders == 0:
                _pin_limiter.restore_original_limits()
                _pin_limiter = None


def blas_pinned(when: bool = True) -> AbstractContextManager[Any]:
    """:func:`blas_one_thread` where ``when`` and threadpoolctl allow it (pinned at this call), else a context
    manager that changes nothing."""
    pin = blas_one_thread() if when else None
    return pin if pin is not None else nullcontext()


@cache
def tap_windows(
    height: int,
    width: int,
    out_h: int,
    out_w: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[tuple[int, slice, slice, slice, slice], ...]:
    """Per kernel tap: (tap index, output rows, output cols, input rows, input cols) it touches.

    A tap only reaches the output pixels whose input pixel lies inside the image, so zero
    padding needs neither a padded copy nor bounds checks.  Taps that reach nothing are left out.
    """
    taps = []

    def span(k: int, s: int, p: int, d: int, size: int, out: int) -> tuple[slice, slice] | None:
        offset = k * d - p  # input index of output 0
        lo, hi = max(0, -(offset // s)), min(out, (size - 1 - offset) // s + 1)
        if lo >= hi:
            return None
        start = lo * s + offset
        return slice(lo, hi), slice(start, start + (hi - lo - 1) * s + 1, s)

    for i in range(kernel[0]):
        rows = span(i, stride[0], pad[0], dilation[0], height, out_h)
        for j in range(kernel[1]):
            cols = span(j, stride[1], pad[1], dilation[1], width, out_w)
            if rows is not None and cols is not None:
                taps.append((i * kernel[1] + j, rows[0], cols[0], rows[1], cols[1]))
    return tuple(taps)


def numba_kernels(dtype: Any) -> ModuleType | None:
    """:mod:`alexdsl.backends.executor.numba_kernels` for arrays of ``dtype``, or None for plain NumPy.

    None without Numba (the optional ``numba`` extra), with ``ALEXDSL_NUMBA=0``, or for a dtype
    the kernels are not compiled for (float16). Numba is imported on the first call only.
    """
    enabled = getattr(_this_thread, "numba", None)
    if not (_numba_enabled() if enabled is None else enabled):
        return None
    kernels = _numba_module()
    if kernels is None or numpy.dtype(dtype) not in _kernel_dtypes():
        return None
    return kernels if getattr(_this_thread, "tape", None) is None else _recorded(kernels)


def _numba_enabled() -> bool:
    return os.environ.get("ALEXDSL_NUMBA", "1") != "0"


@cache
def _numba_module() -> ModuleType | None:
    try:
        from alexdsl.backends.executor import numba_kernels
    except ImportError:
        return None
    return numba_kernels


@cache
def _kernel_dtypes() -> frozenset[numpy.dtype]:
    """The dtypes the Numba kernels are compiled for, as a set (a dtype's ``name`` costs microseconds a call)."""
    kernels = _numba_module()
    return frozenset(numpy.dtype(name) for name in kernels.DTYPES) if kernels is not None else frozenset()


# Replaying a forward pass's kernels (capture and replay, as CUDA graphs do on the GPU) ---------------------------


class KernelTape:
    """The kernel calls of one forward pass, in order, with their arguments (:func:`capturing` records them):
    :meth:`replay` redoes the pass without its Python, as a CUDA graph replays a captured stream's kernels.

    A kernel here is a Numba kernel (:mod:`.numba_kernels`, :mod:`.native_threads`) or a NumPy call made through
    :func:`kernel`: its effects are on its array arguments alone, and a replay writes the same buffers again.
    Whatever a pass does outside them is not replayed: the executor checks a tape against its forward pass
    before it uses it (:meth:`.Executor.replays`).

    >>> import numpy as np
    >>> a, b, out = np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), np.empty((2, 2), np.float32)
    >>> tape = KernelTape()
    >>> with capturing(tape):
    ...     _ = matmul(a, b, out=out)
    >>> a[...] = 2
    >>> tape.replay()
    >>> out.tolist()
    [[6.0, 6.0], [6.0, 6.0]]
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self.keep: list[Any] = []  # arrays the calls reach by address (a team GEMM's operands), kept alive

    def replay(self) -> None:
        for fn, args, kwargs in self.calls:
            fn(*args, **kwargs)


def kernel(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` for a kernel (its effects on its array arguments alone), recorded onto this thread's
    :class:`KernelTape` while it is :func:`capturing`."""
    tape = getattr(_this_thread, "tape", None)
    if tape is not None:
        tape.calls.append((fn, args, kwargs))
    return fn(*args, **kwargs)


@contextmanager
def capturing(tape: KernelTape) -> Iterator[None]:
    """Within it, this thread's kernels (:func:`kernel`, those of :func:`numba_kernels` and of the native team) run
    and are recorded onto ``tape``."""
    team = getattr(_this_thread, "team", None)
    _this_thread.tape = tape
    if team is not None:
        _this_thread.team = (_recorded(team[0]), team[1])
    try:
        yield
    finally:
        _this_thread.tape = None
        _this_thread.team = team


class _Recording:
    """A kernel module seen while capturing: its Numba kernels go through :func:`kernel`, its other names unchanged."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        if hasattr(value, "py_func"):  # a Numba dispatcher
            return partial(kernel, value)
        return value


@cache
def _recorded(module: ModuleType) -> Any:
    return _Recording(module)

