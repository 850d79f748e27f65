"""Grammar-aware mutations of alexdsl sources and of IR JSON, shared by tests/test_fuzz_adsl.py
and benchmarks/fuzz.py (which runs the same generators for minutes and keeps what crashes).

Every generator takes a seeded :class:`random.Random`, so a run is reproducible from its seed.
"""

from __future__ import annotations

import copy
import json
import random
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import alexdsl
from alexdsl.fmt import format_source

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Layers a mutant may expand to: the default limit (alexdsl.limits.DEFAULT_MAX_LAYERS), which the
# front end, linear in layers, checks in seconds.
FUZZ_MAX_LAYERS = 20_000

# The lexical classes of the grammar, in the lexer's priority order; anything else is one character.
_TOKEN = re.compile(r"""
    (?P<comment>\#[^\n]*) | (?P<newline>\r?\n) | (?P<space>[ \t]+)
  | (?P<shape>[0-9]+(?:x[0-9]+)+) | (?P<float>-?(?:[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+))
  | (?P<int>-?[0-9]+) | (?P<string>"(?:[^"\\\n]|\\.)*") | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<arrow>->) | (?P<punct>.)
""", re.X)

NUMBERS = ["0", "-1", "1", "2", "65536", "1000000000", "1099511627776", str(2**63 - 1), str(2**63), str(2**64),
           "9" * 400, "1e999", "-1e999", "1e308", "1e-320", "0.0", "-0.5", "nan", "inf", "3x0x8", "1x1",
           "100000x100000x3"]
KEYWORDS = ["network", "input", "output", "defaults", "solver", "preprocess", "block", "repeat", "true", "false",
            "in", "out", "@train", "@test", "->", "|", ":", ",", "=", "(", ")", "{", "}", "\n", "x", "class(10)"]
UNICODE = ["\ufeff", "\u2028", "\u00e9", "\u0301", "\U0001f600", "\u200b", "\x00", "\x0c", "\r", "\t", "\\",
           "\ud7ff", "\uffff"]
SNIPPETS = [
    "\nr: repeat 1000000000000 relu\n",
    "\nblock z() {\n  p: z() | z()\n}\nq: z()\n",
    "\nblock e() {\n}\nqq: later -> e()\nlater: relu\n",
    "\nw: fc(1099511627776)\n",
    "\nv: conv(1000000000, 3)\n",
    "\nsolver(base_lr=" + "9" * 400 + ")\n",
    "\nk: relu\nk: relu\n",
    "\nq: cycle_b -> relu\ncycle_b: q -> relu\n",
]


def tokens(text: str) -> list[str]:
    """``text`` split into the grammar's tokens (whitespace and comments kept), so joining gives it back."""
    return [m.group(0) for m in _TOKEN.finditer(text)]


def examples() -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(EXAMPLES.glob("*.adsl"))}


def _significant(toks: list[str]) -> list[int]:
    return [i for i, t in enumerate(toks) if not t.isspace() and not t.startswith("#")] or [0]


def _delete(rng: random.Random, toks: list[str]) -> list[str]:
    i = rng.choice(_significant(toks))
    return toks[:i] + toks[i + 1:]


def _duplicate(rng: random.Random, toks: list[str]) -> list[str]:
    i = rng.choice(_significant(toks))
    return toks[:i] + [toks[i]] * rng.choice([2, 3, 50]) + toks[i + 1:]


def _swap(rng: random.Random, toks: list[str]) -> list[str]:
    places = _significant(toks)
    i, j = rng.choice(places), rng.choice(places)
    out = list(toks)
    out[i], out[j] = out[j], out[i]
    return out


def _number(rng: random.Random, toks: list[str]) -> list[str]:
    numbers = [i for i, t in enumerate(toks) if t[:1].isdigit() or t[:2].startswith("-")] or _significant(toks)
    out = list(toks)
    out[rng.choice(numbers)] = rng.choice(NUMBERS)
    return out


def _replace(rng: random.Random, toks: list[str]) -> list[str]:
    out = list(toks)
    out[rng.choice(_significant(toks))] = rng.choice(KEYWORDS + [t for t in toks if not t.isspace()])
    return out


def _nest(rng: random.Random, toks: list[str]) -> list[str]:
    depth = rng.choice([3, 63, 64, 65, 200, 600])
    numbers = [i for i, t in enumerate(toks) if t[:1].isdigit()] or _significant(toks)
    i = rng.choice(numbers)
    if rng.random() < 0.5:
        wrapped = "(" * depth + toks[i] + ", 1)" * depth  # tuples
    else:
        wrapped = "f(" * depth + toks[i] + ")" * depth  # calls
    return toks[:i] + [wrapped] + toks[i + 1:]


def _long_line(rng: random.Random, toks: list[str]) -> list[str]:
    n = rng.choice([200, 2000, 8000])  # up to about 100 KB on one line
    piece = rng.choice([" | relu", " | cnov", ", zz=1", "a", " # comment", " | conv(1, 1)"])
    i = rng.choice([i for i, t in enumerate(toks) if t.endswith("\n")] or [len(toks)])
    return toks[:i] + [piece * n] + toks[i:]


def _random_bytes(rng: random.Random, toks: list[str]) -> list[str]:
    i = rng.randrange(len(toks) + 1)
    noise = bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 64]))).decode("latin-1")
    return toks[:i] + [noise] + toks[i:]


def _unicode(rng: random.Random, toks: list[str]) -> list[str]:
    i = rng.randrange(len(toks) + 1)
    return toks[:i] + [rng.choice(UNICODE) * rng.choice([1, 3])] + toks[i:]


def _snippet(rng: random.Random, toks: list[str]) -> list[str]:
    i = rng.choice([i for i, t in enumerate(toks) if t.endswith("\n")] or [len(toks)])
    return toks[:i + 1] + tokens(rng.choice(SNIPPETS)) + toks[i + 1:]


def _splice(rng: random.Random, toks: list[str]) -> list[str]:
    other = tokens(rng.choice(list(examples().values())))
    i, j = sorted(rng.randrange(len(other) + 1) for _ in range(2))
    at = rng.randrange(len(toks) + 1)
    return toks[:at] + other[i:j] + toks[at:]


MUTATIONS: list[Callable[[random.Random, list[str]], list[str]]] = [
    _delete, _duplicate, _swap, _number, _replace, _nest, _long_line, _random_bytes, _unicode, _snippet, _splice]


def mutate(rng: random.Random, text: str) -> str:
    """``text`` after one to three random mutations."""
    toks = tokens(text)
    for _ in range(rng.choice([1, 1, 2, 3])):
        toks = rng.choice(MUTATIONS)(rng, toks) or toks
    return "".join(toks)


def adsl_inputs(seed: int) -> Iterator[tuple[str, str]]:
    """Endless (name, source) pairs: mutants of every example, in turn."""
    rng = random.Random(seed)
    sources = examples()
    while True:
        for name, text in sources.items():
            yield name, mutate(rng, text)


# IR JSON -------------------------------------------------------------------------------------

JSON_VALUES: list[Any] = [None, True, -1, 0, 2**63, 10**400, 1e308, "", "x", "\0pending", "../../etc/passwd",
                          "(8 if __import__('os').system('touch pwned') else 8)", [], {}, [1, 2], {"type": "x"},
                          "a\nsolver(base_lr=1)", [[[[[]]]]]]


def _json_paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_paths(item, path + (index,))


def mutate_json(rng: random.Random, text: str) -> str:
    """IR JSON with one to three values replaced, removed or duplicated (structure-aware)."""
    data = json.loads(text)
    for _ in range(rng.choice([1, 2, 3])):
        paths = [p for p in _json_paths(data) if p]
        path = rng.choice(paths)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        choice = rng.random()
        if choice < 0.6:
            parent[key] = copy.deepcopy(rng.choice(JSON_VALUES))  # never the same list in two places
        elif choice < 0.8:
            del parent[key]
        elif isinstance(parent, list):
            parent.insert(key, parent[key])
        else:
            parent[key + "_"] = parent[key]
    return json.dumps(data)


def json_inputs(seed: int) -> Iterator[tuple[str, str]]:
    """Endless (name, IR JSON) pairs: mutants of every example's IR."""
    rng = random.Random(seed)
    irs = {name: alexdsl.parse(text, name).to_json() for name, text in examples().items()}
    while True:
        for name, text in irs.items():
            yield name, mutate_json(rng, text)


# What must hold for an accepted source -----------------------------------------------------

def summary(network: alexdsl.Network) -> list[tuple]:
    """What a network means, without source positions: names, ops, arguments, inputs, shapes, parameters."""
    return [(layer.name, layer.op, repr(layer.attrs), layer.inputs, layer.shape, layer.phase,
             {k: (p.shape, str(p.filler), p.lr_mult, p.decay_mult) for k, p in layer.params.items()}, layer.buffers)
            for layer in network.layers()] + [(network.name, network.inputs, network.outputs)]


def check_round_trips(network: alexdsl.Network, text: str, file: str) -> None:
    """Source -> IR -> JSON -> IR keeps shapes and state keys; the formatted source is the same network."""
    again = alexdsl.from_json(network.to_json())
    assert again.shapes == network.shapes, "JSON round trip changed the shapes"
    assert again.state_keys() == network.state_keys(), "JSON round trip changed the state keys"
    formatted = alexdsl.parse(format_source(text, file), file, max_layers=FUZZ_MAX_LAYERS)
    assert summary(formatted) == summary(network), "the formatted source is a different network"


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in this (main) thread if the block runs past ``seconds``."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
