"""What every backend's key/value-cached decoder shares: which layers it runs as they are, and its refusal.

A decoder runs only the new tokens of a sequence, so a layer runs in it unchanged when each output token
depends on the same token of its inputs alone (:meth:`~alexdsl.ops.registry.OpDef.is_per_token`). The few
ops that mix tokens and know how to do it over a cache (positions, rope, causal sdpa) declare a ``decode``
lowering per backend; any other layer makes the network uncacheable (:class:`NotCacheable`), and generation
falls back to rerunning the whole sequence (:mod:`alexdsl.generation`).
"""

from __future__ import annotations

from typing import Any

from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.ops.registry import lookup


class NotCacheable(AlexDSLError):
    """The network cannot run as a key/value-cached decoder; the message says which layer and why."""


def is_per_token(layer: Any, input_shapes: list[tuple[int, ...]]) -> bool:
    """Whether ``layer`` runs unchanged on the new tokens alone."""
    op = lookup(layer.op)
    return op is not None and op.is_per_token(layer.attrs, input_shapes)


def not_cacheable(layer: Any, declined: bool) -> NotCacheable:
    """The located refusal of ``layer``: it mixes tokens and its op has no ``decode`` lowering, or has one that
    ``declined`` this layer."""
    why = ("its cached lowering declines it (only causal self-attention is cached)" if declined
           else "it is not per token and has no cached lowering")
    return NotCacheable([Diagnostic(
        "error", f"layer '{layer.name}' ({layer.op}) mixes the tokens of the sequence: {why}", layer.span,
        hint="a key/value cache needs every layer per token, apart from positions, rope and causal sdpa")])


def not_a_language_model() -> NotCacheable:
    """The refusal of a network whose inputs are not one sequence of token ids."""
    return NotCacheable("error: a key/value-cached decoder needs a network with one input, of token ids "
                        "(input ids: tokens(N))")
