"""The Pygments lexer and the TextMate grammar."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pygments = pytest.importorskip("pygments")
from pygments import lex  # noqa: E402
from pygments.token import Error, Token  # noqa: E402

from alexdsl.highlight import AlexDSLLexer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.adsl"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_lex_without_errors(path: Path) -> None:
    text = path.read_text()
    tokens = list(lex(text, AlexDSLLexer()))
    assert not [v for t, v in tokens if t in Error], path.name
    expected = text if text.endswith("\n") else text + "\n"
    assert "".join(v for _, v in tokens) == expected


def test_token_kinds() -> None:
    src = 'network T\ninput data: 3x8x8\nc1: conv(4, 3, weight=gaussian(0.01)) | relu @test  # c\n'
    kinds = {v: t for t, v in lex(src, AlexDSLLexer()) if v.strip()}
    assert kinds["network"] is Token.Keyword
    assert kinds["3x8x8"] is Token.Literal.Number
    assert kinds["c1"] is Token.Name.Label
    assert kinds["conv"] is Token.Name.Builtin
    assert kinds["weight"] is Token.Name.Attribute
    assert kinds["0.01"] is Token.Literal.Number.Float
    assert kinds["test"] is Token.Name.Decorator
    assert kinds["# c"] is Token.Comment.Single


def test_lexer_is_found_by_alias_and_filename() -> None:
    from pygments.lexers import find_lexer_class_for_filename, get_lexer_by_name

    try:
        assert isinstance(get_lexer_by_name("adsl"), AlexDSLLexer)
    except pygments.util.ClassNotFound:
        pytest.skip("alexdsl is not installed, so its pygments entry point is not registered: pip install -e .")
    assert find_lexer_class_for_filename("net.adsl") is AlexDSLLexer


def test_textmate_grammar_is_generated_from_the_registry(request: pytest.FixtureRequest) -> None:
    """editors/alexdsl.tmLanguage.json is textmate_grammar() (``pytest --update-goldens`` rewrites it)."""
    from alexdsl.highlight import textmate_grammar
    from alexdsl.ops.registry import op_names

    grammar = textmate_grammar()
    assert grammar["scopeName"] == "source.alexdsl" and "adsl" in grammar["fileTypes"]
    for rule in grammar["repository"].values():
        re.compile(rule["match"])
    assert all(re.fullmatch(grammar["repository"]["call"]["match"], op) for op in op_names())
    path = ROOT / "editors" / "alexdsl.tmLanguage.json"
    text = json.dumps(grammar, indent=2) + "\n"
    if request.config.getoption("--update-goldens"):
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, "editors/alexdsl.tmLanguage.json is stale (--update-goldens)"
