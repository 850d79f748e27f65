"""Benchmark: a batch split over threads against the same batch run whole, and onnxruntime, in one process.

    python benchmarks/batch_shards.py                                  # six networks, 2 threads, batch 16
    python benchmarks/batch_shards.py --networks resnet18 --threads 1 2 --batches 8 16 --repeat 3

One executor runs each batch split (``Executor.shard_bounds``: one shard per thread, each with one
thread inside), whole (``executor.sharding = False``: every kernel spread over the thread pool and
BLAS's threads), and whole with BLAS held on one thread (what the per-image conv path leaves after
the first batched conv: its check for threadpoolctl pins BLAS for good, docs/performance.md), beside
onnxruntime at the same thread count, on the same weights
(ORT through alexdsl's ONNX export), in interleaved blocks, best of N. Every call is timed on two
clocks: wall time (what a caller waits for) and the process's CPU time (all its threads: what the
work costs, the figure that survives a loaded machine). The load (``os.getloadavg``) is printed with
the numbers: on a shared machine, 2-thread wall times measure the other processes as much as this one.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from executor_vs_ort import NETWORKS, ort_session  # noqa: E402 - the networks and ORT's session options

from alexdsl.backends import executor as backend  # noqa: E402
from alexdsl.interop.onnx import export_onnx  # noqa: E402

DEFAULT_NETWORKS = ["alexnet", "resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "convnext_tiny"]


def best_times(fns: list[Callable[[], Any]], repeat: int, rounds: int) -> list[tuple[float, float]]:
    """(best wall seconds, best CPU seconds) per call of each function, timed in interleaved blocks.

    The first call of each block is not counted (the other side's threads are still winding down).
    """
    times: list[list[tuple[float, float]]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, bucket in zip(fns, times, strict=True):
            for i in range(repeat + 1):
                wall, cpu = time.perf_counter(), time.process_time()
                fn()
                if i:
                    bucket.append((time.perf_counter() - wall, time.process_time() - cpu))
    return [(min(w for w, _ in bucket), min(c for _, c in bucket)) for bucket in times]


def pinned(run: Callable[[bool], Any]) -> Any:
    """The batch whole with BLAS on one thread (threadpoolctl)."""
    with threadpool_limits(1, "blas"):
        return run(False)


def measure(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Split, whole and ORT at every thread count and batch size for one network."""
    net = NETWORKS[name]()
    (input_name,) = net.data_inputs
    shape = net.layer(input_name).shape
    executor = backend.compile(net, device="cpu")
    weights = {key: np.asarray(value) for key, value in executor.weights.items()}
    model = export_onnx(net, weights).SerializeToString()
    rows = []
    for threads in args.threads:
        os.environ["ALEXDSL_NUM_THREADS"] = str(threads)
        session = ort_session(model, threads)
        for batch in args.batches:
            x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)

            def run(split: bool, x: np.ndarray = x) -> Any:
                executor.sharding = split
                return executor(x)

            with threadpool_limits(threads):
                shards = len(executor.shard_bounds(batch)) - 1
                load = os.getloadavg()[0]
                sides = [lambda: run(True), lambda: run(False), lambda: pinned(run),
                         lambda x=x, s=session: s.run(None, {input_name: x})]
                split, whole, whole_pinned, ort = best_times(sides, args.repeat, args.rounds)
            executor.sharding = True
            row = {"network": net.name, "threads": threads, "batch": batch, "shards": shards,
                   "split_vs_whole_wall": round(whole[0] / split[0], 3),
                   "split_vs_whole_cpu": round(whole[1] / split[1], 3),
                   "split_vs_ort_wall": round(ort[0] / split[0], 3), "whole_vs_ort_wall": round(ort[0] / whole[0], 3),
                   "split_vs_whole_pinned_wall": round(whole_pinned[0] / split[0], 3),
                   "split_vs_whole_pinned_cpu": round(whole_pinned[1] / split[1], 3),
                   "whole_pinned_vs_ort_wall": round(ort[0] / whole_pinned[0], 3),
                   "split_ms": round(split[0] * 1e3, 1), "whole_ms": round(whole[0] * 1e3, 1),
                   "ort_ms": round(ort[0] * 1e3, 1), "split_cpu_ms": round(split[1] * 1e3, 1),
                   "whole_cpu_ms": round(whole[1] * 1e3, 1), "ort_cpu_ms": round(ort[1] * 1e3, 1),
                   "load": round((load + os.getloadavg()[0]) / 2, 1)}
            rows.append(row)
            print(f"  {net.name:16s} {threads} thr batch {batch:3d} ({shards} shard(s)): "
                  f"split/whole {row['split_vs_whole_wall']:.2f}x wall {row['split_vs_whole_cpu']:.2f}x CPU; "
                  f"split/whole with BLAS on 1 thread {row['split_vs_whole_pinned_wall']:.2f}x wall "
                  f"{row['split_vs_whole_pinned_cpu']:.2f}x CPU (vs ORT {row['whole_pinned_vs_ort_wall']:.2f}); "
                  f"vs ORT: split {row['split_vs_ort_wall']:.2f} whole {row['whole_vs_ort_wall']:.2f} (wall); "
                  f"ms wall split/whole/ORT {row['split_ms']}/{row['whole_ms']}/{row['ort_ms']}, "
                  f"CPU {row['split_cpu_ms']}/{row['whole_cpu_ms']}/{row['ort_cpu_ms']}; "
                  f"load {row['load']}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=DEFAULT_NETWORKS)
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--batches", type=int, nargs="+", default=[16])
    p.add_argument("--repeat", type=int, default=3, help="timed calls per block")
    p.add_argument("--rounds", type=int, default=2, help="interleaved blocks per side")
    args = p.parse_args()
    rows = [row for name in args.networks for row in measure(name, args)]
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
