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

import bisect
import difflib
import functools
import heapq
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


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
class Note:
    """A place that explains a diagnostic, such as the line that used the block the problem is in."""

    message: str
    span: Span
    subject: str | None = None  # what the place names, such as a block instance: "... as 'stage2'"

    def render(self, sources: dict[str, str] | None = None) -> list[str]:
        about = f" as '{self.subject}'" if self.subject else ""
        where = f"{self.span.file}:{self.span.line}:{self.span.column}"
        return [f"{where}: note: {self.message}{about}", *_quoted(self.span, sources)]


@dataclass(frozen=True)
class Diagnostic:
    """One problem: ``severity`` is "error" or "warning"; ``notes`` are rendered after it, each located."""

    severity: str
    message: str
    span: Span | None = None
    expected: str | None = None
    received: str | None = None
    hint: str | None = None
    path: str | None = None  # the file, for a problem with no line (a missing file, a bad weights file)
    notes: tuple[Note, ...] = ()

    def render(self, sources: dict[str, str] | None = None) -> str:
        if self.span:
            where = f"{self.span.file}:{self.span.line}:{self.span.column}: "
        else:
            where = f"{self.path}: " if self.path else ""
        lines = [f"{where}{self.severity}: {self.message}", *_quoted(self.span, sources)]
        if self.expected:
            lines.append(f"  expected: {self.expected}")
        if self.received:
            cut = self.received[:2 * EXCERPT_WIDTH]
            lines.append(f"  received: {cut}{'…' if len(cut) < len(self.received) else ''}")
        if self.hint:
            lines.append(f"  {self.hint}")
        for note in self.notes:
            lines.extend(note.render(sources))
        return "\n".join(lines)


def _quoted(span: Span | None, sources: dict[str, str] | None) -> list[str]:
    """The source line of ``span`` and its caret, when the source is known."""
    source = (sources or {}).get(span.file) if span else None
    if source is None or span is None:
        return []
    text = source_line(source, span.line)
    if text is None:
        return []
    width = span.end_column - span.column if span.end_line == span.line else 1
    return _excerpt(text.replace("\t", " "), span.column, width)


MAX_DIAGNOSTICS_PER_FILE = 100  # rendered; the rest are counted in one last line
EXCERPT_WIDTH = 100  # columns of a long source line shown around the caret
MAX_HINT_CANDIDATES = 2000  # names a "did you mean" compares against in full


@functools.lru_cache(maxsize=8)
def _line_starts(source: str) -> list[int]:
    """Offsets where each line of ``source`` starts; computed once per text (the str's hash is cached)."""
    starts = [0]
    find = source.find
    at = find("\n")
    while at >= 0:
        starts.append(at + 1)
        at = find("\n", at + 1)
    return starts


def source_line(source: str, line: int) -> str | None:
    """Line ``line`` (1-based) of ``source`` without its line break, or None past the end.

    >>> source_line("a\\nbc\\r\\n", 2)
    'bc'
    """
    starts = _line_starts(source)
    if not 1 <= line <= len(starts):
        return None
    end = starts[line] - 1 if line < len(starts) else len(source)
    return source[starts[line - 1]:end].rstrip("\r")


def line_column(source: str, offset: int) -> tuple[int, int]:
    """The 1-based (line, column) of character ``offset`` in ``source``.

    >>> line_column("ab\\ncd", 4)
    (2, 2)
    """
    starts = _line_starts(source)
    line = bisect.bisect_right(starts, offset)
    return line, offset - starts[line - 1] + 1


def _excerpt(text: str, column: int, width: int) -> list[str]:
    """The source line and its caret, cut to a window of EXCERPT_WIDTH columns around ``column``."""
    start, end, before, after = 0, len(text), "", ""
    if len(text) > EXCERPT_WIDTH:
        start = max(0, min(column - 1 - EXCERPT_WIDTH // 3, len(text) - EXCERPT_WIDTH))
        end = start + EXCERPT_WIDTH
        before, after = ("…" if start > 0 else ""), ("…" if end < len(text) else "")
    caret_at = column - 1 - start + len(before)
    width = max(1, min(width, end - column + 1))
    return [f"    {before}{text[start:end]}{after}", "    " + " " * caret_at + "^" + "~" * (width - 1)]


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
        """Every diagnostic, at most MAX_DIAGNOSTICS_PER_FILE of each file, then a count of the rest."""
        shown: dict[str | None, int] = {}
        parts: list[str] = []
        left_out: dict[str, int] = {}
        for diagnostic in self.diagnostics:
            file = diagnostic.span.file if diagnostic.span else diagnostic.path
            shown[file] = shown.get(file, 0) + 1
            if shown[file] > MAX_DIAGNOSTICS_PER_FILE:
                left_out[diagnostic.severity] = left_out.get(diagnostic.severity, 0) + 1
            else:
                parts.append(diagnostic.render(self.sources))
        if left_out:
            counts = [f"{n} more {severity}{'s' if n != 1 else ''}" for severity, n in sorted(left_out.items())]
            parts.append("... and " + " and ".join(counts))
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.render()


@dataclass
class DiagnosticSink:
    """Collects diagnostics while a pass keeps going, so one run reports every problem."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, message: str, span: Span | None = None, **extra: Any) -> None:
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
    names = set(candidates)
    if len(names) > MAX_HINT_CANDIDATES:  # keep a hint cheap next to a network of many layers
        low, high = 0.4 * len(name), 2.5 * len(name)
        names = {c for c in names if low <= len(c) <= high and (c[:1] == name[:1] or c[-1:] == name[-1:])}
        if len(names) > MAX_HINT_CANDIDATES:
            names = set(heapq.nlargest(MAX_HINT_CANDIDATES, sorted(names),
                                       key=lambda c: len(os.path.commonprefix([c, name]))))
    close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
