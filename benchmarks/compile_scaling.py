"""How front-end time grows with network size: parse + elaborate + validate + infer shapes.

Generates chains of 1,000, 10,000 and 100,000 layers (a conv and a relu per statement) and
times ``alexdsl.parse`` on each, best of a few runs. Prints a table, then one JSON line:
``{"layers": [...], "seconds": [...], "ratio_10x": ...}``.

    python benchmarks/compile_scaling.py [--sizes 1000 10000 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time

import alexdsl


def generate(layers: int) -> str:
    """A valid network of ``layers`` layers: 8x8 convolutions with padding keep shapes fixed."""
    lines = ["network Deep", "input data: 8x16x16"]
    for i in range(layers // 2):
        lines.append(f"c{i}: conv(8, 3, pad=1) | relu")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    seconds = []
    for size in args.sizes:
        text = generate(size)
        best = float("inf")
        for _ in range(args.repeat if size < 100_000 else 1):
            start = time.perf_counter()
            net = alexdsl.parse(text, "deep.adsl")
            best = min(best, time.perf_counter() - start)
        assert len(net) == size + 1  # the layers plus the input
        seconds.append(round(best, 4))
        print(f"{size:>8} layers  {best:8.3f} s  {best / size * 1e6:6.1f} us/layer")
    result = {"layers": args.sizes, "seconds": seconds}
    for a, b in zip(range(len(seconds)), range(1, len(seconds))):
        result[f"ratio_{args.sizes[b]}_over_{args.sizes[a]}"] = round(seconds[b] / seconds[a], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
