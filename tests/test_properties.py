"""Property tests: random valid chains get the formula's shapes; mutated files fail cleanly."""

from __future__ import annotations

import random

from conftest import EXAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import alexdsl
from alexdsl.errors import AlexDSLError


@st.composite
def conv_chains(draw):
    size = draw(st.integers(8, 64))
    channels = draw(st.integers(1, 8))
    lines = [f"input x: {channels}x{size}x{size}"]
    expected = []
    for i in range(draw(st.integers(1, 5))):
        kernel = draw(st.integers(1, min(size, 7)))
        stride = draw(st.integers(1, 3))
        pad = draw(st.integers(0, kernel // 2))
        if draw(st.booleans()):
            out = draw(st.integers(1, 16))
            size = (size + 2 * pad - kernel) // stride + 1
            lines.append(f"l{i}: conv({out}, {kernel}, stride={stride}, pad={pad}) | relu")
            expected.append((f"l{i}", (out, size, size)))
        else:
            ceil = draw(st.booleans())
            span = size + 2 * pad - kernel
            new = (-(-span // stride) if ceil else span // stride) + 1
            if ceil and (new - 1) * stride >= size + pad:
                new -= 1
            size = new
            rounding = ", round=ceil" if ceil else ""
            lines.append(f"l{i}: maxpool({kernel}, stride={stride}, pad={pad}{rounding})")
            expected.append((f"l{i}", None))
        if size < 1:
            break
    return "\n".join(lines) + "\n", expected, size


@given(conv_chains())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_chains_follow_the_formula(case) -> None:
    text, expected, final = case
    if final < 1:
        try:
            alexdsl.parse(text)
        except AlexDSLError as error:
            assert "would be" in error.render()
        return
    net = alexdsl.parse(text)
    for name, shape in expected:
        if shape is not None:
            assert net.shapes[name] == shape
    assert net.shapes[expected[-1][0]][1] == final or expected[-1][1] is not None


MUTATIONS = ["", "(", ")", ",", "|", ":", "@", "->", "x", "0", "-1", "1e9", "conv", "{", "}", "\n", "#", '"',
             "repeat", "in", "=", "block", "input", "99999999999999999999"]


@given(st.sampled_from(sorted(EXAMPLES.glob("*.adsl"))), st.integers(0, 10_000), st.integers(0, 10_000),
       st.sampled_from(MUTATIONS))
@settings(max_examples=300, deadline=None)
def test_mutated_examples_raise_only_alexdsl_errors(path, position, length, insert) -> None:
    text = path.read_text()
    start = position % (len(text) + 1)
    end = min(len(text), start + length % 6)
    mutated = text[:start] + insert + text[end:]
    try:
        alexdsl.parse(mutated, "m.adsl")
    except AlexDSLError as error:
        assert error.render()


def test_many_random_deletions_raise_only_alexdsl_errors() -> None:
    rng = random.Random(1234)
    texts = [p.read_text() for p in sorted(EXAMPLES.glob("*.adsl"))]
    for _ in range(300):
        text = rng.choice(texts)
        tokens = text.split(" ")
        del tokens[rng.randrange(len(tokens))]
        try:
            alexdsl.parse(" ".join(tokens), "m.adsl")
        except AlexDSLError:
            pass
