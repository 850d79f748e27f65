"""The formatter: idempotent, keeps comments, and never changes the network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import alexdsl
from alexdsl.cli.interop import fmt_command
from alexdsl.errors import AlexDSLError
from alexdsl.fmt import format_source

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.adsl"))


def ir(text: str, file: str = "net.adsl") -> dict:
    data = json.loads(alexdsl.parse(text, file).to_json())
    for layer in data["layers"]:
        layer.pop("span")
    return data


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_idempotent_and_same_ir(path: Path) -> None:
    text = path.read_text()
    once = format_source(text, path.name)
    assert format_source(once, path.name) == once
    assert ir(once, path.name) == ir(text, path.name)
    # every comment survives
    comments = [line[line.index("#"):].strip() for line in text.splitlines() if "#" in line]
    for comment in comments:
        assert comment in once


def test_canonical_layout() -> None:
    messy = (
        "# header\n\n\n"
        "network   T\n"
        "input x:3x8x8\n"
        "input lbl :class( 10 )\n"
        "defaults conv(weight=gaussian( 0.01 ),bias=constant(0))\n"
        "block b( c ,d=2 ) {\n"
        "      # inside\n"
        "  y : conv( c,3 ,pad=1)|relu   # trailing\n"
        "  long_name: in -> conv(c, 1)\n"
        "}\n"
        "c1:conv(4,(3,3),stride=1)|r: relu\n"
        "c2 : b(4)\n"
        "    | maxpool(2)\n"
        "loss: softmax_loss(c2, lbl)@train\n"
    )
    out = format_source(messy)
    assert out == (
        "# header\n\n"
        "network T\n"
        "input x:   3x8x8\n"
        "input lbl: class(10)\n"
        "defaults conv(weight=gaussian(0.01), bias=constant(0))\n"
        "block b(c, d=2) {\n"
        "  # inside\n"
        "  y:         conv(c, 3, pad=1) | relu  # trailing\n"
        "  long_name: in -> conv(c, 1)\n"
        "}\n"
        "c1:   conv(4, (3, 3), stride=1) | r: relu\n"
        "c2:   b(4)\n"
        "    | maxpool(2)\n"
        "loss: softmax_loss(c2, lbl) @train\n"
    )
    assert format_source(out) == out


def test_floats_as_written() -> None:
    src = "network T\ninput x: 3x8x8\nn: lrn(5, alpha=1.0e-4, beta=.75)\n"
    assert "alpha=1.0e-4, beta=.75" in format_source(src)


def test_syntax_error_raises() -> None:
    with pytest.raises(AlexDSLError):
        format_source("network T\nc1 conv(3, 3)\n")


# hypothesis: random chains, random spacing -----------------------------------------------------
@st.composite
def networks(draw: st.DrawFn) -> str:
    size = draw(st.integers(16, 40))
    sp = st.sampled_from(["", " ", "  "])
    lines = ["network Gen", f"input data: 3x{size}x{size}"]
    spatial = True
    current = size
    n = draw(st.integers(1, 6))
    for i in range(n):
        ops = ["conv", "relu", "maxpool", "fc"] if spatial else ["relu", "fc"]
        op = draw(st.sampled_from(ops))
        s1, s2 = draw(sp), draw(sp)
        if op == "conv" and current >= 3:
            k = draw(st.integers(1, 3))
            out = draw(st.integers(1, 8))
            pad = draw(st.integers(0, 1))
            stride = draw(st.integers(1, 2))
            call = f"conv({s1}{out},{s2}{k},{s1}stride={stride},pad={pad})"
            current = (current + 2 * pad - k) // stride + 1
        elif op == "maxpool" and current >= 2:
            rnd = draw(st.sampled_from(["", ", round=ceil", ",round=floor"]))
            call = f"maxpool({s1}2{s2},stride=2{rnd})"
            current = -(-(current - 2) // 2) + 1 if "ceil" in rnd else (current - 2) // 2 + 1
        elif op == "fc":
            call = f"fc({draw(st.integers(1, 16))}{s1})"
            spatial = False
        else:
            call = "relu" if draw(st.booleans()) else "relu()"
        chain = draw(st.booleans()) and i > 0
        if chain:
            lines[-1] += f"{s1}|{s2}{call}"
        else:
            lines.append(f"l{i}{s1}:{s2}{call}")
        if draw(st.booleans()):
            lines[-1] += f"{s1} # note {i}"
        if draw(st.booleans()):
            lines.append("")
    return "\n".join(lines) + "\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_generated_networks_keep_their_ir(src: str) -> None:
    out = format_source(src)
    assert format_source(out) == out
    assert ir(out) == ir(src)


def test_expressions_print_with_spaces_and_only_the_parentheses_they_need() -> None:
    src = ("block b(w, n) {\n  c: conv(4*w+-1, (w//2,3), groups=-(w-1)*2) | hardtanh(-1.5,1e-3)\n"
           "  d: conv((w*2)//3, w-(n-1), (w-n)-1, -(-w))\n  r: repeat (n + 1) relu\n}\n")
    out = format_source(src)
    assert out == ("block b(w, n) {\n  c: conv(4 * w + -1, (w // 2, 3), groups=-(w - 1) * 2) | hardtanh(-1.5, 1e-3)\n"
                   "  d: conv(w * 2 // 3, w - (n - 1), w - n - 1, -(-w))\n  r: repeat n + 1 relu\n}\n")
    assert format_source(out) == out


def _expressions(depth: int = 3) -> st.SearchStrategy[str]:
    leaves = st.one_of(st.integers(-9, 9).map(str), st.sampled_from(["w", "n"]))
    return st.recursive(leaves, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "//"]), inner).map(lambda t: f"({t[0]}){t[1]}({t[2]})"),
        inner.map(lambda e: f"-({e})")), max_leaves=2 ** depth)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions(), st.integers(1, 9), st.integers(1, 9))
def test_formatted_expressions_keep_their_value(expression: str, w: int, n: int) -> None:
    """fmt drops redundant parentheses; the value (Python's integer semantics) never changes."""
    out = format_source(f"block b(w, n) {{\n  c: conv({expression}, 1)\n}}\n")
    assert format_source(out) == out
    printed = out.split("conv(", 1)[1].rsplit(", 1)", 1)[0]
    text = f"input x: 3x4x4\nblock b(w, n) {{\n  c: conv({printed}, 1)\n}}\ny: b({w}, {n})\n"
    try:
        expected = eval(expression, {"w": w, "n": n})  # noqa: S307 - digits, w, n and + - * // only
    except ZeroDivisionError:
        with pytest.raises(ZeroDivisionError):
            eval(printed, {"w": w, "n": n})  # noqa: S307
        with pytest.raises(AlexDSLError, match="division by zero"):
            alexdsl.parse(text)
        return
    assert eval(printed, {"w": w, "n": n}) == expected  # noqa: S307
    if expected >= 1:
        assert alexdsl.parse(text).shapes["y.c"] == (expected, 4, 4)
    else:
        wanted = rf"argument 'out' of conv must be at least 1(?s:.*)received: (.* = )?{expected}(\n|$)"
        with pytest.raises(AlexDSLError, match=wanted):
            alexdsl.parse(text)


# the command -------------------------------------------------------------------------------------
def test_fmt_command(tmp_path: Path) -> None:
    good = tmp_path / "good.adsl"
    bad = tmp_path / "bad.adsl"
    good.write_text("network T\ninput x: 3x8x8\nc: conv(4, 3)\n")
    bad.write_text("network T\ninput x:3x8x8\nc:conv(4,3)\n")
    runner = CliRunner()
    result = runner.invoke(fmt_command, ["--check", str(good), str(bad)])
    assert result.exit_code == 1
    assert "bad.adsl" in result.output and "good.adsl" not in result.output
    assert bad.read_text() == "network T\ninput x:3x8x8\nc:conv(4,3)\n"
    result = runner.invoke(fmt_command, [str(good), str(bad)])
    assert result.exit_code == 0, result.output
    assert bad.read_text() == good.read_text()
    assert runner.invoke(fmt_command, ["--check", str(bad)]).exit_code == 0


def test_fmt_command_syntax_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.adsl"
    broken.write_text("network T\nc1 conv(3, 3)\n")
    result = CliRunner().invoke(fmt_command, [str(broken)])
    assert result.exit_code == 1
    assert "broken.adsl:2" in result.output
    assert broken.read_text() == "network T\nc1 conv(3, 3)\n"
