"""Benchmark: the generated NumPy/CuPy executor vs torch eager on examples/alexnet.adsl.

    python benchmarks/executor.py                  # CPU: batch 1 and 16
    python benchmarks/executor.py --batches 1 16 --repeat 10
    python benchmarks/executor.py --no-tf32        # GPU: exact fp32 on both sides
    python benchmarks/executor.py --no-cpu         # GPU only

CPU: NumPy executor vs torch CPU eager (oneDNN), one process, same threads.  GPU (when
CuPy sees a device): CuPy executor vs torch CUDA eager (cuDNN), batch 1/16/128, TF32 set
the same on both sides (CUPY_TF32 and torch's allow_tf32 flags, printed); the CuPy executor
is timed with its portable kernels and with the fused CUDA kernels (ALEXDSL_CUDA_KERNELS=1).
Both sides run the same weights through alexdsl's generated torch module.  The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("network", nargs="?", default=str(ROOT / "examples" / "alexnet.adsl"))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--gpu-batches", type=int, nargs="+", default=[1, 16, 128])
    p.add_argument("--repeat", type=int, default=12, help="timed runs per point and side")
    p.add_argument("--no-tf32", action="store_true", help="GPU: disable TF32 on both sides")
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--no-cpu", action="store_true", help="skip the NumPy vs torch CPU comparison")
    p.add_argument("--median", action="store_true", help="report medians instead of best times")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
MEDIAN = bool(ARGS and ARGS.median)
if ARGS is not None:  # CuPy reads CUPY_TF32 when it is imported
    os.environ["CUPY_TF32"] = "0" if ARGS.no_tf32 else "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

import alexdsl  # noqa: E402
from alexdsl.backends import executor as backend  # noqa: E402
from alexdsl.backends.executor.executor import cuda_available  # noqa: E402
from alexdsl.backends.torch import build  # noqa: E402


def torch_forward(network: Any, weights: dict[str, np.ndarray], device: str) -> torch.nn.Module:
    """The torch backend's generated module for ``network`` with ``weights``, in eval mode."""
    model = build(network)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    return model.to(device).eval()


def _time_each(
    fns: list[Any], repeat: int, sync: Any = None, rounds: int = 3, clock: Any = time.perf_counter,
    pause: float = 0.0,
) -> list[float]:
    """Best (minimum) seconds per call of each function, as ``timeit`` recommends.

    ``clock`` is wall time; ``time.process_time`` (CPU seconds of the process) suits one-thread
    runs on a loaded machine, where a call of a few ms is rarely left a whole core.

    Timed in alternating blocks (one block per function, ``rounds`` times) so drift on a
    noisy machine hits every side alike, while the first call of each block (where the
    other library's spinning worker threads are still winding down) is discarded.  The
    minimum is the run least disturbed by other processes; ``--median`` reports medians.
    ``pause``: seconds of sleep before each block, for the other libraries' worker threads to stop
    spinning (onnxruntime's made the executor's next call on two threads up to 2x slower).
    """
    times: list[list[float]] = [[] for _ in fns]
    per_block = max(2, repeat // rounds + 1)
    for _ in range(rounds):
        for fn, bucket in zip(fns, times, strict=True):
            time.sleep(pause)
            for i in range(per_block + 1):
                if sync:
                    sync()
                t = clock()
                fn()
                if sync:
                    sync()
                if i:
                    bucket.append(clock() - t)
    pick = statistics.median if MEDIAN else min
    return [pick(bucket) for bucket in times]


def _random_weights(network: Any) -> dict[str, np.ndarray]:
    """He-scaled weights and batchnorm variances in [0.5, 1.5]: activations stay O(1) through a deep
    network (tiny weights make denormals, which are slow, and a negative variance makes NaNs)."""
    rng = np.random.default_rng(0)
    weights = {}
    for key, shape in network.state_keys().items():
        if len(shape) > 1:  # conv and fc weights
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif key.endswith(("running_var", "weight")):  # batchnorm variance and scale
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.standard_normal(shape) * 0.01
        weights[key] = value.astype(np.float32)
    return weights


def _blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info())
    except ImportError:
        return "unknown (threadpoolctl not installed)"


def run_cpu(net: Any, weights: dict[str, np.ndarray], shape: tuple[int, ...], result: dict[str, Any]) -> None:
    """NumPy executor vs torch CPU eager at each ``--batches`` size."""
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__} threads={torch.get_num_threads()}, ")
    print(f"     numpy {np.__version__} BLAS threads: {_blas_threads()}")
    ex = backend.compile(net, weights, device="cpu")
    ref = torch_forward(net, weights, "cpu")
    for batch in ARGS.batches:
        x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)
        tx = torch.from_numpy(x)
        with torch.inference_mode():
            diff = float(np.abs(ex(x) - ref(tx).numpy()).max())
            t_np, t_torch = _time_each([lambda x=x: ex(x), lambda tx=tx: ref(tx)], ARGS.repeat)
        ips_np, ips_torch = batch / t_np, batch / t_torch
        ratio = ips_np / ips_torch
        result["cpu"][str(batch)] = {
            "numpy_ips": round(ips_np, 2),
            "torch_ips": round(ips_torch, 2),
            "ratio": round(ratio, 3),
        }
        print(
            f"  cpu batch {batch:4d}: numpy executor {ips_np:8.1f} img/s  torch eager {ips_torch:8.1f} img/s  "
            f"ratio {ratio:.2f}x  (max |diff| {diff:.1e})"
        )


def run_gpu(net: Any, weights: dict[str, np.ndarray], shape: tuple[int, ...], result: dict[str, Any]) -> None:
    """CuPy executor (portable kernels, then the fused CUDA kernels) vs torch CUDA eager (cuDNN)."""
    import cupy as cp

    tf32 = not ARGS.no_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    print(
        f"GPU: {torch.cuda.get_device_name()}  cupy {cp.__version__}  CUPY_TF32={os.environ['CUPY_TF32']}  "
        f"torch.backends.cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}  "
        f"torch.backends.cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}"
    )
    gex = backend.compile(net, weights, device="cuda")
    gref = torch_forward(net, weights, "cuda")

    def fused(on: bool) -> None:
        os.environ["ALEXDSL_CUDA_KERNELS"] = "1" if on else "0"

    def sync() -> None:
        cp.cuda.Device().synchronize()
        torch.cuda.synchronize()

    for batch in ARGS.gpu_batches:
        x = cp.asarray(np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32))
        tx = torch.as_tensor(x, device="cuda")
        with torch.inference_mode():
            want = cp.asarray(gref(tx))
            diffs = []
            for on in (False, True):
                fused(on)
                diffs.append(float(cp.abs(gex(x) - want).max()))
            t_plain, t_fused, t_torch = _time_each(
                [lambda x=x: (fused(False), gex(x)), lambda x=x: (fused(True), gex(x)), lambda tx=tx: gref(tx)],
                ARGS.repeat,
                sync,
            )
        ips = {"cupy_ips": batch / t_plain, "cupy_fused_ips": batch / t_fused, "torch_ips": batch / t_torch}
        result["gpu"][str(batch)] = {k: round(v, 1) for k, v in ips.items()} | {
            "ratio": round(ips["cupy_ips"] / ips["torch_ips"], 3),
            "ratio_fused": round(ips["cupy_fused_ips"] / ips["torch_ips"], 3),
        }
        print(
            f"  gpu batch {batch:4d}: cupy executor {ips['cupy_ips']:9.1f} img/s  "
            f"with fused kernels {ips['cupy_fused_ips']:9.1f} img/s  torch eager {ips['torch_ips']:9.1f} img/s  "
            f"ratios {ips['cupy_ips'] / ips['torch_ips']:.2f}x / {ips['cupy_fused_ips'] / ips['torch_ips']:.2f}x  "
            f"(max |diff| {diffs[0]:.1e} / {diffs[1]:.1e})"
        )
    pool = cp.get_default_memory_pool()
    result["gpu_pool_total_bytes"] = pool.total_bytes()
    result["tf32"] = tf32


def main() -> None:
    net = alexdsl.load(ARGS.network)
    weights = _random_weights(net)
    (shape,) = [net.layer(n).shape for n in net.data_inputs]
    result: dict[str, Any] = {"network": net.name, "machine": platform.machine(), "cpu": {}, "gpu": {}}
    print(f"{net.name} from {ARGS.network}; input {shape}")
    if not ARGS.no_cpu:
        run_cpu(net, weights, shape, result)
    if not ARGS.no_gpu and cuda_available() and torch.cuda.is_available():
        run_gpu(net, weights, shape, result)
    else:
        print("GPU: skipped (no CuPy/CUDA device)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
