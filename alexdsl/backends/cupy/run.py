"""Compile and time a network on ``.npy`` inputs or random data: outputs, top-k classes, images/s.

>>> import alexdsl
>>> net = alexdsl.parse("network Tiny\\ninput x: 3x8x8\\nc1: conv(4, 3) | relu\\n", file="tiny.adsl")
>>> result = run_network(net, batch=2, device="cpu", repeat=1)
>>> result["outputs"]["c1_relu"].shape
(2, 4, 6, 6)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy

from alexdsl.backends.cupy import compile as compile_network
from alexdsl.errors import AlexDSLError
from alexdsl.ir.network import Network


def _load_input(value: str | os.PathLike[str] | numpy.ndarray, name: str) -> numpy.ndarray:
    if isinstance(value, numpy.ndarray):
        return value
    path = Path(value)
    if path.suffix != ".npy":
        raise AlexDSLError(f"input '{name}': expected a .npy file, got {path}")
    try:
        return numpy.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AlexDSLError(f"input '{name}': cannot read {path}: {exc}") from None


def run_network(
    network: Network,
    weights: str | os.PathLike[str] | None = None,
    inputs: list[str | os.PathLike[str] | numpy.ndarray] | None = None,
    *,
    batch: int = 1,
    device: str = "auto",
    dtype: str = "float32",
    seed: int = 0,
    repeat: int = 1,
    top: int = 5,
) -> dict[str, Any]:
    """Compile and run ``network``; random NCHW inputs (``seed``) when ``inputs`` is None.

    Returns ``outputs`` (name -> NumPy array), ``top`` (name -> per-sample top-k class
    indices for 2-D outputs), ``device``, ``seconds`` (median of ``repeat`` runs) and
    ``images_per_second``.
    """
    ex = compile_network(network, weights, device=device, dtype=dtype, seed=seed)
    if inputs is None:
        rng = numpy.random.default_rng(seed)
        arrays = [rng.standard_normal((batch, *shape)).astype(ex.dtype) for shape in ex.inputs.values()]
    else:
        if len(inputs) != len(ex.inputs):
            raise AlexDSLError(f"{network.name} takes {len(ex.inputs)} input(s) ({', '.join(ex.inputs)})")
        arrays = [_load_input(v, n) for v, n in zip(inputs, ex.inputs, strict=True)]
    times = []
    result: Any = None
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        result = ex(*arrays)
        times.append(time.perf_counter() - start)
    outs = result if isinstance(result, tuple) else (result,)
    outputs = {name: numpy.asarray(o) for name, o in zip(ex.outputs, outs, strict=True)}
    tops = {
        name: numpy.argsort(-o.reshape(o.shape[0], -1), axis=1)[:, :top]
        for name, o in outputs.items()
        if o.ndim == 2 or (o.ndim == 4 and o.shape[2:] == (1, 1))
    }
    seconds = sorted(times)[len(times) // 2]
    n = arrays[0].shape[0]
    return {
        "outputs": outputs,
        "top": tops,
        "device": ex.device,
        "seconds": seconds,
        "images_per_second": n / seconds if seconds else float("inf"),
    }


def format_run(result: dict[str, Any]) -> str:
    """Human-readable summary of :func:`run_network`'s result."""
    lines = [
        f"device: {result['device']}  {result['seconds'] * 1e3:.1f} ms/batch  {result['images_per_second']:.1f} img/s"
    ]
    for name, out in result["outputs"].items():
        lines.append(f"{name}: shape {tuple(out.shape)}")
        for i, row in enumerate(result["top"].get(name, [])):
            lines.append(f"  sample {i}: top classes {', '.join(map(str, row.tolist()))}")
    return "\n".join(lines)
