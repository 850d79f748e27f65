"""The language features in process, over every name and position of the examples."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("pygls")

from conftest import EXAMPLES  # noqa: E402

from alexdsl.frontend import build_network  # noqa: E402
from alexdsl.lsp import features  # noqa: E402
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
