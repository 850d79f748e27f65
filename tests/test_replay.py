"""Replaying a forward pass's kernels (``Executor.replays``): the same output as ``forward``, bit for bit, or no
replay at all.

From the third call of one kind on, the NumPy executor runs a recorded tape of its kernels instead of the forward
pass's Python. The reference is the same executor with ``ALEXDSL_REPLAY=0`` on the same inputs: a replay runs the
same kernels on the same buffers, so anything it misses (a layer whose work is not in recorded kernels) shows as a
difference, and the tape's own check must have refused it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import random_weights
from threadpoolctl import threadpool_limits

import alexdsl
from alexdsl.backends import executor as backend
from alexdsl.backends.executor import arrays
from alexdsl.backends.executor.executor import REPLAY_AFTER_CALLS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# without Numba the epilogues and pooling are NumPy passes outside recorded kernels: calls run forward
COMPILED = arrays.numba_kernels(np.float32) is not None
needs_compiled = pytest.mark.skipif(not COMPILED, reason="replay needs the compiled kernels: pip install -e '.[numba]'")

# MobileNetV2's and ResNet's layers: a strided stem (im2col), depthwise, 1x1 and strided 1x1, Winograd with the
# residual in its epilogue, squeeze-excitation, the global pool, the classifier
RECORDED = """network Recorded
input data: 3x32x32
stem: conv(16, 3, stride=2, pad=1) | bn_stem: batchnorm | relu6
dw:   conv(16, 3, pad=1, groups=16) | bn_dw: batchnorm | relu6
pw:   conv(32, 1) | bn_pw: batchnorm | silu
se:   global_avgpool | se_fc1: conv(8, 1) | silu | se_fc2: conv(32, 1) | sigmoid
gate: mul(bn_pw_silu, se_fc2_sigmoid)
down: conv(32, 1, stride=2)
w1:   conv(32, 3, pad=1) | relu
w2:   conv(32, 3, pad=1)
sum:  add(w2, down) | relu | global_avgpool
fc:   fc(10)
"""


def _compiled(source: str, **shapes: Any) -> backend.Executor:
    network = alexdsl.parse(source, "replay.adsl") if "\n" in source else alexdsl.load(source, shapes or None)
    return backend.compile(network, random_weights(network), device="cpu")


def _inputs(ex: backend.Executor, batch: int, count: int) -> list[np.ndarray]:
    (shape,) = ex.inputs.values()
    return [np.random.default_rng(i).standard_normal((batch, *shape)).astype(np.float32) for i in range(count)]


def _without_replay(ex: backend.Executor, xs: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    with monkeypatch.context() as patch:
        patch.setenv("ALEXDSL_REPLAY", "0")
        return [ex(x) for x in xs]


def _calls_equal_forward(ex: backend.Executor, xs: list[np.ndarray], threads: int,
                         monkeypatch: pytest.MonkeyPatch) -> bool:
    """Calls on ``xs`` (``threads`` threads) give what the same calls give with ``ALEXDSL_REPLAY=0``, bit for bit;
    returns whether the executor replays after them."""
    with threadpool_limits(threads):
        got = [ex(x) for x in xs]
        replays = ex.replays(xs[0])
        want = _without_replay(ex, xs, monkeypatch)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    return replays


@pytest.mark.parametrize("threads", [1, 2])
def test_replayed_calls_equal_forward_bit_for_bit(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", str(threads))
    ex = _compiled(RECORDED)
    xs = _inputs(ex, 1, REPLAY_AFTER_CALLS + 4)
    assert _calls_equal_forward(ex, xs, threads, monkeypatch) == COMPILED  # every layer's work is in recorded kernels


@pytest.mark.parametrize("example", ["lenet", "mobilenet_v2", "resnet18", "alexnet", "convnext_tiny", "vit_digits"])
def test_examples_replay_or_run_forward_and_give_its_output(example: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a network replays (LeNet, MobileNetV2, ResNet-18, AlexNet) or not (ConvNeXt-T and ViT run NumPy
    passes outside recorded kernels), its calls give forward's output."""
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "1")
    small = {"convnext_tiny": {"data": (3, 64, 64)}, "mobilenet_v2": {"data": (3, 64, 64)},
             "resnet18": {"data": (3, 64, 64)}}
    ex = _compiled(str(EXAMPLES / f"{example}.adsl"), **small.get(example, {}))
    xs = _inputs(ex, 2, REPLAY_AFTER_CALLS + 3)
    replays = _calls_equal_forward(ex, xs, 1, monkeypatch)
    assert replays == (COMPILED and example in {"lenet", "mobilenet_v2", "resnet18", "alexnet"})


def test_a_tape_that_misses_work_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer whose NumPy work is not recorded (here every NumPy matmul, called around the recorder) makes the
    tape's check fail: calls of that kind run forward, and give its output."""
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "1")
    ex = _compiled(RECORDED)
    recorded = arrays.kernel

    def matmul_unrecorded(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs) if fn is np.matmul else recorded(fn, *args, **kwargs)

    monkeypatch.setattr(arrays, "kernel", matmul_unrecorded)
    xs = _inputs(ex, 1, REPLAY_AFTER_CALLS + 3)
    assert not _calls_equal_forward(ex, xs, 1, monkeypatch)



@needs_compiled
def test_a_new_kind_of_call_records_again_and_settings_are_part_of_the_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "1")
    ex = _compiled(RECORDED)
    one, two = _inputs(ex, 1, 1)[0], _inputs(ex, 2, 1)[0]
    with threadpool_limits(1):
        for _ in range(REPLAY_AFTER_CALLS + 1):
            ex(one)
        assert ex.replays(one) and not ex.replays(two)
        first = ex(one)
        for _ in range(REPLAY_AFTER_CALLS + 1):
            ex(two)
        assert ex.replays(two) and not ex.replays(one)  # one tape: the last kind's
        monkeypatch.setenv("ALEXDSL_NUMBA", "0")
        assert not ex.replays(two)
        monkeypatch.delenv("ALEXDSL_NUMBA")
        monkeypatch.setenv("ALEXDSL_REPLAY", "0")
        assert not ex.replays(two)
        monkeypatch.delenv("ALEXDSL_REPLAY")
        np.testing.assert_array_equal(ex(one), first)


@needs_compiled
def test_replay_reads_the_callers_input_and_returns_fresh_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    """The input is copied into the tape's buffer (the caller's array is never written); each call returns its own
    output array, which later calls leave alone; an input changed in place between calls is seen."""
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "1")
    ex = _compiled(RECORDED)
    x = _inputs(ex, 1, 1)[0]
    kept = x.copy()
    with threadpool_limits(1):
        for _ in range(REPLAY_AFTER_CALLS + 1):
            ex(x)
        assert ex.replays(x)
        first = ex(x)
        np.testing.assert_array_equal(x, kept)
        x *= -1.0
        second = ex(x)
        want = _without_replay(ex, [x], monkeypatch)[0]
    assert first is not second and not np.array_equal(first, second)
    np.testing.assert_array_equal(second, want)
    np.testing.assert_array_equal(first, _without_replay(ex, [kept], monkeypatch)[0])


def test_the_profiler_never_replays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "1")
    ex = _compiled(RECORDED)
    x = _inputs(ex, 1, 1)[0]
    ex.sharding = False  # what the profiler sets
    for _ in range(REPLAY_AFTER_CALLS + 2):
        ex(x)
    assert not ex.replays(x)


def test_a_tape_keeps_the_arrays_a_team_gemm_reaches_by_address() -> None:
    """A team GEMM's layout holds its operands' addresses: the tape keeps the arrays alive, so that a replay after
    the pass's temporaries are gone reads them, not freed memory (this crashed before)."""
    with arrays.settings_read_once(threads=2), arrays.on_native_team() as on_team:
        if not on_team:
            pytest.skip("no native team here (it needs Numba's OpenMP layer and threadpoolctl)")
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((128, 256)).astype(np.float32), rng.standard_normal((256, 192)).astype(np.float32)
        out = np.empty((128, 192), np.float32)
        tape = arrays.KernelTape()
        with arrays.capturing(tape):
            arrays.matmul(a @ np.eye(256, dtype=np.float32), b.copy(), out)  # two temporaries
        want = out.copy()
        assert len(tape.keep) == 1
        del a, b
        for _ in range(20):  # reuse the freed memory
            np.full((256, 256), np.nan, np.float32)
        out[...] = 0
        tape.replay()
    np.testing.assert_array_equal(out, want)


@pytest.mark.slow
@pytest.mark.parametrize("example", ["vit_b_16", "swin_t"])
def test_attention_networks_on_the_team_give_forward_s_output(example: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads at batch 1: their attention GEMMs run on the native team with temporaries as operands."""
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    ex = _compiled(str(EXAMPLES / f"{example}.adsl"))
    xs = _inputs(ex, 1, REPLAY_AFTER_CALLS + 2)
    _calls_equal_forward(ex, xs, 2, monkeypatch)


def test_a_check_that_raises_leaves_the_call_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check runs the network on its own random inputs: if that raises, the call still returns its output and
    calls of that kind run forward."""
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "1")
    ex = _compiled(RECORDED)
    xs = _inputs(ex, 1, REPLAY_AFTER_CALLS + 2)
    forward, calls = ex.forward, []

    def failing_on_the_probe(*inputs: Any) -> Any:
        calls.append(1)
        if len(calls) == REPLAY_AFTER_CALLS + 2:  # the check's forward pass on its random inputs
            raise RuntimeError("the check's inputs")
        return forward(*inputs)

    monkeypatch.setattr(ex, "forward", failing_on_the_probe)
    assert not _calls_equal_forward(ex, xs, 1, monkeypatch)
