"""Benchmark: the generated NumPy/CuPy executor vs torch eager on examples/alexnet.adsl.

    python benchmarks/executor.py                  # CPU: batch 1 and 16
    python benchmarks/executor.py --batches 1 16 --repeat 10
    python benchmarks/executor.py --no-tf32        # GPU: exact fp32 on both sides

CPU: NumPy executor vs torch CPU eager (oneDNN), one process, same threads.  GPU (when
CuPy sees a device): CuPy executor vs torch CUDA eager (cuDNN), batch 1/16/128, TF32 set
the same on both sides (CUPY_TF32 and torch's allow_tf32 flags, printed).  Both sides run
the same weights; the reference is alexdsl's torch backend when present, else a
torch.nn.functional interpretation of the same IR.  The last line is JSON.
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
    p.add_argument("--median", action="store_true", help="report medians instead of best times")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
MEDIAN = bool(ARGS and ARGS.median)
if ARGS is not None:  # CuPy reads CUPY_TF32 when it is imported
    os.environ["CUPY_TF32"] = "0" if ARGS.no_tf32 else "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import alexdsl  # noqa: E402
from alexdsl.backends import cupy as backend  # noqa: E402
from alexdsl.backends.cupy.executor import cuda_available  # noqa: E402


def torch_forward(network: Any, weights: dict[str, np.ndarray], device: str) -> Any:
    """A torch eager callable for ``network``: the torch backend if present, else F.* per layer."""
    try:
        from alexdsl.backends.torch import build  # type: ignore[attr-defined]

        model = build(network)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
        model = model.to(device).eval()
        return model
    except ImportError:
        pass
    low = backend.lower(network)
    w = {k: torch.from_numpy(v).to(device) for k, v in weights.items()}
    layers = [layer for layer in network.layers() if layer.name not in low.dropped]

    def forward(x: torch.Tensor) -> torch.Tensor:
        env: dict[str, torch.Tensor] = {}
        for layer in layers:
            a, name, op = layer.attrs, layer.name, layer.op
            xs = [env[i] for i in layer.inputs]
            if op == "input":
                y = x
            elif op == "conv":
                y = F.conv2d(
                    xs[0], w[name + ".weight"], w.get(name + ".bias"), a["stride"], a["pad"], a["dilation"], a["groups"]
                )
            elif op == "fc":
                y = F.linear(xs[0].flatten(1), w[name + ".weight"], w.get(name + ".bias"))
            elif op == "relu":
                y = F.relu(xs[0], inplace=True)
            elif op == "maxpool":
                y = F.max_pool2d(xs[0], a["kernel"], a["stride"], a["pad"], ceil_mode=a["round"] == "ceil")
            elif op == "avgpool":
                y = F.avg_pool2d(xs[0], a["kernel"], a["stride"], a["pad"], a["round"] == "ceil", a["count_pad"])
            elif op == "adaptive_avgpool":
                y = F.adaptive_avg_pool2d(xs[0], a["size"])
            elif op == "lrn":
                y = F.local_response_norm(xs[0], a["size"], a["alpha"], a["beta"], a["k"])
            elif op in ("dropout", "flatten"):
                y = xs[0] if op == "dropout" else xs[0].flatten(1)
            else:
                raise NotImplementedError(f"benchmark reference has no op {op}")
            env[name] = y
        return env[low.outputs[0]]

    return forward


def _time_pair(a: Any, b: Any, repeat: int, sync: Any = None, rounds: int = 3) -> tuple[float, float]:
    """Best (minimum) seconds per call of ``a`` and ``b``, as ``timeit`` recommends.

    Timed in alternating blocks (a-block, b-block, ... ``rounds`` times) so drift on a noisy
    machine hits both sides alike, while the first call of each block (where the other
    library's spinning worker threads are still winding down) is discarded.  The minimum
    is the run least disturbed by other processes; ``--median`` reports medians instead.
    """
    times: tuple[list[float], list[float]] = ([], [])
    per_block = max(2, repeat // rounds + 1)
    for _ in range(rounds):
        for fn, bucket in ((a, times[0]), (b, times[1])):
            for i in range(per_block + 1):
                if sync:
                    sync()
                t = time.perf_counter()
                fn()
                if sync:
                    sync()
                if i:
                    bucket.append(time.perf_counter() - t)
    pick = statistics.median if MEDIAN else min
    return pick(times[0]), pick(times[1])


def _random_weights(network: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        k: (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01))
        for k, shape in network.state_keys().items()
    }


def _blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info())
    except ImportError:
        return "unknown (threadpoolctl not installed)"


def main() -> None:
    args = ARGS
    net = alexdsl.load(args.network)
    weights = _random_weights(net)
    (shape,) = [net.layer(n).shape for n in net.data_inputs]
    result: dict[str, Any] = {"network": net.name, "machine": platform.machine(), "cpu": {}, "gpu": {}}
    print(f"{net.name} from {args.network}; input {shape}")
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__} threads={torch.get_num_threads()}, ")
    print(f"     numpy {np.__version__} BLAS threads: {_blas_threads()}")
    ex = backend.compile(net, weights, device="cpu")
    ref = torch_forward(net, weights, "cpu")
    for batch in args.batches:
        x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)
        tx = torch.from_numpy(x)
        with torch.inference_mode():
            diff = float(np.abs(ex(x) - ref(tx).numpy()).max())
            t_np, t_torch = _time_pair(lambda x=x: ex(x), lambda tx=tx: ref(tx), args.repeat)
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

    if not args.no_gpu and cuda_available() and torch.cuda.is_available():
        import cupy as cp

        tf32 = not args.no_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
        print(
            f"GPU: {torch.cuda.get_device_name()}  CUPY_TF32={os.environ['CUPY_TF32']}  "
            f"torch.backends.cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}  "
            f"torch.backends.cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}"
        )
        gex = backend.compile(net, weights, device="cuda")
        gref = torch_forward(net, weights, "cuda")
        for batch in args.gpu_batches:
            x = cp.asarray(np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32))
            tx = torch.as_tensor(x, device="cuda")

            def sync() -> None:
                cp.cuda.Device().synchronize()
                torch.cuda.synchronize()

            with torch.inference_mode():
                t_cp, t_torch = _time_pair(lambda x=x: gex(x), lambda tx=tx: gref(tx), args.repeat, sync)
            ips_cp, ips_torch = batch / t_cp, batch / t_torch
            ratio = ips_cp / ips_torch
            result["gpu"][str(batch)] = {
                "cupy_ips": round(ips_cp, 1),
                "torch_ips": round(ips_torch, 1),
                "ratio": round(ratio, 3),
            }
            print(
                f"  gpu batch {batch:4d}: cupy executor {ips_cp:9.1f} img/s  "
                f"torch eager {ips_torch:9.1f} img/s  ratio {ratio:.2f}x"
            )
        result["tf32"] = tf32
    else:
        print("GPU: skipped (no CuPy/CUDA device)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
