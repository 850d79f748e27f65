"""Syntax highlighting for alexdsl: a Pygments lexer and the editors' TextMate grammar.

The lexer is registered under the ``pygments.lexers`` entry point, so ``pygmentize -l alexdsl
net.adsl`` and Sphinx/MkDocs code blocks tagged ``alexdsl`` (or ``adsl``) use it once alexdsl
is installed.  :func:`textmate_grammar` builds ``editors/alexdsl.tmLanguage.json`` from the same
keyword, filler and op tables (the op names come from the registry); ``pytest --update-goldens``
rewrites the file after an op is added.

>>> from pygments import lex
>>> [t for t, v in lex("conv1: conv(96, 11) | relu  # c\\n", AlexDSLLexer()) if v.strip()][:4]
[Token.Name.Label, Token.Punctuation, Token.Name.Builtin, Token.Punctuation]
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

KEYWORDS = ("network", "description", "input", "output", "defaults", "solver", "preprocess", "block", "repeat", "as",
            "then")
FILLERS = ("constant", "gaussian", "uniform", "xavier", "msra")
INPUT_KINDS = ("class",)  # input label: class(1000)
_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*)*"


def _op_names() -> tuple[str, ...]:
    from alexdsl.ops.registry import op_names

    return tuple(op_names())


class AlexDSLLexer(RegexLexer):
    """Lexer for alexdsl network descriptions (``.adsl``)."""

    name = "alexdsl"
    aliases = ["alexdsl", "adsl"]
    filenames = ["*.adsl"]
    mimetypes = ["text/x-alexdsl"]
    url = "https://github.com/alexdsl/alexdsl"

    tokens = {
        "root": [
            (r"[ \t\f]+", Whitespace),
            (r"\r?\n", Whitespace),
            (r"\\[ \t\f]*\r?\n", Text),
            (r"#.*?$", Comment.Single),
            (r'"([^"\\\n]|\\.)*"', String.Double),
            (r"(@)(train|test)\b", bygroups(Punctuation, Name.Decorator)),
            (r"@" + _NAME, Name.Decorator),
            (words(KEYWORDS, suffix=r"\b(?!\.)"), Keyword),  # block.1.avgpool is a name
            (words(("true", "false"), suffix=r"\b"), Keyword.Constant),
            (r"\bin\b", Name.Builtin.Pseudo),
            (r"[0-9]+(?:x[0-9]+)+\b", Number),
            (r"-?(?:[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)",
             Number.Float),
            (r"-?[0-9]+", Number.Integer),
            (r"(" + _NAME + r")([ \t]*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),
            (r"(" + _NAME + r")([ \t]*)(:)", bygroups(Name.Label, Whitespace, Punctuation)),
            (words(FILLERS, suffix=r"\b"), Name.Function),
            (_NAME + r"(?=[ \t]*\()", Name.Function),
            (_NAME, Name),
            (r"->", Operator),
            (r"//|[-+*/]", Operator),  # arithmetic: 4 * w, c // 8, 0.1 * i / 17
            (r"\|", Operator),
            (r"[(),{}:=]", Punctuation),
        ],
    }

    def get_tokens_unprocessed(self, text: str, stack: tuple[str, ...] = ("root",)):  # type: ignore[override]
        """Op names, built-in or from a plugin loaded now, are ``Name.Builtin``."""
        ops = set(_op_names())
        for index, token, value in super().get_tokens_unprocessed(text, stack):
            yield index, Name.Builtin if token in (Name, Name.Function) and value in ops else token, value


def _captures(scopes: dict[int, str]) -> dict:
    return {str(group): {"name": f"{scope}.alexdsl"} for group, scope in scopes.items()}


def textmate_grammar() -> dict:
    """The TextMate grammar (VS Code, Sublime, GitHub's linguist) for ``.adsl`` files."""
    names = "|".join((*_op_names(), *FILLERS, *INPUT_KINDS))
    repository = {
        "comment": {"name": "comment.line.number-sign.alexdsl", "match": "#.*$"},
        "string": {"name": "string.quoted.double.alexdsl", "match": r'"([^"\\\n]|\\.)*"'},
        "keyword": {"name": "keyword.control.alexdsl", "match": rf"\b({'|'.join(KEYWORDS)})\b"},
        "phase": {"name": "storage.modifier.phase.alexdsl", "match": r"@(train|test)\b"},
        "constant": {"name": "constant.language.alexdsl", "match": r"\b(true|false|in)\b"},
        "shape": {"name": "constant.numeric.shape.alexdsl", "match": r"\b[0-9]+(x[0-9]+)+\b"},
        "number": {
            "name": "constant.numeric.alexdsl",
            "match": r"-?([0-9]+\.[0-9]*([eE][-+]?[0-9]+)?|\.[0-9]+([eE][-+]?[0-9]+)?|[0-9]+([eE][-+]?[0-9]+)?)",
        },
        "keyword-argument": {
            "match": r"\b([A-Za-z_][A-Za-z0-9_]*)\s*(=)",
            "captures": _captures({1: "variable.parameter", 2: "keyword.operator.assignment"}),
        },
        "label": {
            "match": r"\b([A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*)*)\s*(:)",
            "captures": _captures({1: "entity.name.tag.label", 4: "punctuation.separator"}),
        },
        "call": {
            "match": rf"\b({names})\b|\b([A-Za-z_][A-Za-z0-9_]*)(?=\s*\()",
            "captures": _captures({1: "support.function.op", 2: "entity.name.function"}),
        },
        "operator": {"name": "keyword.operator.alexdsl", "match": r"->|\||=|//|[-+*/]"},
    }
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "alexdsl",
        "scopeName": "source.alexdsl",
        "fileTypes": ["adsl"],
        "patterns": [{"include": f"#{rule}"} for rule in repository],
        "repository": repository,
    }
