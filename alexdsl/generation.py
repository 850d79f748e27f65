"""Text generation with a causal language model: greedy, or sampled with a temperature and top-k.

The network has one ``tokens`` input and one output of scores over the vocabulary (L x vocab). It is
compiled once, at the length of the prompt plus the new tokens, as a key/value-cached decoder
(:mod:`alexdsl.backends.decoding`): a prefill pass runs the prompt, then each new token runs alone at its
position, its causal attention reading the keys and values of the tokens before it from caches that the
decoder holds (the executor's memory plan counts them; the torch module's ``new_cache`` makes them). A step
costs the same at every position but for attention's reading of the cache.

A network with a layer that mixes tokens other than positions, rope and causal sdpa (a non-causal attention,
a softmax over the tokens) cannot be cached: it generates by rerunning the whole sequence for each new token,
which gives the same tokens (causal attention lets no position see a later one, so the scores at position t
do not depend on the padding after it), and ``note`` is told why.

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

from alexdsl.backends.decoding import NotCacheable
from alexdsl.errors import AlexDSLError
from alexdsl.ir.network import Network


def _tokens_input(network: Network) -> str:
    names = [name for name in network.data_inputs if network.layer(name).is_tokens]
    if len(names) != 1 or len(network.data_inputs) != 1:
        raise AlexDSLError("error: generate needs a network with one input, of token ids (input ids: tokens(N))")
    return names[0]


Step = Callable[[numpy.ndarray, int], numpy.ndarray]
"""Scores (N, L, vocab) of the token ids (N, L) at positions ``offset`` on: ``step(ids, offset)``."""


def _torch_module(network: Network, weights: Mapping[str, numpy.ndarray], decoder: bool) -> Any:
    import torch

    from alexdsl.backends.torch import build, load_weights

    module = build(network, decoder=decoder).eval()
    load_weights(module, {key: torch.from_numpy(numpy.ascontiguousarray(value)) for key, value in weights.items()})
    return module


def decoder(network: Network, weights: Mapping[str, numpy.ndarray], backend: str) -> Step:
    """The network's key/value-cached decoder on ``backend``: each call runs only the new tokens, over the keys
    and values of earlier calls (offset 0 starts a sequence anew); a
    :class:`~alexdsl.backends.decoding.NotCacheable` error when the network cannot be cached."""
    if backend == "torch":
        import torch

        module = _torch_module(network, weights, decoder=True)
        caches: dict[str, Any] = {}

        def step(ids: numpy.ndarray, offset: int) -> numpy.ndarray:
            if offset == 0:
                caches.clear()
                caches.update(module.new_cache(ids.shape[0]))
            with torch.no_grad():
                return module.decode(torch.from_numpy(ids), offset, caches).numpy()

        return step
    from alexdsl.backends.executor import compile_decoder

    return compile_decoder(network, weights, device="cpu")


def recomputer(network: Network, weights: Mapping[str, numpy.ndarray], backend: str) -> Step:
    """Without a cache: each call reruns the whole sequence up to its new tokens (padded to the compiled length)
    and returns the new tokens' scores."""
    if backend == "torch":
        import torch

        module = _torch_module(network, weights, decoder=False)

        def forward(ids: numpy.ndarray) -> numpy.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(ids)).numpy()
    else:
        from alexdsl.backends.executor import compile as compile_executor

        forward = compile_executor(network, weights, device="cpu")
    tokens = numpy.zeros((1, network.layer(_tokens_input(network)).shape[0]), dtype=numpy.int64)

    def step(ids: numpy.ndarray, offset: int) -> numpy.ndarray:
        end = offset + ids.shape[1]
        tokens[:, offset:end] = ids
        scores = numpy.asarray(forward(tokens))
        return scores[:, offset:end] if scores.ndim == 3 and scores.shape[1] == tokens.shape[1] else scores

    return step


def _stepper(network: Network, weights: Mapping[str, numpy.ndarray], backend: str, cache: bool,
             note: Callable[[str], None] | None) -> Step:
    """The decoder when ``cache`` is asked for and the network allows it, else the recomputer (with a note)."""
    if cache:
        try:
            return decoder(network, weights, backend)
        except NotCacheable as error:
            if note is not None:
                reason = str(error).splitlines()[0].split("error: ", 1)[-1]
                note(f"note: {network.name} generates without a key/value cache, rerunning the whole sequence for "
                     f"each new token: {reason}")
    return recomputer(network, weights, backend)


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
             rebuild: Callable[[int], Network] | None = None, cache: bool = True,
             note: Callable[[str], None] | None = None) -> list[int]:
    """The prompt ``ids`` followed by ``max_new_tokens`` generated tokens.

    ``network`` is compiled at its declared length unless ``rebuild(length)`` gives the network at the
    length the prompt and the new tokens need (``alexdsl.load(path, input_shapes=...)``). ``cache``: run a
    key/value-cached decoder (:func:`decoder`) where the network allows it, else rerun the whole sequence per
    token (:func:`recomputer`) and pass ``note`` one line saying why.
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
    step = _stepper(network, weights, backend, cache, note)
    rng = numpy.random.default_rng(seed)
    tokens = numpy.array([ids + [0] * max_new_tokens], dtype=numpy.int64)
    scores = step(tokens[:, :len(ids)], 0)
    if scores.ndim != 3 or scores.shape[1] != len(ids):
        raise AlexDSLError(f"error: generate needs scores per token (L x vocab); {network.name}'s output is "
                           f"{'x'.join(map(str, scores.shape[1:]))} for {len(ids)} tokens")
    for position in range(len(ids), length):
        tokens[0, position] = choose(scores[0, -1], temperature, top_k, rng)
        if position + 1 < length:
            scores = step(tokens[:, position:position + 1], position)
    return [int(t) for t in tokens[0]]
