"""Building a syntax tree in code: how importers write alexdsl source without pasting strings.

``import json``, ``import caffe`` and ``import onnx`` each describe the network they read as
:mod:`alexdsl.syntax.ast` nodes through a :class:`ModuleBuilder`; the formatter
(:func:`alexdsl.fmt.format_module`, the one printer) lays them out, so what they write always
passes ``fmt --check``. Values are Python values (:func:`value`); names are checked here and an
unwritable one is a ``ValueError`` (writers check names from files first and report them).

>>> b = ModuleBuilder()
>>> b.network("T")
>>> b.input("x", (3, 8, 8))
>>> b.blank()
>>> b.layer("c", [call("conv", 4, 3, stride=2), ("act", call("relu"))])
>>> print(b.text(), end="")
network T
input x: 3x8x8
<BLANKLINE>
c: conv(4, 3, stride=2) | act: relu
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from alexdsl.errors import AlexDSLError, Span
from alexdsl.ops.registry import REQUIRED, OpDef
from alexdsl.syntax import ast
from alexdsl.syntax.parser import grammar_text

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*)*")  # NAME of grammars/alexdsl.lark


@functools.cache
def reserved_words() -> frozenset[str]:
    """The words the grammar spells out (``network``, ``input``, ``true``...): never names."""
    return frozenset(re.findall(r'^[A-Z_]+: "([a-z]+)"$', grammar_text(), re.M))


NAME_RULE = ("letters, digits and '_' (parts joined by '.'), not starting with a digit, "  # what is_name accepts
             "and not a keyword such as 'input'")


def is_name(text: object) -> bool:
    """Whether ``text`` can be written as a name in alexdsl source.

    >>> is_name("conv1"), is_name("b1.conv"), is_name("input"), is_name("a\\nsolver()"), is_name("1x")
    (True, True, False, False, False)
    """
    return isinstance(text, str) and bool(NAME.fullmatch(text)) and text not in reserved_words()


def as_name(text: str, fallback: str = "layer", dotted: bool = True) -> str:
    """A name from another format (a Caffe layer, an ONNX node) made an alexdsl name: other characters
    become ``_`` (and ``.`` too unless ``dotted``), empty parts go, a leading digit gets a ``_`` before it,
    and a keyword (or ``in``, a block's input, for a dotted layer name) a ``_`` after it.

    >>> as_name("conv 1/3x3"), as_name("0.weight"), as_name("..a..b."), as_name("input"), as_name("in")
    ('conv_1_3x3', '_0.weight', 'a.b', 'input_', 'in_')
    >>> as_name("res net.v2", "Imported", dotted=False), as_name("", "Imported", dotted=False)
    ('res_net_v2', 'Imported')
    """
    name = re.sub(r"[^A-Za-z0-9_.]" if dotted else r"[^A-Za-z0-9_]", "_", text)
    name = re.sub(r"\.+", ".", name).strip(".") or fallback
    if not re.match(r"[A-Za-z_]", name):
        name = "_" + name
    return name if is_name(name) and not (dotted and name == "in") else name + "_"


def string_literal(text: str) -> str:
    """``text`` as an alexdsl string literal: one line, every character escaped as the parser reads it back.

    >>> print(string_literal('say "hi"\\n\\\\ é'))
    "say \\"hi\\"\\n\\\\ \\xe9"
    """
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def number_text(number: int | float) -> str:
    """How a number is written: the shortest text that reads back as the same value.

    >>> number_text(0.0001), number_text(2.0), number_text(1e-20), number_text(7)
    ('0.0001', '2', '1e-20', '7')
    """
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ValueError(f"a number that is not finite cannot be written: {number!r}")
        text = repr(number)
        return text[:-2] if text.endswith(".0") and "e" not in text else text
    return str(int(number))


_NOWHERE = Span("<built>", 0, 0, 0, 0)
# a number as the grammar reads it: INT or FLOAT of grammars/alexdsl.lark, with a minus sign
_NUMBER = re.compile(r"-?([0-9]+\.[0-9]*([eE][-+]?[0-9]+)?|\.[0-9]+([eE][-+]?[0-9]+)?|[0-9]+([eE][-+]?[0-9]+)?)")


def name(text: str) -> ast.Name:
    """A name node; ``ValueError`` when ``text`` cannot be written as a name."""
    if not is_name(text):
        raise ValueError(f"cannot be written as an alexdsl name: {text!r}")
    return ast.Name(text, _NOWHERE)


def value(item: Any) -> ast.Value:
    """A Python value as a syntax node: numbers, ``True``/``False``, names (or strings, quoted
    when they are not names), tuples and lists of these; syntax nodes pass through.

    >>> from alexdsl.fmt import format_value
    >>> [format_value(value(v)) for v in (3, 0.5, True, "ceil", "a b", (1, 2))]
    ['3', '0.5', 'true', 'ceil', '"a b"', '(1, 2)']
    """
    if isinstance(item, (ast.Literal, ast.Name, ast.TupleValue, ast.ShapeValue, ast.Call, ast.BinaryOp, ast.Negate)):
        return item
    if isinstance(item, bool):
        return ast.Literal(item, _NOWHERE, "true" if item else "false")
    if isinstance(item, (int, float)):
        return ast.Literal(item, _NOWHERE, number_text(item))
    if isinstance(item, str):
        return ast.Name(item, _NOWHERE) if is_name(item) else ast.Literal(item, _NOWHERE, string_literal(item))
    if isinstance(item, (tuple, list)):
        return ast.TupleValue([value(v) for v in item], _NOWHERE)
    raise ValueError(f"cannot be written as an alexdsl value: {item!r}")


def number(item: int | float, text: str | None = None) -> ast.Literal:
    """A number node, written as ``text`` when given (as another file spelled it: ``1e-4`` stays
    ``1e-4``), else as :func:`number_text`; ``ValueError`` when ``text`` is not an alexdsl number.

    >>> from alexdsl.fmt import format_value
    >>> format_value(number(0.0001, "1e-4")), format_value(number(0.0001))
    ('1e-4', '0.0001')
    """
    if isinstance(item, bool) or not isinstance(item, (int, float)):
        raise ValueError(f"not a number: {item!r}")
    if text is None:
        text = number_text(item)
    elif not _NUMBER.fullmatch(text):
        raise ValueError(f"cannot be written as an alexdsl number: {text!r}")
    return ast.Literal(item, _NOWHERE, text)


def arg(item: Any, keyword: str | None = None) -> ast.Arg:
    """One argument: positional, or ``keyword=item``."""
    if keyword is not None:
        name(keyword)
    return ast.Arg(keyword, value(item), _NOWHERE)


def call(op: str, *args: Any, **kwargs: Any) -> ast.Call:
    """``op(args, key=value)``; with no arguments it is written bare (``relu``).

    Positional items may be :class:`ast.Arg` (for keywords that are not Python identifiers).
    """
    items = [a if isinstance(a, ast.Arg) else arg(a) for a in args]
    items += [arg(v, k) for k, v in kwargs.items()]
    return ast.Call(name(op).name, items, _NOWHERE, _NOWHERE, has_parens=bool(items))


def filler(kind: str, *args: Any, **kwargs: Any) -> ast.Call:
    """A filler such as ``gaussian(0.01)``: like :func:`call`, but written with parentheses even
    without arguments (``xavier()``), as fillers are.

    >>> from alexdsl.fmt import format_value
    >>> format_value(filler("xavier")), format_value(filler("gaussian", 0.01, mean=1))
    ('xavier()', 'gaussian(0.01, mean=1)')
    """
    built = call(kind, *args, **kwargs)
    built.has_parens = True
    return built


def op_args(op: OpDef, attrs: Mapping[str, Any],
            write: Callable[[str, Any], ast.Value] = lambda key, item: value(item)) -> list[ast.Arg]:
    """The shortest arguments that give ``op`` the attributes ``attrs`` (as the IR holds them).

    An argument at its default is left out (a pair ``(1, 1)`` matches the default ``1``; a pool's
    stride, whose default is None, matches its kernel); required arguments are positional until
    one before them is left out or written by keyword, the rest are keywords. A pair of equal
    sides is written as one number. ``write(arg_name, item)`` makes each value's node (default
    :func:`value`): a writer that checks values passes its own.

    >>> from alexdsl.fmt import format_args
    >>> from alexdsl.ops.registry import lookup
    >>> conv = {"out": 8, "kernel": (3, 3), "stride": (2, 2), "pad": (0, 0), "dilation": (1, 1),
    ...         "groups": 1, "bias": False}
    >>> format_args(op_args(lookup("conv"), conv))
    '8, 3, stride=2, bias=false'
    >>> format_args(op_args(lookup("maxpool"), {"kernel": (3, 3), "stride": (3, 3), "pad": (1, 0), "round": "ceil"}))
    '3, pad=(1, 0), round=ceil'
    """
    args: list[ast.Arg] = []
    sizes: list[ast.Arg] = []
    positional = True
    for spec in op.args:
        if spec.name not in attrs:
            continue
        item = attrs[spec.name]
        default = spec.attr_default
        if spec.name == "stride" and default is None:  # a pool's stride follows its kernel
            default = attrs.get("kernel")
        if default is not REQUIRED and item == default:
            positional = False
            continue
        if spec.kind == "sizes" and isinstance(item, tuple):  # every size its own keyword, after the others
            sizes += [arg(write(key, size), key) for key, size in item]
            continue
        if spec.kind == "pair" and isinstance(item, tuple) and len(item) == 2 and item[0] == item[1]:
            item = item[0]  # a pair of equal sides is written as one number
        if spec.kind == "ints" and isinstance(item, tuple) and len(item) == 1:
            item = item[0]  # as is one int
        if spec.kind == "shape" and isinstance(item, tuple) and all(type(d) is int for d in item):
            node: ast.Value = ast.ShapeValue(item, _NOWHERE) if len(item) > 1 else number(item[0])
        elif spec.kind == "string" and isinstance(item, str):
            node = ast.Literal(item, _NOWHERE, string_literal(item))  # quoted even when it reads as a name
        else:
            node = write(spec.name, item)
        if positional and spec.positional and default is REQUIRED:
            args.append(ast.Arg(None, node, _NOWHERE))
        else:
            positional = False
            args.append(arg(node, spec.name))
    return args + sizes


Link = tuple[str | None, ast.Call] | ast.Call


class ModuleBuilder:
    """Statements added in order, one line each; :meth:`blank` separates groups, as a blank
    line does in a file. :meth:`module` is the tree, which the elaborator takes as it is
    (:func:`alexdsl.frontend.network_from_module`); :meth:`text` its canonical source.

    Each statement is placed on the line it will have in :meth:`text`, the ``k``-th link of a
    chain at column ``k + 1``; a part of it without a place of its own gets the statement's (or
    the link's), in a copy: the nodes the caller built stay as they were. An importer passes
    ``origin``, where a statement came from in its own file (a prototxt line), and :meth:`locate`
    moves an error about the statement there.

    >>> from alexdsl.frontend import network_from_module
    >>> b = ModuleBuilder("t.adsl")
    >>> b.network("T")
    >>> b.input("x", (3, 8, 8))
    >>> b.layer("c", [call("conv", 0, 3)], origin=[Span("t.prototxt", 7, 1, 7, 6)])
    >>> try:
    ...     network_from_module(b.module())
    ... except Exception as error:
    ...     print(b.locate(error).diagnostics[0].span)
    Span(file='t.prototxt', line=7, column=1, end_line=7, end_column=6)
    """

    def __init__(self, file: str = "<built>"):
        self.file = file
        self._lines: list[str] = []  # the layout the statements would have in a file: what fmt reads blanks from
        self._statements: list[ast.Statement] = []
        self._comments: list[ast.Comment] = []
        self._body: list[ast.Statement] | None = None  # inside block(): its body
        self._origins: dict[tuple[int, int], Span] = {}  # (line, column) of a statement or link -> its origin
        self.deferred_labels: list[str] = []  # label inputs whose class count the shape pass gives

    # positions ---------------------------------------------------------------------------------
    def _span(self, lines: int = 1) -> Span:
        first = len(self._lines) + 1
        self._lines += ["."] * lines
        return Span(self.file, first, 1, first + lines - 1, 2)

    def _add(self, stmt: ast.Statement, comment: str | None = None, origin: Span | None = None) -> None:
        stmt = _placed(stmt, stmt.span)
        if origin is not None:
            self._origins[(stmt.span.line, stmt.span.column)] = origin
        (self._body if self._body is not None else self._statements).append(stmt)
        if comment is not None:
            self._trailing(comment, stmt.span.line)

    def _trailing(self, text: str, line: int) -> None:
        self._comments.append(ast.Comment(_comment_text(text), line, 3))

    # statements --------------------------------------------------------------------------------
    def blank(self) -> None:
        """A blank line (several in a row print as one; none at the start or end)."""
        self._lines.append("")

    def comment(self, text: str) -> None:
        """A comment on its own line; ``text`` gets its ``#`` when it has none."""
        text = _comment_text(text)
        self._lines.append(text)  # not blank: the comment is on it
        self._comments.append(ast.Comment(text, len(self._lines), 1))

    def network(self, network_name: str) -> None:
        span = self._span()
        self._add(ast.NetworkStmt(name(network_name), span))

    def description(self, text: str) -> None:
        span = self._span()
        self._add(ast.DescriptionStmt(ast.Literal(text, span, string_literal(text)), span))

    def input(self, input_name: str, shape: Sequence[int], comment: str | None = None,
              origin: Span | None = None) -> None:
        """``input name: CxHxW``."""
        span = self._span()
        dims = "x".join(str(int(d)) for d in shape)
        self._add(ast.InputStmt(name(input_name), ast.Literal(dims, span, dims), None, span), comment, origin)

    def tokens_input(self, input_name: str, length: int, vocab: int | None = None) -> None:
        """``input name: tokens(N)``, or ``tokens(N, vocab=V)``: up to N token ids (below V)."""
        span = self._span()
        args = [arg(length)] + ([arg(vocab, "vocab")] if vocab is not None else [])
        self._add(ast.InputStmt(name(input_name), None, ast.Call("tokens", args, span, span), span))

    def class_input(self, input_name: str, classes: int | None, origin: Span | None = None) -> None:
        """``input name: class(N)``: a label. ``classes`` None leaves N to the shape pass: pass
        :attr:`deferred_labels` to :func:`~alexdsl.frontend.network_from_module`, then give
        :meth:`resolve_labels` what it found."""
        span = self._span()
        if classes is None:
            self.deferred_labels.append(input_name)
        self._add(ast.InputStmt(name(input_name), None, ast.Call("class", [arg(classes or 1)], span, span), span),
                  origin=origin)

    def resolve_labels(self, classes: Mapping[str, int]) -> None:
        """Each deferred label's ``class(N)``: its count in ``classes`` (what the shape pass found: the label
        layer's ``attrs["classes"]``)."""
        for stmt in self._statements:
            if isinstance(stmt, ast.InputStmt) and stmt.name.name in self.deferred_labels:
                assert stmt.type_call is not None
                stmt.type_call.args = [_placed(arg(classes[stmt.name.name]), stmt.type_call.span)]

    def output(self, names: Iterable[str]) -> None:
        span = self._span()
        self._add(ast.OutputStmt([name(n) for n in names], span))

    def defaults(self, target: str, *args: ast.Arg, origin: Span | None = None, **kwargs: Any) -> None:
        """``defaults target(key=value, ...)``."""
        span = self._span()
        items = list(args) + [arg(v, k) for k, v in kwargs.items()]
        self._add(ast.DefaultsStmt(name(target), items, span), origin=origin)

    def preprocess(self, target: str, settings: dict[str, Any]) -> None:
        span = self._span()
        self._add(ast.PreprocessStmt(name(target), [arg(v, k) for k, v in settings.items()], span))

    def solver(self, settings: dict[str, Any]) -> None:
        span = self._span()
        self._add(ast.SolverStmt([arg(v, k) for k, v in settings.items()], span))

    def layer(self, label: str, links: Sequence[Link], sources: Sequence[str] = (), phase: str | None = None,
              comment: str | None = None, origin: Sequence[Span | None] = ()) -> None:
        """``label: sources -> op(...) | name: op(...) [@phase]``; each link is a call, or
        ``(name, call)`` to name it inline (``None`` leaves it unnamed); ``origin`` gives each
        link's (the first's is the statement's)."""
        if not links:
            raise ValueError(f"layer {label!r} has no op")
        span = self._span()
        built = []
        for k, link in enumerate(links):
            label_of, link_call = link if isinstance(link, tuple) else (None, link)
            place = Span(self.file, span.line, k + 1, span.line, k + 2)
            built.append(ast.Link(name(label_of) if label_of is not None else None, _placed(link_call, place), place))
            if k < len(origin) and origin[k] is not None:
                self._origins[(span.line, k + 1)] = origin[k]  # type: ignore[assignment]
        self._add(ast.LayerStmt(name(label), [name(s) for s in sources], built,
                                name(phase) if phase is not None else None, span), comment)

    def repeat(self, label: str, count: int, block_call: ast.Call, sources: Sequence[str] = (),
               phase: str | None = None, *, index: str | None = None, first: ast.Call | None = None) -> None:
        """``label: [sources ->] repeat count [as index:] [first, then] call(...)``."""
        span = self._span()
        self._add(ast.RepeatStmt(name(label), [name(s) for s in sources], value(count), block_call,
                                 name(phase) if phase is not None else None, span,
                                 name(index) if index is not None else None, first))

    def block(self, block_name: str, params: Sequence[str | tuple[str, Any]] = (),
              comment: str | None = None) -> _BlockBody:
        """``block name(params) { ... }``: the statements added inside ``with`` form its body.

        >>> b = ModuleBuilder()
        >>> with b.block("pair", ["c", ("k", 3)]):
        ...     b.layer("a", [call("conv", "c", "k")])
        >>> print(b.text(), end="")
        block pair(c, k=3) {
          a: conv(c, k)
        }
        """
        if self._body is not None:
            raise ValueError("blocks do not nest")
        header = self._span()
        built = [ast.BlockParam(name(p), None) if isinstance(p, str) else ast.BlockParam(name(p[0]), value(p[1]))
                 for p in params]
        stmt = ast.BlockDef(name(block_name), built, [], header)
        if comment is not None:
            self._trailing(comment, header.line)
        return _BlockBody(self, stmt)

    # results -----------------------------------------------------------------------------------
    def locate(self, error: AlexDSLError) -> AlexDSLError:
        """``error`` with each diagnostic about a statement that has an origin moved there."""
        moved = []
        for diagnostic in error.diagnostics:
            span = diagnostic.span
            origin = self._origins.get((span.line, span.column)) if span is not None and span.file == self.file \
                else None
            moved.append(dataclasses.replace(diagnostic, span=origin) if origin is not None else diagnostic)
        return AlexDSLError(moved, sources=error.sources)

    def module(self) -> ast.Module:
        return ast.Module(self.file, "\n".join(self._lines), list(self._statements), list(self._comments))

    def text(self) -> str:
        """The source, laid out by the formatter."""
        from alexdsl.fmt import format_module

        return format_module(self.module())


class _BlockBody:
    def __init__(self, builder: ModuleBuilder, stmt: ast.BlockDef):
        self.builder, self.stmt = builder, stmt

    def __enter__(self) -> ast.BlockDef:
        self.builder._body = self.stmt.body
        return self.stmt

    def __exit__(self, *exc: object) -> None:
        builder = self.builder
        builder._body = None
        if exc[0] is None and not self.stmt.body:
            raise ValueError(f"block {self.stmt.name.name!r} has no statements")
        end = builder._span().line  # the closing brace
        self.stmt.span = Span(builder.file, self.stmt.span.line, 1, end, 2)
        builder._statements.append(self.stmt)


def _placed(node: Any, span: Span) -> Any:
    """``node`` with each part that has no place of its own (a line 0 span) at ``span``: the parts that
    change are copies, so a node the caller holds (and compares) stays as it was."""
    if isinstance(node, list):
        items = [_placed(item, span) for item in node]
        return node if all(a is b for a, b in zip(items, node)) else items
    if not hasattr(node, "__dataclass_fields__"):
        return node
    changes = {}
    for key, item in vars(node).items():
        if type(item) is Span:
            if item.line == 0:
                changes[key] = span
        elif isinstance(item, list) or hasattr(item, "__dataclass_fields__"):
            moved = _placed(item, span)
            if moved is not item:
                changes[key] = moved
    if not changes:
        return node
    copy = object.__new__(type(node))
    copy.__dict__.update(vars(node), **changes)
    return copy


def _comment_text(text: str) -> str:
    text = text if text.startswith("#") else "# " + text
    if "\n" in text or "\r" in text:
        raise ValueError("a comment is one line")
    return text
