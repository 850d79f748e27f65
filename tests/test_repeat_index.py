"""`repeat N as i:` and `repeat N first, then call`, and float arithmetic (issues 19 and 23)."""

from __future__ import annotations

import time

import pytest

import alexdsl
from alexdsl.errors import AlexDSLError
from alexdsl.fmt import format_source
from alexdsl.limits import DEFAULT_MAX_LAYERS

BLOCK = """input x: 8x16x16
block unit(c, p=0.0, stride=1) {
  conv: conv(c, 3, stride=stride, pad=1) | relu
  sd:   stochastic_depth(p, mode=row)
}
"""


def _error(text: str) -> AlexDSLError:
    with pytest.raises(AlexDSLError) as info:
        alexdsl.parse(text, "r.adsl")
    return info.value


def test_the_index_counts_from_zero_and_reaches_a_blocks_arguments() -> None:
    net = alexdsl.parse(BLOCK + "s: repeat 3 as i: unit(8, 0.1 * (i + 8) / 17)\n")
    assert [net.layer(f"s.{i}.sd").attrs["p"] for i in range(3)] == [0.1 * (i + 8) / 17 for i in range(3)]


def test_then_gives_the_first_instance_its_own_call() -> None:
    net = alexdsl.parse(BLOCK + "s: repeat 3 unit(16, stride=2), then unit(16)\n")
    assert [net.layer(f"s.{i}.conv").attrs["stride"] for i in range(3)] == [(2, 2), (1, 1), (1, 1)]
    assert net.shapes["s.2.sd"] == (16, 8, 8)


def test_index_and_then_together_and_with_plain_ops() -> None:
    net = alexdsl.parse(BLOCK + "s: repeat 3 as k: conv(8, 3, stride=2, pad=1), then unit(8, 0.05 * k)\n"
                                "t: repeat 2 as j: dropout(0.25 * (j + 1))\n")
    assert net.layer("s.0").op == "conv" and net.layer("s.2.sd").attrs["p"] == pytest.approx(0.1)
    assert [net.layer(f"t.{j}").attrs["p"] for j in range(2)] == [0.25, 0.5]


def test_the_same_layers_as_written_out() -> None:
    written = alexdsl.parse(BLOCK + "s.0: unit(16, 0.0, stride=2)\ns.1: unit(16, 0.1)\ns.2: unit(16, 0.2)\n")
    repeated = alexdsl.parse(BLOCK + "s: repeat 3 as i: unit(16, 0.1 * i, stride=2), then unit(16, 0.1 * i)\n")
    assert written.to_json() == repeated.to_json()


@pytest.mark.parametrize(("text", "message", "received"), [
    ("s: repeat 3 as i: dropout(0.5 / (2 - i))", "division by zero", "2 - i = 0"),
    ("s: repeat 2 as i: dropout(1e308 * 10.0 + i)", "the value is too large", "1e308 * 10.0"),
    ("s: repeat 2 as i: conv(8 / 2, 1)", "argument 'out' of conv has the wrong type", "8 / 2 = 4.0"),
    ("s: repeat 2 as i: conv(4, 3, stride=1 - i)", "argument 'stride' of conv must be at least 1", "1 - i = 0"),
    ("s: conv(4, 3, weight=gaussian(1 / 0))", "division by zero", "0 = 0"),
])
def test_arithmetic_mistakes_are_located(text: str, message: str, received: str) -> None:
    (diagnostic,) = _error(BLOCK + text + "\n").errors
    assert diagnostic.message.startswith(message) and diagnostic.received == received
    assert diagnostic.span.line == 6


def test_an_index_must_not_hide_a_block_parameter() -> None:
    error = _error("input x: 3x8x8\nblock b(c) {\n  r: repeat 2 as c: conv(c, 1)\n}\nu: b(4)\n")
    assert error.errors[0].message == "the repeat index 'c' has the name of a block parameter"


def test_ints_stay_exact_and_a_float_makes_a_float() -> None:
    # 2**53 + 1 - 2**53 is 1 in integers and 0 in floats
    net = alexdsl.parse("input x: 3x8x8\nc: conv(9007199254740993 - 9007199254740992, 1)\nd: dropout(0.2 * 3 / 11)\n")
    assert net.layer("c").attrs["out"] == 1 and net.layer("d").attrs["p"] == 0.2 * 3 / 11


def test_the_layer_limit_holds_before_an_indexed_repeat_expands() -> None:
    start = time.perf_counter()
    error = _error(BLOCK + "s: repeat 1000000000000 as i: unit(8, 0.0 * i)\n")
    assert "expands to" in error.errors[0].message
    assert time.perf_counter() - start < 60  # a hang guard (expanding first would never end), not a speed claim


@pytest.mark.parametrize("line", [
    "s: repeat 3 as i: unit(8, 0.1 * (i + 8) / 17)",
    "s: x -> repeat 2 unit(16, stride=2), then unit(16) @train",
    "s: repeat 3 as k: conv(8, 3, stride=2, pad=1), then unit(8, 0.05 * k / (k + 1))",
])
def test_fmt_round_trips_the_new_forms(line: str) -> None:
    text = BLOCK + "\n" + line + "\n"
    assert format_source(text) == text
    alexdsl.parse(text)


def test_an_index_that_sets_a_blocks_repeat_count_is_sized_per_instance() -> None:
    block = "input x: 3x8x8\nblock b(n) {\n  r: repeat n + 1 relu\n}\n"
    net = alexdsl.parse(block + "s: repeat 3 as i: b(i)\n")
    assert [layer.name for layer in net.layers()][1:] == ["s.0.r.0", "s.1.r.0", "s.1.r.1", "s.2.r.0", "s.2.r.1",
                                                         "s.2.r.2"]
    error = _error(block + "t: repeat 100000000 as i: b(i)\n")
    message = error.errors[0].message
    assert "expands to" in message and f"more than the limit of {DEFAULT_MAX_LAYERS:,}" in message
