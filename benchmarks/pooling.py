"""Benchmark: the executor's max and average pooling, compiled (Numba) against the NumPy tap passes, one thread.

    python benchmarks/pooling.py                     # the layers below, then ResNet-18 at batch 1
    python benchmarks/pooling.py --repeat 60 --no-network

Each layer runs ``rt.max_pool2d`` / ``rt.avg_pool2d`` as the generated code calls them (a plan and a preallocated
``out``; an average's divisor precomputed) with the compiled kernel (:func:`.numba_kernels.pool2d`) and with the
NumPy passes (``ALEXDSL_NUMBA=0``, read at each call), beside onnxruntime running the same pool as a one-node model.
The whole network runs with the pool's compiled path switched off by a patch of ``pool._compiled_pool`` (every
other kernel unchanged). Timing is benchmarks/executor.py's: interleaved blocks, best of ``--repeat`` calls, wall
time, one thread (``ALEXDSL_NUM_THREADS=1``, threadpoolctl, ORT's ``intra_op_num_threads``). Average pooling's
largest difference between the two paths (relative to the output's largest magnitude) is printed too. The last
line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ["ALEXDSL_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
from executor import _random_weights, _time_each  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import alexdsl  # noqa: E402
from alexdsl.backends import executor as backend  # noqa: E402
from alexdsl.backends.executor import arrays, pool  # noqa: E402
from alexdsl.backends.executor import runtime as rt  # noqa: E402

LAYERS = [
    # (name, (C, H, W), kind, kernel, stride, pad, ceil)
    ("ResNet stem", (64, 112, 112), "max", 3, 2, 1, False),
    ("AlexNet pool1", (96, 55, 55), "max", 3, 2, 0, False),
    ("AlexNet pool2", (256, 27, 27), "max", 3, 2, 0, False),
    ("AlexNet pool5", (256, 13, 13), "max", 3, 2, 0, False),
    ("GoogLeNet pool1 (ceil)", (64, 112, 112), "max", 3, 2, 0, True),
    ("Inception 3a branch", (192, 28, 28), "max", 3, 1, 1, False),
    ("Inception 4a branch", (480, 14, 14), "max", 3, 1, 1, False),
    ("Inception 5a branch", (832, 7, 7), "max", 3, 1, 1, False),
    ("avg 3x3 s1 p1, no pad count", (192, 28, 28), "avg", 3, 1, 1, False),
]


def ort_pool(shape: tuple[int, ...], kind: str, k: int, s: int, p: int, ceil: bool) -> onnxruntime.InferenceSession:
    """One MaxPool or AveragePool node (count_include_pad=0) on one thread."""
    op = "MaxPool" if kind == "max" else "AveragePool"
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=int(ceil))
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def with_numba(on: bool, fn: object) -> object:
    """``fn`` run with ``ALEXDSL_NUMBA`` 1 or 0."""
    def run() -> object:
        os.environ["ALEXDSL_NUMBA"] = "1" if on else "0"
        return fn()
    return run


def layers(repeat: int) -> list[dict[str, object]]:
    rows = []
    for name, (c, h, w), kind, k, s, p, ceil in LAYERS:
        x = np.random.default_rng(0).standard_normal((1, c, h, w)).astype(np.float32)
        plan = rt.PoolPlan(h, w, (k, k), (s, s), (p, p), ceil)
        out = np.empty((1, c, plan.out_h, plan.out_w), np.float32)
        if kind == "max":
            def call(out: np.ndarray = out, x: np.ndarray = x, plan: rt.PoolPlan = plan) -> np.ndarray:
                return rt.max_pool2d(x, plan.kernel, plan=plan, out=out)
        else:
            divisor = (1.0 / plan.divisor(False)).astype(np.float32)

            def call(out: np.ndarray = out, x: np.ndarray = x, plan: rt.PoolPlan = plan,
                     divisor: np.ndarray = divisor) -> np.ndarray:
                return rt.avg_pool2d(x, plan.kernel, count_include_pad=False, plan=plan, divisor=divisor, out=out)
        session = ort_pool(x.shape, kind, k, s, p, ceil)
        compiled, numpy_passes = with_numba(True, call)().copy(), with_numba(False, call)().copy()
        want = session.run(None, {"x": x})[0]
        assert want.shape == out.shape, (name, want.shape, out.shape)
        scale = float(np.abs(want).max())
        t_numpy, t_compiled, t_ort = _time_each(
            [with_numba(False, call), with_numba(True, call), lambda s=session, x=x: s.run(None, {"x": x})], repeat)
        row = {"layer": name, "numpy_ms": round(t_numpy * 1e3, 4), "compiled_ms": round(t_compiled * 1e3, 4),
               "ort_ms": round(t_ort * 1e3, 4), "speedup": round(t_numpy / t_compiled, 2),
               "vs_ort": round(t_ort / t_compiled, 2),
               "compiled_vs_numpy": float(np.abs(compiled - numpy_passes).max()) / scale,
               "compiled_vs_ort": float(np.abs(compiled - want).max()) / scale}
        rows.append(row)
        print(f"{name:30s} NumPy {row['numpy_ms']:7.3f} ms  compiled {row['compiled_ms']:7.3f} ms "
              f"({row['speedup']:.2f}x)  ORT {row['ort_ms']:7.3f} ms  differences /max: compiled-NumPy "
              f"{row['compiled_vs_numpy']:.1e}, compiled-ORT {row['compiled_vs_ort']:.1e}", flush=True)
    os.environ["ALEXDSL_NUMBA"] = "1"
    return rows


def network(repeat: int) -> dict[str, object]:
    """ResNet-18 at batch 1 with the compiled pool and with the NumPy passes (only the pool switched)."""
    net = alexdsl.load(ROOT / "examples" / "resnet18.adsl")
    executor = backend.compile(net, _random_weights(net), device="cpu")
    x = np.random.default_rng(1).standard_normal((1, *net.layer(net.data_inputs[0]).shape)).astype(np.float32)
    compiled_pool = pool._compiled_pool

    def run(on: bool) -> object:
        def call() -> np.ndarray:
            pool._compiled_pool = compiled_pool if on else (lambda *args: False)
            return executor(x)
        return call

    same = bool(np.array_equal(run(True)(), run(False)()))
    t_numpy, t_compiled = _time_each([run(False), run(True)], repeat)
    pool._compiled_pool = compiled_pool
    row = {"network": net.name, "numpy_pool_ms": round(t_numpy * 1e3, 3),
           "compiled_pool_ms": round(t_compiled * 1e3, 3), "speedup": round(t_numpy / t_compiled, 3),
           "bit_for_bit": same}
    print(f"{net.name} batch 1: NumPy pool {row['numpy_pool_ms']:.2f} ms, compiled pool "
          f"{row['compiled_pool_ms']:.2f} ms ({row['speedup']:.3f}x), outputs "
          f"{'bit for bit' if same else 'differ'}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per side (best of)")
    parser.add_argument("--no-network", action="store_true", help="the layers only, not ResNet-18")
    args = parser.parse_args()
    if arrays.numba_kernels(np.float32) is None:
        sys.exit("benchmarks/pooling.py compares the compiled kernel: pip install -e '.[numba]', ALEXDSL_NUMBA not 0")
    load = os.getloadavg()[0]
    with threadpool_limits(1):
        rows = layers(args.repeat)
        whole = None if args.no_network else network(args.repeat)
    print(json.dumps({"layers": rows, "network": whole, "load": round((load + os.getloadavg()[0]) / 2, 2)}))


if __name__ == "__main__":
    main()
