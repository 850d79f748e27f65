"""Benchmark: generating with GPT-2, tokens per second and the time per new token at two context lengths.

    python benchmarks/generate.py                                  # executor and torch eager, cached and not
    python benchmarks/generate.py --contexts 64 512 --steps 16 --rounds 3
    python benchmarks/generate.py --sides hf torch   # (a venv with transformers) Hugging Face's GPT2LMHeadModel

Batch 1, one thread on every side: the executor through ``ALEXDSL_NUM_THREADS=1`` and threadpoolctl (its
BLAS), torch through ``torch.set_num_threads(1)``. Times are CPU seconds of the process
(``time.process_time``), so that other work on a shared machine slows them less than wall time; the
machine's load (``os.getloadavg``) is printed with them.

A new token at context ``c`` (``c`` tokens before it) costs, on each side:

* ``executor`` / ``torch``: one step of alexdsl's key/value-cached decoder (``alexdsl.generation.decoder``) at
  offset ``c``, after a prefill of ``c`` tokens: the mean over ``--steps`` consecutive steps, best of ``--rounds``;
* ``executor-nocache`` / ``torch-nocache``: a forward pass over all ``c + 1`` tokens (what generating without a
  cache does per token), best of ``--rounds``;
* ``hf``: Hugging Face's ``GPT2LMHeadModel`` (random weights, its own ``past_key_values``), as ``executor``.

Every alexdsl side runs the same random weights (the fillers', seed 0). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ["ALEXDSL_NUM_THREADS"] = "1"  # before alexdsl's thread pool reads it

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import alexdsl  # noqa: E402
from alexdsl.generation import Step, decoder, recomputer  # noqa: E402
from alexdsl.interop.onnx import initial_weights  # noqa: E402

SIDES = ("executor", "executor-nocache", "torch", "torch-nocache", "hf")
VOCAB = 50257


def _gpt2(length: int) -> alexdsl.Network:
    return alexdsl.load(str(ROOT / "examples" / "gpt2.adsl"), input_shapes={"ids": (length,)})


def _cpu_seconds(run: Callable[[], object]) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def cached_step_time(step: Step, ids: np.ndarray, context: int, steps: int, rounds: int) -> float:
    """CPU seconds per new token at ``context``: a prefill of ``context`` tokens, then ``steps`` single steps from
    offset ``context`` (the mean), best of ``rounds`` (each round writes the same cache positions again)."""
    step(ids[:, :context], 0)

    def steps_from_context() -> None:
        for offset in range(context, context + steps):
            step(ids[:, offset:offset + 1], offset)

    return min(_cpu_seconds(steps_from_context) for _ in range(rounds)) / steps


def full_pass_time(step: Step, ids: np.ndarray, context: int, rounds: int) -> float:
    """CPU seconds of a forward pass over ``context + 1`` tokens, best of ``rounds``."""
    return min(_cpu_seconds(lambda: step(ids[:, :context + 1], 0)) for _ in range(rounds))


def hf_step_time(ids: np.ndarray, context: int, steps: int, rounds: int) -> float:
    """:func:`cached_step_time` for Hugging Face's GPT2LMHeadModel with its own cache (cropped back to the context
    after each round)."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    tokens = torch.from_numpy(ids)
    with torch.no_grad():
        past = model(tokens[:, :context], use_cache=True).past_key_values

        def steps_from_context() -> None:
            cache = past
            for offset in range(context, context + steps):
                cache = model(tokens[:, offset:offset + 1], past_key_values=cache, use_cache=True).past_key_values
            cache.crop(-steps)  # the cache grows in place: back to the context

        return min(_cpu_seconds(steps_from_context) for _ in range(rounds)) / steps


def measure(sides: list[str], contexts: list[int], steps: int, rounds: int) -> dict[str, dict[int, float]]:
    """CPU seconds per new token, by side and context."""
    longest = max(contexts) + steps
    ids = np.random.default_rng(0).integers(0, VOCAB, (1, longest), dtype=np.int64)
    times: dict[str, dict[int, float]] = {}
    weights = initial_weights(_gpt2(longest), seed=0) if set(sides) - {"hf"} else {}
    for side in sides:
        backend = "torch" if side.startswith("torch") else "cupy"
        if side == "hf":
            times[side] = {c: hf_step_time(ids, c, steps, rounds) for c in contexts}
        elif side.endswith("-nocache"):
            times[side] = {c: full_pass_time(recomputer(_gpt2(c + 1), weights, backend), ids, c, rounds)
                           for c in contexts}
        else:
            step = decoder(_gpt2(longest), weights, backend)
            times[side] = {c: cached_step_time(step, ids, c, steps, rounds) for c in contexts}
        print(f"{side:17s}" + "".join(f"  context {c}: {1e3 * t:8.2f} ms/token ({1 / t:6.1f} tokens/s)"
                                      for c, t in times[side].items()), flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=[s for s in SIDES if s != "hf"])
    parser.add_argument("--contexts", nargs="+", type=int, default=[64, 512])
    parser.add_argument("--steps", type=int, default=16, help="new tokens timed per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure; the best is kept")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print(f"gpt2, batch 1, one thread; CPU time; load before: {os.getloadavg()}; torch {torch.__version__}, "
          f"numpy {np.__version__}", flush=True)
    with threadpool_limits(1):
        times = measure(args.sides, args.contexts, args.steps, args.rounds)
    load = os.getloadavg()
    first, last = min(args.contexts), max(args.contexts)
    for side, by_context in times.items():
        print(f"{side}: per-token time at context {last} / at {first}: {by_context[last] / by_context[first]:.2f}")
    print(f"load after: {load}")
    print(json.dumps({"load_after": load, "seconds_per_token": times, "steps": args.steps, "rounds": args.rounds}))


if __name__ == "__main__":
    main()
