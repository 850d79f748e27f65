"""Depthwise convolution (alexdsl/backends/executor/depthwise.py and its CUDA kernel) against torch.

* the NumPy path (blocked columns + one matmul per block), the whole-batch per-tap path CuPy
  runs, and ``rt.conv2d``'s dispatch to them, over a sweep of kernels, strides, paddings,
  dilations, channel counts, multipliers, batches, rectangular inputs and both dtypes,
  against ``torch.nn.functional.conv2d`` with bias and ReLU;
* the CUDA source through the host build of tests/test_cuda_sources.py (NVRTC compiles it
  there too: it is in ``cuda.SOURCES``), and on a GPU when there is one;
* a MobileNet-style network through the executor against torch.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from conftest import EXAMPLES, random_weights
from test_cuda_sources import TOL, host_kernels, on_host  # noqa: F401 - fixtures of the host build
from test_executor import assert_close, torch_module, torch_reference

import alexdsl
from alexdsl.backends import executor as backend
from alexdsl.backends.executor import arrays, cuda, depthwise
from alexdsl.backends.executor import runtime as rt

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (batch, channels, multiplier, H, W, kernel, stride, pad, dilation): every kernel 3/5/7 with stride 1/2 and
# dilation 1/2, pads 0..3 and channels 1..64 in turn, batch 1 or 3, non-square inputs; a few multipliers 2 and 3
CASES = [
    (
        1 + 2 * (i % 2),
        (1, 3, 8, 17, 32, 64)[i % 6],
        (1, 1, 2, 1, 3, 1)[i % 6],
        9 + k * d + i % 4,
        7 + k * d + 2 * i % 5,
        k,
        s,
        i % 4,
        d,
    )
    for i, (k, s, d) in enumerate(itertools.product((3, 5, 7), (1, 2), (1, 2)))
] + [
    (2, 60, 1, 40, 42, 3, 1, 1, 1),  # several blocks of channels per image, the last one partial
    (3, 24, 1, 13, 11, 3, 2, 0, 1),  # no padding: windows straight from the input
    (1, 4, 1, 6, 5, (3, 1), (1, 2), (1, 0), (2, 1)),  # everything asymmetric
    (2, 6, 1, 5, 5, 1, 1, 0, 1),  # 1x1 depthwise: a per-channel scale
    (1, 3, 1, 4, 4, 3, 1, 3, 1),  # padding wider than the kernel: the border outputs are bias only
    (1, 2, 1, 20, 21, 3, 1, 4, 1),  # the same with rows of 16 and more (copied row by row, not by index map)
    (2, 5, 1, 40, 37, 3, 3, 1, 1),  # stride 3: three column phases a row; long rows, several blocks of rows
    (1, 4, 2, 11, 13, 5, 3, 2, 1),  # stride 3 on short rows (index maps), multiplier 2
    (2, 6, 1, 45, 50, 5, 2, 2, 2),  # stride 2 and dilation 2 on long rows, several blocks of rows
]
DTYPES = ["float32", "float64"]
TORCH_TOL = {"float32": {"rtol": 1e-4, "atol": 1e-4}, "float64": {"rtol": 1e-10, "atol": 1e-10}}


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


def _case_id(case: tuple) -> str:
    n, c, m, h, w, k, s, p, d = case
    return f"n{n}-c{c}x{m}-{h}x{w}-k{k}-s{s}-p{p}-d{d}".replace(" ", "")


def _inputs(case: tuple, dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, rt.ConvPlan]:
    n, c, m, h, w, k, s, p, d = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((c * m, 1, *_pair(k))).astype(dtype)
    bias = rng.standard_normal(c * m).astype(dtype)
    return x, weight, bias, rt.ConvPlan(c, h, w, c * m, k, s, p, d, c)


def _torch(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, plan: rt.ConvPlan, relu: bool) -> np.ndarray:
    t = F.conv2d(
        torch.from_numpy(x), torch.from_numpy(weight), None if bias is None else torch.from_numpy(bias),
        plan.stride, plan.pad, plan.dilation, plan.groups,
    )  # fmt: skip
    return (F.relu(t) if relu else t).numpy()


def _check(got: np.ndarray, want: np.ndarray, dtype: str) -> None:
    assert got.shape == want.shape and got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, **TORCH_TOL[dtype])


# ------------------------------------------------------------------------------------ xp paths


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_depthwise_matches_torch(case: tuple, dtype: str) -> None:
    x, weight, bias, plan = _inputs(case, dtype)
    for b, relu in ((bias, True), (None, False)):
        want = _torch(x, weight, b, plan, relu)
        _check(depthwise.depthwise_conv2d(x, weight, b, plan.stride, plan.pad, plan.dilation, relu=relu), want, dtype)
        out = np.full(want.shape, np.nan, dtype)
        assert depthwise.depthwise_conv2d(x, weight, b, relu=relu, plan=plan, out=out) is out
        _check(out, want, dtype)
        taps = np.full(want.shape, np.nan, dtype)  # the whole-batch path CuPy runs without the CUDA kernel
        depthwise._taps(np, plan, x, weight, b, relu, None, taps)
        _check(taps, want, dtype)
        columns = np.full(want.shape, np.nan, dtype)  # NumPy's path without Numba
        depthwise._columns_by_blocks(plan, x, weight, b, relu, None, columns)
        _check(columns, want, dtype)


def test_numpy_takes_the_compiled_kernel_where_numba_is_installed(monkeypatch) -> None:  # noqa: ANN001
    """With Numba, depthwise_conv2d above ran the compiled kernel; ALEXDSL_NUMBA=0 and float16 take NumPy's."""
    pytest.importorskip("numba", reason="the optional numba extra: pip install -e '.[numba]'")
    assert arrays.numba_kernels("float32") is not None and arrays.numba_kernels("float64") is not None
    assert arrays.numba_kernels("float16") is None
    monkeypatch.setenv("ALEXDSL_NUMBA", "0")
    assert arrays.numba_kernels("float32") is None
    monkeypatch.setattr(depthwise, "_compiled_planes", lambda *a: pytest.fail("compiled kernel called"))
    x, weight, bias, plan = _inputs(CASES[0], "float32")
    _check(depthwise.depthwise_conv2d(x, weight, bias, plan=plan), _torch(x, weight, bias, plan, False), "float32")


# "Same" padding (the layers of MobileNetV2, EfficientNet-B0 and ConvNeXt-T): the compiled kernel's one-pass paths
# (3x3, 5x5), its passes per kernel column (7x7 and the rest), stride 2's column pairs (an even width) and its strided
# split (an odd one), short rows by index map, outputs straight into `out` or through its buffer; (batch, channels,
# multiplier, H, W, kernel, stride, pad, dilation)
SAME_PADDING = [
    (n, c, m, size, size + odd, k, s, d * (k - 1) // 2, d)
    for (k, s, d), (size, odd), (n, c, m) in zip(
        itertools.product((3, 5, 7), (1, 2), (1, 2)),
        itertools.cycle([(7, 0), (14, 1), (28, 0), (12, 0), (56, 1), (15, 0)]),
        itertools.cycle([(1, 5, 1), (3, 4, 2), (3, 3, 1), (1, 6, 3)]),
    )
] + [
    (1, 3, 1, 112, 112, 3, 1, 1, 1),  # MobileNetV2's first depthwise layer
    (3, 2, 1, 112, 112, 3, 2, 1, 1),
    (1, 2, 2, 112, 112, 5, 2, 2, 1),
    (3, 2, 1, 112, 112, 7, 1, 3, 1),  # 7x7 on 112x112 maps: a pass per kernel column, blocks of outputs
    (2, 4, 1, 7, 7, 7, 1, 3, 1),  # a 7x7 kernel on a 7x7 map
    (1, 4, 1, 33, 32, 7, 1, 3, 1),  # 1056 outputs: two blocks of passes per kernel column, the last one short
    (2, 3, 1, 9, 30, 3, 3, 1, 1),  # stride 3: three column phases
    (2, 3, 1, 20, 18, (3, 5), (1, 2), (1, 2), 1),  # kh != kw: passes per kernel column
    (1, 3, 1, 10, 10, 4, 1, (1, 2), 1),  # an even kernel: a pass per tap
]


@pytest.mark.parametrize("numba", ["1", "0"])  # the compiled kernel where Numba is installed, or NumPy's columns
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SAME_PADDING, ids=_case_id)
def test_same_padding_layers_match_torch(case: tuple, dtype: str, numba: str, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("ALEXDSL_NUMBA", numba)
    x, weight, bias, plan = _inputs(case, dtype)
    for b, relu in ((bias, True), (None, False)):
        out = np.full((x.shape[0], plan.out_channels, plan.out_h, plan.out_w), np.nan, dtype)
        depthwise.depthwise_conv2d(x, weight, b, relu=relu, plan=plan, out=out)
        _check(out, _torch(x, weight, b, plan, relu), dtype)


@pytest.mark.parametrize("case", [c for c in SAME_PADDING if c[0] * c[1] * c[2] >= 4][:8], ids=_case_id)
def test_compiled_kernel_writes_only_its_planes(case: tuple) -> None:
    """The compiled kernel writes a plane's run rounded up to whole vectors straight into ``out`` only where the
    extra lands in a later plane of the same call: a call for planes ``lo..hi`` leaves every other plane alone."""
    pytest.importorskip("numba", reason="the optional numba extra: pip install -e '.[numba]'")
    compiled = arrays.numba_kernels("float32")
    x, weight, bias, plan = _inputs(case, "float32")
    n, o = x.shape[0], plan.out_channels
    want = _torch(x, weight, bias, plan, True).reshape(n * o, -1)
    taps = np.ascontiguousarray(weight.reshape(o, *plan.kernel))
    for lo, hi in ((0, 1), (1, n * o - 1), (n * o - 2, n * o), (0, n * o)):
        out = np.full((n, o, plan.out_h, plan.out_w), np.nan, np.float32)
        compiled.depthwise_conv2d(x, taps, bias, out, lo, hi, plan.stride, plan.pad, plan.dilation, True)
        planes = out.reshape(n * o, -1)
        np.testing.assert_allclose(planes[lo:hi], want[lo:hi], **TORCH_TOL["float32"])
        assert np.isnan(planes[:lo]).all() and np.isnan(planes[hi:]).all()


@pytest.mark.parametrize("gemm", ["batched", "wide"])
@pytest.mark.parametrize("case", [c for c in CASES if c[1] > 1], ids=_case_id)
def test_conv2d_sends_depthwise_convs_to_the_direct_kernel(case: tuple, gemm: str, monkeypatch) -> None:  # noqa: ANN001
    x, weight, bias, plan = _inputs(case, "float32")
    calls = []
    direct = depthwise.depthwise_conv2d
    monkeypatch.setattr(depthwise, "depthwise_conv2d", lambda *a, **k: calls.append(a) or direct(*a, **k))
    scratch = np.empty(plan.wide_size(x.shape[0]), x.dtype)
    got = rt.conv2d(x, weight, bias, relu=True, plan=plan, scratch=scratch, gemm=gemm)
    _check(got, _torch(x, weight, bias, plan, True), "float32")
    assert len(calls) == 1
    assert plan.is_depthwise


def test_only_depthwise_plans_take_the_direct_kernel(monkeypatch) -> None:  # noqa: ANN001
    assert rt.ConvPlan(8, 9, 9, 16, 3, groups=8).is_depthwise  # multiplier 2
    assert not rt.ConvPlan(8, 9, 9, 8, 3, groups=4).is_depthwise  # grouped, 2 channels a group
    assert not rt.ConvPlan(1, 9, 9, 6, 3).is_depthwise  # one input channel: an ordinary conv (LeNet's conv1)
    monkeypatch.setattr(depthwise, "depthwise_conv2d", lambda *a, **k: pytest.fail("depthwise kernel called"))
    x, weight = np.ones((1, 8, 9, 9), np.float32), np.ones((8, 2, 3, 3), np.float32)
    _check(rt.conv2d(x, weight, groups=4), _torch(x, weight, None, rt.ConvPlan(8, 9, 9, 8, 3, groups=4), False),
           "float32")  # fmt: skip


@pytest.mark.parametrize("numba", ["1", "0"])  # the compiled kernel where Numba is installed, or NumPy's columns
@pytest.mark.parametrize("stride", [1, 2])  # whole padded rows as columns, or OH x OW windows
@pytest.mark.parametrize("threads", ["1", "2"])
def test_blocks_cover_every_image_and_channel(threads: str, stride: int, numba: str, monkeypatch) -> None:  # noqa: ANN001
    """Three channels a block of the NumPy path: four blocks an image, the last one partial, several images a
    thread; the compiled kernel's share of planes per thread, with and without an ``act`` after it."""
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", threads)
    monkeypatch.setenv("ALEXDSL_NUMBA", numba)
    monkeypatch.setattr(arrays, "PARALLEL_MIN_ELEMENTS", 1)
    x, weight, bias, plan = _inputs((5, 11, 2, 30, 31, 3, stride, 1, 1), "float32")
    pitch = 31 + 2 if stride == 1 else plan.out_w
    monkeypatch.setattr(depthwise, "BLOCK_COLUMNS", 3 * 9 * plan.out_h * pitch)
    want = _torch(x, weight, bias, plan, True)
    _check(depthwise.depthwise_conv2d(x, weight, bias, relu=True, plan=plan), want, "float32")
    _check(depthwise.depthwise_conv2d(x, weight, bias, relu=True, act=rt.tanh, plan=plan), np.tanh(want), "float32")


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_runs_after_bias_and_relu(dtype: str) -> None:
    x, weight, bias, plan = _inputs((2, 16, 1, 12, 10, 3, 2, 1, 1), dtype)
    conv = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), 2, 1, 1, 16)
    seen = []

    def sigmoid(y: np.ndarray, *, out: np.ndarray) -> np.ndarray:
        seen.append(y.size)
        return rt.sigmoid(y, out=out)

    got = depthwise.depthwise_conv2d(x, weight, bias, relu=False, act=sigmoid, plan=plan)
    _check(got, torch.sigmoid(conv).numpy(), dtype)
    assert sum(seen) == got.size  # once per element, block by block
    _check(depthwise.depthwise_conv2d(x, weight, bias, relu=True, act=rt.tanh, plan=plan),
           torch.tanh(F.relu(conv)).numpy(), dtype)  # fmt: skip
    taps = np.empty_like(got)
    depthwise._taps(np, plan, x, weight, bias, True, rt.tanh, taps)
    _check(taps, torch.tanh(F.relu(conv)).numpy(), dtype)


TORCH_ACTIVATIONS = {"relu6": F.relu6, "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish,
                     "sigmoid": torch.sigmoid, "silu": F.silu}


@pytest.mark.parametrize("numba", ["1", "0"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(TORCH_ACTIVATIONS))
@pytest.mark.parametrize("case", [(2, 6, 1, 14, 15, 3, 1, 1, 1), (1, 5, 2, 28, 28, 5, 2, 2, 1),
                                  (2, 4, 1, 9, 9, 7, 1, 3, 1)], ids=_case_id)
def test_activations_with_a_compiled_form_after_every_path(case: tuple, name: str, dtype: str, numba: str,
                                                           monkeypatch) -> None:  # noqa: ANN001
    """The activations with a compiled epilogue form (float32 with Numba: one compiled pass over each thread's share
    of planes) after the compiled kernel and after NumPy's path, in float32 and float64, against torch, over inputs
    large enough to reach the activations' tails."""
    monkeypatch.setenv("ALEXDSL_NUMBA", numba)
    x, weight, bias, plan = _inputs(case, dtype)
    x *= 4
    conv = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), plan.stride, plan.pad,
                    plan.dilation, plan.groups)
    out = np.full((x.shape[0], plan.out_channels, plan.out_h, plan.out_w), np.nan, dtype)
    depthwise.depthwise_conv2d(x, weight, bias, act=getattr(rt, name), plan=plan, out=out)
    _check(out, TORCH_ACTIVATIONS[name](conv).numpy(), dtype)


def test_rejects_what_is_not_depthwise() -> None:
    x = np.ones((1, 4, 8, 8), np.float32)
    with pytest.raises(ValueError, match="groups == in_channels"):
        depthwise.depthwise_conv2d(x, np.ones((4, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="groups == in_channels"):
        depthwise.depthwise_conv2d(x, np.ones((4, 1, 3, 3), np.float32), plan=rt.ConvPlan(4, 8, 8, 4, 3, groups=2))
    with pytest.raises(ValueError, match="fit the plan"):  # a multiplier the plan does not have
        depthwise.depthwise_conv2d(x, np.ones((8, 1, 3, 3), np.float32), plan=rt.ConvPlan(4, 8, 8, 4, 3, groups=4))
    with pytest.raises(ValueError, match="fit the plan"):  # another kernel size
        depthwise.depthwise_conv2d(x, np.ones((4, 1, 5, 5), np.float32), plan=rt.ConvPlan(4, 8, 8, 4, 3, groups=4))
    with pytest.raises(ValueError, match="C-contiguous"):
        strided = np.empty((1, 4, 6, 12), np.float32)[..., ::2]
        depthwise.depthwise_conv2d(x, np.ones((4, 1, 3, 3), np.float32), out=strided)


def test_tap_windows_cover_exactly_the_inside_of_the_input() -> None:
    """Each output pixel gets exactly the taps whose input pixel lies in the image, counted directly."""
    for h, w, k, s, p, d in [(7, 6, 3, 2, 1, 1), (5, 9, 5, 1, 3, 2), (4, 4, 3, 3, 3, 1)]:
        plan = rt.ConvPlan(1, h, w, 1, k, s, p, d, 1)
        count = np.zeros((plan.out_h, plan.out_w), int)
        for _, out_rows, out_cols, in_rows, in_cols in arrays.tap_windows(
            h, w, plan.out_h, plan.out_w, plan.kernel, plan.stride, plan.pad, plan.dilation
        ):
            count[out_rows, out_cols] += 1
            assert len(range(h)[in_rows]) == len(range(plan.out_h)[out_rows])
            assert len(range(w)[in_cols]) == len(range(plan.out_w)[out_cols])
        inside = F.conv2d(torch.ones(1, 1, h, w), torch.ones(1, 1, k, k), None, s, p, d)[0, 0].numpy()
        np.testing.assert_array_equal(count, inside)


def _depthwise_layers(network: str) -> list[tuple]:
    """Every distinct depthwise geometry of ``examples/<network>.adsl``, as a CASES entry (batch 2, 5 channels)."""
    net = alexdsl.load(EXAMPLES / f"{network}.adsl")
    cases = set()
    for layer in net.layers():
        c, h, w = net.layer(layer.inputs[0]).shape if layer.op == "conv" else (0, 0, 0)
        a = layer.attrs
        if layer.op == "conv" and a["groups"] == c > 1:
            cases.add((2, 5, a["out"] // c, h, w, *(tuple(a[k]) for k in ("kernel", "stride", "pad", "dilation"))))
    return sorted(cases)


@pytest.mark.parametrize("numba", ["1", "0"])  # the compiled kernel where Numba is installed, or NumPy's columns
@pytest.mark.parametrize("network", ["mobilenet_v2", "efficientnet_b0", "convnext_tiny"])
def test_every_depthwise_layer_of_the_example_networks_matches_torch(network: str, numba: str, monkeypatch) -> None:  # noqa: ANN001
    """112x112 down to 7x7 maps, 3x3/5x5/7x7 kernels, strides 1 and 2: the layer shapes the kernel is tuned for."""
    monkeypatch.setenv("ALEXDSL_NUMBA", numba)
    layers = _depthwise_layers(network)
    assert len(layers) >= 4
    for case in layers:
        x, weight, bias, plan = _inputs(case, "float32")
        for b, relu in ((bias, True), (None, False)):
            got = depthwise.depthwise_conv2d(x, weight, b, relu=relu, plan=plan)
            _check(got, _torch(x, weight, b, plan, relu), "float32")


# ------------------------------------------------------------------------------------ CUDA kernel


def test_cuda_source_is_registered_for_nvrtc_and_the_host_build() -> None:
    """tests/test_cuda_sources.py compiles every entry of cuda.SOURCES with NVRTC and on the host."""
    assert cuda.SOURCES["alexdsl_depthwise_conv2d"] is cuda.DEPTHWISE_CONV2D
    for dtype in DTYPES:
        assert "{T}" not in cuda.source("alexdsl_depthwise_conv2d", dtype)


@pytest.mark.usefixtures("on_host")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_kernel_on_host_matches_xp(dtype: str) -> None:
    for case in CASES:
        x, weight, bias, plan = _inputs(case, dtype, seed=3)
        for b, relu in ((bias, True), (None, False)):
            want = depthwise.depthwise_conv2d(x, weight, b, relu=relu, plan=plan)
            got = cuda.depthwise_conv2d(plan, x, weight, b, relu, np.full(want.shape, np.nan, dtype))
            np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["rtol"] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_runs_the_cuda_kernel_where_it_applies(dtype: str, request, monkeypatch) -> None:  # noqa: ANN001
    """rt.conv2d -> depthwise_conv2d -> the CUDA kernel (host build) with the act epilogue after it."""
    launched = request.getfixturevalue("on_host")

    def fused(xp: Any, *arrays: Any) -> Any:  # what cuda.supports checks, for NumPy arrays
        ok = all(a is None or (a.dtype.name in cuda.C_TYPES and a.flags.c_contiguous) for a in arrays)
        return cuda if ok else None

    monkeypatch.setattr(cuda, "fused_kernels", fused)
    x, weight, bias, plan = _inputs((3, 24, 2, 13, 11, 5, 2, 2, 1), dtype)
    _check(rt.conv2d(x, weight, bias, relu=True, plan=plan), _torch(x, weight, bias, plan, True), dtype)
    assert launched == ["alexdsl_depthwise_conv2d"]
    want = np.tanh(_torch(x, weight, bias, plan, False))
    _check(depthwise.depthwise_conv2d(x, weight, bias, act=rt.tanh, plan=plan), want, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_kernel_and_taps_on_the_gpu(dtype: str, monkeypatch) -> None:  # noqa: ANN001
    cp = pytest.importorskip("cupy")
    try:
        cp.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001
        pytest.skip("no CUDA device")
    for case in CASES:
        x, weight, bias, plan = _inputs(case, dtype)
        want = _torch(x, weight, bias, plan, True)
        xg, wg, bg = cp.asarray(x), cp.asarray(weight), cp.asarray(bias)
        for kernels in ("0", "1"):  # the xp taps, then the RawKernel
            monkeypatch.setenv("ALEXDSL_CUDA_KERNELS", kernels)
            got = rt.conv2d(xg, wg, bg, relu=True, plan=plan)
            assert isinstance(got, cp.ndarray)
            np.testing.assert_allclose(cp.asnumpy(got), want, **TORCH_TOL[dtype])


# ------------------------------------------------------------------------------------ a network

MOBILENET = """
network TinyMobileNet
input data: 3x38x34
input label: class(10)
defaults conv(bias=false)

stem:  conv(16, 3, stride=2, pad=1) | stem_bn: batchnorm | relu
dw1:   conv(16, 3, pad=1, groups=16) | dw1_bn: batchnorm | relu
pw1:   conv(24, 1) | pw1_bn: batchnorm
exp2:  conv(48, 1) | exp2_bn: batchnorm | relu
dw2:   conv(48, 5, stride=2, pad=2, groups=48) | dw2_bn: batchnorm | relu
pw2:   conv(32, 1) | pw2_bn: batchnorm
dw3:   conv(64, 3, pad=2, dilation=2, groups=32, bias=true)
pw3:   conv(32, 1) | pw3_bn: batchnorm
res:   pw2, pw3 -> add | relu
pool:  global_avgpool
fc:    fc(10)
loss:  softmax_loss(fc, label) @train
"""


@pytest.mark.parametrize("batch", [1, 3])
def test_mobilenet_style_network_matches_torch(batch: int, monkeypatch) -> None:  # noqa: ANN001
    """conv, depthwise (bn folded, ReLU fused; stride 2, 5x5, multiplier 2, dilation) and pointwise convs."""
    net = alexdsl.parse(MOBILENET, "tiny_mobilenet.adsl")
    weights = random_weights(net)
    ex = backend.compile(net, weights, device="cpu")
    calls = []
    direct = depthwise.depthwise_conv2d
    monkeypatch.setattr(depthwise, "depthwise_conv2d", lambda *a, **k: calls.append(k["plan"]) or direct(*a, **k))
    x = np.random.default_rng(batch).standard_normal((batch, 3, 38, 34)).astype(np.float32)
    got = ex(x)
    assert [(p.in_channels, p.out_channels, p.kernel, p.stride) for p in calls] == [
        (16, 16, (3, 3), (1, 1)), (48, 48, (5, 5), (2, 2)), (32, 64, (3, 3), (1, 1)),
    ]  # fmt: skip
    (want,) = torch_reference(net, weights, x)
    assert_close(got, want.astype(np.float32))
    with torch.no_grad():
        assert_close(got, torch_module(net, weights)(torch.from_numpy(x)).numpy())
