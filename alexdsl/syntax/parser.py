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
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr
from lark.parsers.lalr_parser_state import ParserState

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
    """What one parse call tracks; kept per call (in a context variable) so threads may parse at once.

    The post-lexer's state lives here too, not in its generator: after a syntax error Lark resumes
    the parse with a new generator, which must go on where the last one stopped.
    """

    file: str
    open_parens: list[Token] = field(default_factory=list)
    comments: list[Token] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)  # bad literals: too large, not finite
    pending: Token | None = None  # a newline held back until the next token shows it is not a '|' line
    lookahead: Token | None = None  # a token read after ``pending`` and not yet passed on
    skipping: bool = False  # after a syntax error: drop tokens up to the end of the broken statement


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

    It also refuses more than MAX_NESTING open parentheses, so nothing downstream recurses deeply,
    and after a syntax error it drops the rest of the broken statement (``_ParseState.skipping``),
    up to the end of its line or a '}' that closes its block.
    """

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        state = _STATE.get()
        open_parens = state.open_parens
        while True:
            if state.lookahead is not None:
                token, state.lookahead = state.lookahead, None
            else:
                token = next(stream, None)
                if token is None:
                    break
            kind = token.type
            if kind == "_NL":
                if not open_parens and state.pending is None:
                    state.pending = token
                continue
            if state.pending is not None:
                pending, state.pending = state.pending, None
                if kind != "VBAR":
                    if state.skipping:  # the broken statement ends with this line
                        state.skipping = False
                    else:
                        state.lookahead = token
                        yield pending
                        continue
            if kind == "LPAR":
                open_parens.append(token)
                if len(open_parens) > MAX_NESTING and not state.skipping:
                    raise _TooDeep(token)
            elif kind == "RPAR" and open_parens:
                open_parens.pop()
            elif kind == "RBRACE" and not open_parens:  # a '}' on a broken line still closes its block
                state.skipping = False
            if not state.skipping:
                yield token
        if state.pending is not None:
            pending, state.pending = state.pending, None
            if not state.skipping:
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

    def shape_value(self, children: list[Token]) -> ast.ShapeValue:
        (tok,) = children
        digits = str(tok).split("x")  # a dimension too long to be one is kept too large, refused when bound
        dims = tuple(int(d) if len(d.lstrip("0")) <= len(str(MAX_INT)) else MAX_INT for d in digits)
        return ast.ShapeValue(dims, self._span(tok), str(tok))

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
        label, sources, _, count, _, index, first, then, rest, phase = children
        if then is None:  # one call for every instance
            first, rest = None, first
        return ast.RepeatStmt(self._name(label), sources or [], count, rest, phase, self._span(children),
                              self._name(index) if index is not None else None, first)

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


_ARITHMETIC = frozenset({"PLUS", "MINUS", "STAR", "SLASH", "DSLASH"})


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


def _acceptable(error: UnexpectedInput) -> set[str]:
    """The terminals the parser would take where ``error`` happened.

    What the parser accepts when each is tried (exact: LALR's lookahead sets are merged across
    states, so its ``expected`` may list a ',' that only a repeat's call takes, and the lexer's
    ``allowed`` lists every terminal).
    """
    if getattr(error, "interactive_parser", None) is not None:
        try:
            return set(error.interactive_parser.accepts())
        except Exception:  # noqa: BLE001 - fall back on the table's lookahead
            pass
    return set(getattr(error, "expected", None) or getattr(error, "allowed", None) or [])


def _syntax_diagnostic(error: UnexpectedInput, file: str, text: str, lark: Lark,
                       open_parens: list[Token]) -> Diagnostic:
    line, column = max(error.line, 1), max(error.column, 1)
    expected_terms = sorted(_acceptable(error))
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
    def parse_example(example: str) -> list[ast.Statement]:
        reset = _STATE.set(_ParseState(file))  # each example is parsed with a state of its own
        try:
            return lark.parse(example)
        finally:
            _STATE.reset(reset)

    hint = None
    try:
        hint = error.match_examples(parse_example, _mistake_examples(), use_accepts=True)
    except Exception:  # noqa: BLE001 - a failed lookup only loses the hint
        hint = None
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


_DECLARING = {"NAME": "layer", "INPUT": "input", "BLOCK": "block"}  # first token of a statement -> what it defines


class _Recovery:
    """Lark's ``on_error`` hook: reports the error (one per line), drops the broken statement and resumes.

    The parser's stacks are cut back to where the broken statement began, and the post-lexer drops
    the rest of it, up to the end of its line (past any '(' it left open); the parse goes on from the
    next statement. What the broken statement would have defined is kept as an
    :class:`~alexdsl.syntax.ast.BrokenStmt`, so that the elaborator says nothing more about it.
    """

    def __init__(self, file: str, text: str, lark: Lark, state: _ParseState):
        self.file, self.text, self.lark, self.state = file, text, lark, state
        self.diagnostics: list[Diagnostic] = []
        self.broken: list[ast.BrokenStmt] = []
        self.stopped = False

    def __call__(self, error: UnexpectedInput) -> bool:
        parser_state = error.interactive_parser.parser_state
        if isinstance(error, UnexpectedCharacters) and self.state.pending is not None:
            newline, self.state.pending = self.state.pending, None  # a line starts with the bad character
            if self.state.skipping:  # and ends the statement skipped after an error before
                self.state.skipping = False
            else:
                try:
                    parser_state.feed_token(newline)
                except UnexpectedToken as incomplete:  # and the line before it is incomplete
                    incomplete.interactive_parser = error.interactive_parser
                    self.report(incomplete)
                    self._cut_back(incomplete, parser_state)
        if not self.report(error):
            self.stopped = True
            return False
        self._cut_back(error, parser_state)
        if isinstance(error, UnexpectedCharacters):  # skip to the end of the line: one error per line
            lexer = error.interactive_parser.lexer_thread.state
            at = lexer.line_ctr.char_pos
            end = self.text.find("\n", at)
            lexer.line_ctr.feed(self.text[at:end if end >= 0 else len(self.text)])
            self.state.skipping = True
        else:
            self.state.skipping = error.token.type not in ("_NL", "$END")
        return True

    def report(self, error: UnexpectedInput) -> bool:
        """Record the error unless its line already has one; False when parsing should stop."""
        diagnostic = _syntax_diagnostic(error, self.file, self.text, self.lark, list(self.state.open_parens))
        assert diagnostic.span is not None
        if all(d.span is None or d.span.line != diagnostic.span.line for d in self.diagnostics):
            self.diagnostics.append(diagnostic)
        unclosed = diagnostic.hint is not None and "never closed" in diagnostic.hint
        return not unclosed and len(self.diagnostics) < MAX_SYNTAX_ERRORS

    def _cut_back(self, error: UnexpectedInput, parser_state: ParserState) -> None:
        """Pop the parser's stacks to the state before the broken statement; record what it defined."""
        at_end = isinstance(error, UnexpectedToken) and error.token.type == "$END"
        starts = _statement_starts(self.lark)[0 if at_end else 1]  # at the end of the file, leave any block
        states, values = parser_state.state_stack, parser_state.value_stack
        keep = len(states)
        while keep > 1 and states[keep - 1] not in starts and (at_end or not _ends_statement(values[keep - 2])):
            keep -= 1
        popped = values[keep - 1:]
        del states[keep:]
        del values[keep - 1:]
        if popped and isinstance(popped[0], Token):
            first = popped[0]
            kind = _DECLARING.get(first.type, first.type.lower())
            label = first if first.type == "NAME" else next(
                (t for t in popped[1:2] if isinstance(t, Token) and t.type == "NAME"), None)
            span = Span(self.file, first.line, first.column, first.line, first.column + len(str(first)))
            name = ast.Name(str(label), Span(self.file, label.line, label.column, label.line,
                                             label.column + len(str(label)))) if label is not None else None
            self.broken.append(ast.BrokenStmt(kind, name, span))
        elif popped or not at_end:
            line, column = max(error.line, 1), max(error.column, 1)
            self.broken.append(ast.BrokenStmt("statement", None, Span(self.file, line, column, line, column + 1)))


def _ends_statement(value: object) -> bool:
    """Whether ``value``, the last on the parser's stack, is the newline that ends a statement."""
    return isinstance(value, Token) and value.type == "_NL"


@functools.cache
def _statement_starts(lark: Lark) -> tuple[frozenset[int], frozenset[int]]:
    """The LALR states where a top-level statement may start, and those where any statement may (blocks too)."""
    states = lark.parser.parser.parser.parse_table.states
    top = frozenset(s for s, actions in states.items() if "_statement" in actions)
    return top, top | frozenset(s for s, actions in states.items() if "_block_statement" in actions)


def _place_broken(statements: list[ast.Statement], broken: list[ast.BrokenStmt]) -> list[ast.Statement]:
    """``statements`` with each broken statement put where it was written: at the top, or in a block's body."""
    out = list(statements)
    for item in broken:
        line = item.span.line
        block = next((s for s in out if isinstance(s, ast.BlockDef) and s.span.line < line <= s.span.end_line), None)
        body: list = block.body if block is not None else out
        index = next((i for i, s in enumerate(body) if s.span.line > line), len(body))
        body.insert(index, item)
    return out


def parse_module(text: str, file: str = "<string>") -> ast.Module:
    """Parse alexdsl source into a :class:`~alexdsl.syntax.ast.Module`.

    Every syntax error is reported (up to 20). A leading byte order mark is ignored. Safe to call
    from several threads at once. Raises :class:`AlexDSLError`.
    """
    module, diagnostics = parse_recovering(text, file)
    if diagnostics:
        raise AlexDSLError(diagnostics, sources={file: module.source})
    return module


def parse_recovering(text: str, file: str = "<string>") -> tuple[ast.Module, list[Diagnostic]]:
    """The module and the syntax errors of ``text``, in source order.

    After a syntax error the parse resumes at the next statement (Lark's ``on_error``), so the
    module holds every statement that parsed, and a :class:`~alexdsl.syntax.ast.BrokenStmt` for
    each one that did not. The module is empty when parsing stopped early (at a '(' never
    closed, parentheses nested too deep, or after 20 errors) or a number is out of range.
    """
    text = text.removeprefix("\ufeff")
    lark = _parser()
    state = _ParseState(file)
    recovery = _Recovery(file, text, lark, state)
    statements: list[ast.Statement] = []
    reset = _STATE.set(state)
    try:
        statements = _place_broken(lark.parse(text, on_error=recovery), recovery.broken)
    except _TooDeep as error:
        recovery.diagnostics.append(_too_deep(error.token, file, error.expression))
    except UnexpectedInput as error:
        if not recovery.stopped:  # an error the hook gave up on (Lark's guard against looping at the end)
            recovery.report(error)
    finally:
        _STATE.reset(reset)
    diagnostics = sorted(recovery.diagnostics + state.errors,
                         key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))
    complete = not recovery.stopped and not state.errors  # a bad literal's stand-in value would mislead
    module = ast.Module(file=file, source=text, statements=statements if complete else [])
    module.comments = [ast.Comment(str(c), c.line, c.column) for c in state.comments]
    return module, diagnostics


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
