"""Generation with a key/value cache: the decoders of the executor and the torch backend against the full forward.

A decoder runs a prompt once, then each new token alone over the keys and values that the earlier calls
cached (:mod:`alexdsl.backends.decoding`). Its scores equal the full forward's at every position, so greedy
and seeded sampled generation give the same tokens with and without the cache. Comparisons with Hugging
Face's own generate are in tests/test_language_models.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT

import alexdsl
from alexdsl.backends.decoding import NotCacheable
from alexdsl.generation import decoder, generate, recomputer
from alexdsl.interop.onnx import initial_weights

LENGTH = 16  # the compiled length of the step comparisons: a prompt of 5, then 11 single steps
PROMPT = [15, 11, 99, 3]
NEW_TOKENS = 12
RELATIVE = 1e-5
BACKENDS = ["cupy", "torch"]
MODELS = ["llama_tiny", pytest.param("gpt2", marks=pytest.mark.slow)]  # gpt2: 124M random weights


def _example(model: str, length: int) -> alexdsl.Network:
    return alexdsl.load(str(ROOT / "examples" / f"{model}.adsl"), input_shapes={"ids": (length,)})


def _weights(net: alexdsl.Network) -> dict[str, np.ndarray]:
    """Random weights from the network's fillers, the norms' scales around 1 rather than exactly 1."""
    weights = initial_weights(net, seed=1)
    rng = np.random.default_rng(2)
    return {key: value + 0.1 * rng.standard_normal(value.shape).astype(value.dtype)
            if key.endswith(("norm.weight", "ln_1.weight", "ln_2.weight", "ln_f.weight")) else value
            for key, value in weights.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", MODELS)
def test_each_cached_step_scores_as_the_full_forward(model: str, backend: str) -> None:
    """A prompt of 5 tokens, then 11 steps of one token: every position's scores within 1e-5 of the full
    forward's, relative to that position's largest score."""
    net = _example(model, LENGTH)
    weights = _weights(net)
    ids = np.random.default_rng(0).integers(0, 256, (1, LENGTH))
    want = recomputer(net, weights, backend)(ids, 0)
    step = decoder(net, weights, backend)
    got = np.concatenate([step(ids[:, :5], 0)] + [step(ids[:, t:t + 1], t) for t in range(5, LENGTH)], axis=1)
    assert got.shape == want.shape
    errors = np.abs(got - want).max(axis=-1) / np.abs(want).max(axis=-1)  # (1, LENGTH): one per position
    assert errors.max() < RELATIVE, errors


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", MODELS)
def test_greedy_tokens_with_the_cache_equal_those_without(model: str, backend: str) -> None:
    path = str(ROOT / "examples" / f"{model}.adsl")
    net = alexdsl.load(path)
    weights = _weights(net)

    def run(cache: bool) -> list[int]:
        return generate(net, weights, PROMPT, NEW_TOKENS, backend=backend, cache=cache,
                        rebuild=lambda length: alexdsl.load(path, input_shapes={"ids": (length,)}))

    cached = run(True)
    assert len(cached) == len(PROMPT) + NEW_TOKENS and cached[:len(PROMPT)] == PROMPT
    assert cached == run(False)


def test_both_backends_generate_the_same_greedy_tokens() -> None:
    net = _example("llama_tiny", 20)
    weights = _weights(net)
    assert generate(net, weights, PROMPT, NEW_TOKENS) == generate(net, weights, PROMPT, NEW_TOKENS, backend="torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_with_a_seed_is_reproducible_and_the_same_without_the_cache(backend: str) -> None:
    net = _example("llama_tiny", 20)
    weights = _weights(net)

    def sample(seed: int, cache: bool = True) -> list[int]:
        return generate(net, weights, PROMPT, NEW_TOKENS, backend=backend, temperature=0.9, top_k=50, seed=seed,
                        cache=cache)

    first = sample(7)
    assert sample(7) == first and sample(7, cache=False) == first
    assert sample(8) != first  # the seed matters: 12 draws among 50 tokens


UNCACHEABLE = """\
network Bidirectional
input ids: tokens(12, vocab=32)
e:   ids -> embedding(32, 8)
mix: sdpa(e, e, e, heads=2)
head: linear(32)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_network_that_mixes_tokens_generates_without_the_cache_and_says_why(backend: str) -> None:
    net = alexdsl.parse(UNCACHEABLE)
    weights = initial_weights(net, seed=0)
    with pytest.raises(NotCacheable, match=r"layer 'mix' \(sdpa\) mixes the tokens of the sequence: its cached "
                                           r"lowering declines it \(only causal self-attention is cached\)"):
        decoder(net, weights, backend)
    notes: list[str] = []
    got = generate(net, weights, [1, 2, 3], 5, backend=backend, note=notes.append)
    assert got == generate(net, weights, [1, 2, 3], 5, backend=backend, cache=False)
    assert notes == ["note: Bidirectional generates without a key/value cache, rerunning the whole sequence for "
                     "each new token: layer 'mix' (sdpa) mixes the tokens of the sequence: its cached lowering "
                     "declines it (only causal self-attention is cached)"]


@pytest.mark.parametrize(("layer", "why"), [
    ("pooled: e -> softmax", "pooled' (softmax) mixes the tokens of the sequence: it is not per token"),
    ("pooled: e -> chunk(2)\nx: pooled.0 -> linear(4)", "(channel_chunk) mixes the tokens"),
    ('pooled: e -> rearrange("l d -> d l")', "(rearrange) mixes the tokens"),
])
def test_a_layer_across_the_tokens_is_not_per_token(layer: str, why: str) -> None:
    net = alexdsl.parse("input ids: tokens(8, vocab=32)\ne: ids -> embedding(32, 8)\n" + layer + "\n")
    with pytest.raises(NotCacheable, match=why.replace("(", r"\(").replace(")", r"\)")):
        decoder(net, initial_weights(net, seed=0), "cupy")


def test_an_image_network_has_no_decoder() -> None:
    net = alexdsl.load(str(ROOT / "examples" / "lenet.adsl"))
    with pytest.raises(NotCacheable, match=r"needs a network with one input, of token ids"):
        decoder(net, initial_weights(net, seed=0), "torch")


def test_the_cli_notes_a_network_it_cannot_cache_on_stderr(tmp_path: Path) -> None:
    from alexdsl.cli.generate import generate_command

    source = tmp_path / "bidirectional.adsl"
    source.write_text(UNCACHEABLE)
    result = CliRunner().invoke(generate_command, [str(source), "--ids", "1,2,3", "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert "note: Bidirectional generates without a key/value cache" in result.stderr
    assert len(result.stdout.strip().split(",")) == 7
    cached = CliRunner().invoke(generate_command, [str(ROOT / "examples" / "llama_tiny.adsl"), "--ids", "1,2,3",
                                                   "--max-new-tokens", "4"])
    assert cached.exit_code == 0 and "key/value cache" not in cached.stderr


def test_the_executors_memory_plan_holds_the_caches() -> None:
    """Two layers, each with keys and values of 16 tokens x 64 features (after repeat_kv), in float32."""
    from alexdsl.backends.executor import compile_decoder

    net = _example("llama_tiny", LENGTH)
    step = compile_decoder(net, _weights(net), device="cpu")
    memory = step.memory(batch=2)
    assert memory["cache_bytes"] == 2 * 2 * 2 * LENGTH * 64 * 4
    assert memory["planned_bytes"] == memory["buffer_bytes"] + memory["cache_bytes"]
    assert "# Key/value caches per sample: 0.02 MiB in 2 layers." in type(step).__source__


def test_the_decoder_refuses_tokens_past_its_length_and_a_batch_it_holds_nothing_for() -> None:
    from alexdsl.backends.executor import compile_decoder
    from alexdsl.errors import AlexDSLError

    net = _example("llama_tiny", 8)
    step = compile_decoder(net, _weights(net), device="cpu")
    step(np.array([[1, 2, 3]]), 0)
    with pytest.raises(AlexDSLError, match="tokens 7 to 8 do not fit the 8 tokens the decoder holds"):
        step(np.array([[1, 2]]), 7)
    with pytest.raises(AlexDSLError, match="the caches hold no tokens for a batch of 2: start at offset 0"):
        step(np.array([[1], [2]]), 3)
    with pytest.raises(AlexDSLError, match=r"takes token ids, an integer array \(N, L\)"):
        step(np.array([[1.0]]), 3)


def test_the_decoder_sources_are_readable_and_the_executor_source_unchanged(tmp_path: Path) -> None:
    """A decoder is generated only on request: the plain executor's and torch module's sources have no trace
    of it, and the decoders' sources are ruff-clean."""
    from alexdsl.backends.executor import generate_source as executor_source
    from alexdsl.backends.torch.codegen import generate_source as torch_source

    for model in ("gpt2", "llama_tiny"):
        net = _example(model, LENGTH)
        plain = executor_source(net)
        assert "cached_sdpa" not in plain and "offset" not in plain and "Decoder" not in plain
        assert "def decode" not in torch_source(net) and "cached_sdpa" not in torch_source(net)
        (tmp_path / f"{model}_decoder.py").write_text(executor_source(net, decoder=True))
        (tmp_path / f"{model}_torch_decoder.py").write_text(torch_source(net, decoder=True))
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed: pip install -e '.[dev]'")
    result = subprocess.run(
        ["ruff", "check", "--isolated", "--line-length", "120", "--select", "E,F,W,B,I,UP", str(tmp_path)],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("cache", [True, False])
def test_a_network_without_scores_per_token_is_refused(cache: bool) -> None:
    from alexdsl.errors import AlexDSLError

    net = alexdsl.parse("network Positions\ninput ids: tokens(8, vocab=5)\npos: ids -> positions\n")
    with pytest.raises(AlexDSLError, match=r"generate needs scores per token \(L x vocab\); Positions's output is "
                                           r"3 for 3 tokens" if cache else r"Positions's output is 8 for 3 tokens"):
        generate(net, {}, [1, 2, 3], 2, cache=cache)
