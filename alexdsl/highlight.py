"""Syntax highlighting for alexdsl: a Pygments lexer.

Registered under the ``pygments.lexers`` entry point, so ``pygmentize -l alexdsl net.adsl``
and Sphinx/MkDocs code blocks tagged ``alexdsl`` (or ``adsl``) use it once alexdsl is installed.

>>> from pygments import lex
>>> [t for t, v in lex("conv1: conv(96, 11) | relu  # c\\n", AlexDSLLexer()) if v.strip()][:4]
[Token.Name.Label, Token.Punctuation, Token.Name.Builtin, Token.Punctuation]
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

KEYWORDS = ("network", "description", "input", "output", "defaults", "solver", "preprocess", "block", "repeat")
FILLERS = ("constant", "gaussian", "uniform", "xavier", "msra")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*"


def _op_names() -> tuple[str, ...]:
    try:
        from alexdsl.ops.registry import op_names

        return tuple(op_names())
    except Exception:  # noqa: BLE001 - highlighting must work even from a partial install
        return ("conv", "fc", "relu", "maxpool", "avgpool", "lrn", "dropout", "concat", "add", "softmax")


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
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (words(("true", "false"), suffix=r"\b"), Keyword.Constant),
            (r"\bin\b", Name.Builtin.Pseudo),
            (r"[0-9]+(?:x[0-9]+)+\b", Number),
            (r"-?(?:[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)",
             Number.Float),
            (r"-?[0-9]+", Number.Integer),
            (r"(" + _NAME + r")([ \t]*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),
            (r"(" + _NAME + r")([ \t]*)(:)", bygroups(Name.Label, Whitespace, Punctuation)),
            (words(FILLERS, suffix=r"\b"), Name.Function),
            (words(_op_names(), suffix=r"\b(?![.\w])"), Name.Builtin),
            (_NAME + r"(?=[ \t]*\()", Name.Function),
            (_NAME, Name),
            (r"->", Operator),
            (r"\|", Operator),
            (r"[(),{}:=]", Punctuation),
        ],
    }
