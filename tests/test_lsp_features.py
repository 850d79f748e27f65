"""The language features in process, over every name and position of the examples."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("pygls")

from conftest import EXAMPLES  # noqa: E402

from alexdsl.frontend import build_network  # noqa: E402
from alexdsl.lsp import features  # noqa: E402
from alexdsl.lsp.analysis import quick_analysis  # noqa: E402
from alexdsl.lsp.server import Checked, check, run_front_end  # noqa: E402
from alexdsl.ops.registry import lookup  # noqa: E402

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.adsl"))


def analysed(text: str, file: str = "/tmp/net.adsl") -> Checked:
    return check(text, file, None, run_front_end(text, file))


def apply(text: str, edits: list) -> str:
    lines = text.split("\n")
    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        start, end = edit.range.start, edit.range.end
        assert start.line == end.line
        row = lines[start.line]
        lines[start.line] = row[: start.character] + edit.new_text + row[end.character:]
    return "\n".join(lines)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_renaming_any_name_keeps_the_network(path) -> None:
    text = path.read_text()
    checked = analysed(text)
    reference = build_network(text).totals()
    renamed_any = 0
    for occurrence in checked.index.occurrences:
        if not occurrence.definition:
            continue
        span = occurrence.span
        new_name = f"renamed_{renamed_any}"
        edits = features.rename(checked.index, checked.positions, span.line, span.column, new_name)
        renamed = apply(text, edits)
        assert renamed.count(new_name) == len(edits)
        assert build_network(renamed).totals() == reference, (occurrence.symbol.name, renamed)
        renamed_any += 1
    assert renamed_any >= 5


@pytest.mark.parametrize("path", [EXAMPLES / "alexnet.adsl", EXAMPLES / "resnet18.adsl"], ids=["alexnet", "resnet18"])
def test_every_position_answers_without_error(path) -> None:
    text = path.read_text()
    checked = analysed(text)
    hovers = 0
    for line, row in enumerate(text.split("\n"), start=1):
        for column in range(1, len(row) + 2):
            hovers += features.hover(checked.analysis, checked.index, checked.positions, line, column) is not None
            features.completion(checked.analysis, checked.index, line, column)
            features.definition(checked.index, checked.positions, "file:///x", line, column)
            features.highlights(checked.index, checked.positions, line, column)
    assert hovers > len(text) // 4  # most of a network file is names, ops and arguments


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_references_are_every_place_the_name_is_written(path) -> None:
    """Outside blocks and comments, each written layer or input name is an occurrence of its symbol."""
    text = path.read_text()
    checked = analysed(text)
    top_level = re.sub(r"block [^{]*\{[^}]*\}", "", re.sub(r"#[^\n]*", "", text))
    counted = 0
    for name, symbol in checked.index.scopes[None].items():
        if symbol.generated or lookup(name) is not None:  # an op's name is also written as the op
            continue
        written = len(re.findall(rf"(?<![\w.]){re.escape(name)}(?![\w.(])", top_level))
        assert len(checked.index.occurrences_of(symbol)) == written, name
        counted += 1
    assert counted >= 3


def test_a_generated_name_is_not_renamed_alone() -> None:
    text = "input x: 3x8x8\na: conv(2, 3) | relu\nb: a_relu -> relu\n"
    checked = analysed(text)
    with pytest.raises(features.RenameRefused, match="generated name"):
        features.rename(checked.index, checked.positions, 3, 4, "r")


def _hints_on(text: str, line_start: str, focus: str | None = None) -> list[tuple[int, str]]:
    """(0-based column, label) of each inlay hint on the line that starts with ``line_start``."""
    checked = analysed(text)
    line = next(i for i, row in enumerate(text.split("\n")) if row.startswith(line_start))
    return [(hint.position.character, str(hint.label))
            for hint in features.inlay_hints(checked.analysis, checked.positions, line, line, focus=focus)]


def test_a_chain_shows_the_shape_after_each_stage_that_changes_it() -> None:
    text = (EXAMPLES / "alexnet.adsl").read_text()
    conv1 = next(row for row in text.split("\n") if row.startswith("conv1:"))
    assert conv1.startswith("conv1: conv(96, 11, stride=4) | relu | maxpool(3, stride=2) | lrn(")
    assert _hints_on(text, "conv1:") == [(conv1.index(" | relu"), "96x55x55"), (conv1.index(" | lrn"), "96x27x27"),
                                         (len(conv1), "96x27x27")]
    conv3 = next(row for row in text.split("\n") if row.startswith("conv3:"))
    assert _hints_on(text, "conv3:") == [(len(conv3), "384x13x13")]  # one change: the line's end says it


def test_the_first_hints_from_the_network_alone_have_the_stages_too() -> None:
    for path in (EXAMPLES / "alexnet.adsl", EXAMPLES / "resnet18.adsl"):
        text = path.read_text()
        checked = run_front_end(text, str(path))
        quick, settled = quick_analysis(text, str(path), checked), analysed(text, str(path)).analysis
        stages = {line: hint.stages for line, hint in settled.line_hints.items() if hint.stages}
        assert stages and {line: quick.line_hints[line].stages for line in stages} == stages


def test_a_stage_in_a_block_body_shows_every_instance_or_the_one_in_focus() -> None:
    text = ("input x: 3x16x16\nblock b(c) {\n  y: conv(c, 3, pad=1) | relu | maxpool(2) | conv(c, 1)\n}\n"
            "u1: b(4)\nu2: b(8)\n")  # u1: 3x16x16 -> 4x16x16 -> 4x8x8; u2: 4x8x8 -> 8x8x8 -> 8x4x4
    body = text.split("\n")[2]
    after_conv, after_pool = body.index(" | relu"), body.index(" | conv(c, 1)")
    assert _hints_on(text, "  y:") == [(after_conv, "2 instances: 4x16x16, 8x8x8"),
                                       (after_pool, "2 instances: 4x8x8, 8x4x4"),
                                       (len(body), "2 instances: 4x8x8, 8x4x4")]
    assert _hints_on(text, "  y:", focus="u2") == [(after_conv, "8x8x8"), (after_pool, "8x4x4"),
                                                   (len(body), "8x4x4 in u2")]


def test_the_hints_docs_editors_md_shows_are_the_servers() -> None:
    """docs/editors.md shows AlexNet's conv1 line with its hints in ‹›, as the server places them."""
    shown = re.search(r"```text\n(conv1: .*)\n```", (EXAMPLES.parent / "docs" / "editors.md").read_text()).group(1)
    text = (EXAMPLES / "alexnet.adsl").read_text()
    line = next(row for row in text.split("\n") if row.startswith("conv1:"))
    for column, label in reversed(_hints_on(text, "conv1:")):
        line = f"{line[:column]} ‹{label}›{line[column:]}"
    assert line == shown
