"""After a syntax error the parse resumes at the next statement, so one run reports every mistake."""

from __future__ import annotations

import random
import time

import pytest

import alexdsl
from alexdsl.errors import AlexDSLError
from alexdsl.syntax.parser import parse_module, parse_recovering


def _errors(text: str) -> list[tuple[int, str]]:
    with pytest.raises(AlexDSLError) as info:
        alexdsl.parse(text, "r.adsl")
    return [(d.span.line if d.span else 0, d.message) for d in info.value.errors]


def test_a_syntax_error_does_not_hide_an_unknown_op_before_it() -> None:
    text = "c1: cnov(16, 3)\ninput data: 3x32x32\nc2: relu\nc3: conv(16 3) | relu\nc4: relu\n"
    assert _errors(text) == [(1, "unknown op 'cnov'"), (4, "unexpected '3'")]


def test_what_a_broken_statement_defines_reports_nothing_more() -> None:
    # c2 is broken: c3 reads it by name and c4 reads it implicitly, and neither is reported.
    text = "input data: 3x32x32\nc2: conv(16 3)\nc3: c2 -> relu\nc4: relu | cnov\n"
    assert _errors(text) == [(2, "unexpected '3'"), (4, "unknown op 'cnov'")]


def test_a_broken_input_and_a_broken_block_report_nothing_more() -> None:
    text = "input data 3x32x32\nblock b(c) {\n  a: conv(c 3)\n}\nblock d(c) {\n  a: conv(c, 3\n}\nx: b(4) | relu\n"
    errors = _errors(text)
    assert [line for line, _ in errors][:2] == [1, 3]
    assert not any("no input" in message or "unknown" in message for _, message in errors)


def test_an_error_inside_a_block_resumes_inside_it() -> None:
    text = "input x: 3x8x8\nblock b(c) {\n  a: conv(c 3)\n  y: relu | cnov\n}\nz: b(4)\n"
    assert _errors(text) == [(3, "unexpected '3'"), (4, "unknown op 'cnov'")]


def test_a_stray_character_costs_its_line_only() -> None:
    text = "input x: 3x8x8\nz: relu\n$ junk\nw: relu | cnov\n"
    assert _errors(text) == [(3, "unexpected character '$'"), (4, "unknown op 'cnov'")]


def test_the_module_keeps_every_statement_that_parsed() -> None:
    module, diagnostics = parse_recovering("input x: 3x8x8\na: relu\nb: relu relu\nc: relu\n")
    assert [d.span.line for d in diagnostics] == [3]
    kinds = [type(s).__name__ for s in module.statements]
    assert kinds == ["InputStmt", "LayerStmt", "BrokenStmt", "LayerStmt"]
    assert module.statements[2].label.name == "b"
    with pytest.raises(AlexDSLError):
        parse_module("input x: 3x8x8\nb: relu relu\n")


@pytest.mark.parametrize("text", [
    "input x: 3x8x8\nc: " + "conv(" * 3000 + ")" * 3000 + "\n",
    "input x: 3x8x8\nc: " + "conv(" * 3000 + "\n",
    "".join(chr(random.Random(1).randrange(256)) for _ in range(100_000)),
    "".join(random.Random(2).choice("(){}|:,=x1a\n@-") for _ in range(200_000)),
])
def test_hostile_files_end_quickly_with_a_clean_error(text: str) -> None:
    start = time.perf_counter()
    with pytest.raises(AlexDSLError) as info:
        alexdsl.parse(text, "h.adsl")
    assert time.perf_counter() - start < 60  # a hang guard for the recovery loop, not a speed claim
    assert 1 <= len(info.value.errors) <= 101 and "Traceback" not in str(info.value)


def test_a_closing_brace_on_a_broken_line_still_closes_its_block() -> None:
    text = "input d: 3x8x8\nblock b(c) {\n  a: conv(c 3) }\nx: b(4)\ny: cnov\n"
    assert _errors(text) == [(3, "unexpected '3'"), (5, "unknown op 'cnov'")]
