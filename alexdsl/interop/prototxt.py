"""Protocol-buffer text format, as Caffe's ``.prototxt`` files use it: parsed in one linear pass.

::

    name: "AlexNet"
    layer { name: "conv1" type: "Convolution" convolution_param { num_output: 96 } }

A field is ``name: scalar``, ``name: [scalar, ...]`` or ``name [:] { fields }`` (``<`` ``>`` may
stand for the braces); fields may be separated by ``,`` or ``;``; a scalar is a number, a name
(``MAX``, ``true``) or one or more adjacent quoted strings; ``#`` starts a comment. Every field
keeps its line and column, so the importer's errors point into the prototxt.

The file is a stranger's: one regular-expression scan and a stack of open messages, so the time
is linear in its size (a 3 MB file of 50,000 layers parses in seconds), messages nested more than
:data:`MAX_DEPTH` deep are refused, and a brace left open is reported at the field it opens.

>>> net = parse_prototxt('name: "T"  layer { name: "c" top: "c" param { lr_mult: 2 } }')
>>> net.scalar("name").value, [f.name for f in net.message("layer").fields], net.message("layer").span.column
('T', ['name', 'top', 'param'], 18)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from alexdsl.errors import AlexDSLError, Diagnostic, Span

MAX_DEPTH = 100  # messages nested deeper than this are refused


@dataclass
class Scalar:
    kind: str  # "string", "number" or "ident"
    value: Any
    text: str
    span: Span


@dataclass
class Message:
    fields: list[Field]
    span: Span

    def all(self, name: str) -> list[Field]:
        return [f for f in self.fields if f.name == name]

    def get(self, name: str) -> Field | None:
        found = self.all(name)
        return found[-1] if found else None

    def scalar(self, name: str) -> Scalar | None:
        f = self.get(name)
        return f.value if f is not None and isinstance(f.value, Scalar) else None

    def message(self, name: str) -> Message | None:
        f = self.get(name)
        return f.value if f is not None and isinstance(f.value, Message) else None

    def scalars(self, name: str) -> list[Scalar]:
        out: list[Scalar] = []
        for f in self.all(name):
            if isinstance(f.value, Scalar):
                out.append(f.value)
            elif isinstance(f.value, list):
                out.extend(f.value)
        return out


@dataclass
class Field:
    name: str
    value: Scalar | Message | list[Scalar]
    span: Span


_TOKEN = re.compile(r"""
    (?P<skip>(?:[ \t\f\r\n]+|\#[^\n]*)+)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?[fF]?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}<>:\[\],;])
""", re.X)
_OPEN, _CLOSE = "{<", "}>"
_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.S)
_CONTROL_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b", b"f": b"\f", b"v": b"\v"}


def _unquote(text: str) -> str:
    """A quoted protobuf string's value: escapes (``\\n``, ``\\"``, octal, ``\\x``) give bytes, read as UTF-8.

    >>> _unquote(r'"a\\"b\\n\\303\\251\\x41"')
    'a"b\\néA'
    """
    def one(m: re.Match[bytes]) -> bytes:
        octal, hexa, char = m.groups()
        if octal:
            return bytes([int(octal, 8) & 0xFF])
        if hexa:
            return bytes([int(hexa, 16)])
        return _CONTROL_ESCAPES.get(char, char)

    return _ESCAPE.sub(one, text[1:-1].encode("utf-8")).decode("utf-8", errors="replace")


def _number(text: str) -> tuple[int | float, str]:
    """A number token's value and its text as alexdsl writes it (no ``f`` suffix, no ``+``)."""
    text = text.rstrip("fF")
    try:
        value: int | float = int(text)
    except ValueError:
        value = float(text)
    return value, text.lstrip("+")


class _Tokens:
    """The tokens of the text, each with its kind, its text and its span; comments and blanks skipped."""

    def __init__(self, text: str, file: str):
        self.text, self.file = text, file
        self.pos, self.start, self.line, self.line_start = 0, 0, 1, 0  # start: where the current token starts
        self.kind, self.value = "", ""
        self.next()

    def next(self) -> None:
        """Step to the next token; ``kind`` is "end" at the end of the text."""
        text = self.text
        match = _TOKEN.match(text, self.pos)
        if match is not None and match.lastgroup == "skip":
            self._count_lines(match.start(), match.end())
            match = _TOKEN.match(text, match.end())
        if match is None:
            self.start = self.pos
            if self.pos < len(text):
                raise self.error(f"unexpected character {text[self.pos]!r} in the prototxt", self.span(1))
            self.kind, self.value = "end", ""
            return
        self.start, self.pos = match.span()
        self.kind, self.value = match.lastgroup, match.group()  # type: ignore[assignment]

    def span(self, length: int | None = None) -> Span:
        """Where the current token is (``length`` characters of it; default all)."""
        column = self.start - self.line_start + 1
        end = column + (len(self.value) if length is None else length)
        return Span(self.file, self.line, column, self.line, end)

    def _count_lines(self, start: int, end: int) -> None:
        newlines = self.text.count("\n", start, end)
        if newlines:
            self.line += newlines
            self.line_start = self.text.rfind("\n", start, end) + 1
        self.pos = end

    def error(self, message: str, span: Span, expected: str | None = None, hint: str | None = None
              ) -> AlexDSLError:
        return AlexDSLError([Diagnostic("error", message, span, expected=expected, hint=hint)],
                            sources={self.file: self.text})

    def unexpected(self, expected: str) -> AlexDSLError:
        what = "end of file" if self.kind == "end" else f"'{self.value}'"
        return self.error(f"unexpected {what} in the prototxt", self.span(), expected=expected)


def _scalar(tokens: _Tokens) -> Scalar:
    """The scalar at the current token (adjacent strings are one), stepping past it."""
    span = tokens.span()
    if tokens.kind == "string":
        parts = []
        while tokens.kind == "string":
            parts.append(_unquote(tokens.value))
            tokens.next()
        text = "".join(parts)
        return Scalar("string", text, text, span)
    if tokens.kind == "number":
        value, text = _number(tokens.value)
        tokens.next()
        return Scalar("number", value, text, span)
    if tokens.kind == "name":
        name = tokens.value
        tokens.next()
        return Scalar("ident", name, name, span)
    raise tokens.unexpected("a number, a name or a \"string\"")


def parse_prototxt(text: str, file: str = "<string>") -> Message:
    """Parse protobuf text format; raise :class:`AlexDSLError` with a located diagnostic."""
    tokens = _Tokens(text, file)
    root = Message([], Span(file, 1, 1, 1, 1))
    stack: list[tuple[Message, Field]] = []  # the open messages, each with the field it is the value of
    fields = root.fields
    while True:
        if tokens.kind == "end":
            if stack:
                raise AlexDSLError([Diagnostic("error", f"'{f.name} {{' is never closed", f.span,
                                               hint=f"close it with a '}}' after the last field of '{f.name}'")
                                    for _, f in stack], sources={file: text})
            return root
        if tokens.kind == "punct" and tokens.value in _CLOSE and stack:
            stack.pop()
            fields = stack[-1][0].fields if stack else root.fields
            tokens.next()
        else:
            if tokens.kind != "name":
                raise tokens.unexpected("a field name" + (" or '}'" if stack else ""))
            name, name_span = tokens.value, tokens.span()
            tokens.next()
            colon = tokens.kind == "punct" and tokens.value == ":"
            if colon:
                tokens.next()
            if tokens.kind == "punct" and tokens.value in _OPEN:
                if len(stack) >= MAX_DEPTH:
                    raise tokens.error(f"messages are nested more than {MAX_DEPTH} deep", tokens.span(),
                                       hint="a Caffe net nests a few levels; this file is damaged or hostile")
                message = Message([], tokens.span())
                field = Field(name, message, name_span)
                fields.append(field)
                stack.append((message, field))
                fields = message.fields
                tokens.next()
                continue  # a separator may follow the closing brace only
            if not colon:
                raise tokens.unexpected("':' or '{'")
            if tokens.kind == "punct" and tokens.value == "[":
                tokens.next()
                values: list[Scalar] = []
                while not (tokens.kind == "punct" and tokens.value == "]"):
                    if values:
                        if not (tokens.kind == "punct" and tokens.value == ","):
                            raise tokens.unexpected("',' or ']'")
                        tokens.next()
                    values.append(_scalar(tokens))
                tokens.next()
                fields.append(Field(name, values, name_span))
            else:
                fields.append(Field(name, _scalar(tokens), name_span))
        if tokens.kind == "punct" and tokens.value in ",;":
            tokens.next()
