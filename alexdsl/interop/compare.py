"""Per-layer agreement between backends: ``alexdsl compare``.

Every backend runs the same network on the same weights and inputs; for each layer the
largest absolute difference and the largest difference relative to the baseline's largest
magnitude are reported. Backends:

``reference``  the plain interpreter of :mod:`alexdsl.interop.reference` (torch.nn.functional, xp kernels in float64)
``torch``      the generated nn.Module of :mod:`alexdsl.backends.torch`
``cupy``       the generated executor of :mod:`alexdsl.backends.executor` (``device="cpu"`` unless CUDA)
``onnx``       the ONNX export run by onnxruntime

The reference and ONNX produce every layer in one run; torch and cupy are compiled once per
compared layer on the sub-network that ends there (they fuse and reuse buffers, so their
intermediate values are not observable otherwise). Layers that exist only while training,
losses and metrics are not compared; ``dropout`` is the identity at inference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from alexdsl.errors import AlexDSLError
from alexdsl.extras import install_command
from alexdsl.ir.network import Network
from alexdsl.ops.registry import format_shape
from alexdsl.progress import busy

BACKENDS = ("reference", "torch", "cupy", "onnx")


def subnetwork(network: Network, layer: str) -> Network:
    """The network cut at ``layer``: its ancestors and itself, with ``layer`` the only output (and the data
    inputs, for a layer computed from none)."""
    keep = nx.ancestors(network.graph, layer) | {layer}
    if not any(name in keep for name in network.data_inputs):  # a learned tensor alone: the inputs give the batch
        keep |= set(network.data_inputs)
    owners = {spec.tied.rsplit(".", 1)[0] for name in keep for spec in network.layer(name).params.values()
              if spec.tied}
    for owner in owners:  # a layer whose parameter is tied to another's keeps the layer holding it
        keep |= nx.ancestors(network.graph, owner) | {owner}
    graph = network.graph.subgraph([n for n in network.graph if n in keep]).copy()
    inputs = [name for name in network.inputs if name in keep]
    return Network(network.name, graph, description=network.description, inputs=inputs, outputs=[layer],
                   source_file=network.source_file)


def compared_layers(network: Network) -> list[str]:
    """Every layer that computes at inference."""
    return [layer.name for layer in network.inference_view().layers]


def _sub_weights(sub: Network, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    keys = sub.state_keys()
    return {k: v for k, v in weights.items() if k in keys}


def _each_layer(layers: list[str]) -> Iterator[str]:
    """``layers``, each shown on the progress line while it runs (``layer 3/9 (conv2)``)."""
    for number, name in enumerate(layers, 1):
        with busy(f"layer {number}/{len(layers)} ({name})"):
            yield name


def _feeds_for(sub: Network, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return [feeds[name] for name in sub.data_inputs]


def run_torch(network: Network, layers: list[str], weights: Mapping[str, np.ndarray],
              feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        import torch

        from alexdsl.backends import torch as backend
    except ImportError as error:
        raise AlexDSLError(f"error: the torch backend is not available ({error}): {install_command('torch')}"
                           ) from None
    out = {}
    for name in _each_layer(layers):
        sub = subnetwork(network, name)
        module = backend.build(sub)
        state = dict(module.state_dict())  # keeps torch-only buffers such as num_batches_tracked
        state.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _sub_weights(sub, weights).items()})
        backend.load_weights(module, state)
        module.eval()
        with torch.no_grad():
            result = module(*[torch.from_numpy(x) for x in _feeds_for(sub, feeds)])
        result = result[0] if isinstance(result, (tuple, list)) else result
        out[name] = result.detach().cpu().numpy()
    return out


def run_cupy(network: Network, layers: list[str], weights: Mapping[str, np.ndarray],
             feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        from alexdsl.backends import executor as backend
    except ImportError as error:
        raise AlexDSLError(f"error: the cupy backend is not available ({error})") from None
    device = "cuda" if backend.cuda_available() else "cpu"
    out = {}
    for name in _each_layer(layers):
        sub = subnetwork(network, name)
        executor = backend.compile(sub, _sub_weights(sub, weights), device=device)
        result = executor(*_feeds_for(sub, feeds))
        out[name] = np.asarray(result[0] if isinstance(result, tuple) else result)
    return out


def run_onnx(network: Network, layers: list[str], weights: Mapping[str, np.ndarray],
             feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        import onnxruntime as ort
        from onnx import helper
    except ImportError:
        raise AlexDSLError(f"error: comparing with ONNX needs onnx and onnxruntime: {install_command('onnx')}"
                           ) from None
    from alexdsl.interop.onnx import export_onnx

    aliases: dict[str, str] = {}
    model = export_onnx(network, weights, aliases=aliases)  # checked (full_check): a broken model is an error
    produced = {o for node in model.graph.node for o in node.output}
    present = {o.name for o in model.graph.output}
    # a layer's value: its own, or one of another name that a node computes (a param's <layer>.expanded)
    wanted = {name: name if name in produced else aliases[name] for name in layers
              if name in produced or aliases.get(name) in produced}
    for value in dict.fromkeys(wanted.values()):
        if value not in present:
            model.graph.output.append(helper.make_empty_tensor_value_info(value))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, {i.name: feeds[i.name] for i in session.get_inputs()})
    values = dict(zip(names, results))
    out = {name: values[value] for name, value in wanted.items()}
    for name in layers:  # a layer with no node of its own (dropout) is its input's value
        if name not in out and name not in produced and network.layer(name).inputs:
            source = network.layer(name).inputs[0]
            if source in values:
                out[name] = values[source]
            elif source in out:
                out[name] = out[source]
    return out


def run_reference(network: Network, layers: list[str], weights: Mapping[str, np.ndarray],
                  feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from alexdsl.interop.reference import run_reference as interpret

    values = interpret(network, weights, feeds)
    return {name: values[name] for name in layers if name in values}


RUNNERS: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "reference": run_reference, "torch": run_torch, "cupy": run_cupy, "onnx": run_onnx,
}


def random_feed(layer: Any, batch: int, rng: np.random.Generator) -> np.ndarray:
    """A random batch for the input ``layer``: standard normal floats, or int64 token ids below the input's
    declared vocab (below 2 when it declares none)."""
    shape = (batch, *layer.shape)
    if layer.is_tokens:
        return rng.integers(0, layer.attrs.get("vocab") or 2, shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(np.float32)


@dataclass
class Row:
    layer: str
    op: str
    shape: tuple[int, ...]
    diffs: dict[str, tuple[float, float] | None]  # backend -> (max abs, max rel) vs the baseline


def compare(network: Network, backends: list[str], *, weights: Mapping[str, np.ndarray] | None = None,
            batch: int = 2, seed: int = 0, layers: list[str] | None = None) -> list[Row]:
    """Run ``backends`` (the first is the baseline) and diff every compared layer."""
    if len(backends) < 2:
        raise AlexDSLError("error: compare needs at least two backends, e.g. --backends reference,onnx")
    unknown = [b for b in backends if b not in RUNNERS]
    if unknown:
        raise AlexDSLError(f"error: unknown backend '{unknown[0]}'; choose from {', '.join(BACKENDS)}")
    chosen = compared_layers(network)
    if layers:
        missing = [name for name in layers if name not in chosen]
        if missing:
            network.layer(missing[0])  # raises with a did-you-mean for a name not in the network
            raise AlexDSLError(f"error: layer '{missing[0]}' is not compared (an input, a loss, a metric or "
                               "a train-only layer)")
        chosen = [name for name in chosen if name in layers]
    if weights is None:
        from alexdsl.interop.onnx import initial_weights

        weights = initial_weights(network, seed)
    rng = np.random.default_rng(seed)
    feeds = {name: random_feed(network.layer(name), batch, rng) for name in network.data_inputs}
    results = {}
    for backend in backends:
        with busy(backend):
            results[backend] = RUNNERS[backend](network, chosen, weights, feeds)
    base = results[backends[0]]
    rows = []
    for name in chosen:
        layer = network.layer(name)
        diffs: dict[str, tuple[float, float] | None] = {}
        for backend in backends[1:]:
            got, want = results[backend].get(name), base.get(name)
            if got is None or want is None:
                diffs[backend] = None
                continue
            got = np.asarray(got, dtype=np.float64)
            if got.shape[:1] == (1,) and got.shape[1:] == want.shape[1:]:  # a layer computed from no input: one
                got = np.broadcast_to(got, want.shape)  # sample, broadcast over the batch
            got = got.reshape(want.shape)
            delta = float(np.abs(got - want).max()) if want.size else 0.0
            scale = float(np.abs(want).max()) if want.size else 0.0
            diffs[backend] = (delta, delta / scale if scale > 0 else delta)
        rows.append(Row(name, layer.op, layer.shape, diffs))
    return rows


def render_rows(rows: list[Row], backends: list[str]) -> str:
    header = ["layer", "op", "shape"] + [f"{b} vs {backends[0]} (abs / rel)" for b in backends[1:]]
    table = [header]
    for row in rows:
        cells = [row.layer, row.op, format_shape(row.shape)]
        for backend in backends[1:]:
            diff = row.diffs.get(backend)
            cells.append("-" if diff is None else f"{diff[0]:.2e} / {diff[1]:.2e}")
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def worst(rows: list[Row]) -> float:
    return max((d[1] for row in rows for d in row.diffs.values() if d is not None), default=0.0)

