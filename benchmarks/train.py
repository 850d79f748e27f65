"""Benchmark: ``alexdsl train examples/lenet.adsl --data digits`` on the CPU.

Two measurements:

* in one process, ``alexdsl.torch.train`` with the thread count it picks (one thread for a
  LeNet-sized step, see ``alexdsl.backends.torch.train.cpu_threads``) against the same run on
  all of torch's default threads (the old behaviour), interleaved A B B A ...; the ratio of
  the best times is the headline (robust to other load on the machine), medians too;
* the README command itself, ``alexdsl train ... --epochs 10``, as a fresh process: wall
  and user CPU seconds, start-up (imports of torch, scikit-learn, matplotlib) included.

    python benchmarks/train.py [--epochs 10] [--repeat 3] [--no-cli]

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import alexdsl
import alexdsl.torch
from alexdsl.backends.torch.train import cpu_threads

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "examples" / "lenet.adsl"


def train_seconds(network: alexdsl.Network, epochs: int, threads: int | None) -> tuple[float, float]:
    """Wall seconds of one training run and its final validation accuracy."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = alexdsl.torch.train(network, "digits", out, epochs=epochs, device="cpu", threads=threads,
                                     progress=False, log=None)
        return time.perf_counter() - start, result.final["val_accuracy"]


def cli_seconds(epochs: int) -> dict[str, float]:
    """Wall and user+system CPU seconds of the README's command run as a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "alexdsl.cli", "train", str(LENET), "--data", "digits", "--epochs",
                        str(epochs), "--out", out, "--quiet"], check=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(wall, 2), "user_s": round(after.ru_utime - before.ru_utime, 2),
            "system_s": round(after.ru_stime - before.ru_stime, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side")
    parser.add_argument("--no-cli", action="store_true", help="skip timing the command as a fresh process")
    args = parser.parse_args()

    network = alexdsl.load(LENET)
    default_threads = torch.get_num_threads()
    chosen = cpu_threads(network, int(network.solver.get("batch_size", 64)))
    sides = {"chosen": chosen, "all_threads": default_threads}
    train_seconds(network, 1, chosen)  # warm-up: first-call allocations, lazy imports
    times: dict[str, list[float]] = {name: [] for name in sides}
    accuracy: dict[str, float] = {}
    for i in range(args.repeat):
        for name in (list(sides) if i % 2 == 0 else list(reversed(sides))):
            seconds, accuracy[name] = train_seconds(network, args.epochs, sides[name])
            times[name].append(seconds)

    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"LeNet on digits, {args.epochs} epochs, CPU, {os.cpu_count()} cores, best of {args.repeat}")
    print(f"{'':28} {'best s':>8} {'median s':>9} {'val_accuracy':>13}")
    for name, threads in sides.items():
        label = f"{name} ({threads or default_threads} thread{'s' if (threads or default_threads) > 1 else ''})"
        print(f"{label:28} {best[name]:8.2f} {median[name]:9.2f} {accuracy[name]:13.4f}")
    summary: dict[str, object] = {
        "epochs": args.epochs, "cores": os.cpu_count(), "threads": {k: v or default_threads for k, v in sides.items()},
        "best_s": {k: round(v, 3) for k, v in best.items()}, "median_s": {k: round(v, 3) for k, v in median.items()},
        "speedup": round(best["all_threads"] / best["chosen"], 3),
        "median_speedup": round(median["all_threads"] / median["chosen"], 3),
    }
    print(f"speedup of the chosen thread count: {summary['speedup']:.2f}x (medians {summary['median_speedup']:.2f}x)")
    if not args.no_cli:
        summary["cli"] = cli_seconds(args.epochs)
        cli = summary["cli"]
        print(f"alexdsl train {LENET.relative_to(ROOT)} --data digits --epochs {args.epochs}: "
              f"{cli['wall_s']:.1f} s wall, {cli['user_s']:.1f} s user CPU")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
