"""Front-end and executor-compile time: what a change to the IR costs or saves.

CPU times (``time.process_time``: the machine may be shared, so wall time would measure the
neighbours), best of ``--repeat`` runs in this process:

* ``examples``: parse + elaborate + shape inference of every ``examples/*.adsl`` (``alexdsl.load``);
* ``deep``: the same for a generated 10,000-layer chain (:func:`compile_scaling.generate`);
* ``deep_json``: reading that chain's IR JSON back (``alexdsl.from_json``, ``Network.from_json`` before it);
* ``lower``: the executor's compile step, ``lower`` + ``emit`` + loading the generated module, for
  every example (the weights are not filled: that is the allocator, not the compiler).

Prints one JSON line. To compare two checkouts, run it under each in turn, interleaved::

    for i in 1 2 3 4 5; do
        PYTHONPATH=/path/to/before python benchmarks/frontend.py --repeat 1
        PYTHONPATH=/path/to/after python benchmarks/frontend.py --repeat 1
    done
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import alexdsl
from alexdsl.backends.executor import codegen, load_source

sys.path.insert(0, str(Path(__file__).parent))
from compile_scaling import generate  # noqa: E402

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.adsl"))


def best_of(repeat: int, work: Callable[[], object]) -> float:
    """The fastest of ``repeat`` runs of ``work``, in CPU seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--layers", type=int, default=10_000)
    args = parser.parse_args()
    deep = generate(args.layers)
    deep_json = alexdsl.parse(deep, "deep.adsl").to_json()
    from_json = getattr(alexdsl, "from_json", None) or alexdsl.Network.from_json  # the name before the typed IR
    networks = [alexdsl.load(path) for path in EXAMPLES]

    def compile_all() -> None:
        for network in networks:
            low = codegen.lower(network)
            load_source(codegen.emit(low), low.class_name)

    result = {
        "alexdsl": str(Path(alexdsl.__file__).parent),
        "examples": round(best_of(args.repeat, lambda: [alexdsl.load(path) for path in EXAMPLES]), 4),
        "deep": round(best_of(args.repeat, lambda: alexdsl.parse(deep, "deep.adsl")), 4),
        "deep_json": round(best_of(args.repeat, lambda: from_json(deep_json, "deep.json")), 4),
        "lower": round(best_of(args.repeat, compile_all), 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
