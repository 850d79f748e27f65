"""The NumPy/CuPy kernels of the cupy backend against torch.nn.functional.

Each kernel is checked for shape, then dtype, then values (float32, rtol/atol ~1e-4).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from alexdsl.backends.executor import runtime as rt  # noqa: E402
from alexdsl.shape_math import pool_output_size  # noqa: E402

RTOL = ATOL = 1e-4


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check(got: np.ndarray, want: torch.Tensor, rtol: float = RTOL, atol: float = ATOL) -> None:
    want_np = want.detach().numpy()
    assert got.shape == want_np.shape, f"shape {got.shape} != {want_np.shape}"
    assert got.dtype == np.float32, f"dtype {got.dtype}"
    np.testing.assert_allclose(got, want_np, rtol=rtol, atol=atol)


T = torch.from_numpy


# --------------------------------------------------------------------------- conv

CONV_CASES = [
    # (N, C, H, W, O, k, stride, pad, dilation, groups)
    (2, 3, 15, 15, 8, (3, 3), (1, 1), (0, 0), (1, 1), 1),
    (2, 3, 15, 13, 8, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (1, 3, 31, 31, 6, (11, 11), (4, 4), (0, 0), (1, 1), 1),  # AlexNet conv1 shape family
    (2, 4, 12, 12, 8, (5, 5), (1, 1), (2, 2), (1, 1), 2),  # AlexNet conv2 family
    (2, 8, 9, 9, 8, (3, 3), (1, 1), (1, 1), (1, 1), 4),
    (2, 8, 9, 9, 8, (3, 3), (2, 1), (1, 2), (1, 1), 4),
    (1, 4, 11, 11, 4, (3, 3), (1, 1), (2, 2), (2, 2), 1),  # dilation
    (2, 4, 13, 10, 6, (3, 2), (2, 3), (1, 0), (2, 1), 2),  # everything asymmetric
    (2, 8, 7, 7, 16, (1, 1), (1, 1), (0, 0), (1, 1), 1),  # 1x1 fast path
    (2, 8, 7, 7, 16, (1, 1), (2, 2), (0, 0), (1, 1), 1),  # 1x1 stride 2 (resnet downsample)
    (2, 8, 7, 7, 8, (1, 1), (1, 1), (0, 0), (1, 1), 4),  # grouped 1x1
    (2, 4, 5, 5, 4, (1, 1), (1, 1), (1, 1), (1, 1), 1),  # 1x1 with pad: im2col path
]


# (GEMM layout, im2col method, ALEXDSL_NUM_THREADS): threads=2 is NumPy's per-image path;
# "wide" is the channel-major layout CuPy runs, checked here on NumPy
CONV_PATHS = [
    ("batched", "strided", "1"),
    ("batched", "gather", "1"),
    ("batched", "strided", "2"),
    ("batched", "gather", "2"),
    ("wide", "strided", "1"),
]


@pytest.mark.parametrize(("gemm", "method", "threads"), CONV_PATHS, ids=lambda v: str(v))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-k{c[5]}-s{c[6]}-p{c[7]}-d{c[8]}-g{c[9]}"
)
def test_conv2d_matches_torch(case: tuple, bias: bool, gemm: str, method: str, threads: str, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", threads)
    n, c, h, w, o, k, s, p, d, g = case
    x, wt = rand(n, c, h, w, seed=1), rand(o, c // g, *k, seed=2)
    b = rand(o, seed=3) if bias else None
    plan = rt.ConvPlan(c, h, w, o, k, s, p, d, g, method=method)
    got = rt.conv2d(x, wt, b, s, p, d, g, plan=plan, gemm=gemm)
    want = F.conv2d(T(x), T(wt), None if b is None else T(b), s, p, d, g)
    check(got, want)
    assert plan.out_shape == tuple(want.shape[1:])
    # the plan's workspaces are reused: a second call on new data is still right
    x2 = rand(n, c, h, w, seed=4)
    check(rt.conv2d(x2, wt, b, plan=plan, gemm=gemm), F.conv2d(T(x2), T(wt), None if b is None else T(b), s, p, d, g))


ACT_CASES = [
    # (N, C, H, W, O, k, stride, pad, groups): the conv paths an epilogue activation runs in
    (2, 8, 9, 9, 24, (1, 1), (1, 1), (0, 0), 1),  # 1x1: one GEMM
    (1, 8, 9, 9, 24, (1, 1), (2, 2), (0, 0), 1),  # 1x1 stride 2, one image
    (1, 4, 11, 11, 16, (5, 5), (2, 2), (2, 2), 1),  # im2col, one image
    (3, 4, 11, 11, 16, (5, 5), (1, 1), (2, 2), 1),  # im2col, per-image threads at 2 threads
    (2, 8, 9, 9, 8, (3, 3), (1, 1), (1, 1), 4),  # grouped
    (2, 8, 10, 10, 8, (3, 3), (1, 1), (1, 1), 8),  # depthwise (Numba where installed)
    (2, 6, 10, 9, 10, (3, 3), (1, 1), (1, 1), 1),  # 3x3 stride 1: Winograd F(2x2) where Numba is installed
    (2, 4, 16, 16, 6, (3, 3), (1, 1), (1, 1), 1),  # 3x3 stride 1 on 16x16: F(4x4) where Numba is installed
]


def _on_every_conv_path(case: tuple, threads: str, numba: str, monkeypatch) -> tuple:  # noqa: ANN001
    """An ACT_CASES conv's input, weight, bias and plan, with ``threads``, Numba on or off, no minimum size for
    the thread pool (several blocks run on two threads) and Winograd wherever it applies."""
    from alexdsl.backends.executor import arrays, conv

    monkeypatch.setenv("ALEXDSL_NUM_THREADS", threads)
    monkeypatch.setenv("ALEXDSL_NUMBA", numba)
    monkeypatch.setattr(arrays, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setattr(conv, "WINOGRAD_MIN_TILES", 1)
    monkeypatch.setattr(conv, "WINOGRAD4_MIN_TILES", 1)
    n, c, h, w, o, k, s, p, g = case
    x, wt, b = rand(n, c, h, w, seed=1), rand(o, c // g, *k, seed=2), rand(o, seed=3)
    return x, wt, b, rt.ConvPlan(c, h, w, o, k, s, p, (1, 1), g)


@pytest.mark.parametrize("numba", ["1", "0"])
@pytest.mark.parametrize(("gemm", "threads"), [("auto", "1"), ("auto", "2"), ("wide", "1")])
@pytest.mark.parametrize("case", ACT_CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-k{c[5]}-s{c[6]}-g{c[8]}")
def test_conv2d_applies_act_once_on_every_path(case: tuple, gemm: str, threads: str, numba: str,
                                               monkeypatch) -> None:  # noqa: ANN001
    """``act`` (an op's declared epilogue) runs once on every element, whichever path the conv takes, with no
    minimum size for the thread pool, so several blocks run on two threads."""
    x, wt, b, plan = _on_every_conv_path(case, threads, numba, monkeypatch)
    n, o, s, p, g = case[0], case[4], case[6], case[7], case[8]
    for relu in (False, True):
        want = F.silu(F.relu(F.conv2d(T(x), T(wt), T(b), s, p, 1, g)) if relu else F.conv2d(T(x), T(wt), T(b), s, p,
                                                                                               1, g))
        out = np.full((n, o, plan.out_h, plan.out_w), np.nan, np.float32)
        got = rt.conv2d(x, wt, b, relu=relu, act=rt.silu, plan=plan, out=out, gemm=gemm)
        assert got is out
        check(got, want)


@pytest.mark.parametrize("numba", ["1", "0"])
@pytest.mark.parametrize(("gemm", "threads"), [("auto", "1"), ("auto", "2"), ("wide", "1")])
@pytest.mark.parametrize("case", ACT_CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-k{c[5]}-s{c[6]}-g{c[8]}")
def test_conv2d_adds_a_residual_on_every_path(case: tuple, gemm: str, threads: str, numba: str,
                                              monkeypatch) -> None:  # noqa: ANN001
    """``residual`` (an add after the conv, fused: ResNet's shortcut) is added once, after the bias and before the
    ReLU and ``act``, whichever path the conv takes (the GEMM epilogue, Winograd's output transform, or a pass
    of its own), and the residual is left as it was."""
    x, wt, b, plan = _on_every_conv_path(case, threads, numba, monkeypatch)
    n, o, s, p, g = case[0], case[4], case[6], case[7], case[8]
    residual = rand(n, o, plan.out_h, plan.out_w, seed=4)
    kept = residual.copy()
    summed = F.conv2d(T(x), T(wt), T(b), s, p, 1, g) + T(residual)
    for relu, act, finish in ((False, None, lambda y: y), (True, None, F.relu), (False, rt.silu, F.silu),
                              (True, rt.sigmoid, lambda y: torch.sigmoid(F.relu(y)))):
        out = np.full((n, o, plan.out_h, plan.out_w), np.nan, np.float32)
        got = rt.conv2d(x, wt, b, relu=relu, act=act, residual=residual, plan=plan, out=out, gemm=gemm)
        assert got is out
        check(got, finish(summed))
    np.testing.assert_array_equal(residual, kept)
    with pytest.raises(ValueError, match=r"residual must have the output's shape .*received \(1, 1, 1, 1\)"):
        rt.conv2d(x, wt, b, residual=residual[:1, :1, :1, :1], plan=plan, gemm=gemm)  # no silent broadcast


WINOGRAD_CASES = [
    # (N, C, H, W, O, pad): output sizes that 2 and 4 divide or not (the last tiles cropped), pads 0..2,
    # non-square, tiny maps (a 1x1 and a 3x3 output), many channels
    (1, 3, 15, 13, 8, 1),
    (2, 5, 9, 9, 7, 0),
    (3, 4, 8, 11, 6, 2),
    (1, 16, 16, 16, 16, 1),
    (5, 6, 7, 7, 9, 1),
    (2, 3, 3, 3, 5, 0),
    (1, 4, 3, 3, 4, 1),
    (1, 4, 6, 18, 3, 0),
    (2, 160, 12, 12, 96, 1),
]


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-p{c[5]}")
def test_winograd_conv_matches_torch(case: tuple, dtype: str, threads: str, tile: int,
                                     monkeypatch) -> None:  # noqa: ANN001
    """3x3 stride-1 convs take Winograd F(2x2, 3x3) or F(4x4, 3x3) on NumPy where Numba is installed: in
    chunks of one image here (so the chunks also run on two threads), with bias and ReLU or neither.
    The error is measured against torch's conv in float64, relative to the largest output."""
    from alexdsl.backends.executor import arrays, conv

    if arrays.numba_kernels(np.float32) is None:
        pytest.skip("Winograd runs on compiled kernels: pip install -e '.[numba]', and ALEXDSL_NUMBA not 0")
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", threads)
    monkeypatch.setattr(arrays, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setattr(conv, "WINOGRAD_CHUNK_BYTES", 1)
    monkeypatch.setattr(conv, "WINOGRAD_CHUNK_WEIGHTS", 0)
    monkeypatch.setattr(conv, "WINOGRAD_MIN_TILES", 1)
    monkeypatch.setattr(conv, "WINOGRAD4_MIN_TILES", 1 if tile == 4 else 1 << 30)
    monkeypatch.setattr(conv, "WINOGRAD4_MAX_PRODUCTS", 10.0)
    monkeypatch.setattr(conv, "WINOGRAD4_MAX_SIZE", 1 << 30)
    taken = []
    monkeypatch.setattr(conv, "_conv2d_winograd", lambda *a, run=conv._conv2d_winograd: taken.append(a[7]) or run(*a))
    n, c, h, w, o, p = case
    x, wt, b = (rand(*shape, seed=i).astype(dtype) for i, shape in enumerate([(n, c, h, w), (o, c, 3, 3), (o,)]))
    plan = rt.ConvPlan(c, h, w, o, (3, 3), pad=(p, p))
    # float32: F(2x2) within 1e-6 of the largest output, F(4x4) (6x6 tiles, larger transforms) within 1e-5
    bound = {"float32": 1e-6 if tile == 2 else 1e-5, "float64": 1e-13}[dtype]

    def assert_close(got: np.ndarray, want: torch.Tensor) -> None:
        assert got.dtype == np.dtype(dtype) and got.shape == tuple(want.shape)
        assert np.abs(got - want.numpy()).max() <= bound * want.abs().max().item()

    for bias, relu in ((b, True), (None, False)):
        want = F.conv2d(T(x).double(), T(wt).double(), None if bias is None else T(bias).double(), padding=p)
        assert_close(rt.conv2d(x, wt, bias, plan=plan, relu=relu), F.relu(want) if relu else want)
    fresh = wt + 1  # another weight array: transformed anew, not the plan's cached transform
    want = F.conv2d(T(x).double(), T(fresh).double(), T(b).double(), padding=p)
    assert_close(rt.conv2d(x, fresh, b, plan=plan), want)
    residual = rand(n, o, *plan.out_shape[1:], seed=7).astype(dtype)  # added in the output transform, cropped too
    for relu in (True, False):
        summed = want + T(residual).double()
        got = rt.conv2d(x, fresh, b, plan=plan, relu=relu, residual=residual)
        assert_close(got, F.relu(summed) if relu else summed)
    assert taken == [tile] * 5


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize(("groups", "c", "o"), [(2, 64, 96), (3, 96, 96)])
def test_grouped_winograd_conv_matches_torch(groups: int, c: int, o: int, tile: int, monkeypatch) -> None:  # noqa: ANN001
    """A grouped 3x3 stride-1 conv whose groups have 32 or more channels each way (AlexNet's conv4 and conv5) takes
    Winograd too: one GEMM per tile component and group, with bias, a residual and ReLU, against torch in float64."""
    from alexdsl.backends.executor import arrays, conv

    if arrays.numba_kernels(np.float32) is None:
        pytest.skip("Winograd runs on compiled kernels: pip install -e '.[numba]', and ALEXDSL_NUMBA not 0")
    monkeypatch.setattr(conv, "WINOGRAD4_MIN_TILES", 1 if tile == 4 else 1 << 30)
    monkeypatch.setattr(conv, "WINOGRAD4_MAX_PRODUCTS", 10.0)
    taken = []
    monkeypatch.setattr(conv, "_conv2d_winograd", lambda *a, run=conv._conv2d_winograd: taken.append(a[7]) or run(*a))
    x, wt, b = rand(2, c, 13, 13, seed=1), rand(o, c // groups, 3, 3, seed=2), rand(o, seed=3)
    plan = rt.ConvPlan(c, 13, 13, o, (3, 3), pad=(1, 1), groups=groups)
    residual = rand(2, o, 13, 13, seed=4)
    want = F.conv2d(T(x).double(), T(wt).double(), T(b).double(), padding=1, groups=groups) + T(residual).double()
    got = rt.conv2d(x, wt, b, relu=True, residual=residual, plan=plan)
    bound = 1e-6 if tile == 2 else 1e-5
    assert np.abs(got - F.relu(want).numpy()).max() <= bound * want.abs().max().item()
    assert taken == [tile]


def test_winograd_needs_wide_groups() -> None:
    """ResNeXt's and RegNet's groups of 4 to 16 channels stay on im2col: their per-group GEMMs are too small."""
    assert rt.ConvPlan(384, 13, 13, 256, (3, 3), pad=(1, 1), groups=2).is_winograd  # AlexNet's conv5
    assert not rt.ConvPlan(128, 56, 56, 128, (3, 3), pad=(1, 1), groups=32).is_winograd  # ResNeXt-50's 32x4d
    assert not rt.ConvPlan(64, 28, 28, 64, (3, 3), pad=(1, 1), groups=64).is_winograd  # depthwise


@pytest.mark.parametrize(("size", "batch", "tile"), [
    (56, 1, 4), (28, 1, 4), (28, 16, 4), (7, 16, 4),  # 4 divides the output: F(4x4) from 48 tiles on
    (14, 1, 2), (14, 16, 2), (13, 16, 2),  # cropped 4x4 tiles: F(4x4)'s GEMMs are 0.73 of F(2x2)'s, too many
    (24, 1, 2),  # 36 tiles of 4x4: too few
    (112, 1, 2), (224, 1, 2),  # over 56x56: F(2x2), for accuracy (VGG-16)
    (7, 1, None), (7, 2, 2),  # 16 and 32 tiles of 2x2
])
def test_winograd_tile_by_tile_count_and_crop(size: int, batch: int, tile: int | None) -> None:
    """F(4x4) where it pays (benchmarks/winograd.py) on maps up to 56x56, F(2x2) where that does, im2col below
    32 2x2 tiles."""
    assert rt.ConvPlan(64, size, size, 64, (3, 3), pad=(1, 1)).winograd_tile(batch) == tile


def test_winograd_only_where_it_pays(monkeypatch) -> None:  # noqa: ANN001
    """Too few tiles (ResNet's 7x7 maps at batch 1), another kernel or stride, a layout asked for by name,
    no Numba, or ALEXDSL_NUMBA=0: im2col + GEMM."""
    from alexdsl.backends.executor import conv

    monkeypatch.setattr(conv, "_conv2d_winograd", lambda *a: pytest.fail("Winograd taken"))
    x, wt = rand(1, 8, 7, 7), rand(8, 8, 3, 3, seed=1)
    check(rt.conv2d(x, wt, pad=(1, 1)), F.conv2d(T(x), T(wt), padding=1))  # 16 tiles
    x = rand(1, 4, 16, 16)
    check(rt.conv2d(x, rand(4, 4, 3, 3), stride=(2, 2)), F.conv2d(T(x), T(rand(4, 4, 3, 3)), stride=2))
    check(rt.conv2d(x, rand(4, 2, 3, 3), groups=2), F.conv2d(T(x), T(rand(4, 2, 3, 3)), groups=2))
    check(rt.conv2d(x, rand(4, 4, 3, 3), gemm="batched"), F.conv2d(T(x), T(rand(4, 4, 3, 3))))
    monkeypatch.setenv("ALEXDSL_NUMBA", "0")
    check(rt.conv2d(x, rand(4, 4, 3, 3)), F.conv2d(T(x), T(rand(4, 4, 3, 3))))


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_wide_conv_runs_a_batch_in_chunks_of_the_scratch(rows: int) -> None:
    x, wt, b = rand(5, 4, 9, 9), rand(6, 2, 3, 3, seed=1), rand(6, seed=2)
    plan = rt.ConvPlan(4, 9, 9, 6, (3, 3), pad=(1, 1), groups=2)
    scratch = np.zeros(rows * plan.wide_size(1) + 1, np.float32)
    got = rt.conv2d(x, wt, b, plan=plan, scratch=scratch, relu=True, gemm="wide")
    check(got, F.relu(F.conv2d(T(x), T(wt), T(b), padding=1, groups=2)))
    assert np.any(scratch[: plan.wide_size(rows)] != 0)
    with pytest.raises(ValueError, match="smaller than one image"):
        rt.conv2d(x, wt, b, plan=plan, scratch=scratch[: plan.wide_size(1) - 1], gemm="wide")
    with pytest.raises(ValueError, match="unknown gemm layout"):
        rt.conv2d(x, wt, b, plan=plan, gemm="implicit")


def test_conv2d_without_plan_and_fused_relu() -> None:
    x, wt, b = rand(2, 4, 9, 9), rand(8, 2, 3, 3, seed=1), rand(8, seed=2)
    got = rt.conv2d(x, wt, b, (1, 1), (1, 1), groups=2, relu=True)
    check(got, F.relu(F.conv2d(T(x), T(wt), T(b), 1, 1, 1, 2)))


def test_conv2d_writes_into_out_buffer() -> None:
    x, wt = rand(1, 3, 8, 8), rand(4, 3, 3, 3, seed=1)
    out = np.empty((1, 4, 6, 6), np.float32)
    got = rt.conv2d(x, wt, None, out=out)
    assert got is out
    check(out, F.conv2d(T(x), T(wt)))


def test_conv2d_uses_shared_scratch() -> None:
    x, wt = rand(2, 3, 9, 9), rand(4, 3, 3, 3, seed=1)
    plan = rt.ConvPlan(3, 9, 9, 4, (3, 3), pad=(1, 1))
    scratch = np.zeros(plan.cols_size(2) + 7, np.float32)
    # im2col by name: with Numba installed, "auto" would take Winograd, which needs no columns
    check(rt.conv2d(x, wt, plan=plan, scratch=scratch, gemm="batched"), F.conv2d(T(x), T(wt), padding=1))
    assert plan.cols_size(2) == 2 * 27 * 81
    assert np.any(scratch != 0) and "cols" not in plan._work or plan._work["cols"] is None


def test_grouped_conv_does_not_copy_weight() -> None:
    wt = rand(8, 2, 3, 3)
    assert np.shares_memory(wt.reshape(4, 2, 18), wt)  # the reshape conv2d uses is a view


def test_conv_plan_rejects_bad_groups_and_wrong_input() -> None:
    with pytest.raises(ValueError, match="groups"):
        rt.ConvPlan(3, 8, 8, 4, (3, 3), groups=2)
    plan = rt.ConvPlan(3, 8, 8, 4, (3, 3))
    with pytest.raises(ValueError, match="ConvPlan built for"):
        rt.conv2d(rand(1, 3, 9, 9), rand(4, 3, 3, 3), plan=plan)


def test_conv_workspace_bytes() -> None:
    plan = rt.ConvPlan(3, 227, 227, 96, (11, 11), (4, 4))
    assert plan.workspace_bytes(1) == 3 * 11 * 11 * 55 * 55 * 4
    assert rt.ConvPlan(8, 7, 7, 8, (1, 1)).workspace_bytes(4) == 0


# --------------------------------------------------------------------------- pooling

POOL_CASES = [
    # (H, W, k, s, p, ceil)
    (13, 13, 3, 2, 0, True),  # 13 -> 6, AlexNet/Caffe
    (13, 13, 3, 2, 0, False),
    (55, 55, 3, 2, 0, False),
    (14, 14, 3, 2, 0, True),  # 14 -> 7 in ceil mode (partial last window)
    (14, 14, 3, 2, 1, True),
    (5, 5, 3, 3, 1, True),  # ceil would add a window starting in the right padding: dropped
    (5, 5, 2, 2, 1, True),  # same rule, 4 -> 3 windows
    (6, 6, 2, 3, 0, True),  # same rule without padding
    (6, 6, 3, 3, 1, True),
    (7, 9, 3, 2, 1, False),
    (7, 9, 2, 3, 1, True),
    (8, 8, 2, 2, 0, False),
    (10, 7, 3, 1, 1, False),
]


def _ids(case: tuple) -> str:
    return "{}x{}-k{}-s{}-p{}-{}".format(*case[:5], "ceil" if case[5] else "floor")


def test_ceil_rule_drops_window_starting_in_padding() -> None:
    # 5 + 2*1 - 3 = 4, ceil(4/3) + 1 = 3, but window 2 would start at 6 >= 5 + 1: dropped
    assert pool_output_size(5, 3, 3, 1, True) == 2
    assert tuple(F.max_pool2d(torch.zeros(1, 1, 5, 5), 3, 3, 1, ceil_mode=True).shape[2:]) == (2, 2)


@pytest.mark.parametrize("numba", ["1", "0"], ids=["numba", "numpy"])
@pytest.mark.parametrize("case", POOL_CASES, ids=_ids)
def test_max_pool2d_matches_torch(case: tuple, numba: str, monkeypatch) -> None:  # noqa: ANN001
    """The compiled kernel where Numba is (ALEXDSL_NUMBA=1), the NumPy tap passes with ALEXDSL_NUMBA=0."""
    monkeypatch.setenv("ALEXDSL_NUMBA", numba)
    h, w, k, s, p, ceil = case
    x = rand(2, 3, h, w)
    got = rt.max_pool2d(x, (k, k), (s, s), (p, p), ceil)
    check(got, F.max_pool2d(T(x), k, s, p, ceil_mode=ceil))


@pytest.mark.parametrize("numba", ["1", "0"], ids=["numba", "numpy"])
@pytest.mark.parametrize("include", [True, False], ids=["count_pad", "no_count_pad"])
@pytest.mark.parametrize("case", POOL_CASES, ids=_ids)
def test_avg_pool2d_matches_torch(case: tuple, include: bool, numba: str, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("ALEXDSL_NUMBA", numba)
    h, w, k, s, p, ceil = case
    x = rand(2, 3, h, w)
    got = rt.avg_pool2d(x, (k, k), (s, s), (p, p), ceil, include)
    check(got, F.avg_pool2d(T(x), k, s, p, ceil_mode=ceil, count_include_pad=include))


def test_pool_with_plan_and_out() -> None:
    x = rand(1, 2, 13, 13)
    plan = rt.PoolPlan(13, 13, (3, 3), (2, 2), (0, 0), True)
    out = np.empty((1, 2, plan.out_h, plan.out_w), np.float32)
    assert rt.max_pool2d(x, (3, 3), plan=plan, out=out) is out
    check(out, F.max_pool2d(T(x), 3, 2, ceil_mode=True))
    inv = (1.0 / plan.divisor(True)).astype(np.float32)
    check(rt.avg_pool2d(x, (3, 3), plan=plan, divisor=inv), F.avg_pool2d(T(x), 3, 2, ceil_mode=True))


@pytest.mark.parametrize("threads", ["1", "2"])
def test_pool_in_blocks_of_channels(threads: str, monkeypatch) -> None:  # noqa: ANN001
    """NumPy pools a few channel planes at a time (cache-sized blocks, spread over threads): blocks
    of 3 planes over 2x5 planes, so block edges fall inside an image and between images. Without
    Numba's kernel (ALEXDSL_NUMBA=0), which pools plane by plane."""
    from alexdsl.backends.executor import arrays, pool

    monkeypatch.setenv("ALEXDSL_NUMBA", "0")
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", threads)
    monkeypatch.setattr(arrays, "PARALLEL_MIN_ELEMENTS", 1)
    x = rand(2, 5, 11, 10)
    plan = rt.PoolPlan(11, 10, (3, 3), (2, 2), (1, 1), True)
    monkeypatch.setattr(pool, "BLOCK_BYTES", 3 * (11 * 10 + plan.out_h * plan.out_w) * 4)
    check(rt.max_pool2d(x, (3, 3), (2, 2), (1, 1), True), F.max_pool2d(T(x), 3, 2, 1, ceil_mode=True))
    check(rt.avg_pool2d(x, (3, 3), (2, 2), (1, 1), True, False),
          F.avg_pool2d(T(x), 3, 2, 1, ceil_mode=True, count_include_pad=False))


POOL_SWEEP = [
    (k, s, p, ceil) for k in (1, 3, 5) for s in (1, 2, 3) for p in (0, 1, 2) for ceil in (False, True) if 2 * p <= k
]
"""(kernel, stride, pad, ceil) of the compiled pooling sweep: torch refuses padding over half the kernel."""
POOL_SWEEP_SHAPES = [(2, 3, 9, 8), (1, 2, 12, 13), (3, 1, 1, 1), (1, 4, 6, 16), (2, 2, 2, 5)]
"""(N, C, H, W): odd and even sizes, a 1x1 input, N and C above 1; W 16 gives a stride-2 row of whole pairs; H 2
gives a 3x3 stride-1 pool (whole-plane runs) no row with three input rows."""


def _compiled_pool_calls(monkeypatch) -> list[tuple[int, int]]:  # noqa: ANN001
    """The (lo, hi) planes of every call of the compiled pooling kernel from here on (skips without Numba)."""
    pytest.importorskip("numba", reason="the optional numba extra: pip install -e '.[numba]'")
    from alexdsl.backends.executor import arrays

    monkeypatch.setenv("ALEXDSL_NUMBA", "1")
    kernels, calls = arrays.numba_kernels(np.float32), []
    if kernels is None:
        pytest.skip("compiled pooling needs Numba: pip install -e '.[numba]', and ALEXDSL_NUMBA not 0")
    kernel = kernels.pool2d
    monkeypatch.setattr(kernels, "pool2d", lambda *a: calls.append(a[2:4]) or kernel(*a))
    return calls


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["max", "avg_count_pad", "avg_no_count_pad"])
def test_compiled_pool2d_matches_torch_over_a_sweep(kind: str, dtype: str, monkeypatch) -> None:  # noqa: ANN001
    """numba_kernels.pool2d against torch for kernels 1, 3, 5 x strides 1, 2, 3 x pads 0, 1, 2 x floor and ceil
    rounding over odd, even and 1x1 inputs: max bit for bit, average within the dtype's rounding (its sums run
    rows first, then columns)."""
    calls = _compiled_pool_calls(monkeypatch)
    tolerance = {"float32": 2e-6, "float64": 1e-14}[dtype]
    ran = 0
    for shape in POOL_SWEEP_SHAPES:
        x = rand(*shape, seed=sum(shape)).astype(dtype)
        for k, s, p, ceil in POOL_SWEEP:
            if k > shape[2] + 2 * p or k > shape[3] + 2 * p:
                continue
            before, ran = len(calls), ran + 1
            if kind == "max":
                got = rt.max_pool2d(x, (k, k), (s, s), (p, p), ceil)
                want = F.max_pool2d(T(x), k, s, p, ceil_mode=ceil).numpy()
                assert np.array_equal(got, want), (shape, k, s, p, ceil)
            else:
                include = kind == "avg_count_pad"
                got = rt.avg_pool2d(x, (k, k), (s, s), (p, p), ceil, include)
                want = F.avg_pool2d(T(x), k, s, p, ceil_mode=ceil, count_include_pad=include).numpy()
                np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance, err_msg=f"{shape, k, s, p, ceil}")
            assert got.dtype == np.dtype(dtype) and len(calls) == before + 1
    assert ran > 100


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_compiled_max_pool2d_propagates_nan(stride: int, dtype: str, monkeypatch) -> None:  # noqa: ANN001
    """A window holding a NaN gives NaN, wherever the NaN is in it (first tap, a later row or column), as in
    torch; ``a if a > b else b`` would drop it. Average pooling's sums carry it too."""
    calls = _compiled_pool_calls(monkeypatch)
    x = rand(2, 3, 11, 12).astype(dtype)
    x[0, 0, 0, 0] = x[0, 1, 5, 7] = x[1, 2, 10, 11] = x[1, 0, 4, 1] = np.nan
    for k, p, ceil in [(3, 1, False), (2, 0, True), (3, 0, True), (5, 2, False)]:
        got = rt.max_pool2d(x, (k, k), (stride, stride), (p, p), ceil)
        want = F.max_pool2d(T(x), k, stride, p, ceil_mode=ceil).numpy()
        assert np.isnan(want).any() and np.array_equal(got, want, equal_nan=True), (k, stride, p, ceil)
        got = rt.avg_pool2d(x, (k, k), (stride, stride), (p, p), ceil, False)
        want = F.avg_pool2d(T(x), k, stride, p, ceil_mode=ceil, count_include_pad=False).numpy()
        assert np.array_equal(np.isnan(got), np.isnan(want)), (k, stride, p, ceil)
    assert len(calls) == 8


@pytest.mark.parametrize("threads", ["1", "2"])
def test_compiled_pool2d_splits_planes_over_threads(threads: str, monkeypatch) -> None:  # noqa: ANN001
    """Each thread pools its share of the N*C planes into a preallocated ``out`` (a plan and a divisor as the
    generated code passes them); the shares cover every plane once."""
    from alexdsl.backends.executor import arrays

    calls = _compiled_pool_calls(monkeypatch)
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", threads)
    monkeypatch.setattr(arrays, "PARALLEL_MIN_ELEMENTS", 1)
    x = rand(2, 5, 14, 14)
    for stride in (1, 2):  # a 3x3 stride-1 pool runs over whole planes, a stride-2 one row by row
        plan = rt.PoolPlan(14, 14, (3, 3), (stride, stride), (1, 1), True)
        out = np.empty((2, 5, plan.out_h, plan.out_w), np.float32)
        assert rt.max_pool2d(x, (3, 3), plan=plan, out=out) is out
        check(out, F.max_pool2d(T(x), 3, stride, 1, ceil_mode=True))
        inv = (1.0 / plan.divisor(False)).astype(np.float32)
        assert rt.avg_pool2d(x, (3, 3), count_include_pad=False, plan=plan, divisor=inv, out=out) is out
        check(out, F.avg_pool2d(T(x), 3, stride, 1, ceil_mode=True, count_include_pad=False))
    shares = sorted(calls)
    assert len(shares) == 4 * int(threads) and sum(hi - lo for lo, hi in shares) == 4 * 10


@pytest.mark.parametrize("case", ["no numba", "float16", "strided input", "strided out"])
def test_pool2d_without_the_compiled_kernel(case: str, monkeypatch) -> None:  # noqa: ANN001
    """Where the compiled kernel does not apply (ALEXDSL_NUMBA=0, float16, views that are not C-contiguous) the
    NumPy tap passes pool, and agree with torch."""
    calls = _compiled_pool_calls(monkeypatch)
    x, out = rand(2, 3, 10, 9), None
    if case == "no numba":
        monkeypatch.setenv("ALEXDSL_NUMBA", "0")
    elif case == "float16":
        x = x.astype(np.float16)
    elif case == "strided input":
        x = rand(2, 3, 10, 18)[..., ::2]
    else:
        out = np.empty((2, 3, 5, 10), np.float32)[..., ::2]
    got = rt.max_pool2d(x, (3, 3), (2, 2), (1, 1), False, out=out)
    want = F.max_pool2d(T(x.astype(np.float32)), 3, 2, 1)
    np.testing.assert_array_equal(got.astype(np.float32), want.numpy())
    avg = rt.avg_pool2d(x, (3, 3), (2, 2), (1, 1), False, False, out=out)
    want = F.avg_pool2d(T(x.astype(np.float32)), 3, 2, 1, count_include_pad=False).numpy()
    np.testing.assert_allclose(avg.astype(np.float32), want, rtol=1e-3 if case == "float16" else RTOL, atol=1e-3)
    assert calls == []


def test_max_pool_asymmetric_kernel() -> None:
    x = rand(1, 2, 9, 8)
    check(rt.max_pool2d(x, (3, 2), (2, 1), (1, 0), True), F.max_pool2d(T(x), (3, 2), (2, 1), (1, 0), ceil_mode=True))


@pytest.mark.parametrize(
    ("hw", "size"),
    [((13, 13), (6, 6)), ((7, 7), (3, 3)), ((10, 9), (4, 5)), ((6, 6), (6, 6)), ((5, 8), (1, 1)), ((3, 3), (6, 6))],
)
def test_adaptive_avg_pool2d_matches_torch(hw: tuple[int, int], size: tuple[int, int]) -> None:
    x = rand(2, 3, *hw)
    check(rt.adaptive_avg_pool2d(x, size), F.adaptive_avg_pool2d(T(x), size))
    out = np.empty((2, 3, *size), np.float32)
    assert rt.adaptive_avg_pool2d(x, size, out=out) is out
    check(out, F.adaptive_avg_pool2d(T(x), size))


def test_global_avg_pool_keeps_spatial_dims() -> None:
    x = rand(2, 5, 7, 6)
    check(rt.global_avg_pool2d(x), F.adaptive_avg_pool2d(T(x), 1))
    out = np.empty((2, 5, 1, 1), np.float32)
    check(rt.global_avg_pool2d(x, out=out), F.adaptive_avg_pool2d(T(x), 1))


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_global_avg_pool_dtypes_and_strided_input(dtype: str) -> None:
    """float32/float64 take a matrix-vector product by ones; float16 and strided inputs take numpy.mean."""
    x = rand(2, 5, 14, 12)
    want = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    got = rt.global_avg_pool2d(x.astype(dtype))
    assert got.dtype == np.dtype(dtype) and got.shape == (2, 5, 1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-3 if dtype == "float16" else 1e-12, atol=1e-3 if dtype == "float16"
                               else 1e-12)
    strided = x[:, ::2]
    np.testing.assert_allclose(rt.global_avg_pool2d(strided), want[:, ::2], rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- normalization


@pytest.mark.parametrize("size", [3, 5, 4])
@pytest.mark.parametrize(
    ("alpha", "beta", "k"), [(1e-4, 0.75, 1.0), (2e-3, 0.75, 2.0), (0.1, 0.5, 1.0), (0.05, 0.6, 1.5)]
)
def test_lrn_matches_torch(size: int, alpha: float, beta: float, k: float) -> None:
    x = rand(2, 7, 5, 5) * 3
    check(rt.lrn(x, size, alpha, beta, k), F.local_response_norm(T(x), size, alpha, beta, k))
    out = np.empty_like(x)
    check(rt.lrn(x, size, alpha, beta, k, out=out), F.local_response_norm(T(x), size, alpha, beta, k))


def _bn_params(c: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(5)
    mean = rng.standard_normal(c).astype(np.float32)
    var = rng.uniform(0.5, 2.0, c).astype(np.float32)
    gamma = rng.standard_normal(c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    return mean, var, gamma, beta


@pytest.mark.parametrize("conv_bias", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
def test_fold_batchnorm_equivalence(conv_bias: bool, groups: int) -> None:
    x, wt = rand(2, 4, 8, 8), rand(6, 4 // groups, 3, 3, seed=1)
    b = rand(6, seed=2) if conv_bias else None
    mean, var, gamma, beta = _bn_params(6)
    conv = F.conv2d(T(x), T(wt), None if b is None else T(b), 1, 1, 1, groups)
    want = F.batch_norm(conv, T(mean), T(var), T(gamma), T(beta), False, 0.1, 1e-3)
    fw, fb = rt.fold_batchnorm(wt, b, mean, var, gamma, beta, 1e-3)
    assert fw.shape == wt.shape and fb.shape == (6,)
    assert fw.dtype == np.float32 and fb.dtype == np.float32
    check(rt.conv2d(x, fw, fb, (1, 1), (1, 1), groups=groups), want)


def test_fold_batchnorm_without_affine() -> None:
    x, wt = rand(1, 3, 6, 6), rand(4, 3, 3, 3, seed=1)
    mean, var, _, _ = _bn_params(4)
    want = F.batch_norm(F.conv2d(T(x), T(wt)), T(mean), T(var), None, None, False, 0.1, 1e-5)
    fw, fb = rt.fold_batchnorm(wt, None, mean, var, None, None)
    check(rt.conv2d(x, fw, fb), want)


# --------------------------------------------------------------------------- dense + pointwise


@pytest.mark.parametrize("shape", [(3, 10), (2, 4, 3, 3)])
@pytest.mark.parametrize("fused_relu", [False, True])
def test_linear_matches_torch(shape: tuple[int, ...], fused_relu: bool) -> None:
    x = rand(*shape)
    k = int(np.prod(shape[1:]))
    wt, b = rand(7, k, seed=1), rand(7, seed=2)
    want = F.linear(T(x).reshape(shape[0], -1), T(wt), T(b))
    check(rt.linear(x, wt, b, relu=fused_relu), F.relu(want) if fused_relu else want)
    check(rt.linear(x, wt, None), F.linear(T(x).reshape(shape[0], -1), T(wt)))


@pytest.mark.parametrize(
    ("name", "ours", "theirs"),
    [
        ("relu", rt.relu, F.relu),
        ("leaky_relu", lambda x: rt.leaky_relu(x, 0.1), lambda t: F.leaky_relu(t, 0.1)),
        ("sigmoid", rt.sigmoid, torch.sigmoid),
        ("tanh", rt.tanh, torch.tanh),
        ("softmax", rt.softmax, lambda t: F.softmax(t, dim=1)),
    ],
)
def test_pointwise_matches_torch(name: str, ours, theirs) -> None:  # noqa: ANN001
    x = rand(3, 5, 2, 2) * 4
    x[0, 0, 0, 0] = 60.0  # overflow check for sigmoid/softmax
    check(ours(x), theirs(T(x)))


IN_PLACE = {
    "relu": ((), F.relu), "leaky_relu": ((0.1,), lambda t: F.leaky_relu(t, 0.1)), "sigmoid": ((), torch.sigmoid),
    "tanh": ((), torch.tanh), "silu": ((), F.silu), "mish": ((), F.mish), "hardswish": ((), F.hardswish),
    "gelu": (("none",), F.gelu), "gelu_tanh": (("tanh",), lambda t: F.gelu(t, approximate="tanh")),
    "elu": ((0.5,), lambda t: F.elu(t, 0.5)), "softplus": ((1.0, 20.0), F.softplus),
    "softplus_beta": ((2.0, 3.0), lambda t: F.softplus(t, 2.0, 3.0)),
}


@pytest.mark.parametrize("name", IN_PLACE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pointwise_out_in_place(name: str, dtype: type) -> None:
    """``out=x`` overwrites the input with the result, in either float type, with signed inputs past every
    threshold."""
    args, theirs = IN_PLACE[name]
    x = (rand(2, 3, 4, 4) * 8).astype(dtype)
    want = theirs(torch.from_numpy(x.copy()))
    got = getattr(rt, name.partition("_")[0] if name.startswith(("gelu", "softplus")) else name)(x, *args, out=x)
    assert got is x and x.dtype == dtype
    np.testing.assert_allclose(x, want.numpy(), rtol=RTOL, atol=ATOL)


EPILOGUE_FORMS = ["relu6", "hardsigmoid", "hardswish", "sigmoid", "silu"]
"""The activations with a compiled epilogue form (``XpKernel(..., compiled=True)``, numba_kernels.FORMS)."""


@pytest.mark.parametrize("shape", [(3, 5, 7, 6), (9, 5)], ids=["planes", "fully connected rows"])
@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("name", ["bias", "relu", *EPILOGUE_FORMS])
def test_the_compiled_epilogue_is_a_bias_pass_then_the_xp_kernel(name: str, threads: str, shape: tuple[int, ...],
                                                                 monkeypatch) -> None:  # noqa: ANN001
    """Bias and activation in one compiled pass (``compiled.bias_activation_``) give what a bias pass and the op's
    xp kernel give: bit for bit for the piecewise-linear forms, within 3 float32 ulps for sigmoid and SiLU (their
    own exponential); each (N, C) plane gets its channel's bias, and a fully connected layer's (N, C) rows the
    bias vector, split over two threads too."""
    pytest.importorskip("numba", reason="the optional numba extra: pip install -e '.[numba]'")
    from alexdsl.backends.executor import arrays, compiled
    from alexdsl.ops import activation

    monkeypatch.setenv("ALEXDSL_NUM_THREADS", threads)
    monkeypatch.setattr(arrays, "PARALLEL_MIN_ELEMENTS", 1)
    y, bias = rand(*shape) * 8, rand(5, seed=1)
    want = y + bias.reshape(1, 5, *(1,) * (len(shape) - 2))
    if name == "relu":
        np.maximum(want, 0, out=want)
    act = getattr(rt, name) if name in EPILOGUE_FORMS else None
    if act is not None:
        want = getattr(activation, name)(want)  # the op's xp kernel, on NumPy
    got = y.copy()
    assert compiled.bias_activation_(got, bias, name == "relu", act)
    if name in ("sigmoid", "silu"):
        assert np.all(np.abs(got - want) <= 3 * np.spacing(np.abs(want))), name
    else:
        assert np.array_equal(got, want), name
    if len(shape) == 2:
        return  # an activation alone over (N, C) is the activation's own kernel
    no_bias = y.copy()
    assert compiled.bias_activation_(no_bias, None, name == "relu", act)
    np.testing.assert_allclose(no_bias, y if act is None and name == "bias" else (
        np.maximum(y, 0) if act is None else getattr(activation, name)(y)), rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("order", ["x * gate", "gate * x", "in place"])
def test_squeeze_excitation_scale_is_numpy_multiply_bit_for_bit(order: str, threads: str, monkeypatch) -> None:  # noqa: ANN001
    """``rt.multiply`` of (N, C, H, W) by (N, C, 1, 1) in float32 (the compiled pass by planes, with Numba) gives
    numpy.multiply's bits, either operand order, in place too, split over threads; other shapes broadcast as before."""
    from alexdsl.backends.executor import arrays

    monkeypatch.setenv("ALEXDSL_NUM_THREADS", threads)
    monkeypatch.setattr(arrays, "PARALLEL_MIN_ELEMENTS", 1)
    x, gate = rand(3, 5, 7, 6), rand(3, 5, 1, 1, seed=1)
    want = np.multiply(x, gate)
    out = x if order == "in place" else np.empty_like(x)
    inputs = (gate, x) if order == "gate * x" else (x, gate)
    assert rt.multiply(*inputs, out=out) is out
    assert np.array_equal(out, want)
    row_gate = rand(3, 1, 7, 6, seed=2)  # not per channel: NumPy's broadcast
    np.testing.assert_array_equal(rt.multiply(x, row_gate, out=np.empty_like(x)), np.multiply(x, row_gate))


@pytest.mark.parametrize(("case", "why"), [
    ("float64", "NumPy passes in float64"),
    ("relu and act", "ReLU then another activation: no form for the pair"),
    ("no form", "an activation without a compiled form (tanh)"),
    ("strided", "a view that is not C-contiguous"),
    ("fully connected, no bias", "(N, C) without a bias: single-element planes, and no bias for the row pass"),
])
def test_the_compiled_epilogue_declines_what_it_does_not_cover(case: str, why: str) -> None:
    """Where the compiled pass does not apply it returns False and leaves ``y`` as it was (``bias_relu_`` then runs
    the NumPy passes)."""
    from alexdsl.backends.executor import compiled

    y, bias, relu, act = rand(2, 4, 5, 5), rand(4, seed=1), False, rt.silu
    if case == "float64":
        y = y.astype(np.float64)
    elif case == "relu and act":
        relu = True
    elif case == "no form":
        act = rt.tanh
    elif case == "strided":
        y = rand(2, 4, 5, 10)[..., ::2]
    elif case == "fully connected, no bias":
        y, bias = rand(3, 4), None
    before = y.copy()
    assert not compiled.bias_activation_(y, bias, relu, act), why
    assert np.array_equal(y, before)


@pytest.mark.parametrize("name", EPILOGUE_FORMS)
def test_an_activation_inside_a_pool_worker_runs_on_that_worker(name: str, monkeypatch) -> None:  # noqa: ANN001
    """Every pool worker busy with a compiled activation (as the depthwise conv applies one to its blocks of planes)
    that splits its own work: the activation runs inline on each worker, where submitting to the pool would wait on
    itself forever."""
    from alexdsl.backends.executor import arrays

    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    monkeypatch.setattr(arrays, "PARALLEL_MIN_ELEMENTS", 1)
    inputs = [rand(4, 64, seed=i) * 8 for i in range(2)]
    pool = arrays.thread_pool(2)
    results = [future.result(timeout=60) for future in [pool.submit(getattr(rt, name), x) for x in inputs]]
    for x, got in zip(inputs, results, strict=True):
        np.testing.assert_allclose(got, IN_PLACE_REFERENCES[name](T(x)).numpy(), rtol=RTOL, atol=ATOL)


IN_PLACE_REFERENCES = {"relu6": F.relu6, "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish,
                       "sigmoid": torch.sigmoid, "silu": F.silu}


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("shape", [(1, 96, 56, 56), (3, 5, 7, 9), (2, 768, 7, 7), (2, 1152, 1, 1)], ids=str)
def test_the_compiled_channel_layer_norm_is_the_numpy_passes_bit_for_bit(shape: tuple[int, ...], threads: str,
                                                                         monkeypatch) -> None:  # noqa: ANN001
    """LayerNorm2d with Numba (numba_kernels.layer_norm_channels, blocks of 64 pixels: some cut short, several a
    image) equals the NumPy kernel's passes exactly, into a new array and in place, on one and two threads; and
    both are F.layer_norm over the channels. One pixel an image stays on NumPy, whose sums are pairwise there."""
    pytest.importorskip("numba", reason="the optional numba extra: pip install -e '.[numba]'")
    from alexdsl.backends.executor import arrays

    monkeypatch.setenv("ALEXDSL_NUM_THREADS", threads)
    monkeypatch.setattr(arrays, "PARALLEL_MIN_ELEMENTS", 1)
    x, w, b = rand(*shape) * 3 + 1, rand(shape[1], seed=1), rand(shape[1], seed=2)
    monkeypatch.setenv("ALEXDSL_NUMBA", "0")
    numpy_passes = rt.layer_norm(x, w, b, 1e-6)
    monkeypatch.setenv("ALEXDSL_NUMBA", "1")
    kernels, blocks = arrays.numba_kernels(np.float32), []
    kernel = kernels.layer_norm_channels
    monkeypatch.setattr(kernels, "layer_norm_channels", lambda *a: blocks.append(a[-2:]) or kernel(*a))
    compiled = rt.layer_norm(x, w, b, 1e-6)
    pixels = shape[2] * shape[3]
    expected_blocks = shape[0] * -(-pixels // kernels.LAYER_NORM_PIXELS) if pixels > 1 else 0
    assert sum(hi - lo for lo, hi in blocks) == expected_blocks
    assert np.array_equal(compiled, numpy_passes)
    in_place = x.copy()
    assert rt.layer_norm(in_place, w, b, 1e-6, out=in_place) is in_place
    assert np.array_equal(in_place, numpy_passes)
    want = F.layer_norm(T(x).permute(0, 2, 3, 1), shape[1:2], T(w), T(b), 1e-6).permute(0, 3, 1, 2)
    check(compiled, want)


def test_concat_and_add() -> None:
    a, b, c = rand(2, 3, 4, 4), rand(2, 5, 4, 4, seed=1), rand(2, 3, 4, 4, seed=2)
    check(rt.concat([a, b]), torch.cat([T(a), T(b)], 1))
    out = np.empty((2, 8, 4, 4), np.float32)
    check(rt.concat([a, b], out=out), torch.cat([T(a), T(b)], 1))
    check(rt.add(a, c), T(a) + T(c))
    check(rt.add(a, c, a, relu=True), F.relu(T(a) + T(c) + T(a)))
    check(rt.add(a), T(a))
    with pytest.raises(ValueError):
        rt.add()


def test_array_module_is_numpy_for_numpy_arrays() -> None:
    assert rt.array_module(np.zeros(1)) is np
    assert rt.array_module() is np


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_cupy_kernels_match_numpy() -> None:
    cp = pytest.importorskip("cupy")
    try:
        cp.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001
        pytest.skip("no CUDA device")
    x, wt, b = rand(2, 4, 11, 11), rand(8, 2, 3, 3, seed=1), rand(8, seed=2)
    want = rt.conv2d(x, wt, b, (2, 2), (1, 1), (1, 1), 2, relu=True)
    for gemm, method in (("wide", "strided"), ("batched", "strided"), ("batched", "gather")):
        plan = rt.ConvPlan(4, 11, 11, 8, (3, 3), (2, 2), (1, 1), (1, 1), 2, method=method)
        for n in (1, 2):  # one image: the GEMM writes NCHW; a batch: the transposing epilogue
            got = rt.conv2d(cp.asarray(x[:n]), cp.asarray(wt), cp.asarray(b), relu=True, plan=plan, gemm=gemm)
            assert isinstance(got, cp.ndarray)
            np.testing.assert_allclose(cp.asnumpy(got), want[:n], rtol=RTOL, atol=ATOL)
    xg = cp.asarray(x)
    for ours, ref in [
        (rt.max_pool2d(xg, (3, 3), (2, 2), (0, 0), True), rt.max_pool2d(x, (3, 3), (2, 2), (0, 0), True)),
        (rt.avg_pool2d(xg, (3, 3), (2, 2), (1, 1), True, False), rt.avg_pool2d(x, (3, 3), (2, 2), (1, 1), True, False)),
        (rt.lrn(xg, 5, 1e-4, 0.75, 1.0), rt.lrn(x, 5, 1e-4, 0.75, 1.0)),
        (rt.adaptive_avg_pool2d(xg, (3, 4)), rt.adaptive_avg_pool2d(x, (3, 4))),
    ]:
        np.testing.assert_allclose(cp.asnumpy(ours), ref, rtol=RTOL, atol=ATOL)


def test_linear_with_pretransposed_weight() -> None:
    x, wt, b = rand(4, 12), rand(5, 12, seed=1), rand(5, seed=2)
    wt_t = rt.pretranspose(wt)
    assert wt_t.shape == (12, 5) and wt_t.flags.c_contiguous
    check(rt.linear(x, wt_t, b, transposed=True, relu=True), F.relu(F.linear(T(x), T(wt), T(b))))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_cuda_kernels_match_xp_reference(dtype: str, monkeypatch) -> None:  # noqa: ANN001
    """Each RawKernel of alexdsl/backends/executor/cuda.py against the portable xp code on the same GPU."""
    cp = pytest.importorskip("cupy")
    from alexdsl.backends.executor import cuda

    tol = {"rtol": RTOL, "atol": ATOL} if dtype == "float32" else {"rtol": 1e-10, "atol": 1e-10}
    monkeypatch.setenv("ALEXDSL_CUDA_KERNELS", "0")  # the xp reference
    x = cp.asarray(rand(3, 7, 9, 8) * 3, dtype=dtype)
    b = cp.asarray(rand(7, seed=1), dtype=dtype)
    for size in (1, 3, 5, 8):
        want = rt.lrn(x, size, 1e-3, 0.75, 2.0)
        cp.testing.assert_allclose(cuda.lrn(x, size, 1e-3, 0.75, 2.0, cp.empty_like(x)), want, **tol)
        inplace = x.copy()
        cp.testing.assert_allclose(cuda.lrn(inplace, size, 1e-3, 0.75, 2.0, inplace), want, **tol)
    for bias in (b, None):
        for relu in (False, True):
            want = rt.bias_relu_(x.copy(), bias, relu) if bias is not None or relu else x
            cp.testing.assert_allclose(cuda.bias_relu_(x.copy(), bias, relu), want, **tol)
            src = cp.ascontiguousarray(x.reshape(3, 7, 72).transpose(1, 0, 2))  # (C, N, P)
            want = rt.transpose_bias_relu(src, bias, relu, cp.empty((3, 7, 72), dtype=dtype))
            got = cuda.transpose_bias_relu(src, bias, relu, cp.empty((3, 7, 72), dtype=dtype))
            cp.testing.assert_allclose(got, want, **tol)
    for h, w, k, s, p, ceil in POOL_CASES:
        plan = rt.PoolPlan(h, w, k, s, p, ceil)
        xp_in = cp.asarray(rand(2, 3, h, w), dtype=dtype)
        out = cp.empty((2, 3, plan.out_h, plan.out_w), dtype=dtype)
        cp.testing.assert_allclose(cuda.pool2d("max", plan, xp_in, out), rt.max_pool2d(xp_in, k, s, p, ceil), **tol)
        for count_pad in (True, False):
            inv = cp.asarray(1.0 / plan.divisor(count_pad), dtype=dtype)
            want = rt.avg_pool2d(xp_in, k, s, p, ceil, count_pad)
            cp.testing.assert_allclose(cuda.pool2d("avg", plan, xp_in, out, inv), want, **tol)
    for case in CONV_CASES:
        n, c, h, w, o, k, s, p, d, g = case
        plan = rt.ConvPlan(c, h, w, o, k, s, p, d, g)
        xg = cp.asarray(rand(n, c, h, w), dtype=dtype)
        want = plan.im2col_wide(xg, cp.empty(plan.wide_size(n), dtype=dtype)).copy()
        got = cuda.im2col_wide(plan, xg, cp.empty(plan.k_size * n * plan.out_h * plan.out_w, dtype=dtype))
        cp.testing.assert_array_equal(got.reshape(want.shape), want)
    # switched on, the runtime routes to them and the results do not change
    wt = cp.asarray(rand(8, 2, 3, 3, seed=2), dtype=dtype)
    bg = cp.asarray(rand(8, seed=3), dtype=dtype)
    xc = cp.asarray(rand(3, 4, 11, 11), dtype=dtype)
    want_conv = rt.conv2d(xc, wt, bg, (2, 2), (1, 1), groups=2, relu=True)
    want_lrn = rt.lrn(x, 5, 1e-4, 0.75, 1.0)
    monkeypatch.setenv("ALEXDSL_CUDA_KERNELS", "1")
    assert cuda.enabled() and cuda.supports(xc, bg)
    cp.testing.assert_allclose(rt.conv2d(xc, wt, bg, (2, 2), (1, 1), groups=2, relu=True), want_conv, **tol)
    cp.testing.assert_allclose(rt.lrn(x, 5, 1e-4, 0.75, 1.0), want_lrn, **tol)
    inplace = x.copy()
    cp.testing.assert_allclose(rt.lrn(inplace, 5, 1e-4, 0.75, 1.0, out=inplace), want_lrn, **tol)


def test_cuda_kernels_are_off_without_the_switch(monkeypatch) -> None:  # noqa: ANN001
    from alexdsl.backends.executor import cuda

    monkeypatch.delenv("ALEXDSL_CUDA_KERNELS", raising=False)
    assert not cuda.enabled()


@pytest.mark.parametrize("threads", ["1", "2"])
def test_conv2d_runs_big_batches_in_scratch_sized_chunks(threads: str, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", threads)
    x, wt, b = rand(5, 3, 9, 9), rand(4, 3, 3, 3, seed=1), rand(4, seed=2)
    plan = rt.ConvPlan(3, 9, 9, 4, (3, 3), pad=(1, 1))
    scratch = np.empty(2 * plan.cols_size(1), np.float32)  # two images' columns at a time
    want = F.relu(F.conv2d(T(x), T(wt), T(b), padding=1))
    im2col = {"gemm": "batched"}  # by name: with Numba installed, "auto" would take Winograd, which needs no columns
    check(rt.conv2d(x, wt, b, relu=True, plan=plan, scratch=scratch, **im2col), want)
    check(rt.conv2d(x[:3], wt, b, relu=True, plan=plan, scratch=scratch, **im2col), want[:3])  # padded buffer reused
    with pytest.raises(ValueError, match="smaller than one image"):
        monkeypatch.setenv("ALEXDSL_NUM_THREADS", "1")
        rt.conv2d(x, wt, b, plan=plan, scratch=scratch[:5], **im2col)


def test_scratch_rows() -> None:
    assert rt.scratch_rows("numpy", 16, 0) == 0
    assert rt.scratch_rows("numpy", 1, 10**6) == 1
    assert 1 <= rt.scratch_rows("numpy", 64, 10**7) <= max(rt.num_threads(), 1)
    assert rt.scratch_rows("numpy", 64, 100) == 64
