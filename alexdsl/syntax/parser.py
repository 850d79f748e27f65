"""Source text -> syntax tree, with syntax errors in plain words.

The Lark LALR parser is built once per process from ``grammars/alexdsl.lark`` and builds
the dataclasses of :mod:`alexdsl.syntax.ast` directly (no intermediate parse tree).

>>> module = parse_module("network Tiny\\ninput x: 3x8x8\\nc1: conv(4, 3) | relu\\n")
>>> [type(s).__name__ for s in module.statements]
['NetworkStmt', 'InputStmt', 'LayerStmt']
"""

from __future__ import annotations

import contextvars
import functools
import importlib.resources
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from alexdsl.errors import AlexDSLError, Diagnostic, Span
from alexdsl.limits import MAX_INT, MAX_NESTING
from alexdsl.syntax import ast

MAX_SYNTAX_ERRORS = 20


def grammar_text(name: str = "alexdsl.lark") -> str:
    """The text of a shipped grammar: from the installed package, else from the checkout."""
    try:
        resource = importlib.resources.files("alexdsl.grammars").joinpath(name)
        if resource.is_file():
            return resource.read_text(encoding="utf-8")
    except ModuleNotFoundError:
        pass
    return (Path(__file__).resolve().parents[2] / "grammars" / name).read_text(encoding="utf-8")


@dataclass
class _ParseState:
    """What one parse call tracks; kept per call (in a context variable) so threads may parse at once."""

    file: str
    open_parens: list[Token] = field(default_factory=list)
    comments: list[Token] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)  # bad literals: too large, not finite


_STATE: contextvars.ContextVar[_ParseState] = contextvars.ContextVar("alexdsl_parse_state")


class _TooDeep(Exception):
    """Raised by the post-lexer at the parenthesis that opens one level too many, or by the
    tree builder at the operator that nests an expression one level too deep."""

    def __init__(self, token: Token, expression: bool = False):
        super().__init__(str(token))
        self.token = token
        self.expression = expression


class _Continuations:
    """Post-lexer: drops newlines inside parentheses and before a line that starts with '|'.

    It also refuses more than MAX_NESTING open parentheses, so nothing downstream recurses deeply.
    """

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        open_parens: list[Token] = []
        _STATE.get().open_parens = open_parens
        pending: Token | None = None
        for token in stream:
            kind = token.type
            if kind == "_NL":
                if not open_parens and pending is None:
                    pending = token
                continue
            if pending is not None:
                if kind != "VBAR":
                    yield pending
                pending = None
            if kind == "LPAR":
                open_parens.append(token)
                if len(open_parens) > MAX_NESTING:
                    raise _TooDeep(token)
            elif kind == "RPAR" and open_parens:
                open_parens.pop()
            yield token
        if pending is not None:
            yield pending


def _bounds(item: object) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(start, end) positions of a token, an AST node, or a list of them; None if empty."""
    if item is None:
        return None
    if isinstance(item, Token):
        return (item.line, item.column), (item.end_line, item.end_column)  # type: ignore[return-value]
    if isinstance(item, list):
        found = [b for b in map(_bounds, item) if b is not None]
        return (found[0][0], found[-1][1]) if found else None
    span = item.span  # type: ignore[attr-defined]
    return (span.line, span.column), (span.end_line, span.end_column)


def _depth(operator: Token, *operands: ast.Value) -> int:
    """Operators nested in an expression: at most MAX_NESTING, so evaluating and printing it never recurse deeply."""
    depth = 1 + max(getattr(v, "depth", 0) for v in operands)
    if depth > MAX_NESTING:
        raise _TooDeep(operator, expression=True)
    return depth


class _ToAst(Transformer):
    """Builds ast dataclasses while the LALR parser runs (no parse tree is built).

    Every node's span runs from its first to its last token; keywords and brackets are
    named terminals in the grammar so they are kept for this.
    """

    def _span(self, *items: object) -> Span:
        bounds = _bounds(list(items))
        assert bounds is not None
        (line, column), (end_line, end_column) = bounds
        return Span(_STATE.get().file, line, column, end_line, end_column)

    def _bad_literal(self, tok: Token, message: str, expected: str) -> None:
        _STATE.get().errors.append(Diagnostic("error", message, self._span(tok), expected=expected,
                                              received=str(tok)))

    def _name(self, token: Token) -> ast.Name:
        return ast.Name(str(token), self._span(token))

    # values ------------------------------------------------------------------
    def int_value(self, children: list[Token]) -> ast.Literal:
        (tok,) = children
        digits = str(tok).lstrip("-").lstrip("0")
        if len(digits) > len(str(MAX_INT)) or abs(int(tok)) > MAX_INT:
            self._bad_literal(tok, "the integer is too large", f"at most {MAX_INT:,} (2**63 - 1)")
            return ast.Literal(0, self._span(tok), str(tok))
        return ast.Literal(int(tok), self._span(tok), str(tok))

    def float_value(self, children: list[Token]) -> ast.Literal:
        (tok,) = children
        value = float(tok)
        if not math.isfinite(value):
            self._bad_literal(tok, "the number is too large", "a finite number, at most about 1.8e308")
            value = 0.0
        return ast.Literal(value, self._span(tok), str(tok))

    def negate(self, children: list) -> ast.Value:
        minus, operand = children
        span = self._span(minus, operand)
        if isinstance(operand, ast.Literal) and isinstance(operand.value, (int, float)) \
                and not operand.text.startswith("-"):
            return ast.Literal(-operand.value, span, "-" + operand.text)
        return ast.Negate(operand, span, _depth(minus, operand))

    def binary(self, children: list) -> ast.BinaryOp:
        left, op, right = children
        return ast.BinaryOp(str(op), left, right, self._span(left, right), self._span(op),
                            _depth(op, left, right))

    def parens(self, children: list) -> ast.Value:
        return children[1]

    def string_value(self, children: list[Token]) -> ast.Literal:
        (tok,) = children
        text = str(tok)[1:-1].encode("utf-8").decode("unicode_escape", errors="replace")
        return ast.Literal(text, self._span(tok), str(tok))

    def true_value(self, children: list[Token]) -> ast.Literal:
        return ast.Literal(True, self._span(children[0]), "true")

    def false_value(self, children: list[Token]) -> ast.Literal:
        return ast.Literal(False, self._span(children[0]), "false")

    def name_value(self, children: list[Token]) -> ast.Name:
        return self._name(children[0])

    def call_value(self, children: list) -> ast.Call:
        name, _, args, _ = children
        return ast.Call(str(name), args or [], self._span(children), self._span(name))

    def tuple_value(self, children: list) -> ast.TupleValue:
        items = [c for c in children[1:-1]]
        return ast.TupleValue(items, self._span(children))

    def args(self, children: list) -> list[ast.Arg]:
        return [c if isinstance(c, ast.Arg) else ast.Arg(None, c, c.span) for c in children]

    def kwarg(self, children: list) -> ast.Arg:
        name, value = children
        return ast.Arg(str(name), value, self._span(name, value))

    # chains ------------------------------------------------------------------
    def call(self, children: list) -> ast.Call:
        name, lpar, args, _ = children
        return ast.Call(str(name), args or [], self._span(children), self._span(name), lpar is not None)

    def sources(self, children: list[Token]) -> list[ast.Name]:
        return [self._name(t) for t in children]

    def link(self, children: list) -> ast.Link:
        label, call = children
        return ast.Link(self._name(label) if label is not None else None, call, self._span(children))

    def chain(self, children: list) -> tuple[list[ast.Name], list[ast.Link]]:
        sources, *links = children
        return sources or [], links

    def phase(self, children: list[Token]) -> ast.Name:
        return self._name(children[1])

    # statements --------------------------------------------------------------
    def layer_stmt(self, children: list) -> ast.LayerStmt:
        label, (sources, links), phase = children
        return ast.LayerStmt(self._name(label), sources, links, phase, self._span(label, links, phase))

    def repeat_stmt(self, children: list) -> ast.RepeatStmt:
        label, sources, _, count, call, phase = children
        return ast.RepeatStmt(self._name(label), sources or [], count, call, phase, self._span(children))

    def network_stmt(self, children: list[Token]) -> ast.NetworkStmt:
        return ast.NetworkStmt(self._name(children[1]), self._span(children))

    def description_stmt(self, children: list[Token]) -> ast.DescriptionStmt:
        return ast.DescriptionStmt(self.string_value(children[1:]), self._span(children))

    def input_stmt(self, children: list) -> ast.InputStmt:
        _, name, kind = children
        if isinstance(kind, ast.Call):
            return ast.InputStmt(self._name(name), None, kind, self._span(children))
        return ast.InputStmt(self._name(name), kind, None, self._span(children))

    def shape_literal(self, children: list[Token]) -> ast.Literal:
        (tok,) = children
        return ast.Literal(str(tok), self._span(tok), str(tok))

    def typed_input(self, children: list) -> ast.Call:
        name, _, args, _ = children
        return ast.Call(str(name), args or [], self._span(children), self._span(name))

    def output_stmt(self, children: list[Token]) -> ast.OutputStmt:
        return ast.OutputStmt([self._name(t) for t in children[1:]], self._span(children))

    def defaults_stmt(self, children: list) -> ast.DefaultsStmt:
        _, target, _, args, _ = children
        return ast.DefaultsStmt(self._name(target), args or [], self._span(children))

    def solver_stmt(self, children: list) -> ast.SolverStmt:
        _, _, args, _ = children
        return ast.SolverStmt(args or [], self._span(children))

    def preprocess_stmt(self, children: list) -> ast.PreprocessStmt:
        _, target, _, args, _ = children
        return ast.PreprocessStmt(self._name(target), args or [], self._span(children))

    def block_param(self, children: list) -> ast.BlockParam:
        name, default = children
        return ast.BlockParam(self._name(name), default)

    def block_params(self, children: list) -> list[ast.BlockParam]:
        return list(children)

    def block_def(self, children: list) -> ast.BlockDef:
        keyword, name, _, params, _, _, *body, close = children
        return ast.BlockDef(self._name(name), params or [], body, self._span(keyword, close))

    def start(self, children: list) -> list[ast.Statement]:
        return list(children)


@functools.cache
def _parser() -> Lark:
    """The LALR parser; its transformer and post-lexer keep their per-call state in ``_STATE``."""
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="basic",
        maybe_placeholders=True,
        transformer=_ToAst(),
        postlex=_Continuations(),
        lexer_callbacks={"COMMENT": lambda token: _STATE.get().comments.append(token)},
        cache=False,
    )


# Known mistakes, matched against the parser state where the error happened (Lark's match_examples).
_KNOWN_MISTAKES: dict[str, list[str]] = {
    "a layer needs ':' after its name, as in 'conv1: conv(96, 11)'": [
        "conv1 conv(96, 11)\n",
        "x relu\n",
    ],
    "ops in a chain are joined with '|', as in 'conv(96, 11) | relu'": [
        "c: conv(96, 11) relu\n",
        "c: relu relu\n",
        "c: conv(96, 11) conv(3, 3)\n",
    ],
    "arguments are separated by ',', as in 'conv(96, 11, stride=4)'": [
        "c: conv(96 11)\n",
        "c: conv(96, 11 stride=4)\n",
        "c: conv(k=1 s=2)\n",
    ],
    "an input needs ':' and a shape, as in 'input data: 3x227x227'": [
        "input data 3x227x227\n",
        "input data\n",
    ],
    "write a shape with 'x' between dimensions, as in 3x227x227": [
        "input data: 3*227*227\n",
        "input data: (3, 227, 227)\n",
        "input data: 3 227 227\n",
        "input data: 3x227x\n",
    ],
    "a phase is written '@train' or '@test' at the end of the line": [
        "l: relu @\n",
        "l: relu @ (\n",
    ],
    "an argument value is missing after '='": [
        "c: conv(96, stride=)\n",
        "c: conv(96, stride=, pad=1)\n",
    ],
}


@functools.cache
def _mistake_examples() -> dict[str, list[str]]:
    """The known mistakes, each also after one and two statements (LALR states differ there)."""
    prefixes = ("", "network N\n", "network N\ninput d: 3x8x8\n", "block b(c) {\n  x: relu\n")
    return {hint: [p + s for s in snippets for p in prefixes] for hint, snippets in _KNOWN_MISTAKES.items()}


_ARITHMETIC = frozenset({"PLUS", "MINUS", "STAR", "DSLASH"})


def _describe_terminal(name: str, lark: Lark) -> str:
    words = {
        "NAME": "a name",
        "INT": "an integer",
        "FLOAT": "a number",
        "SHAPE": "a shape such as 3x227x227",
        "STRING": 'a string in "double quotes"',
        "_NL": "end of line",
        "$END": "end of file",
    }
    if name in words:
        return words[name]
    for terminal in lark.terminals:
        if terminal.name == name and isinstance(terminal.pattern, PatternStr):
            return f"'{terminal.pattern.value}'"
    return name.lower()


def _token_words(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    if token.type == "_NL":
        return "end of line"
    return f"'{token}'"


def _syntax_diagnostic(error: UnexpectedInput, file: str, text: str, lark: Lark,
                       open_parens: list[Token]) -> Diagnostic:
    line, column = max(error.line, 1), max(error.column, 1)
    expected_terms = sorted(getattr(error, "expected", None) or getattr(error, "allowed", None) or [])
    if set(expected_terms) - _ARITHMETIC:  # after a number, '+ - * //' would continue it: not worth listing
        expected_terms = [t for t in expected_terms if t not in _ARITHMETIC]
        if "RPAR" in expected_terms:  # a repeat count may be followed by a name; inside '(...)' nothing is
            expected_terms = [t for t in expected_terms if t != "NAME"]
    expected = ", ".join(dict.fromkeys(_describe_terminal(t, lark) for t in expected_terms)) or None
    width = 1
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "_NL":  # point just past the end of the line, not at the next one
            line = token.line
            column = token.column
        elif token.type != "$END":
            width = max(1, len(str(token)))
        message = f"unexpected {_token_words(token)}"
    elif isinstance(error, UnexpectedCharacters):
        char = text[error.pos_in_stream] if error.pos_in_stream < len(text) else "?"
        message = f"unexpected character {char!r}"
    else:
        message = "unexpected end of file"
    hint = None
    try:
        hint = error.match_examples(lark.parse, _mistake_examples(), use_accepts=True)
    except Exception:  # noqa: BLE001 - a failed lookup only loses the hint
        hint = None
    if isinstance(error, UnexpectedCharacters) and message == "unexpected character '/'":
        hint = "divide integers with '//', as in c // 8"
    if open_parens and open_parens[-1].line < line:
        paren = open_parens[-1]
        hint = f"the '(' at line {paren.line}, column {paren.column} is never closed"
    return Diagnostic(
        "error",
        message,
        Span(file, line, column, line, column + width),
        expected=expected,
        hint=hint,
    )


def _blank_line(text: str, line: int) -> str:
    """Replace line ``line`` (1-based) with spaces, keeping every other position as it is."""
    lines = text.split("\n")
    if 1 <= line <= len(lines):
        lines[line - 1] = " " * len(lines[line - 1])
    return "\n".join(lines)


def parse_module(text: str, file: str = "<string>") -> ast.Module:
    """Parse alexdsl source into a :class:`~alexdsl.syntax.ast.Module`.

    Every syntax error is reported: after one, the offending line is blanked and parsing
    starts again, up to 20 errors. A leading byte order mark is ignored. Safe to call from
    several threads at once. Raises :class:`AlexDSLError`.
    """
    text = text.removeprefix("\ufeff")
    lark = _parser()
    diagnostics: list[Diagnostic] = []
    attempt = text
    seen_lines: set[int] = set()
    while True:
        state = _ParseState(file)
        reset = _STATE.set(state)
        try:
            statements = lark.parse(attempt)
        except _TooDeep as error:
            diagnostics.append(_too_deep(error.token, file, error.expression))
            break
        except UnexpectedInput as error:
            diag = _syntax_diagnostic(error, file, text, lark, list(state.open_parens))
            if diag.span is None or diag.span.line in seen_lines:
                diagnostics.append(diag) if diag.span is None or not diagnostics else None
                break
            diagnostics.append(diag)
            seen_lines.add(diag.span.line)
            unclosed = diag.hint is not None and "never closed" in diag.hint
            if unclosed or isinstance(error, UnexpectedEOF) or len(diagnostics) >= MAX_SYNTAX_ERRORS:
                break
            attempt = _blank_line(attempt, diag.span.line)
            continue
        finally:
            _STATE.reset(reset)
        break
    diagnostics.extend(state.errors)
    if diagnostics:
        raise AlexDSLError(sorted(diagnostics, key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0)),
                           sources={file: text})
    module = ast.Module(file=file, source=text, statements=statements)
    module.comments = [ast.Comment(str(c), c.line, c.column) for c in state.comments]
    return module


def _too_deep(token: Token, file: str, expression: bool = False) -> Diagnostic:
    if expression:
        return Diagnostic("error", f"the expression nests more than {MAX_NESTING} operators",
                          Span(file, token.line, token.column, token.line, token.column + len(str(token))),
                          expected=f"at most {MAX_NESTING} operators, one inside another",
                          hint="write the value, or a shorter expression")
    return Diagnostic("error", f"more than {MAX_NESTING} parentheses are open here",
                      Span(file, token.line, token.column, token.line, token.column + 1),
                      expected=f"at most {MAX_NESTING} levels of nested calls and tuples",
                      hint="write the value without so many nested parentheses")
