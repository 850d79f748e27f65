"""The base class of every generated executor: weights, device, buffers, input checks.

A generated module (see :mod:`alexdsl.backends.executor.codegen`) subclasses
:class:`Executor` with class-level tables (inputs, state keys with fillers, the memory
plan) and two straight-line methods: ``setup(w)`` (compile-time work on the loaded
weights: batchnorm folding, conv plans) and ``forward(...)`` (one line per kernel).
"""

from __future__ import annotations

import copy
import math
import os
import threading
import warnings
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy

from alexdsl import weights as weights_io
from alexdsl.backends.executor import runtime as rt
from alexdsl.backends.executor.arrays import (
    KernelTape,
    blas_one_thread,
    blas_pinned,
    can_pin_blas,
    capturing,
    cupy_module,
    gemm_layout,
    native_team,
    num_threads,
    numba_kernels,
    on_native_team,
    one_thread,
    settings_read_once,
    thread_pool,
)
from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.extras import install_command
from alexdsl.ops.fillers import Filler, draw
from alexdsl.ops.registry import lookup

DTYPES = ("float32", "float64", "float16")
CPU_FLOAT16_WARNING = (
    "float16 on the CPU is slow: NumPy has no fast float16 matrix products, so this executor runs "
    "40-140x slower than in float32 (and saves no time); use dtype float32 on the CPU, float16 on a GPU with CuPy"
)


SHARD_MIN_IMAGES = 4
"""The fewest images a batch shard gets: on NumPy with T > 1 threads a batch of ``n >= 2 * SHARD_MIN_IMAGES``
runs as ``min(T, n // SHARD_MIN_IMAGES)`` shards, one per thread (:meth:`Executor.shard_bounds`). Fewer rows
than that can change which kernel runs: OpenBLAS takes its small-matrix GEMM below about 10**6 multiply-adds
(an 800x500 fully connected layer rounds differently at 2 rows than at 4), and Winograd needs 32 tiles a call."""


class SlowDtypeWarning(UserWarning):
    """The executor's dtype is much slower than float32 on its device (float16 on NumPy)."""


def _error(
    message: str, hint: str | None = None, expected: str | None = None, received: str | None = None
) -> AlexDSLError:
    return AlexDSLError([Diagnostic("error", message, expected=expected, received=received, hint=hint)])


def _cupy_hint() -> str:
    return f"install CuPy with `{install_command('cupy')}` (needs an NVIDIA GPU and CUDA), or use device='cpu'"


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    if cupy_module is None:
        return False
    try:
        return cupy_module.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - CUDA driver missing or broken
        return False


def select_device(device: str) -> ModuleType:
    """``"auto"`` -> CuPy when a GPU is usable, else NumPy; ``"cpu"``; ``"cuda"`` (or cuda:N)."""
    if device == "cpu":
        return numpy
    if device == "auto":
        return cupy_module if cuda_available() else numpy
    if device == "cuda" or device.startswith("cuda:"):
        if cupy_module is None:
            raise _error("device 'cuda' needs CuPy, which is not installed", hint=_cupy_hint())
        if not cuda_available():
            raise _error("device 'cuda' requested but CuPy finds no usable CUDA device", hint=_cupy_hint())
        if ":" in device:
            cupy_module.cuda.Device(int(device.split(":", 1)[1])).use()
        return cupy_module
    raise _error(f"unknown device {device!r}", expected="auto, cpu or cuda")


def check_dtype(dtype: Any) -> numpy.dtype:
    name = numpy.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise _error(f"unsupported dtype {name!r}", expected=", ".join(DTYPES))
    return numpy.dtype(name)


COMPUTED = "computed"
"""The filler of a buffer whose values its op computes from its arguments (a relative position index):
``args`` are ``{"op": <op name>, "attrs": <the layer's arguments>}``; its key names the buffer."""


def fill(shape: tuple[int, ...], filler: str, args: Mapping[str, Any], rng: numpy.random.Generator,
         key: str = "") -> numpy.ndarray:
    """Caffe filler semantics (:func:`alexdsl.ops.fillers.draw`); fan_in = count / shape[0], fan_out = count / shape[1].

    For a conv weight (O, C/groups, kh, kw) that is fan_in = C/groups*kh*kw and
    fan_out = O*kh*kw (Caffe's definitions). A :data:`COMPUTED` buffer ``key`` is its op's ``buffer_values``.
    """
    if filler == COMPUTED:
        op = lookup(args["op"])
        assert op is not None, args["op"]
        return op.buffer_values(args["attrs"])[key.rsplit(".", 1)[1]]
    try:
        return draw(Filler(filler, tuple(args.items())), shape, rng)
    except ValueError as error:
        raise _error(str(error)) from None


class Executor:
    """Runs one compiled network on NumPy (CPU) or CuPy (GPU). Subclasses are generated."""

    network_name: ClassVar[str] = ""
    source_file: ClassVar[str | None] = None
    inputs: ClassVar[dict[str, tuple[int, ...]]] = {}
    outputs: ClassVar[tuple[str, ...]] = ()
    token_inputs: ClassVar[tuple[str, ...]] = ()  # integer token ids, held in the float dtype (exact below 2**24)
    # key -> (shape, filler type, filler args); buffers (running stats) use constant fillers
    state: ClassVar[dict[str, tuple[tuple[int, ...], str, dict[str, Any]]]] = {}
    unused: ClassVar[tuple[str, ...]] = ()  # parameters of train-only layers: accepted, ignored
    # the memory plan: per-sample element counts of the reusable buffers, and
    # value name -> (buffer index, per-sample shape)
    buffers: ClassVar[tuple[int, ...]] = ()
    values: ClassVar[dict[str, tuple[int, tuple[int, ...]]]] = {}
    scratch: ClassVar[int] = 0  # per-sample elements of the shared im2col buffer on NumPy
    scratch_wide: ClassVar[int] = 0  # ... and on CuPy (channel-major columns + GEMM result)
    default_dtype: ClassVar[str] = "float32"
    keep_all: ClassVar[int] = 0  # per-sample elements if every activation were kept
    # every layer's output depends on its own sample alone (OpDef.is_per_sample): a batch may be split over threads
    per_sample: ClassVar[bool] = False

    def __init__(
        self,
        weights: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        device: str = "auto",
        dtype: str | None = None,
        seed: int = 0,
    ):
        self.xp = select_device(device)
        self.device = "cuda" if self.xp is not numpy else "cpu"
        self.dtype = check_dtype(dtype or self.default_dtype)
        if self.xp is numpy and self.dtype == numpy.float16:
            warnings.warn(CPU_FLOAT16_WARNING, SlowDtypeWarning, stacklevel=2)
        expected = {key: shape for key, (shape, _, _) in self.state.items()}
        if weights is None:
            rng = numpy.random.default_rng(seed)
            host = {key: fill(shape, kind, args, rng, key) for key, (shape, kind, args) in self.state.items()}
        else:
            integers = [key for key, (_, kind, _) in self.state.items() if kind == COMPUTED]
            host = weights_io.load_weights(weights, expected, optional=self.unused, integers=integers)
        self.weights = {key: self.xp.asarray(host[key], dtype=self.dtype) for key in expected}
        self._arena: tuple[int, dict[str, Any], Any] | None = None
        self.sharding = True  # False runs every batch whole (the profiler sets it: it times this forward alone)
        self._shards: list[Executor] = []  # the second, third... shard's executors, made when first needed
        self._calling = threading.RLock()  # one call at a time (a call writes the arena's buffers); re-entrant
        self._replay: _Replay | None = None  # the checked kernel tape of the last calls' kind (:meth:`replays`)
        self._replay_calls: tuple[Any, int] = (None, 0)  # that kind, and the calls of it so far
        self._no_replay: set[Any] = set()  # the kinds of call whose tape failed its check: run forward
        self.setup(self.weights)

    # generated ------------------------------------------------------------------------------
    def setup(self, w: dict[str, Any]) -> None:  # pragma: no cover - generated
        raise NotImplementedError

    def forward(self, *inputs: Any) -> Any:  # pragma: no cover - generated
        raise NotImplementedError

    # helpers used by generated code -----------------------------------------------------------
    def const(self, value: Any) -> Any:
        """A host constant (divisor table, ...) on the executor's device and dtype."""
        return self.xp.asarray(numpy.asarray(value), dtype=self.dtype)

    def arena(self, n: int) -> tuple[dict[str, Any], Any]:
        """Views of the planned buffers for batch ``n`` (allocated once per batch size)."""
        if self._arena is None or self._arena[0] != n:
            self._arena = None  # drop the old batch size's buffers first
            xp = self.xp
            bufs = [xp.empty(n * size, dtype=self.dtype) for size in self.buffers]
            views = {
                name: bufs[buf][: n * math.prod(shape)].reshape((n, *shape))
                for name, (buf, shape) in self.values.items()
            }
            per_image = self._scratch_per_image()
            rows = rt.scratch_rows(xp.__name__, n, per_image, self.dtype.itemsize)
            scratch = xp.empty(rows * per_image, dtype=self.dtype) if per_image else None
            self._arena = (n, views, scratch)
        return self._arena[1], self._arena[2]

    def _scratch_per_image(self) -> int:
        return self.scratch_wide if rt.gemm_layout(self.xp) == "wide" else self.scratch

    # calling ----------------------------------------------------------------------------------
    def _check_input(self, name: str, x: Any, shape: tuple[int, ...]) -> None:
        got = tuple(getattr(x, "shape", ()))
        if len(got) != len(shape) + 1 or got[1:] != tuple(shape):
            raise _error(
                f"input '{name}' has the wrong shape",
                expected="(N, " + ", ".join(map(str, shape)) + ")",
                received=str(got),
                hint="inputs are NCHW batches" if len(shape) == 3 else None,
            )
        dtype = getattr(x, "dtype", None)
        if name in self.token_inputs:
            if dtype is None or numpy.dtype(dtype).kind not in "iu":
                raise _error(f"input '{name}' holds token ids, integers, not {dtype}",
                             hint="pass an integer array, such as numpy.array(ids, 'int64')[None]")
            return
        if dtype is None or numpy.dtype(dtype) != self.dtype:
            raise _error(
                f"input '{name}' has dtype {dtype}, this executor runs {self.dtype.name}",
                hint=f"convert with x.astype('{self.dtype.name}') or compile with dtype='{dtype}'",
            )

    def __call__(self, *inputs: Any) -> Any:
        """Run the network on NCHW arrays (one per non-label input, in declaration order).

        Returns the output (a tuple when the network has several) as a fresh array of the
        caller's library: NumPy in, NumPy out; CuPy in, CuPy out. On NumPy with several threads a
        batch that is not split (:meth:`shard_bounds`) runs on the native team where it can
        (:func:`~alexdsl.backends.executor.arrays.on_native_team`: BLAS pinned to one thread for the call),
        else a batch of one with BLAS's threads and the pool, a larger one with BLAS pinned (its convs image
        by image on the pool). From the third call of one kind on, a NumPy call that is not split replays the
        forward pass's recorded kernels where that gives forward's output (:meth:`replays`). Calls on one executor
        from several threads run one at a time (they share its buffers); executors of their own run at once.
        """
        if len(inputs) != len(self.inputs):
            names = ", ".join(self.inputs)
            raise _error(f"{self.network_name} takes {len(self.inputs)} input(s) ({names}), got {len(inputs)}")
        for (name, shape), x in zip(self.inputs.items(), inputs, strict=True):
            self._check_input(name, x, shape)
        with self._calling, settings_read_once():
            return self._call(inputs)

    def _call(self, inputs: tuple[Any, ...]) -> Any:
        on_gpu = cupy_module is not None and isinstance(inputs[0], cupy_module.ndarray)
        xp = self.xp
        if xp is numpy:
            moved = [cupy_module.asnumpy(x) if on_gpu else x for x in inputs]
        else:
            moved = [xp.asarray(x) for x in inputs]
        moved = [x.astype(self.dtype) if name in self.token_inputs else x for name, x in zip(self.inputs, moved)]
        bounds = self.shard_bounds(moved[0].shape[0] if moved else 1)
        if len(bounds) > 2:
            return self._sharded(moved, bounds, on_gpu)
        with self._on_native_team() as on_team, \
                blas_pinned(not on_team and xp is numpy and bounds[-1] > 1 and num_threads() > 1):
            result = self._forward(moved)
        outs = result if isinstance(result, tuple) else (result,)
        if xp is numpy and on_gpu:
            outs = tuple(cupy_module.asarray(o) for o in outs)
        elif xp is not numpy and not on_gpu:
            outs = tuple(cupy_module.asnumpy(o) for o in outs)
        else:
            outs = tuple(o.copy() for o in outs)
        return outs if isinstance(result, tuple) else outs[0]

    def _on_native_team(self) -> AbstractContextManager[bool]:
        """A call's :func:`~alexdsl.backends.executor.arrays.on_native_team`: NumPy float32 executors only."""
        return on_native_team(self.xp is numpy and self.dtype == numpy.float32)

    # replaying a forward pass's kernels ------------------------------------------------------
    def replays(self, *inputs: Any) -> bool:
        """Whether a call on ``inputs`` replays a kernel tape (:class:`~.arrays.KernelTape`) instead of running
        :meth:`forward`'s Python: from the :data:`REPLAY_AFTER_CALLS` + 1st call of one kind on, a kind being a
        NumPy batch size, input shapes, thread count, native team, Numba and GEMM layout.

        That call records the kernels of its forward pass onto a tape, in buffers of the executor's own (its
        inputs copied there), then checks the tape: replayed on other inputs (random ones) while every buffer
        still holds this call's values, it must give what :meth:`forward` gives on them, bit for bit; else calls
        of that kind run :meth:`forward` (a layer whose work is not all in recorded kernels: a NumPy fallback,
        a thread pool's chunks). A replay copies the inputs into those buffers and runs the kernels one after
        the other: the same arithmetic, in the same order, without the Python between them (1.2 to 1.8 ms of
        MobileNetV2's and EfficientNet-B0's 11 and 17 on one thread). CuPy, token inputs, a batch split over
        threads, the profiler (``sharding`` off) and ``ALEXDSL_REPLAY=0`` always run :meth:`forward`.
        """
        with settings_read_once(), self._on_native_team():
            key = self._replay_key(list(inputs))  # as a call sees it
        return key is not None and self._replay is not None and self._replay.key == key

    def _replay_key(self, inputs: list[Any]) -> Any:
        """The kind of call ``inputs`` make (what a tape depends on besides the weights), or None where no tape
        applies."""
        if self.xp is not numpy or self.token_inputs or not self.sharding or not inputs \
                or os.environ.get("ALEXDSL_REPLAY", "1") == "0" \
                or not all(isinstance(x, numpy.ndarray) and x.dtype == self.dtype for x in inputs):
            return None
        return (tuple(x.shape for x in inputs), num_threads(), native_team(), numba_kernels(self.dtype) is not None,
                gemm_layout(numpy))

    def _forward(self, inputs: list[Any]) -> Any:
        """:meth:`forward` on ``inputs``, by its checked kernel tape where one fits the call (:meth:`replays`)."""
        key = self._replay_key(inputs)
        if key is None or key in self._no_replay:
            return self.forward(*inputs)
        replay = self._replay
        if replay is not None and replay.key == key:
            for staged, x in zip(replay.inputs, inputs, strict=True):
                numpy.copyto(staged, x)
            replay.tape.replay()
            return replay.result
        seen, calls = self._replay_calls
        calls = calls + 1 if seen == key else 1
        self._replay_calls = (key, calls)
        if calls <= REPLAY_AFTER_CALLS:
            return self.forward(*inputs)
        self._replay = None  # another kind's tape: dropped with the buffers it holds
        return self._capture(key, inputs)

    def _capture(self, key: Any, inputs: list[Any]) -> Any:
        """This call's output, computed while recording its kernels; the tape kept if replaying it on other inputs
        gives what :meth:`forward` gives on them."""
        staged = [x.copy() for x in inputs]
        tape = KernelTape()
        with capturing(tape):
            result = self.forward(*staged)
        output = _copies(result)
        rng = numpy.random.default_rng(0)
        probe = [rng.standard_normal(x.shape).astype(self.dtype) for x in inputs]
        try:  # the check's own inputs: what they raise or warn of is no concern of this call's
            with numpy.errstate(all="ignore"):
                for target, x in zip(staged, probe, strict=True):
                    numpy.copyto(target, x)
                tape.replay()  # first, while every buffer holds this call's values: one the tape misses keeps them
                got = _copies(result)
                want = _copies(self.forward(*probe))
            same = all(numpy.array_equal(a, b, equal_nan=True) for a, b in zip(want, got, strict=True))
        except Exception:  # noqa: BLE001 - no tape then; this call's output is computed already
            same = False
        if same:
            self._replay = _Replay(key, tape, staged, result)
        else:
            self._no_replay.add(key)
        return output if isinstance(result, tuple) else output[0]

    # splitting a batch over threads -----------------------------------------------------------
    def shard_bounds(self, n: int) -> list[int]:
        """Where :meth:`__call__` splits a batch of ``n``: ``[0, b1, ..., n]``, one shard per thread; ``[0, n]``
        when it runs whole.

        A batch is split on NumPy with :func:`~alexdsl.backends.executor.arrays.num_threads` T > 1 when every
        layer is per sample (:attr:`per_sample`), BLAS can be pinned to one thread (threadpoolctl) and the
        profiler is not timing this executor (:attr:`sharding`): into ``min(T, n // SHARD_MIN_IMAGES)`` shards,
        their sizes differing by one at most.
        """
        shards = min(num_threads(), n // SHARD_MIN_IMAGES)
        if shards < 2 or not (self.per_sample and self.sharding and self.xp is numpy and can_pin_blas()):
            return [0, n]
        return [n * i // shards for i in range(shards + 1)]

    def _shard(self, index: int) -> Executor:
        """The executor of shard ``index``: this one for the first, else a copy with its own arena and conv
        workspaces (a plan is not thread-safe) that shares the weights and everything else ``setup`` made."""
        while len(self._shards) < index:
            twin = copy.copy(self)
            twin._arena, twin._shards, twin._calling = None, [], threading.RLock()
            twin._replay, twin._replay_calls, twin._no_replay = None, (None, 0), set()  # a shard runs forward
            for name, value in vars(self).items():
                if isinstance(value, rt.ConvPlan):
                    setattr(twin, name, value.for_thread())
            self._shards.append(twin)
        return self if index == 0 else self._shards[index - 1]

    def _sharded(self, inputs: list[Any], bounds: list[int], on_gpu: bool) -> Any:
        """:meth:`forward` on each shard ``inputs[bounds[i]:bounds[i + 1]]`` in a thread of its own (the first in
        the caller's), each with one thread inside (BLAS pinned, the thread pool not used); the outputs joined."""
        shards = len(bounds) - 1
        executors = [self._shard(i) for i in range(shards)]

        def run(i: int) -> tuple[Any, ...]:
            with one_thread():
                result = executors[i].forward(*(x[bounds[i] : bounds[i + 1]] for x in inputs))
            return result if isinstance(result, tuple) else (result,)

        pool = thread_pool(shards)
        with blas_one_thread():
            futures = [pool.submit(run, i) for i in range(1, shards)]
            try:
                parts = [run(0)]
            finally:
                parts += [future.result() for future in futures]
        outs = tuple(numpy.concatenate(pieces) for pieces in zip(*parts, strict=True))
        if on_gpu:
            outs = tuple(cupy_module.asarray(o) for o in outs)
        return outs if len(self.outputs) > 1 else outs[0]

    # reporting --------------------------------------------------------------------------------
    def memory(self, batch: int = 1) -> dict[str, int]:
        """Planned activation bytes (buffers + im2col scratch) vs keeping every tensor alive.

        A batch split over threads (:meth:`shard_bounds`) holds the same buffer bytes in one arena per shard, but
        one scratch per shard: ``shards`` says how many.
        """
        item = self.dtype.itemsize
        per_image = self._scratch_per_image()
        bounds = self.shard_bounds(batch)
        if len(bounds) > 2:
            with one_thread():  # the scratch a shard's thread plans
                rows = sum(rt.scratch_rows(self.xp.__name__, hi - lo, per_image, item)
                           for lo, hi in zip(bounds, bounds[1:], strict=False))
        else:
            rows = rt.scratch_rows(self.xp.__name__, batch, per_image, item)
        scratch = rows * per_image * item
        return {
            "shards": len(bounds) - 1,
            "planned_bytes": sum(self.buffers) * batch * item + scratch,
            "buffer_bytes": sum(self.buffers) * batch * item,
            "scratch_bytes": scratch,
            "keep_all_bytes": self.keep_all * batch * item,
            "param_bytes": sum(math.prod(v.shape) for v in self.weights.values()) * item,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} executor on {self.device} ({self.dtype.name})>"


REPLAY_AFTER_CALLS = 2  # calls of one kind that run forward before the next records its kernels (Executor.replays)


@dataclass
class _Replay:
    """A checked kernel tape (:meth:`Executor.replays`): the kind of call it fits, the tape, the executor's input
    buffers it reads and what the forward pass returned (the arrays it writes)."""

    key: Any
    tape: KernelTape
    inputs: list[Any]
    result: Any


def _copies(result: Any) -> tuple[Any, ...]:
    """Copies of a forward pass's output arrays (one or a tuple)."""
    return tuple(o.copy() for o in (result if isinstance(result, tuple) else (result,)))

