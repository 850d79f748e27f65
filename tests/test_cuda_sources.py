"""The optional fused CUDA kernels (alexdsl/backends/executor/cuda.py) without a GPU.

* NVRTC compiles every source, as CuPy would (skips where NVRTC cannot be loaded; it
  comes with ``nvidia-cuda-nvrtc-cu12``).
* Host emulation: the same sources compiled as C++ with a small prelude (one thread walks
  each grid-stride loop) and launched through the module's own wrappers, so argument order
  and types, index arithmetic and semantics are checked against the xp reference on NumPy
  (skips without a C++ compiler).

What only a GPU can show (CuPy's launch, real parallel execution) is
``tests/test_kernels.py::test_fused_cuda_kernels_match_xp_reference``.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_kernels import CONV_CASES, POOL_CASES, rand  # the kernel tests' parameter sweeps

import alexdsl
from alexdsl.backends import executor as backend
from alexdsl.backends.executor import cuda
from alexdsl.backends.executor import runtime as rt

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# ------------------------------------------------------------------------------------ NVRTC


def _nvrtc() -> Any:
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - CuPy absent, or the NVRTC library missing
        pytest.skip(f"NVRTC not available ({exc}): pip install -e '.[cupy]' nvidia-cuda-nvrtc-cu12")
    return nvrtc


@pytest.mark.parametrize("dtype", sorted(cuda.C_TYPES))
@pytest.mark.parametrize("name", sorted(cuda.SOURCES))
def test_kernel_source_compiles_with_nvrtc(name: str, dtype: str) -> None:
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(cuda.source(name, dtype), f"{name}.cu", [], [])
    try:
        nvrtc.compileProgram(program, ["--std=c++14", "-arch=compute_80"])
    except nvrtc.NVRTCError:
        pytest.fail(f"{name} ({dtype}) does not compile:\n{nvrtc.getProgramLog(program)}")
    assert f".entry {name}".encode() in nvrtc.getPTX(program)


def test_every_source_names_its_kernel() -> None:
    for name, text in cuda.SOURCES.items():
        assert f'extern "C" __global__ void {name}(' in text
        assert "{T}" in text


# ------------------------------------------------------------------------------------ host emulation

PRELUDE = r"""
#include <algorithm>
#include <cmath>
#include <cstring>
#define __global__
#define __restrict__ __restrict
struct Dim3 { unsigned int x; };
static const Dim3 blockIdx = {0}, threadIdx = {0}, blockDim = {1}, gridDim = {1};
using std::max; using std::min; using std::pow;
inline float __int_as_float(unsigned int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
"""

CTYPES = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.float64: ctypes.c_double}


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ctypes.CDLL]:
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler for the host emulation: apt-get install g++")
    libs = {}
    for dtype in cuda.C_TYPES:
        folder = tmp_path_factory.mktemp(dtype)
        src = folder / "kernels.cpp"
        src.write_text(PRELUDE + "".join(cuda.source(name, dtype) for name in cuda.SOURCES))
        lib = folder / "kernels.so"
        done = subprocess.run(
            [compiler, "-std=c++17", "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        libs[dtype] = ctypes.CDLL(str(lib))
    return libs


@pytest.fixture
def on_host(host_kernels: dict[str, ctypes.CDLL], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Route cuda._launch to the host build: arrays become pointers, NumPy scalars C scalars.

    Returns the list of kernel names launched so far.
    """
    launched: list[str] = []

    def launch(name: str, dtype: Any, total: int, *args: Any) -> None:
        launched.append(name)
        dtype = np.dtype(dtype).name
        converted = []
        for arg in args:
            if arg is None:
                converted.append(ctypes.c_void_p(None))
            elif isinstance(arg, np.ndarray):
                assert arg.dtype == dtype and arg.flags.c_contiguous, f"{name}: bad array argument"
                converted.append(ctypes.c_void_p(arg.ctypes.data))
            else:  # the GPU launcher passes exactly these NumPy scalar types by value
                converted.append(CTYPES[type(arg)](arg.item()))
        getattr(host_kernels[dtype], name)(*converted)

    monkeypatch.setattr(cuda, "_launch", launch)
    return launched


TOL = {"float32": {"rtol": 1e-5, "atol": 1e-6}, "float64": {"rtol": 1e-12, "atol": 1e-12}}


@pytest.mark.usefixtures("on_host")
@pytest.mark.parametrize("dtype", sorted(cuda.C_TYPES))
def test_im2col_wide_matches_xp(dtype: str) -> None:
    for n, c, h, w, o, k, s, p, d, g in CONV_CASES:
        plan = rt.ConvPlan(c, h, w, o, k, s, p, d, g)
        x = rand(n, c, h, w).astype(dtype)
        want = plan.im2col_wide(x, np.empty(plan.wide_size(n), dtype)).copy()
        got = cuda.im2col_wide(plan, x, np.empty(want.size, dtype))
        np.testing.assert_array_equal(got.reshape(want.shape), want)


@pytest.mark.usefixtures("on_host")
@pytest.mark.parametrize("dtype", sorted(cuda.C_TYPES))
def test_epilogues_match_xp(dtype: str) -> None:
    y = rand(3, 7, 9, 8).astype(dtype)
    for bias in (rand(7, seed=1).astype(dtype), None):
        for relu in (False, True):
            want = rt.bias_relu_(y.copy(), bias, relu)
            np.testing.assert_allclose(cuda.bias_relu_(y.copy(), bias, relu), want, **TOL[dtype])
            src = np.ascontiguousarray(y.reshape(3, 7, 72).transpose(1, 0, 2))  # (C, N, P)
            want = rt.transpose_bias_relu(src, bias, relu, np.empty((3, 7, 72), dtype))
            got = cuda.transpose_bias_relu(src, bias, relu, np.empty((3, 7, 72), dtype))
            np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.usefixtures("on_host")
@pytest.mark.parametrize("dtype", sorted(cuda.C_TYPES))
def test_lrn_matches_xp(dtype: str) -> None:
    x = rand(2, 9, 5, 6).astype(dtype) * 3
    cases = [(5, 1e-4, 0.75, 1.0), (3, 1e-2, 0.5, 2.0), (1, 1e-3, 1.3, 1.0), (4, 1e-3, 0.75, 1), (12, 0.01, 0.75, 1)]
    for size, alpha, beta, k in cases:
        want = rt.lrn(x, size, alpha, beta, k)
        np.testing.assert_allclose(cuda.lrn(x, size, alpha, beta, k, np.empty_like(x)), want, **TOL[dtype])
        inplace = x.copy()
        np.testing.assert_allclose(cuda.lrn(inplace, size, alpha, beta, k, inplace), want, **TOL[dtype])
    wide = rand(1, 70, 2, 3).astype(dtype)  # a window as wide as the ring allows, over many channels
    want = rt.lrn(wide, cuda.LRN_MAX_SIZE, 1e-2, 0.75, 1.0)
    np.testing.assert_allclose(cuda.lrn(wide, cuda.LRN_MAX_SIZE, 1e-2, 0.75, 1.0, wide), want, **TOL[dtype])


@pytest.mark.usefixtures("on_host")
@pytest.mark.parametrize("dtype", sorted(cuda.C_TYPES))
def test_pooling_matches_xp(dtype: str) -> None:
    for h, w, k, s, p, ceil in POOL_CASES:
        plan = rt.PoolPlan(h, w, k, s, p, ceil)
        x = rand(2, 3, h, w).astype(dtype)
        x[0, 0, 0, 0] = np.nan  # max pooling propagates NaN, as torch does
        out = np.empty((2, 3, plan.out_h, plan.out_w), dtype)
        want = rt.max_pool2d(x, k, s, p, ceil)
        np.testing.assert_allclose(cuda.pool2d("max", plan, x, out), want, **TOL[dtype])
        for count_pad in (True, False):
            inv = (1.0 / plan.divisor(count_pad)).astype(dtype)
            want = rt.avg_pool2d(x, k, s, p, ceil, count_pad)
            np.testing.assert_allclose(cuda.pool2d("avg", plan, x, out, inv), want, **TOL[dtype])


@pytest.mark.slow  # AlexNet through the host-compiled kernels
@pytest.mark.parametrize(
    ("name", "kernels"),
    [
        ("alexnet", {"im2col_wide", "transpose_bias_relu", "lrn", "max_pool2d", "bias_relu"}),
        ("resnet18", {"im2col_wide", "transpose_bias_relu", "max_pool2d", "bias_relu"}),
        ("inception", {"im2col_wide", "transpose_bias_relu", "max_pool2d", "lrn"}),
    ],
)
def test_executor_runs_every_fused_kernel_on_host(
    name: str, kernels: set[str], on_host: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole network through the wide layout and the fused kernels (as on CuPy) equals the NumPy path."""
    net = alexdsl.load(EXAMPLES / f"{name}.adsl")
    ex = backend.compile(net, device="cpu")
    x = rand(2, *next(iter(ex.inputs.values())))
    want = ex(x)

    def fused(xp: Any, *arrays: Any) -> Any:  # what cuda.supports checks, for NumPy arrays
        ok = all(a is None or (a.dtype.name in cuda.C_TYPES and a.flags.c_contiguous) for a in arrays)
        return cuda if ok else None

    monkeypatch.setattr(cuda, "fused_kernels", fused)
    monkeypatch.setenv("ALEXDSL_GEMM", "wide")
    ex._arena = None  # re-plan the scratch for the wide layout
    np.testing.assert_allclose(ex(x), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    assert {f"alexdsl_{k}" for k in kernels} <= set(on_host)


@pytest.mark.slow  # AlexNet through the host-compiled kernels
def test_fused_forward_takes_no_temporaries_on_host(on_host: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU side of test_cupy_forward_with_fused_kernels_requests_only_its_output: after the
    first call, an AlexNet forward through the fused kernels allocates no array of any size."""
    import tracemalloc

    def fused(xp: Any, *arrays: Any) -> Any:
        return cuda if all(a is None or a.flags.c_contiguous for a in arrays) else None

    monkeypatch.setattr(cuda, "fused_kernels", fused)
    monkeypatch.setenv("ALEXDSL_GEMM", "wide")
    ex = backend.compile(alexdsl.load(EXAMPLES / "alexnet.adsl"), device="cpu")
    x = rand(2, *next(iter(ex.inputs.values())))
    ex(x)  # plans the arena and the workspaces
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = ex(x)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # the returned copy (8 KB) and Python-level views and calls; an activation is over 2 MB
    assert peak < out.nbytes + (64 << 10), f"{peak} bytes allocated during a forward pass"
