"""How long `alexdsl import onnx` takes on a 1,000-node model, stage by stage.

The model is ``tests/onnx_models.residual_chain(250)``: 250 Conv -> BatchNormalization -> Relu ->
Add units (1,000 nodes), built with onnx.helper. Times, best of ``--repeat`` runs, in one process:
reading and folding (``read_onnx``), mapping and checking (``import_onnx``: the network and its
weights), and the whole import with readable source (chains and blocks). As a baseline measured
in the same process, ``alexdsl.parse`` of the flat source (one statement per layer) of the same
network, so the ratio says what importing costs over building the network from its text.
Prints a table, then one JSON line.

    python benchmarks/onnx_import.py [--units 250] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from onnx_models import residual_chain  # noqa: E402

import alexdsl  # noqa: E402
from alexdsl.interop.onnx_graph import read_onnx  # noqa: E402
from alexdsl.interop.onnx_import import import_onnx, import_onnx_source  # noqa: E402


def best(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=250, help="residual units (4 nodes each)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "chain.onnx"
        model = residual_chain(args.units)
        path.write_bytes(model.SerializeToString())
        source = import_onnx_source(path).source
        flat = import_onnx_source(path, readable=False).source
        rows = {
            "parse the flat source (baseline)": best(lambda: alexdsl.parse(flat, "chain.adsl"), args.repeat),
            "read_onnx (load, check, fold)": best(lambda: read_onnx(path), args.repeat),
            "import_onnx (network + weights)": best(lambda: import_onnx(path), args.repeat),
            "import with readable source": best(lambda: import_onnx_source(path), args.repeat),
        }
    nodes = len(model.graph.node)
    baseline = rows["parse the flat source (baseline)"]
    print(f"{nodes} ONNX nodes -> {len(flat.splitlines())} flat lines, {len(source.splitlines())} lines written")
    for name, seconds in rows.items():
        print(f"  {name:<38} {seconds:7.3f} s  {seconds / baseline:6.1f}x")
    print(json.dumps({"nodes": nodes, "seconds": {k: round(v, 4) for k, v in rows.items()},
                      "import_over_parse": round(rows["import with readable source"] / baseline, 2)}))


if __name__ == "__main__":
    main()
