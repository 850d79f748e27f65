"""The CuPy/NumPy inference backend: IR -> generated Python executor.

>>> import alexdsl, numpy as np
>>> from alexdsl.backends import executor as backend
>>> net = alexdsl.parse("network Tiny\\ninput x: 3x8x8\\nc1: conv(4, 3) | relu\\n")
>>> run = backend.compile(net, device="cpu")
>>> run(np.ones((2, 3, 8, 8), np.float32)).shape
(2, 4, 6, 6)
"""

from __future__ import annotations

import builtins
import linecache
import math
import os
import types
from collections.abc import Mapping
from typing import Any

from alexdsl.backends.executor import runtime
from alexdsl.backends.executor.codegen import Lowered, generate_source, lower
from alexdsl.backends.executor.codegen import emit as _emit
from alexdsl.backends.executor.decoder import Decoder
from alexdsl.backends.executor.executor import Executor, check_dtype, cuda_available
from alexdsl.ir.network import Network

__all__ = [
    "Decoder",
    "Executor",
    "compile",
    "compile_decoder",
    "cuda_available",
    "generate_source",
    "load_source",
    "lower",
    "runtime",
    "summary",
]

_counter = 0


def load_source(source: str, class_name: str, filename: str | None = None) -> type[Executor]:
    """Exec generated source in a fresh module and return its executor class."""
    global _counter
    _counter += 1
    filename = filename or f"<alexdsl-cupy-{_counter}>"
    module = types.ModuleType(f"alexdsl_generated_{_counter}")
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # tracebacks show it
    exec(builtins.compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - our own generated code
    cls = module.__dict__[class_name]
    cls.__source__ = source
    return cls


def compile(  # noqa: A001 - mirrors torch.compile / the CLI verb
    network: Network,
    weights: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    device: str = "auto",
    dtype: str = "float32",
    seed: int = 0,
) -> Executor:
    """Generate, load and instantiate the executor for ``network``.

    ``weights``: a ``.safetensors`` path or a dict keyed like the torch state_dict
    (``"conv1.weight"``); None fills from the network's fillers (Caffe semantics, ``seed``).
    ``device``: ``"auto"`` (CUDA when CuPy sees a GPU), ``"cpu"`` or ``"cuda"``.
    """
    dtype = check_dtype(dtype).name
    low = lower(network)
    source = _emit(low, dtype)
    cls = load_source(source, low.class_name, f"<alexdsl-cupy {network.name}>")
    return cls(weights, device=device, dtype=dtype, seed=seed)


def compile_decoder(network: Network, weights: str | os.PathLike[str] | Mapping[str, Any] | None = None,
                    device: str = "auto", dtype: str = "float32", seed: int = 0) -> Decoder:
    """Generate, load and instantiate ``network``'s key/value-cached decoder
    (:mod:`alexdsl.backends.executor.decoder`), arguments as :func:`compile`'s; a
    :class:`~alexdsl.backends.decoding.NotCacheable` error names the layer that is neither per token
    nor cacheable."""
    dtype = check_dtype(dtype).name
    low = lower(network, decoder=True)
    cls = load_source(_emit(low, dtype), low.class_name, f"<alexdsl-cupy decoder {network.name}>")
    return cls(weights, device=device, dtype=dtype, seed=seed)  # type: ignore[return-value]


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def summary(network: Network | Lowered, batch: int = 1, dtype: str = "float32") -> str:
    """What each layer became (kernels, fusion), parameter bytes, planned vs keep-all memory (in ``dtype``)."""
    low = network if isinstance(network, Lowered) else lower(network)
    item = check_dtype(dtype).itemsize
    rows = [("step", "kernel", "layers", "output", "buffer")]
    for i, step in enumerate(low.steps, 1):
        layers = " + ".join(step.layers) + (f" ({step.note})" if step.note else "")
        shape = "x".join(map(str, step.shape))
        rows.append((str(i), step.kernel, layers, shape, str(low.memory.assignment[step.name])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{low.network.name}: {len(low.steps)} kernel calls (cupy/numpy backend)"]
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=False)) + "  " + r[4])
    if low.dropped:
        lines.append("  dropped at inference: " + ", ".join(low.dropped))
    in_kernels = {name for step in low.steps for name in step.layers}
    aliases = [name for name in low.var if name not in in_kernels and name not in low.input_vars]
    if aliases:
        lines.append("  no kernel (identity or view): " + ", ".join(aliases))
    param_bytes = item * sum(math.prod(shape) for shape, _, _ in low.state.values())
    lines.append(f"  parameters: {_mib(param_bytes)} {check_dtype(dtype).name} ({len(low.state)} tensors)")
    mem = low.memory
    buffers, keep = mem.planned_bytes * batch * item // 4, mem.keep_all_bytes * batch * item // 4
    saved = 100 * (1 - buffers / keep) if keep else 0.0
    lines.append(
        f"  activations at batch {batch}: {_mib(buffers)} planned in {len(mem.buffers)} reusable buffers "
        f"vs {_mib(keep)} keeping every tensor alive ({saved:.0f}% less)"
    )
    cpu_rows = runtime.scratch_rows("numpy", batch, low.scratch, item)
    gpu_rows = runtime.scratch_rows("cupy", batch, low.scratch_wide, item)
    lines.append(
        f"  im2col scratch at batch {batch}: {_mib(item * low.scratch * cpu_rows)} on CPU / "
        f"{_mib(item * low.scratch_wide * gpu_rows)} on GPU, shared by all convs "
        f"(one full-batch buffer per conv would take {_mib(item * low.scratch_per_layer * batch)})"
    )
    return "\n".join(lines)
