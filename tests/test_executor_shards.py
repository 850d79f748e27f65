"""A batch split over threads (``Executor.shard_bounds``): the same output, bit for bit, as each shard run on its own.

A split batch runs each shard's ``forward`` in its own thread with one thread inside (BLAS pinned, the pool
not used), so its reference is each shard's images run alone the same way, one after the other
(``ALEXDSL_NUM_THREADS=1``, BLAS pinned to one thread), joined: anything shards share by mistake (a conv
plan's workspace, the arena, a thread pool) makes them differ.

The reference is not the whole batch: the batch size picks kernels (Winograd F(4x4) against F(2x2) by the
tiles in a call, OpenBLAS's small-matrix GEMM under about 10**6 multiply-adds, Winograd's chunks of images),
so ResNet-18, VGG16 and GoogLeNet round differently in the last bits at 13 images than at 6 or 7, as every
executor does between batch sizes. ``test_a_split_batch_stays_close_to_the_whole`` bounds that difference.

A batch of one runs whole, with BLAS's threads and the pool: float32 rounding apart from one thread.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import random_weights
from threadpoolctl import threadpool_limits

import alexdsl
from alexdsl.backends import executor as backend
from alexdsl.backends.executor import arrays
from alexdsl.backends.executor.executor import SHARD_MIN_IMAGES
from alexdsl.ops import registry
from alexdsl.ops.lowering import ExecutorLowering, Lowerings, Pattern
from alexdsl.ops.registry import OpDef
from alexdsl.profiling import Profile, profile_executor

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMALL_INPUT = {"vgg16": {"data": (3, 96, 96)}, "convnext_tiny": {"data": (3, 64, 64)}}
# gpt2 and llama run their ops at 124M and 1.1B parameters: llama_tiny covers the same token ops
TOO_BIG = {"gpt2", "llama"}
FAST = {"lenet", "vit_digits", "llama_tiny"}
# (threads, batch): uneven shards of 6 and 7, and of 4, 5 and 5
SPLITS = ((2, 13), (3, 14))


def _examples() -> list[Any]:
    return [pytest.param(path, id=path.stem, marks=[] if path.stem in FAST else [pytest.mark.slow])
            for path in sorted(EXAMPLES.glob("*.adsl")) if path.stem not in TOO_BIG]


def _inputs(ex: backend.Executor, batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(batch)
    return [rng.integers(0, 32, (batch, *shape)) if name in ex.token_inputs
            else rng.standard_normal((batch, *shape)).astype(np.float32) for name, shape in ex.inputs.items()]


def _whole_on_one_thread(ex: backend.Executor, xs: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "1")
    with threadpool_limits(1, "blas"):
        return ex(*xs)


@pytest.mark.parametrize("path", _examples())
def test_split_batch_is_bit_identical_to_its_shards_run_alone(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = alexdsl.load(path, input_shapes=SMALL_INPUT.get(path.stem))
    ex = backend.compile(net, random_weights(net), device="cpu")
    assert type(ex).per_sample
    for threads, batch in SPLITS:
        xs = _inputs(ex, batch)
        monkeypatch.setenv("ALEXDSL_NUM_THREADS", str(threads))
        bounds = ex.shard_bounds(batch)
        assert len(bounds) == threads + 1 and min(np.diff(bounds)) >= SHARD_MIN_IMAGES, bounds
        got = ex(*xs)
        parts = [_whole_on_one_thread(ex, [x[lo:hi] for x in xs], monkeypatch)
                 for lo, hi in zip(bounds, bounds[1:], strict=False)]
        want = tuple(np.concatenate(pieces) for pieces in zip(*(p if isinstance(p, tuple) else (p,) for p in parts),
                                                                strict=True))
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,),
                        strict=True):
            np.testing.assert_array_equal(g, w)


def test_a_split_batch_stays_close_to_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """ResNet-18's shards of 6 and 7 images pick other 3x3 kernels than the whole 13 (Winograd's tile by the tiles
    in a call): the outputs differ in the last bits only, as between any two batch sizes."""
    net = alexdsl.load(EXAMPLES / "resnet18.adsl", input_shapes={"data": (3, 112, 112)})
    ex = backend.compile(net, random_weights(net), device="cpu")
    xs = _inputs(ex, 13)
    whole = _whole_on_one_thread(ex, xs, monkeypatch)
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    assert len(ex.shard_bounds(13)) == 3
    split = ex(*xs)
    assert np.abs(split - whole).max() <= 1e-5 * np.abs(whole).max()


def test_small_batches_and_one_thread_run_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    net = alexdsl.load(EXAMPLES / "lenet.adsl")
    ex = backend.compile(net, random_weights(net), device="cpu")
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    assert ex.shard_bounds(1) == [0, 1]
    assert ex.shard_bounds(2 * SHARD_MIN_IMAGES - 1) == [0, 2 * SHARD_MIN_IMAGES - 1]
    assert ex.shard_bounds(16) == [0, 8, 16]
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "1")
    assert ex.shard_bounds(16) == [0, 16]
    xs = _inputs(ex, 1)
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    monkeypatch.setenv("ALEXDSL_NATIVE_THREADS", "0")  # the pool's passes; the native team splits GEMMs (its test)
    with threadpool_limits(1, "blas"):
        np.testing.assert_array_equal(ex(*xs), _whole_on_one_thread(ex, xs, monkeypatch))


def _register(monkeypatch: pytest.MonkeyPatch, name: str, function: Any, per_sample: bool | None) -> None:
    """A plugin-style op ``name`` running ``function`` on the executor, for this test only."""
    op = OpDef(name=name, summary="a test op", example=f"t: {name}", args=(), family="activation",
               infer=lambda attrs, inputs: inputs[0], pattern=Pattern.OPAQUE, per_sample=per_sample,
               lower=Lowerings(executor=ExecutorLowering(function=function)))
    registry.lookup("relu")  # the built-in ops first
    monkeypatch.setitem(registry._REGISTRY, name, op)


def test_a_network_mixing_the_batch_is_never_split(monkeypatch: pytest.MonkeyPatch) -> None:
    def center(x: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        return np.subtract(x, x.mean(axis=0), out=out)

    _register(monkeypatch, "batch_center", center, per_sample=False)
    assert not registry.lookup("batch_center").is_per_sample()
    net = alexdsl.parse("network T\ninput x: 3x4x4\nc: batch_center\n")
    source = backend.generate_source(net)
    assert "    per_sample = False\n" in source
    ex = backend.compile(net, device="cpu")
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    (x,) = _inputs(ex, 16)
    assert ex.shard_bounds(16) == [0, 16]
    np.testing.assert_allclose(ex(x), x - x.mean(axis=0), rtol=1e-6, atol=1e-6)
    halves = np.concatenate([x[:8] - x[:8].mean(axis=0), x[8:] - x[8:].mean(axis=0)])
    assert not np.allclose(ex(x), halves)  # what a split would have given


def _probed_executor(monkeypatch: pytest.MonkeyPatch, record: Any) -> backend.Executor:
    """A small network with a per-sample ``probe`` op between its conv and its pool, which calls ``record(x)`` on
    each input it gets (on the thread it runs on) and passes it through."""

    def probe(x: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        record(x)
        if out is None:
            return x.copy()
        out[...] = x
        return out

    _register(monkeypatch, "probe", probe, per_sample=None)
    net = alexdsl.parse("network T\ninput x: 3x8x8\nc: conv(4, 3) | relu\np: probe\ng: global_avgpool | fc(5)\n")
    return backend.compile(net, device="cpu")


def test_shards_run_on_several_threads_with_one_thread_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int, int]] = []
    ex = _probed_executor(monkeypatch, lambda x: seen.append((threading.get_ident(), arrays.num_threads(), x.shape[0])))
    assert type(ex).per_sample  # derived: a layer is per sample unless its op says otherwise
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "3")
    xs = _inputs(ex, 14)
    got = ex(*xs)
    assert sorted(size for _, _, size in seen) == [4, 5, 5]
    # the caller's thread runs the first shard and the pool the others (a pool worker that is free again may take
    # the third after the second), each with one thread inside
    assert len({ident for ident, _, _ in seen}) >= 2 and {threads for _, threads, _ in seen} == {1}
    assert arrays.num_threads() == 3  # the caller's thread is its own again
    np.testing.assert_array_equal(got, _whole_on_one_thread(ex, xs, monkeypatch))


def test_memory_counts_a_scratch_per_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    net = alexdsl.load(EXAMPLES / "lenet.adsl")
    ex = backend.compile(net, random_weights(net), device="cpu")
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "1")
    whole = ex.memory(16)
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    split = ex.memory(16)
    assert (whole["shards"], split["shards"]) == (1, 2)
    assert split["buffer_bytes"] == whole["buffer_bytes"]  # the batch's buffers, in two arenas
    ex(*_inputs(ex, 16))
    arenas = [ex._arena, *(shard._arena for shard in ex._shards)]
    assert sorted(arena[0] for arena in arenas) == [8, 8]
    assert sum(arena[2].nbytes for arena in arenas) == split["scratch_bytes"]
    assert split["planned_bytes"] == split["buffer_bytes"] + split["scratch_bytes"]


def test_a_profiled_executor_runs_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    net = alexdsl.load(EXAMPLES / "lenet.adsl")
    ex = backend.compile(net, random_weights(net), device="cpu")
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    profile = Profile(net.name)
    profile_executor(ex, profile)
    assert ex.shard_bounds(16) == [0, 16]
    ex(*_inputs(ex, 16))
    assert len(profile.calls) == 1 and profile.totals()


SMALL_NET = """network Small
input x: 3x32x32
stem: conv(16, 3, pad=1) | batchnorm | relu | maxpool(2, stride=2)
dw: conv(16, 3, pad=1, groups=16) | batchnorm | silu
pw: conv(24, 1) | relu
g: global_avgpool | fc(10)
"""


@pytest.mark.parametrize("numba", ["0", "1"])
def test_split_is_bit_identical_with_and_without_numba(numba: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALEXDSL_NUMBA", numba)
    net = alexdsl.parse(SMALL_NET)
    ex = backend.compile(net, random_weights(net), device="cpu")
    xs = _inputs(ex, 13)
    want = _whole_on_one_thread(ex, xs, monkeypatch)
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    assert ex.shard_bounds(13) == [0, 6, 13]
    np.testing.assert_array_equal(ex(*xs), want)


# one image ----------------------------------------------------------------------------------------------------------
def _blas_threads() -> int:
    """BLAS's threads as the executor's threadpoolctl controller set them (a fresh ``threadpool_info()`` can read
    another value in a process where earlier tests pinned BLAS from pool threads)."""
    return max(info["num_threads"] for info in arrays._blas_controller().info() if info["user_api"] == "blas")


def test_one_image_runs_whole_with_the_pool_and_blas_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of one (too small to split) runs on the calling thread with the pool and BLAS's own threads, which
    the executor leaves as they are; a batch of two runs with the pool and BLAS pinned to one thread for the call
    (its strided conv image by image on the pool), then set back: the process's own NumPy keeps its threads."""
    seen: list[tuple[int, int, int]] = []
    ex = _probed_executor(monkeypatch, lambda x: seen.append((threading.get_ident(), arrays.num_threads(),
                                                              _blas_threads())))
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "3")
    monkeypatch.setenv("ALEXDSL_NATIVE_THREADS", "0")  # the native team pins BLAS (its own test, below)
    with threadpool_limits(2, "blas"):
        ex(*_inputs(ex, 1))
        assert seen == [(threading.get_ident(), 3, 2)]
        seen.clear()
        ex(*_inputs(ex, 2))
        assert seen == [(threading.get_ident(), 3, 1)]
        assert _blas_threads() == 2
        seen.clear()
        ex(*_inputs(ex, 1))  # no pin left behind by the batch of two
        assert seen == [(threading.get_ident(), 3, 2)]


def test_one_image_runs_on_the_native_team_with_blas_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Numba's OpenMP team can run, a call that is not split runs on it, BLAS pinned to one thread for the
    call and set back after it; ``ALEXDSL_NATIVE_THREADS=0`` or one thread runs without it."""
    if arrays._native_module() is None:
        pytest.skip("the native team needs Numba with its OpenMP threading layer (libgomp) and NumPy's OpenBLAS: "
                    "pip install -e '.[numba]'")
    seen: list[tuple[bool, int]] = []
    ex = _probed_executor(monkeypatch, lambda x: seen.append((arrays.native_team() is not None, _blas_threads())))
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    with threadpool_limits(2, "blas"):
        for batch in (1, 2):
            ex(*_inputs(ex, batch))
            assert seen == [(True, 1)], batch
            assert _blas_threads() == 2 and arrays.native_team() is None
            seen.clear()
        monkeypatch.setenv("ALEXDSL_NATIVE_THREADS", "0")
        ex(*_inputs(ex, 1))
        monkeypatch.setenv("ALEXDSL_NATIVE_THREADS", "1")
        monkeypatch.setenv("ALEXDSL_NUM_THREADS", "1")
        ex(*_inputs(ex, 1))
    assert seen == [(False, 2), (False, 2)]


@pytest.mark.parametrize(("numba", "team"), [("0", "1"), ("1", "0"), ("1", "1")])
def test_one_image_on_several_threads_is_close_to_one_thread(numba: str, team: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """On several threads (the native team's, or BLAS's and the pool's) a batch of one is the one-thread output to
    float32 rounding: the GEMMs split differently."""
    monkeypatch.setenv("ALEXDSL_NUMBA", numba)
    monkeypatch.setenv("ALEXDSL_NATIVE_THREADS", team)
    nets = [alexdsl.parse(SMALL_NET), alexdsl.load(EXAMPLES / "lenet.adsl"), alexdsl.load(EXAMPLES / "resnet18.adsl")]
    for net in nets:
        ex = backend.compile(net, random_weights(net), device="cpu")
        xs = _inputs(ex, 1)
        want = _whole_on_one_thread(ex, xs, monkeypatch)
        for threads in (2, 3):
            monkeypatch.setenv("ALEXDSL_NUM_THREADS", str(threads))
            with threadpool_limits(threads, "blas"):
                got = ex(*xs)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()),
                                       err_msg=f"{net.name}, {threads} threads")


def test_calls_on_several_threads_at_once_share_the_blas_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls on several of the caller's threads at once (a server's requests): two on one executor run one at a
    time (they share its buffers), calls on two executors overlap and share one pin of BLAS (none unpins it under
    another, the last sets it back); every output is the one-thread one to float32 rounding."""
    net = alexdsl.parse(SMALL_NET)
    executors = [backend.compile(net, random_weights(net, seed), device="cpu") for seed in (0, 1)]
    jobs = [(ex, xs) for ex in executors for xs in (_inputs(ex, 1), _inputs(ex, 2), _inputs(ex, 9))]
    wants = [_whole_on_one_thread(ex, xs, monkeypatch) for ex, xs in jobs]
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    errors: list[BaseException] = []

    def call(index: int) -> None:
        (ex, xs), want = jobs[index], wants[index]
        try:
            for _ in range(5):
                np.testing.assert_allclose(ex(*xs), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    with threadpool_limits(2, "blas"):
        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[0]
        assert _blas_threads() == 2


def test_a_call_reads_the_environment_once_and_the_next_call_sees_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """``settings_read_once``: inside it, a change of ALEXDSL_NUM_THREADS, ALEXDSL_NUMBA or ALEXDSL_GEMM is not
    seen; after it, it is. The executor's next call runs with the new setting (plain NumPy under
    ALEXDSL_NUMBA=0: the same output to float32 rounding)."""
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "3")
    monkeypatch.setenv("ALEXDSL_GEMM", "wide")
    monkeypatch.delenv("ALEXDSL_NUMBA", raising=False)
    compiled = arrays.numba_kernels(np.float32)
    with arrays.settings_read_once():
        monkeypatch.setenv("ALEXDSL_NUM_THREADS", "5")
        monkeypatch.setenv("ALEXDSL_GEMM", "batched")
        monkeypatch.setenv("ALEXDSL_NUMBA", "0")
        assert arrays.num_threads() == 3
        assert arrays.gemm_layout(np) == "wide"
        assert arrays.numba_kernels(np.float32) is compiled
        with arrays.one_thread():
            assert arrays.num_threads() == 1
        assert arrays.num_threads() == 3
    assert arrays.num_threads() == 5
    assert arrays.gemm_layout(np) == "batched"
    assert arrays.numba_kernels(np.float32) is None

    network = alexdsl.parse("network N\ninput data: 3x12x12\nc: conv(8, 3, pad=1) | silu | global_avgpool | fc(4)\n")
    ex = backend.compile(network, random_weights(network), device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    calls = []
    if compiled is not None:  # count the compiled epilogue's calls
        epilogue = compiled.bias_activation
        monkeypatch.setattr(compiled, "bias_activation", lambda *args: calls.append(1) or epilogue(*args))
    plain = ex(x)
    assert not calls  # ALEXDSL_NUMBA=0, read when the call started
    monkeypatch.delenv("ALEXDSL_NUMBA")
    np.testing.assert_allclose(ex(x), plain, rtol=1e-5, atol=1e-6)
    assert bool(calls) == (compiled is not None)
