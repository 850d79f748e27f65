"""Benchmark: the executor's GELU kernels on NumPy vs torch's F.gelu, one thread, in one process.

    python benchmarks/gelu.py                        # a ViT-B/16 MLP activation, (197, 3072) float32
    python benchmarks/gelu.py --shape 16 197 3072 --repeat 30
    python benchmarks/gelu.py --scale 100            # activations of magnitude ~100 (random-weight ViT)
    python benchmarks/gelu.py --shape 1 384 14 14    # a ConvNeXt-T stage-3 MLP activation (NCHW)

Times the op's kernel ``alexdsl.ops.activation.gelu`` (approximate none and tanh, into a preallocated ``out`` as the
executor calls it: NumPy passes in float64), the executor's ``rt.gelu`` (with Numba installed, the compiled one-pass
kernel of ``numba_kernels``; without it the same NumPy kernel), ``torch.nn.functional.gelu`` on the same data (standard
normal times ``--scale``), and one float32 ``np.multiply`` pass over the array (what one NumPy pass costs here, to
read the kernels' times in passes).  Timing as in benchmarks/executor.py (best of alternating blocks).  The first
``rt.gelu`` calls (both forms) are timed apart: with Numba, the compile or the load from its on-disk cache.  The last
line is JSON: milliseconds per call, the ratios kernel / torch and compiled / NumPy, and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ALEXDSL_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from executor import _time_each  # noqa: E402

from alexdsl.backends.executor import arrays  # noqa: E402
from alexdsl.backends.executor import runtime as rt  # noqa: E402
from alexdsl.ops.activation import gelu  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[197, 3072])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--scale", type=float, default=1.0, help="Standard deviation of the input.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = np.random.default_rng(0).standard_normal(args.shape).astype(np.float32) * np.float32(args.scale)
    out, tx = np.empty_like(x), torch.from_numpy(x)
    start = time.perf_counter()
    rt.gelu(x, "none", out=out), rt.gelu(x, "tanh", out=out)
    first_use_s = time.perf_counter() - start
    compiled = arrays.numba_kernels(x.dtype) is not None
    print(f"rt.gelu: {'compiled (Numba)' if compiled else 'NumPy (no Numba)'}, first calls {first_use_s:.3f} s")
    with torch.inference_mode():
        for approximate in ("none", "tanh"):
            diff = np.abs(gelu(x, approximate) - torch.nn.functional.gelu(tx, approximate=approximate)
                          .numpy()).max()
            apart = np.abs(rt.gelu(x, approximate) - gelu(x, approximate)).max()
            print(f"gelu({approximate}): largest difference from torch {diff:.2e}, rt.gelu from gelu {apart:.2e}")
        names = ["gelu_none", "gelu_tanh", "rt_gelu_none", "rt_gelu_tanh", "torch_gelu_none", "torch_gelu_tanh",
                 "one_pass"]
        seconds = _time_each([lambda: gelu(x, "none", out=out),
                              lambda: gelu(x, "tanh", out=out),
                              lambda: rt.gelu(x, "none", out=out),
                              lambda: rt.gelu(x, "tanh", out=out),
                              lambda: torch.nn.functional.gelu(tx),
                              lambda: torch.nn.functional.gelu(tx, approximate="tanh"),
                              lambda: np.multiply(x, x, out=out)], args.repeat)
    ms = {name: 1e3 * s for name, s in zip(names, seconds, strict=True)}
    for name, value in ms.items():
        print(f"{name:>16}: {value:8.3f} ms  ({value / ms['one_pass']:5.1f} passes)")
    result = {"shape": args.shape, "scale": args.scale, "ms": ms, "load_1min": os.getloadavg()[0],
              "compiled": compiled, "first_use_s": first_use_s,
              "ratio_none_over_torch": ms["gelu_none"] / ms["torch_gelu_none"],
              "ratio_tanh_over_torch": ms["gelu_tanh"] / ms["torch_gelu_tanh"],
              "ratio_rt_none_over_numpy": ms["rt_gelu_none"] / ms["gelu_none"],
              "ratio_rt_tanh_over_numpy": ms["rt_gelu_tanh"] / ms["gelu_tanh"]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
