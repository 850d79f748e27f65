"""Diagnostics: one error type that carries every problem found, each with its source span.

Rendered like a compiler::

    alexnet.adsl:3:8: error: unknown op 'cnov'
        conv1: cnov(96, 11)
               ^~~~
      expected: a registered op
      did you mean 'conv'?

>>> err = AlexDSLError([Diagnostic("error", "unknown op 'cnov'", Span("a.adsl", 1, 8, 1, 12),
...                                hint="did you mean 'conv'?")], sources={"a.adsl": "conv1: cnov(96, 11)"})
>>> print(err)
a.adsl:1:8: error: unknown op 'cnov'
    conv1: cnov(96, 11)
           ^~~~
  did you mean 'conv'?
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A 1-based source range; ``end_column`` is exclusive."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def to_json(self) -> list[int | str]:
        return [self.file, self.line, self.column, self.end_line, self.end_column]

    @classmethod
    def from_json(cls, data: list[int | str] | None) -> Span | None:
        if data is None:
            return None
        file, line, column, end_line, end_column = data
        return cls(str(file), int(line), int(column), int(end_line), int(end_column))


@dataclass(frozen=True)
class Diagnostic:
    """One problem: ``severity`` is "error" or "warning"."""

    severity: str
    message: str
    span: Span | None = None
    expected: str | None = None
    received: str | None = None
    hint: str | None = None
    path: str | None = None  # the file, for a problem with no line (a missing file, a bad weights file)

    def render(self, sources: dict[str, str] | None = None) -> str:
        if self.span:
            where = f"{self.span.file}:{self.span.line}:{self.span.column}: "
        else:
            where = f"{self.path}: " if self.path else ""
        lines = [f"{where}{self.severity}: {self.message}"]
        source = (sources or {}).get(self.span.file) if self.span else None
        if source is not None and self.span is not None:
            text_lines = source.splitlines()
            if 1 <= self.span.line <= len(text_lines):
                text = text_lines[self.span.line - 1].replace("\t", " ")
                width = (
                    self.span.end_column - self.span.column if self.span.end_line == self.span.line else 1
                )
                width = max(1, min(width, len(text) - self.span.column + 1))
                lines.append(f"    {text}")
                lines.append("    " + " " * (self.span.column - 1) + "^" + "~" * (width - 1))
        if self.expected:
            lines.append(f"  expected: {self.expected}")
        if self.received:
            lines.append(f"  received: {self.received}")
        if self.hint:
            lines.append(f"  {self.hint}")
        return "\n".join(lines)


_PLAIN_MESSAGE = re.compile(r"(?:(?P<path>[^\n]+?): )?error: (?P<message>.*)", re.S)


class AlexDSLError(Exception):
    """The only exception alexdsl raises for a user's mistake; holds every diagnostic found.

    A plain message may start with ``error:`` or ``PATH: error:``; it is rendered once.

    >>> str(AlexDSLError("net.adsl: error: no such file"))
    'net.adsl: error: no such file'
    >>> str(AlexDSLError("the weights do not fit"))
    'error: the weights do not fit'
    """

    def __init__(self, diagnostics: Iterable[Diagnostic] | str, sources: dict[str, str] | None = None):
        if isinstance(diagnostics, str):
            match = _PLAIN_MESSAGE.fullmatch(diagnostics)
            diagnostics = [Diagnostic("error", match["message"], path=match["path"]) if match
                           else Diagnostic("error", diagnostics)]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        self.sources: dict[str, str] = dict(sources or {})
        super().__init__(self.render())

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def render(self) -> str:
        return "\n".join(d.render(self.sources) for d in self.diagnostics)

    def __str__(self) -> str:
        return self.render()


@dataclass
class DiagnosticSink:
    """Collects diagnostics while a pass keeps going, so one run reports every problem."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, message: str, span: Span | None = None, **extra: str | None) -> None:
        self.diagnostics.append(Diagnostic("error", message, span, **extra))

    def warning(self, message: str, span: Span | None = None, **extra: str | None) -> None:
        self.diagnostics.append(Diagnostic("warning", message, span, **extra))

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean" hint for the closest candidate, or None.

    >>> did_you_mean("cnov", ["conv", "fc", "relu"])
    "did you mean 'conv'?"
    """
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
