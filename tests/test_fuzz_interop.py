"""Fuzzing import and export: token-aware mutants of prototxt files, and the round trip of mutated sources.

The seeds are the seed document's AlexNet (tests/data/alexnet_seed.prototxt, with deploy inputs)
and the prototxt export of every example that Caffe can express. A mutant deletes, repeats,
swaps or replaces tokens, or splices in a hostile snippet (deep nesting, huge or non-finite
numbers, escapes, legacy layers, a truncation). Each must import into alexdsl source that
builds, or raise AlexDSLError with located diagnostics (never another exception), within
HANG_SECONDS. Every accepted mutant of an example (tests/adsl_mutations.py) must come back from
source -> IR -> JSON -> IR -> source as the same network. A seeded, bounded sample runs in CI
(a few seconds).
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from adsl_mutations import adsl_inputs, deadline

import alexdsl
from alexdsl.errors import AlexDSLError
from alexdsl.interop.caffe import import_prototxt
from alexdsl.interop.caffe_export import export_prototxt
from alexdsl.interop.writer.flat import network_to_source

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261129
MUTANTS_PER_SEED = 100
HANG_SECONDS = 10
SECONDS_PER_LAYER = 0.002  # linear work on a big accepted mutant (8,000 chained layers) is not a hang

DEPLOY = 'name: "AlexNet"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 227 dim: 227 }\n'
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|\s+|[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?'
                    r"|[A-Za-z_][A-Za-z0-9_]*|.", re.S)
PIECES = [
    "{", "}", ":", "<", ">", ";", ",", "[", "]", "0", "-1", "1", "4294967296", str(2**63), "9" * 400, "1e999",
    "3.5e38", "nan", "inf", "-inf", ".5", "1e-320", "true", "MAX", "AVE", "FLOOR", "TRAIN", "TEST", '"data"',
    '"label"', '"conv1"', '"\\n"', '"\\x"', '"\\377\\376"', '"é"', "'single'", '"', "layer", "layers", "bottom",
    "top", "type", "name", "param", "include", "num_output", "kernel_size", "pad", "stride", "group", "dim",
    '"Convolution"', '"Scale"', '"Data"', '"Input"', '"SoftmaxWithLoss"', '"Accuracy"', '"Crop"', "\ufeff", "\x00",
]
SNIPPETS = [
    "a { " * 2000 + "}" * 2000,
    "a { " * 150,
    'layer { name: "x" type: "ReLU" bottom: "nowhere" top: "x" }\n',
    'layers { name: "old" type: CONVOLUTION }\n',
    'layer { name: "d" type: "Data" top: "data" top: "label" transform_param { crop_size: 4294967295 } }\n',
    'input: "data2"\ninput_shape { dim: 1 dim: 3 dim: ' + "9" * 30 + " dim: 8 }\n",
    'layer { name: "s" type: "Scale" bottom: "conv1" top: "conv1" }\n',
    'layer { name: "l" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "fc8" top: "l" }\n',
    "# " + "x" * 10000 + "\n",
    'name: "' + "\\n" * 50 + '"\n',
]


@functools.cache
def seeds() -> dict[str, str]:
    """The prototxts mutants start from: the seed AlexNet (closed) and each example Caffe can express."""
    from test_caffe_import import repaired, seed_text

    out = {"alexnet_seed.prototxt": DEPLOY + repaired(seed_text())}
    for path in sorted((ROOT / "examples").glob("*.adsl")):
        try:
            out[path.stem + ".prototxt"] = export_prototxt(alexdsl.load(path))
        except AlexDSLError:
            continue  # an op Caffe cannot say (the export refuses it, with its own test)
    return out


def mutate(rng: random.Random, text: str) -> str:
    """One to four token-level edits, or a hostile snippet spliced in, or a truncation."""
    tokens = _TOKEN.findall(text)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(tokens))
        kind = rng.random()
        if kind < 0.2:
            del tokens[where]
        elif kind < 0.35:
            tokens.insert(where, tokens[where])
        elif kind < 0.5:
            other = rng.randrange(len(tokens))
            tokens[where], tokens[other] = tokens[other], tokens[where]
        elif kind < 0.8:
            tokens[where] = rng.choice(PIECES)
        elif kind < 0.95:
            tokens.insert(where, "\n" + rng.choice(SNIPPETS))
        else:
            del tokens[where:]
        if not tokens:
            tokens = [""]
    return "".join(tokens)


def prototxt_inputs(seed: int) -> Iterator[tuple[str, str]]:
    """Endless (name, mutant) pairs, reproducible from ``seed``."""
    rng = random.Random(seed)
    sources = seeds()
    names = sorted(sources)
    for i in itertools.count():
        name = rng.choice(names)
        yield f"{name}#{seed}.{i}", mutate(rng, sources[name])


def test_seeds_import() -> None:
    assert len(seeds()) >= 4
    for name, text in seeds().items():
        alexdsl.parse(import_prototxt(text, name))


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_mutated_prototxt_imports_or_gives_located_errors(seed: int) -> None:
    outcomes = {"imported": 0, "refused": 0}
    inputs = prototxt_inputs(seed)
    for _ in range(MUTANTS_PER_SEED):
        name, text = next(inputs)
        try:
            with deadline(HANG_SECONDS):
                source = import_prototxt(text, name)
                alexdsl.parse(source, name + ".adsl")
            outcomes["imported"] += 1
        except AlexDSLError as error:
            assert error.errors, name
            for diagnostic in error.errors:
                assert diagnostic.span is not None or diagnostic.path or diagnostic.message.startswith(
                    "the imported network"), f"{name}: unlocated: {diagnostic.message}"
            outcomes["refused"] += 1
        except Exception as error:  # noqa: BLE001 - the point: report the input that crashed
            pytest.fail(f"{type(error).__name__} on {name}: {error}\n--- input:\n{text[:3000]}")
    assert outcomes["imported"] and outcomes["refused"], outcomes  # the sample holds both kinds


def same_network(a: alexdsl.Network, b: alexdsl.Network) -> bool:
    params = [{layer.name: dict(layer.params) for layer in n.layers()} for n in (a, b)]
    return (a.name, a.description, a.solver, a.preprocess, a.shapes, a.state_keys(), params[0]) == (
        b.name, b.description, b.solver, b.preprocess, b.shapes, b.state_keys(), params[1])


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_accepted_mutants_come_back_from_json_as_source(seed: int) -> None:
    accepted = 0
    for name, text in itertools.islice(adsl_inputs(seed), MUTANTS_PER_SEED):
        try:
            network = alexdsl.parse(text, name)
        except AlexDSLError:
            continue
        with deadline(HANG_SECONDS + SECONDS_PER_LAYER * len(network)):
            source = network_to_source(alexdsl.from_json(network.to_json(), name + ".json"), name + ".json")
            assert same_network(alexdsl.parse(source, name + ".adsl"), network), name
        accepted += 1
    assert accepted
