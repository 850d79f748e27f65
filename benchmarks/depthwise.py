"""Benchmark: depthwise convolution on NumPy, the direct kernel vs im2col + GEMM vs torch eager.

    python benchmarks/depthwise.py                 # MobileNetV2-like layers, batch 1 and 16
    python benchmarks/depthwise.py --batches 1 --repeat 30
    python benchmarks/depthwise.py --threads 1     # one core per side (steadier on a shared machine)
    python benchmarks/depthwise.py --threads 1 --cpu-time   # CPU seconds, not wall: on a loaded machine
    python benchmarks/depthwise.py --network examples/mobilenet_v2.adsl   # a whole network instead


Each layer is a depthwise conv of MobileNetV2 (3x3), EfficientNet-B0 (5x5) or ConvNeXt-T (7x7),
112x112 down to 7x7 maps, strides 1 and 2, with bias and a fused ReLU, float32, timed in one
process on the same data: ``rt.conv2d`` (which sends depthwise convs to
:mod:`alexdsl.backends.executor.depthwise`), the same call forced through im2col + GEMM (the
path every depthwise conv took before), and ``torch.nn.functional.conv2d`` + ``relu_``.
Ratios are direct / im2col and direct / torch in images per second (above 1: the direct
kernel is faster).  ``--network`` times a whole network the same three ways instead: the
executor as it is, the executor with every depthwise conv through im2col, and the torch
backend's module, with the same random weights.  Timing as in benchmarks/executor.py (best of
alternating blocks).  The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from executor import _blas_threads, _random_weights, _time_each, torch_forward  # noqa: E402

import alexdsl  # noqa: E402
from alexdsl.backends import executor as backend  # noqa: E402
from alexdsl.backends.executor import runtime as rt  # noqa: E402

# (channels, height, width, kernel, stride): MobileNetV2's depthwise layers (3x3, all ten geometries),
# EfficientNet-B0's 5x5 ones and ConvNeXt-T's 7x7 ones
LAYERS = [
    (32, 112, 112, 3, 1),
    (96, 112, 112, 3, 2),
    (144, 56, 56, 3, 1),
    (144, 56, 56, 3, 2),
    (192, 28, 28, 3, 1),
    (192, 28, 28, 3, 2),
    (384, 14, 14, 3, 1),
    (576, 14, 14, 3, 1),
    (576, 14, 14, 3, 2),
    (960, 7, 7, 3, 1),
    (144, 56, 56, 5, 2),
    (240, 28, 28, 5, 1),
    (672, 14, 14, 5, 1),
    (672, 14, 14, 5, 2),
    (1152, 7, 7, 5, 1),
    (96, 56, 56, 7, 1),
    (192, 28, 28, 7, 1),
    (384, 14, 14, 7, 1),
    (768, 7, 7, 7, 1),
]


@contextlib.contextmanager
def im2col_only() -> Any:
    """Meanwhile :func:`rt.conv2d` sends no conv to the depthwise kernel: im2col + GEMM as before."""
    saved = rt.ConvPlan.__dict__["is_depthwise"]
    rt.ConvPlan.is_depthwise = False
    try:
        yield
    finally:
        rt.ConvPlan.is_depthwise = saved


def _in_im2col(fn: Any) -> Any:
    def run() -> Any:
        with im2col_only():
            return fn()

    return run


def _result(batch: int, times: list[float], diff: float) -> dict[str, Any]:
    ips = dict(zip(("direct_ips", "im2col_ips", "torch_ips"), (batch / t for t in times), strict=True))
    return {k: round(v, 1) for k, v in ips.items()} | {
        "vs_im2col": round(ips["direct_ips"] / ips["im2col_ips"], 2),
        "vs_torch": round(ips["direct_ips"] / ips["torch_ips"], 2),
        "max_diff": diff,
    }


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeat", type=int, default=12, help="timed runs per point and side")
    p.add_argument("--threads", type=int, help="threads for every side (torch, BLAS, alexdsl); default: all")
    p.add_argument("--network", help="time this .adsl network in the executor instead of single layers")
    p.add_argument("--cpu-time", action="store_true",
                   help="time CPU seconds of the process (time.process_time), not wall time; with --threads 1")
    return p.parse_args()


def bench_layer(c: int, h: int, w: int, k: int, s: int, batch: int, repeat: int, clock: Any) -> dict[str, Any]:
    """Images/s of the three sides for one depthwise layer, and the largest difference from torch."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((c, 1, k, k), dtype=np.float32)
    b = rng.standard_normal(c, dtype=np.float32)
    plan = rt.ConvPlan(c, h, w, c, (k, k), (s, s), (k // 2, k // 2), (1, 1), c)
    assert plan.is_depthwise
    out = np.empty((batch, c, plan.out_h, plan.out_w), np.float32)
    tx, tw, tb = torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(b)

    def run_direct() -> np.ndarray:
        return rt.conv2d(x, wt, b, relu=True, plan=plan, out=out)

    def run_torch() -> torch.Tensor:
        return torch.relu_(torch.nn.functional.conv2d(tx, tw, tb, s, k // 2, 1, c))

    with torch.inference_mode():
        want = run_torch().numpy()
        diff = max(float(np.abs(run() - want).max()) for run in (run_direct, _in_im2col(run_direct)))
        times = _time_each([run_direct, _in_im2col(run_direct), run_torch], repeat, clock=clock)
    return _result(batch, times, diff)


def bench_network(path: str, batch: int, repeat: int, clock: Any) -> dict[str, Any]:
    """Images/s of the three sides for a whole network, and the largest difference from torch."""
    net = alexdsl.load(path)
    weights = _random_weights(net)
    rng = np.random.default_rng(1)
    for key, value in weights.items():  # batchnorm variances must be positive
        if key.endswith("running_var"):
            weights[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
    ex, ref = backend.compile(net, weights, device="cpu"), torch_forward(net, weights, "cpu")
    x = np.random.default_rng(batch).standard_normal((batch, *next(iter(ex.inputs.values())))).astype(np.float32)
    tx = torch.from_numpy(x)
    with torch.inference_mode():
        want = ref(tx).numpy()
        diff = max(float(np.abs(run() - want).max()) for run in (lambda: ex(x), _in_im2col(lambda: ex(x))))
        times = _time_each([lambda: ex(x), _in_im2col(lambda: ex(x)), lambda: ref(tx)], repeat, clock=clock)
    return _result(batch, times, diff)


def main() -> None:
    args = _parse()
    if args.threads:
        from threadpoolctl import threadpool_limits

        os.environ["ALEXDSL_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__} threads={torch.get_num_threads()}, ")
    print(f"     numpy {np.__version__} BLAS threads: {_blas_threads()}, alexdsl threads: {rt.num_threads()}")
    cpu_time = args.cpu_time and args.threads == 1
    clock = time.process_time if cpu_time else time.perf_counter
    print(f"     clock: {'CPU time of the process' if cpu_time else 'wall time'}, load {os.getloadavg()[0]:.2f}")
    result: dict[str, Any] = {}
    for batch in args.batches:
        for c, h, w, k, s in [] if args.network else LAYERS:
            name = f"{c}x{h}x{w} k{k} s{s} batch {batch}"
            r = result[name] = bench_layer(c, h, w, k, s, batch, args.repeat, clock)
            print(
                f"  {name:28s} direct {r['direct_ips']:9.1f} img/s  im2col {r['im2col_ips']:9.1f} img/s  "
                f"torch {r['torch_ips']:9.1f} img/s  direct/im2col {r['vs_im2col']:5.2f}x  "
                f"direct/torch {r['vs_torch']:5.2f}x  (max |diff| {r['max_diff']:.1e})"
            )
        if args.network:
            name = f"{Path(args.network).stem} batch {batch}"
            r = result[name] = bench_network(args.network, batch, args.repeat, clock)
            print(
                f"  {name:28s} executor {r['direct_ips']:7.1f} img/s  with im2col depthwise {r['im2col_ips']:7.1f} "
                f"img/s  torch {r['torch_ips']:7.1f} img/s  direct/im2col {r['vs_im2col']:5.2f}x  "
                f"direct/torch {r['vs_torch']:5.2f}x  (max |diff| {r['max_diff']:.1e})"
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
