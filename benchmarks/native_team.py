"""Benchmark: the native team (Numba's OpenMP threads, docs/cupy.md) against the thread pool with BLAS's threads
and against one thread, in one process.

    python benchmarks/native_team.py                       # GEMMs, then six networks at batch 1, 2 threads
    python benchmarks/native_team.py --gemms --threads 2   # the GEMMs only
    python benchmarks/native_team.py --networks mobilenet_v2 resnet18 --batches 1 4 --rounds 6

GEMMs: each shape as ``numpy.matmul`` on one thread (BLAS pinned), ``numpy.matmul`` with BLAS's own threads, and
the team split by rows and by columns of C (BLAS pinned, as the executor runs it); best and median of 30 calls,
wall time. Networks: one executor, called in interleaved blocks of 10 (batch 1) or 2 calls in three ways: one
thread (``ALEXDSL_NUM_THREADS=1``, BLAS pinned), several threads without the team (the pool and BLAS's threads,
``ALEXDSL_NATIVE_THREADS=0``'s path) and with it; best and median per way, and the ratios of the medians. The load
(``os.getloadavg``) is printed with the numbers: on a shared machine, wall times on several threads measure the
other processes as much as this one. The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from executor_vs_ort import NETWORKS, _random_weights  # noqa: E402 - the networks and their weights

from alexdsl.backends import executor as backend  # noqa: E402
from alexdsl.backends.executor import arrays  # noqa: E402

DEFAULT_NETWORKS = ["alexnet", "resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "convnext_tiny"]
GEMMS = [  # (m, k, n): C (m, n) = A (m, k) @ B (k, n), as the networks run them at batch 1
    (96, 16, 12544),  # MobileNetV2's first expansion, 112x112
    (144, 24, 3136),  # its 56x56 expansion
    (960, 160, 49),  # its 7x7 expansion
    (1280, 320, 49),  # its last 1x1 conv
    (32, 27, 12544),  # its stem (im2col)
    (64, 147, 12544),  # ResNet's 7x7 stem (im2col)
    (256, 1152, 196),  # a 3x3 conv on 14x14 maps (im2col)
    (197, 768, 3072),  # ViT-B/16's MLP
    (3136, 96, 384),  # Swin-T's first MLP
]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gemms", action="store_true", help="the GEMMs only")
    p.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=None)
    p.add_argument("--batches", type=int, nargs="+", default=[1])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="interleaved blocks per way (networks)")
    return p.parse_args()


def _best_and_median(run: Callable[[], Any], calls: int) -> tuple[float, float]:
    run()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[0], times[len(times) // 2]


def gemms(threads: int) -> list[dict[str, Any]]:
    """Milliseconds of each GEMM of :data:`GEMMS` four ways."""
    team = arrays._native_module()
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in GEMMS:
        a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        times: dict[str, tuple[float, float]] = {}

        def product(a: np.ndarray = a, b: np.ndarray = b, out: np.ndarray = out) -> None:
            np.matmul(a, b, out=out)

        with threadpool_limits(1, "blas"):
            times["one thread"] = _best_and_median(product, 30)
        with threadpool_limits(threads, "blas"):
            times["BLAS threads"] = _best_and_median(product, 30)
        os.environ["ALEXDSL_NUM_THREADS"] = str(threads)
        with arrays.on_native_team():
            layout = team.cblas_layout(a, b, out)[0]
            for name, by_columns, units in (("team, rows", 0, m), ("team, columns", 1, n)):
                split = layout.copy()
                split[19] = by_columns
                bounds = team.split(units, team.team_size(threads), team.MIN_SPLIT_ROWS)
                times[name] = _best_and_median(lambda split=split, bounds=bounds: team.gemm(split, bounds), 30)
        picked = "team, columns" if team._by_columns(m, n, k) else "team, rows"
        row = {"gemm": f"{m}x{k} @ {k}x{n}", **{name: round(t[0] * 1e3, 3) for name, t in times.items()},
               "picked": picked, "load": round(os.getloadavg()[0], 1)}
        print("  " + row["gemm"].ljust(22) + "  ".join(f"{name} {t[0] * 1e3:.3f}/{t[1] * 1e3:.3f}"
                                                        for name, t in times.items()) + f"  (picks {picked})",
              flush=True)
        rows.append(row)
    return rows


@contextlib.contextmanager
def _way(name: str, threads: int) -> Iterator[None]:
    """One of the three ways a call runs: ``one thread``, ``pool`` (no team) or ``team``."""
    found = arrays._native_module
    os.environ["ALEXDSL_NUM_THREADS"] = "1" if name == "one thread" else str(threads)
    arrays._native_module = found if name == "team" else (lambda: None)  # type: ignore[assignment]
    try:
        with threadpool_limits(1, "blas") if name == "one thread" else contextlib.nullcontext():
            yield
    finally:
        arrays._native_module = found  # type: ignore[assignment]


def networks(names: list[str], batches: list[int], threads: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        net = NETWORKS[name]()
        (shape,) = [net.layer(n).shape for n in net.data_inputs]
        executor = backend.compile(net, _random_weights(net), device="cpu")
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
            times: dict[str, list[float]] = {"one thread": [], "pool": [], "team": []}
            for _ in range(rounds):
                for way in times:
                    with _way(way, threads):
                        for _ in range(2):
                            executor(x)
                        for _ in range(10 if batch == 1 else 2):
                            start = time.perf_counter()
                            executor(x)
                            times[way].append(time.perf_counter() - start)
            median = {way: sorted(t)[len(t) // 2] for way, t in times.items()}
            row = {"network": net.name, "batch": batch, "threads": threads,
                   **{f"{way} ms": round(min(t) * 1e3, 2) for way, t in times.items()},
                   **{f"{way} median ms": round(median[way] * 1e3, 2) for way in times},
                   "team vs pool": round(median["pool"] / median["team"], 2),
                   "team vs one thread": round(median["one thread"] / median["team"], 2),
                   "load": round(os.getloadavg()[0], 1)}
            print(f"  {net.name:16s} batch {batch:3d}: " + "  ".join(
                f"{way} {min(t) * 1e3:.2f}/{median[way] * 1e3:.2f} ms" for way, t in times.items())
                + f"  team vs pool {row['team vs pool']:.2f}x, vs one thread {row['team vs one thread']:.2f}x"
                + f"  (load {row['load']})", flush=True)
            rows.append(row)
    return rows


def main() -> None:
    args = _parse()
    if arrays._native_module() is None:
        sys.exit("the native team cannot run here: it needs Numba with its OpenMP threading layer (libgomp) and "
                 "NumPy's OpenBLAS (pip install -e '.[numba]')")
    results: dict[str, Any] = {}
    print(f"GEMMs, ms (best/median), {args.threads} threads:")
    results["gemms"] = gemms(args.threads)
    if not args.gemms:
        print(f"networks, ms (best/median), {args.threads} threads:")
        results["networks"] = networks(args.networks or DEFAULT_NETWORKS, args.batches, args.threads, args.rounds)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
