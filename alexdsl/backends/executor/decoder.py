"""The base class of a generated key/value-cached decoder: a causal language model that runs only new tokens.

A decoder is generated from the same network as its executor (``lower(network, decoder=True)``), planned at
the network's declared length, the longest sequence it holds. Every activation has the sequence first, so a
call with ``length`` tokens carves ``length / longest`` of each planned buffer. Each causal ``sdpa`` keeps
its keys and values in a persistent cache of the longest sequence (``caches``, per sample), written at
``offset`` by each call: a prompt is run once (offset 0), then one call per new token (offset = the tokens
before it), which costs the same at every position but for attention's reading of the cache.

>>> import alexdsl, numpy as np
>>> from alexdsl.backends.executor import compile_decoder
>>> net = alexdsl.parse("input ids: tokens(8, vocab=5)\\ne: ids -> embedding(5, 4)\\nq: linear(4)\\n"
...                     "a: sdpa(q, q, q, heads=2, causal=true)\\n")
>>> decoder = compile_decoder(net, device="cpu")
>>> ids = np.array([[1, 2, 3]])
>>> prefix, last = decoder(ids[:, :2], 0), decoder(ids[:, 2:], 2)
>>> full = alexdsl.backends.executor.compile(net, device="cpu")(np.array([[1, 2, 3, 0, 0, 0, 0, 0]]))
>>> bool(np.allclose(np.concatenate([prefix, last], axis=1), full[:, :3], atol=1e-6))
True
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy

from alexdsl.backends.executor.executor import Executor, _error

ARENAS = 2  # the arenas kept: the prompt's length and a single new token's


class Decoder(Executor):
    """Runs the new tokens of a sequence over key/value caches. Subclasses are generated."""

    caches: ClassVar[dict[str, tuple[tuple[int, ...], ...]]] = {}  # sdpa layer -> per-sample key and value shapes

    def __init__(self, *args: Any, **kwargs: Any):
        self._arenas: dict[tuple[int, int], dict[str, Any]] = {}
        self.cache: dict[str, tuple[Any, ...]] = {}  # sdpa layer -> its keys and values (n, longest, features)
        self._cache_batch = 0
        super().__init__(*args, **kwargs)

    @property
    def longest(self) -> int:
        """The most tokens a sequence may hold: the declared length of the token input."""
        return next(iter(self.inputs.values()))[0]

    def arena(self, n: int, length: int | None = None) -> tuple[dict[str, Any], None]:  # type: ignore[override]
        """Views of the planned buffers for ``n`` sequences of ``length`` new tokens (the :data:`ARENAS` most
        recent shapes kept), after making :attr:`cache` hold ``n`` sequences."""
        length = self.longest if length is None else length
        if (n, length) not in self._arenas:
            while len(self._arenas) >= ARENAS:
                del self._arenas[next(iter(self._arenas))]
            xp, longest = self.xp, self.longest
            bufs = [xp.empty(n * (size // longest) * length, dtype=self.dtype) for size in self.buffers]
            self._arenas[(n, length)] = {
                name: bufs[buf][: n * length * math.prod(shape[1:])].reshape((n, length, *shape[1:]))
                for name, (buf, shape) in self.values.items()
            }
        if self._cache_batch != n:
            self.cache = {name: tuple(self.xp.zeros((n, *shape), dtype=self.dtype) for shape in shapes)
                          for name, shapes in self.caches.items()}
            self._cache_batch = n
        return self._arenas[(n, length)], None

    def __call__(self, ids: Any, offset: int = 0) -> Any:  # type: ignore[override]
        """The output (NumPy) for the token ids (N, L) at positions ``offset`` to ``offset + L - 1``, over the
        cached keys and values of the tokens before them (written by earlier calls with the same batch size)."""
        longest = self.longest
        shape = tuple(getattr(ids, "shape", ()))
        if len(shape) != 2 or shape[1] < 1 or numpy.dtype(getattr(ids, "dtype", "f")).kind not in "iu":
            raise _error("a decoder takes token ids, an integer array (N, L)", received=str(shape))
        if offset < 0 or offset + shape[1] > longest:
            raise _error(f"tokens {offset} to {offset + shape[1] - 1} do not fit the {longest} tokens the decoder "
                         "holds", hint="compile the network at a longer input (input_shapes)")
        if offset and self._cache_batch != shape[0]:
            raise _error(f"the caches hold no tokens for a batch of {shape[0]}: start at offset 0")
        result = self.forward(self.xp.asarray(ids).astype(self.dtype), offset)
        outs = tuple(o.copy() if self.xp is numpy else self.xp.asnumpy(o)
                     for o in (result if isinstance(result, tuple) else (result,)))
        return outs if isinstance(result, tuple) else outs[0]

    def memory(self, batch: int = 1) -> dict[str, int]:
        """:meth:`Executor.memory` at the longest sequence, with the caches (``cache_bytes``) planned too."""
        report = super().memory(batch)
        cached = sum(math.prod(shape) for shapes in self.caches.values() for shape in shapes)
        report["cache_bytes"] = cached * batch * self.dtype.itemsize
        report["planned_bytes"] += report["cache_bytes"]
        return report
