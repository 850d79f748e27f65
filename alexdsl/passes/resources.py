"""Memory a network needs: warnings for huge layers, errors for sizes past int64, and a refusal helper.

``check`` warns when a layer's parameters or one sample's activations, or the network's totals,
pass :data:`alexdsl.limits.LARGE_BYTES` (4 GiB). Commands that allocate call
:func:`require_memory` (or :func:`estimate_bytes`) first, so they refuse with a clear error
instead of dying in an allocator.

>>> import alexdsl
>>> net = alexdsl.parse("input x: 3x8x8\\nc: conv(4, 3)\\n")
>>> estimate_bytes(net, batch=2)
MemoryEstimate(parameters=448, buffers=0, activations=2688)
>>> format_bytes(6 * 1024**3)
'6.0 GiB'
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from alexdsl.errors import AlexDSLError, Diagnostic, DiagnosticSink
from alexdsl.ir.network import BYTES_PER_ELEMENT, Network
from alexdsl.limits import LARGE_BYTES, MAX_DIM, MAX_INT
from alexdsl.ops.registry import format_shape, numel


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of float32 parameters, buffers, and the activations of a batch (every layer's output kept)."""

    parameters: int
    buffers: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.buffers + self.activations


def format_bytes(count: int) -> str:
    """``count`` bytes in binary units, one decimal."""
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def estimate_bytes(network: Network, batch: int = 1) -> MemoryEstimate:
    """What holding ``network``'s weights and one forward pass over ``batch`` samples takes (a lower bound:
    training adds gradients and solver state, about two more copies of the parameters)."""
    layers = network.layers()
    return MemoryEstimate(
        parameters=BYTES_PER_ELEMENT * sum(layer.param_count for layer in layers),
        buffers=BYTES_PER_ELEMENT * sum(numel(shape) for layer in layers for shape in layer.buffers.values()),
        activations=sum(layer.activation_bytes(batch) for layer in layers),
    )


def available_memory() -> int | None:
    """Physical memory of this machine in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def require_memory(network: Network, batch: int, action: str, limit: int | None = None,
                   copies_of_parameters: int = 1) -> MemoryEstimate:
    """Raise AlexDSLError when ``action`` (e.g. "run", "train") would need more than ``limit`` bytes.

    ``limit`` defaults to the machine's physical memory. Training passes ``copies_of_parameters=3``
    (weights, gradients, momentum). Returns the estimate when it fits.
    """
    estimate = estimate_bytes(network, batch)
    needed = estimate.total + (copies_of_parameters - 1) * estimate.parameters
    limit = available_memory() if limit is None else limit
    if limit is not None and needed > limit:
        raise AlexDSLError([Diagnostic(
            "error", f"{action} {network.name} with batch {batch} needs about {format_bytes(needed)}, "
                     f"more than the {format_bytes(limit)} available",
            path=network.source_file,
            received=f"parameters {format_bytes(estimate.parameters * copies_of_parameters)}, "
                     f"activations {format_bytes(estimate.activations)}",
            hint="use a smaller batch or smaller layers")])
    return estimate


def check_resources(network: Network, sink: DiagnosticSink, file: str | None = None) -> None:
    """Errors for sizes that overflow int64 arithmetic, warnings for layers and totals past 4 GiB."""
    total_params = total_activations = 0
    for layer in network.layers():
        name, shape = layer.name, layer.shape
        if shape is None:
            continue
        elements = numel(shape)
        params = sum(numel(spec.shape) for spec in layer.params.values())
        dims = list(shape) + [d for spec in layer.params.values() for d in spec.shape]
        if max(elements, params) * BYTES_PER_ELEMENT > MAX_INT or max(dims, default=0) > MAX_DIM:
            sink.error(f"{name}: the layer is too large to compute", layer.span,
                       expected=f"dimensions of at most {MAX_DIM:,}, and at most "
                                f"{MAX_INT // BYTES_PER_ELEMENT:,} elements in an output or its parameters",
                       received=f"output {format_shape(shape)}, {params:,} parameters")
            continue
        total_params += layer.param_count  # a tied parameter counts once, at its owner
        total_activations += elements
        for what, count in (("its parameters need", params), ("one sample's output needs", elements)):
            if count * BYTES_PER_ELEMENT > LARGE_BYTES:
                sink.warning(f"{name}: {what} {format_bytes(count * BYTES_PER_ELEMENT)}", layer.span,
                             hint=f"more than {format_bytes(LARGE_BYTES)}; is a size argument too large?")
    for what, count in (("the network's parameters need", total_params),
                        ("one sample's activations need", total_activations)):
        if count * BYTES_PER_ELEMENT > LARGE_BYTES:
            sink.warning(f"{what} {format_bytes(count * BYTES_PER_ELEMENT)} in all", None, path=file,
                         hint=f"more than {format_bytes(LARGE_BYTES)}; running it needs at least this much memory")
