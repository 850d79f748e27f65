"""Text generation with a causal language model: greedy, or sampled with a temperature and top-k.

The network has one ``tokens`` input and one output of scores over the vocabulary (L x vocab). It is
compiled once, at the length of the prompt plus the new tokens: causal attention lets no position see a
later one, so the scores at position t do not depend on the padding after it. Each step runs the whole
sequence (there is no key/value cache yet: a step costs a full forward pass).

>>> import alexdsl
>>> net = alexdsl.parse("input ids: tokens(8, vocab=5)\\ne: ids -> embedding(5, 5)\\n")
>>> weights = {"e.weight": __import__("numpy").eye(5, dtype="float32")[[1, 2, 3, 4, 0]]}
>>> generate(net, weights, [0], 4)  # each token's scores peak at the next id
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy

from alexdsl.errors import AlexDSLError
from alexdsl.ir.network import Network


def _tokens_input(network: Network) -> str:
    names = [name for name in network.data_inputs if network.layer(name).is_tokens]
    if len(names) != 1 or len(network.data_inputs) != 1:
        raise AlexDSLError("error: generate needs a network with one input, of token ids (input ids: tokens(N))")
    return names[0]


def _scorer(network: Network, weights: Mapping[str, numpy.ndarray], backend: str) -> Callable[[numpy.ndarray], Any]:
    """The network's scores (1, L, vocab) for ids (1, L) on ``backend``."""
    if backend == "torch":
        import torch

        from alexdsl.backends.torch import build, load_weights

        module = build(network).eval()
        load_weights(module, {key: torch.from_numpy(numpy.ascontiguousarray(value)) for key, value in weights.items()})

        def score(ids: numpy.ndarray) -> numpy.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(ids)).numpy()

        return score
    from alexdsl.backends.executor import compile as compile_executor

    return compile_executor(network, weights, device="cpu")


def choose(scores: numpy.ndarray, temperature: float, top_k: int | None, rng: numpy.random.Generator) -> int:
    """The next token: the highest score (``temperature`` 0), else a draw from softmax(scores / temperature)
    over the ``top_k`` highest scores (all of them when None)."""
    if temperature <= 0:
        return int(numpy.argmax(scores))
    scaled = scores.astype(numpy.float64) / temperature
    if top_k is not None and top_k < len(scaled):
        threshold = numpy.partition(scaled, -top_k)[-top_k]
        scaled = numpy.where(scaled < threshold, -numpy.inf, scaled)
    probabilities = numpy.exp(scaled - scaled.max())
    probabilities /= probabilities.sum()
    return int(rng.choice(len(probabilities), p=probabilities))


def generate(network: Network, weights: Mapping[str, numpy.ndarray], ids: list[int], max_new_tokens: int, *,
             backend: str = "cupy", temperature: float = 0.0, top_k: int | None = None, seed: int = 0,
             rebuild: Callable[[int], Network] | None = None) -> list[int]:
    """The prompt ``ids`` followed by ``max_new_tokens`` generated tokens.

    ``network`` is compiled at its declared length unless ``rebuild(length)`` gives the network at the
    length the prompt and the new tokens need (``alexdsl.load(path, input_shapes=...)``).
    """
    name = _tokens_input(network)
    longest = network.layer(name).shape[0]
    length = len(ids) + max_new_tokens
    if not ids:
        raise AlexDSLError("error: generate needs a prompt of at least one token id")
    if length > longest:
        raise AlexDSLError(f"error: the prompt ({len(ids)} tokens) and {max_new_tokens} new tokens make {length}, "
                           f"more than the {longest} tokens '{name}' declares")
    vocab = network.layer(name).attrs.get("vocab")
    if vocab is not None and any(not 0 <= i < vocab for i in ids):
        raise AlexDSLError(f"error: a prompt id is outside the vocabulary (0 to {vocab - 1})")
    if rebuild is not None and length != longest:
        network = rebuild(length)
    compiled_length = network.layer(name).shape[0]
    score = _scorer(network, weights, backend)
    rng = numpy.random.default_rng(seed)
    tokens = numpy.zeros((1, compiled_length), dtype=numpy.int64)
    tokens[0, :len(ids)] = ids
    for position in range(len(ids), length):
        scores = numpy.asarray(score(tokens))
        if scores.ndim != 3 or scores.shape[1] != compiled_length:
            raise AlexDSLError(f"error: generate needs scores per token (L x vocab); {network.name}'s output is "
                               f"{'x'.join(map(str, scores.shape[1:]))}")
        tokens[0, position] = choose(scores[0, position - 1], temperature, top_k, rng)
    return [int(t) for t in tokens[0, :length]]
