"""Benchmark: 3x3 stride-1 convolutions on NumPy, im2col + GEMM vs Winograd F(2x2, 3x3) vs F(4x4, 3x3).

    python benchmarks/winograd.py                    # ResNet-18/50's and AlexNet's layers, batch 1 and 16
    python benchmarks/winograd.py --batches 1 --repeat 10

Each layer (ResNet-18's and ResNet-50's stride-1 3x3 convs have the same four shapes; AlexNet's
conv3-5 at 13x13) runs with bias and ReLU, float32, one thread (the executor's pool and BLAS), in
one process on the same data, three ways: im2col + GEMM (``gemm="batched"``), and Winograd with
2x2 and with 4x4 output tiles (``conv._conv2d_winograd``, the compiled kernels: needs Numba).
Timing as in benchmarks/executor.py (best of alternating blocks), in CPU seconds of the process
(``time.process_time``), which a shared machine disturbs least at one thread. Each path's error is
its largest difference from torch's float64 conv over the largest |output|. The line ``chosen``
names the path :meth:`ConvPlan.winograd_tile` picks. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ["ALEXDSL_NUM_THREADS"] = "1"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from executor import _time_each  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from alexdsl.backends.executor import conv  # noqa: E402
from alexdsl.backends.executor.arrays import numba_kernels  # noqa: E402

# (name, channels in, channels out, size): every 3x3 stride-1 conv shape of ResNet-18/50 and AlexNet
LAYERS = [
    ("resnet 56x56x64", 64, 64, 56),
    ("resnet 28x28x128", 128, 128, 28),
    ("resnet 14x14x256", 256, 256, 14),
    ("resnet 7x7x512", 512, 512, 7),
    ("alexnet conv3", 256, 384, 13),
    ("alexnet conv4", 384, 384, 13),
    ("alexnet conv5", 384, 256, 13),
]
PATHS = ("im2col", "f2", "f4")


def _layer(name: str, c: int, o: int, size: int, batch: int, repeat: int, rounds: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((batch, c, size, size)), 0).astype(np.float32)  # post-ReLU inputs
    weight = (rng.standard_normal((o, c, 3, 3)) * np.sqrt(2 / (9 * c))).astype(np.float32)
    bias = (0.1 * rng.standard_normal(o)).astype(np.float32)
    plan = conv.ConvPlan(c, size, size, o, (3, 3), pad=(1, 1))
    compiled = numba_kernels(np.float32)
    outs = {path: np.empty((batch, o, size, size), np.float32) for path in PATHS}
    calls = {
        "im2col": lambda: conv.conv2d(x, weight, bias, pad=(1, 1), relu=True, plan=plan, out=outs["im2col"],
                                      gemm="batched"),
        "f2": lambda: conv._conv2d_winograd(compiled, x, weight, bias, True, plan, outs["f2"], 2),
        "f4": lambda: conv._conv2d_winograd(compiled, x, weight, bias, True, plan, outs["f4"], 4),
    }
    times = _time_each([calls[path] for path in PATHS], repeat, rounds=rounds, clock=time.process_time)
    truth = torch.nn.functional.conv2d(*(torch.from_numpy(a).double() for a in (x, weight, bias)), padding=1)
    truth = torch.relu(truth).numpy()
    scale = np.abs(truth).max()
    tile = plan.winograd_tile(batch)
    result: dict[str, Any] = {"layer": name, "batch": batch, "chosen": {None: "im2col", 2: "f2", 4: "f4"}[tile]}
    for path, seconds in zip(PATHS, times, strict=True):
        result[f"{path}_ms"] = round(seconds * 1e3, 3)
        result[f"{path}_error"] = float(f"{np.abs(outs[path] - truth).max() / scale:.2e}")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeat", type=int, default=6, help="timed calls per path")
    p.add_argument("--rounds", type=int, default=3, help="interleaved blocks per path")
    args = p.parse_args()
    if numba_kernels(np.float32) is None:
        sys.exit("Winograd needs the optional numba extra: pip install -e '.[numba]'")
    torch.set_num_threads(1)
    results = []
    with threadpool_limits(1):
        for batch in args.batches:
            for name, c, o, size in LAYERS:
                r = _layer(name, c, o, size, batch, args.repeat, args.rounds)
                results.append(r)
                print(f"{name:18} batch {batch:2}: im2col {r['im2col_ms']:8.2f}  F(2x2) {r['f2_ms']:8.2f}  "
                      f"F(4x4) {r['f4_ms']:8.2f} ms   error {r['im2col_error']:.1e} / {r['f2_error']:.1e} / "
                      f"{r['f4_error']:.1e}   chosen {r['chosen']}", flush=True)
    print(json.dumps({"load": os.getloadavg(), "layers": results}))


if __name__ == "__main__":
    main()
