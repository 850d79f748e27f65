"""The syntax tree: plain dataclasses, each carrying the span it came from.

The tree stays inside the front end: elaboration turns it into the IR, and the formatter
prints it back. Nothing else consumes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alexdsl.errors import Span


@dataclass
class Literal:
    """An int, float, bool or string written in the source."""

    value: int | float | bool | str
    span: Span
    text: str = ""


@dataclass
class Name:
    """A bare identifier: a layer reference, a block parameter or a choice such as ``ceil``."""

    name: str
    span: Span


@dataclass
class TupleValue:
    items: list[Value]
    span: Span


@dataclass
class ShapeValue:
    """A shape written as an argument value: ``1x197x768`` (``dims`` as written; checked when bound)."""

    dims: tuple[int, ...]
    span: Span
    text: str = ""  # as written (fmt keeps it); empty when built from values


@dataclass
class Call:
    """``name(args)``: an op or block in a chain, or a filler such as ``gaussian(0.01)``."""

    name: str
    args: list[Arg]
    span: Span
    name_span: Span
    has_parens: bool = True


@dataclass
class BinaryOp:
    """Arithmetic ``left op right``: ``op`` is ``+``, ``-``, ``*``, ``/`` or ``//``."""

    op: str
    left: Value
    right: Value
    span: Span
    op_span: Span
    depth: int = 1  # operators nested, this one included (the parser refuses more than MAX_NESTING)


@dataclass
class Negate:
    """``-operand`` where the operand is not a number (``-1`` is a :class:`Literal`)."""

    operand: Value
    span: Span
    depth: int = 1


Value = Literal | Name | TupleValue | ShapeValue | Call | BinaryOp | Negate
Expression = BinaryOp | Negate


@dataclass
class Arg:
    """A positional (``keyword`` is None) or keyword argument."""

    keyword: str | None
    value: Value
    span: Span


@dataclass
class Link:
    """One element of a chain, optionally named inline: ``pool1: maxpool(3, stride=2)``."""

    label: Name | None
    call: Call
    span: Span


@dataclass
class LayerStmt:
    """``label: [a, b ->] op(...) | op(...) [@phase]``."""

    label: Name
    sources: list[Name]
    links: list[Link]
    phase: Name | None
    span: Span


@dataclass
class RepeatStmt:
    """``label: [src ->] repeat N [as i:] [first(...), then] call(...)``, expanded to ``label.0`` ...
    ``label.N-1``. ``index`` names the instance's number (from 0) in the calls' arguments; ``first``,
    when given, is the first instance's call, and ``call`` the others'."""

    label: Name
    sources: list[Name]
    count: Value
    call: Call
    phase: Name | None
    span: Span
    index: Name | None = None
    first: Call | None = None


@dataclass
class NetworkStmt:
    name: Name
    span: Span


@dataclass
class DescriptionStmt:
    text: Literal
    span: Span


@dataclass
class InputStmt:
    """``input data: 3x227x227`` (``shape``) or ``input label: class(1000)`` (``type_call``)."""

    name: Name
    shape: Literal | None
    type_call: Call | None
    span: Span


@dataclass
class OutputStmt:
    names: list[Name]
    span: Span


@dataclass
class DefaultsStmt:
    """``defaults conv(weight=gaussian(0.01))`` or ``defaults bias(lr=2, decay=0)``."""

    target: Name
    args: list[Arg]
    span: Span


@dataclass
class SolverStmt:
    args: list[Arg]
    span: Span


@dataclass
class PreprocessStmt:
    target: Name
    args: list[Arg]
    span: Span


@dataclass
class BlockParam:
    name: Name
    default: Value | None


@dataclass
class BlockDef:
    name: Name
    params: list[BlockParam]
    body: list[LayerStmt | RepeatStmt | BrokenStmt]
    span: Span


@dataclass
class BrokenStmt:
    """A statement with a syntax error, kept where it was written so that elaboration says nothing
    more about it: ``kind`` is what its first token shows ("layer", "input", "block", ...) and
    ``label`` the name it would have defined, when that much of it parsed."""

    kind: str
    label: Name | None
    span: Span


Statement = (
    NetworkStmt
    | DescriptionStmt
    | InputStmt
    | OutputStmt
    | DefaultsStmt
    | SolverStmt
    | PreprocessStmt
    | LayerStmt
    | RepeatStmt
    | BlockDef
    | BrokenStmt
)


@dataclass
class Comment:
    text: str
    line: int
    column: int


def chain_names(first: str, links: list[tuple[str | None, str]]) -> list[str]:
    """The name of each link of a chain, from its inline label (or None) and its op.

    The first link takes ``first`` (the statement's label) unless it has its own; an unlabelled
    link after it is named after the nearest labelled link before it, ``<label>_<op>``, with a
    count when that op repeats under the same label. The one place this rule is written.

    >>> chain_names("se", [("pool", "global_avgpool"), ("fc1", "conv"), (None, "relu"), ("fc2", "conv"),
    ...                    (None, "sigmoid")])
    ['pool', 'fc1', 'fc1_relu', 'fc2', 'fc2_sigmoid']
    >>> chain_names("c", [(None, "conv"), (None, "relu"), (None, "conv"), (None, "relu")])
    ['c', 'c_relu', 'c_conv2', 'c_relu2']
    """
    names = []
    base = first
    counts: dict[tuple[str, str], int] = {}
    for i, (label, op) in enumerate(links):
        base = label if label is not None else base
        count = counts[base, op] = counts.get((base, op), 0) + 1
        if label is not None or i == 0:
            names.append(base)
        else:
            names.append(f"{base}_{op}{count if count > 1 else ''}")
    return names


@dataclass
class Module:
    """One parsed file: its statements in order, and its comments (kept for the formatter)."""

    file: str
    source: str
    statements: list[Statement] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
