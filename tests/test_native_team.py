"""The native team (alexdsl/backends/executor/native_threads.py): GEMMs split over Numba's OpenMP threads, each
calling OpenBLAS on its own rows or columns, against ``numpy.matmul``; the compiled kernels' team variants against
the same kernels on one thread, bit for bit. Skipped where the team cannot run (no Numba, no libgomp, or a BLAS
other than NumPy's OpenBLAS)."""

from __future__ import annotations

import numpy as np
import pytest

from alexdsl.backends.executor import arrays, runtime
from alexdsl.backends.executor.compiled import gelu
from alexdsl.backends.executor.conv import ConvPlan, conv2d

pytestmark = pytest.mark.skipif(
    arrays.numba_kernels(np.float32) is None or arrays._native_module() is None,
    reason="the native team needs Numba with its OpenMP threading layer (libgomp) and NumPy's OpenBLAS: "
           "pip install -e '.[numba]'")


@pytest.fixture
def team(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - a generator fixture
    """Runs the test body on the native team of two threads, counting the team's GEMM calls."""
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    module = arrays._native_module()
    calls = {"gemm": 0}
    gemm = module.gemm

    def counted(layout: np.ndarray, bounds: np.ndarray) -> None:
        calls["gemm"] += 1
        assert bounds[0] == 0 and (np.diff(bounds) >= 0).all()
        gemm(layout, bounds)

    monkeypatch.setattr(module, "gemm", counted)
    with arrays.on_native_team() as on_team:
        assert on_team
        yield calls


def _random(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# (a, b) operand makers: plain, batched, broadcast, transposed views, sliced rows (a leading dimension over the width)
CASES = {
    "square": lambda: (_random((96, 64), 0), _random((64, 200), 1)),
    "tall times wide": lambda: (_random((300, 40), 0), _random((40, 700), 1)),
    "row vector (GEMV)": lambda: (_random((1, 3000), 0), _random((3000, 1500), 1)),
    "row vector, transposed weight": lambda: (_random((1, 3000), 0), _random((1500, 3000), 1).T),
    "few rows": lambda: (_random((3, 600), 0), _random((600, 800), 1)),
    "batched": lambda: (_random((5, 40, 64), 0), _random((5, 64, 90), 1)),
    "broadcast weight": lambda: (_random((48, 64), 0), _random((3, 64, 300), 1)),
    "two batch axes": lambda: (_random((2, 3, 40, 64), 0), _random((2, 3, 64, 90), 1)),
    "keys transposed (attention)": lambda: (_random((2, 4, 100, 64), 0),
                                            _random((2, 100, 4, 64), 1).transpose(0, 2, 3, 1)),
    "heads as a view (attention)": lambda: (_random((2, 4, 100, 100), 0),
                                            _random((2, 100, 4, 64), 1).transpose(0, 2, 1, 3)),
    "sliced rows": lambda: (_random((64, 100), 0)[:, 10:74], _random((64, 300), 1)[:, :256]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_team_gemm_matches_numpy(case: str, team: dict[str, int]) -> None:
    a, b = CASES[case]()
    want = np.matmul(a, b)
    out = np.full(want.shape, np.nan, np.float32)
    assert arrays.matmul(a, b, out=out) is out
    assert team["gemm"] == 1, "the GEMM ran on the team"
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5 * float(np.abs(want).max()))


def test_team_gemm_leaves_what_cblas_cannot_take_to_numpy(team: dict[str, int]) -> None:
    a, b = _random((2, 2, 2, 40, 64), 0), _random((2, 2, 2, 64, 90), 1)  # three batch axes
    out = np.empty((2, 2, 2, 40, 90), np.float32)
    np.testing.assert_allclose(arrays.matmul(a, b, out=out), np.matmul(a, b), rtol=2e-5, atol=1e-4)
    small = np.empty((4, 4), np.float32)
    arrays.matmul(_random((4, 8), 2), _random((8, 4), 3), out=small)  # under TEAM_MIN_MACS: the calling thread
    assert team["gemm"] == 0


def _one_thread(monkeypatch: pytest.MonkeyPatch, run):  # noqa: ANN001, ANN202
    """``run()`` with one thread (no team, no pool)."""
    from threadpoolctl import threadpool_limits

    with monkeypatch.context() as patch:
        patch.setenv("ALEXDSL_NUM_THREADS", "1")
        patch.setattr(arrays._this_thread, "team", None, raising=False)
        with threadpool_limits(1, "blas"):
            return run()


@pytest.mark.parametrize(("channels", "size", "kernel", "stride", "groups", "act"), [
    (32, 28, 3, 1, 32, "relu6"),  # depthwise
    (24, 29, 5, 2, 24, "silu"),  # depthwise, 5x5, stride 2
    (16, 28, 3, 1, 1, "relu"),  # Winograd
    (8, 30, 7, 2, 1, "relu"),  # im2col, the GEMM and its epilogue in one team region
    (48, 14, 1, 1, 1, "silu"),  # 1x1
])
def test_team_conv_matches_one_thread(channels: int, size: int, kernel: int, stride: int, groups: int, act: str,
                                      team: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    x = _random((1, channels, size, size), 0)
    out_channels = channels if groups > 1 else 64
    w = _random((out_channels, channels // groups, kernel, kernel), 1)
    bias = _random((out_channels,), 2)
    plan = ConvPlan(channels, size, size, out_channels, (kernel, kernel), (stride, stride), (kernel // 2,) * 2,
                    (1, 1), groups)
    activation = getattr(runtime, act)

    def run() -> np.ndarray:
        return conv2d(x, w, bias, act=activation, plan=plan)

    got, want = run(), _one_thread(monkeypatch, run)
    if groups > 1 or plan.is_winograd:  # compiled kernels split by planes: the same arithmetic
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_team_im2col_pool_norm_and_gelu_match_one_thread(team: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    x = _random((1, 96, 56, 56), 0)
    weight, bias = _random((96,), 1), _random((96,), 2)
    tokens, fc_weight, fc_bias = _random((197, 192), 3), _random((384, 192), 4), _random((384,), 5)
    gate = _random((1, 96, 1, 1), 6)
    runs = [
        lambda: runtime.max_pool2d(x, (3, 3), (2, 2), (1, 1)),
        lambda: gelu(x),
        lambda: gelu(x, approximate="tanh"),
        lambda: runtime.silu(x),
        lambda: runtime.layer_norm(x, weight, bias),
        lambda: runtime.linear(tokens, fc_weight, fc_bias, act=runtime.silu),
        lambda: runtime.linear(tokens, fc_weight, fc_bias, relu=True),
        lambda: runtime.multiply(x, gate, out=np.empty_like(x)),
        lambda: ConvPlan(96, 56, 56, 8, (3, 3), (2, 2), (1, 1), (1, 1), 1).im2col(x).copy(),
        lambda: ConvPlan(96, 56, 56, 8, (5, 5), (1, 1), (0, 0), (2, 2), 1).im2col(x).copy(),
    ]
    for run in runs:
        np.testing.assert_array_equal(run(), _one_thread(monkeypatch, run))
