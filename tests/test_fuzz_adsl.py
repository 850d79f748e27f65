"""Fuzzing the front end: grammar-aware mutants of every example (tests/adsl_mutations.py).

A bounded, seeded sample runs in CI; ``python benchmarks/fuzz.py --minutes N --out DIR`` runs the
same generators for longer and keeps every crashing input. Each mutant must give a network or an
AlexDSLError (never another exception), within 10 seconds; an accepted one must survive the JSON
round trip and the formatter.
"""

from __future__ import annotations

import itertools

import pytest
from adsl_mutations import FUZZ_MAX_LAYERS, adsl_inputs, check_round_trips, deadline, examples, mutate, tokens

import alexdsl
from alexdsl.errors import AlexDSLError

SEED = 20260914
MUTANTS_PER_SEED = 60  # a few seconds in all
HANG_SECONDS = 10


def test_tokens_give_the_source_back() -> None:
    for text in examples().values():
        assert "".join(tokens(text)) == text


def test_mutants_differ_from_their_example() -> None:
    import random

    rng = random.Random(SEED)
    text = examples()["alexnet.adsl"]
    assert sum(mutate(rng, text) != text for _ in range(50)) >= 45


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_mutated_sources_give_a_network_or_a_located_error(seed: int) -> None:
    accepted = 0
    for name, text in itertools.islice(adsl_inputs(seed), MUTANTS_PER_SEED):
        try:
            with deadline(HANG_SECONDS):
                network = alexdsl.parse(text, name, max_layers=FUZZ_MAX_LAYERS)
                check_round_trips(network, text, name)
            accepted += 1
        except AlexDSLError as error:
            assert error.diagnostics, name
            for diagnostic in error.errors:
                assert diagnostic.span is not None or diagnostic.path, f"{name}: unlocated: {diagnostic.message}"
        except Exception as error:  # noqa: BLE001 - the point: report the input that crashed
            pytest.fail(f"{type(error).__name__} on a mutant of {name} (seed {seed}): {error}\n"
                        f"--- input:\n{text[:2000]}")
    assert 0 < accepted < MUTANTS_PER_SEED  # the sample holds both kinds
