"""The elaborator's shared state, its values and scopes, and the one place a node is added to the graph."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from alexdsl.errors import MAX_DIAGNOSTICS_PER_FILE, DiagnosticSink, Note, Span, did_you_mean
from alexdsl.limits import MAX_NAME_LENGTH, max_layers
from alexdsl.syntax import ast

PHASES = ("train", "test")
BROKEN = "\0broken"  # the output of a statement that failed: layers reading it report nothing more
SELF = "self"  # inside a block, the label of a layer named like the instance itself
PENDING = "\0pending"  # a block instance's input while its source is not resolved yet; never left in the IR
SPLIT = "\0split:"  # prefix of a split statement's output: its parts are named, the whole is not
MAX_BLOCK_DEPTH = 32  # blocks using blocks, this many deep at most


class Unexpandable(Exception):
    """A block use that can never be expanded: it uses itself, or blocks nest too deep."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message = message
        self.hint = hint


class _Invalid:
    """The value of an expression whose error is already reported: nothing more is said about it."""

    def __repr__(self) -> str:
        return "an invalid value"


INVALID: Any = _Invalid()


@dataclass(frozen=True)
class Symbol:
    """A bare name used as a value: a choice such as ``ceil``, or a layer reference."""

    name: str


@dataclass(frozen=True)
class CallValue:
    """A call used as a value, such as the filler ``gaussian(0.01)``."""

    name: str
    args: tuple[tuple[str | None, Any, Span], ...]
    span: Span


@dataclass(frozen=True)
class Dims:
    """A shape written as a value, such as ``1x197x768``: only a ``shape`` argument takes one."""

    dims: tuple[int, ...]


PARAM_KIND_KEYS = ("filler", "lr", "decay")


@dataclass
class Meta:
    """What the file declares besides layers."""

    name: str = ""
    description: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[tuple[str, Span]] = field(default_factory=list)
    solver: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)  # block instances by name

    def use_notes(self, instance: str | None) -> tuple[Note, ...]:
        """Where block instance ``instance`` was used, and each instance around it, innermost first."""
        notes = []
        parts = instance.split(".") if instance else []
        for end in range(len(parts), 0, -1):
            found = self.instances.get(".".join(parts[:end]))
            if found is not None:
                notes.append(Note(f"in block '{found.block}', used here", found.use, ".".join(parts[:end])))
        return tuple(notes)


@dataclass(frozen=True)
class Instance:
    """A use of a block: the block's name, the call that used it, and the block's definition."""

    block: str
    use: Span
    definition: Span

    def encloses(self, span: Span) -> bool:
        """Whether ``span`` lies inside the block's definition."""
        return span.file == self.definition.file and self.definition.line <= span.line <= self.definition.end_line


@dataclass
class Scope:
    """The names visible where statements are elaborated: the file's, or one block instance's."""

    prefix: str
    values: dict[str, Any]
    in_node: str | None
    prev: str | None
    block: str | None
    labels: dict[str, str | None] = field(default_factory=dict)
    pending: list[tuple[str, int, ast.Name]] = field(default_factory=list)


def describe(value: Any) -> str:
    if isinstance(value, Symbol):
        return value.name
    if isinstance(value, CallValue):
        return f"{value.name}(...)"
    if isinstance(value, Dims):
        return "x".join(map(str, value.dims))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "(" + ", ".join(describe(v) for v in value) + ")"
    return repr(value) if isinstance(value, str) else str(value)


def listing(names: list[str], most: int = 20) -> str:
    """Names joined by commas, the first ``most`` of a long list (a diagnostic stays short).

    >>> listing(["a", "b", "c"], most=2)
    'a, b, ... (3 in all)'
    """
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, ... ({len(names)} in all)"


class ElaborationState:
    """What every part of the elaborator reads and writes while one module is elaborated."""

    def __init__(self, module: ast.Module, sink: DiagnosticSink, input_shapes: dict[str, tuple[int, ...]] | None,
                 layer_limit: int | None = None):
        self.module = module
        self.sink = sink
        self.input_shapes = dict(input_shapes or {})
        self.graph = nx.DiGraph()
        self.meta = Meta()
        self.blocks: dict[str, ast.BlockDef] = {}
        self.broken_blocks: set[str] = set()  # blocks whose definition has a syntax error: their uses say nothing
        self.op_defaults: dict[str, dict[str, tuple[Any, Span]]] = {}
        self.kind_defaults: dict[str, dict[str, tuple[Any, Span]]] = {}
        self.layer_limit = max_layers(layer_limit)
        self.added: list[str] = []  # layers (not inputs) in the order they were added
        self.hints_left = MAX_DIAGNOSTICS_PER_FILE  # past this, errors are not shown: skip their hints
        self.block_sizes: dict[tuple[str, tuple[tuple[str, Any], ...]], int] = {}
        self.fixed_sizes: dict[str, bool] = {}  # blocks whose size does not depend on their arguments
        self.unknown_ops: list[ast.Call] = []  # calls of unknown ops, reported together at the end
        self.unknown_hints: dict[str, str | None] = {}  # each unknown op's did-you-mean, looked up once

    def _did_you_mean(self, name: str, candidates: Iterable[str]) -> str | None:
        """:func:`did_you_mean` for the first errors only: each call may compare against every layer name."""
        if self.hints_left <= 0:
            return None
        self.hints_left -= 1
        return did_you_mean(name, candidates)

    def _check_name_length(self, name: str, span: Span) -> bool:
        if len(name) <= MAX_NAME_LENGTH:
            return True
        self.sink.error(f"the name is {len(name)} characters long", span, expected=f"at most {MAX_NAME_LENGTH}",
                        received=name)
        return False

    def _first_definition(self, full: str) -> str | None:
        if full in self.graph and self.graph.nodes[full].get("span") is not None:
            span = self.graph.nodes[full]["span"]
            return f"'{full}' is first defined at line {span.line}"
        return None

    def _fits(self, size: int, what: str, span: Span) -> bool:
        """Whether ``size`` more layers stay within the layer limit; an error at ``span`` if not."""
        total = len(self.graph) + size
        if total <= self.layer_limit:
            return True
        self.sink.error(f"{what} expands to {size:,} layers, so the network would have {total:,}, more than "
                        f"the limit of {self.layer_limit:,}", span,
                        expected=f"at most {self.layer_limit:,} layers after expanding every repeat and block",
                        hint="set ALEXDSL_MAX_LAYERS (or pass max_layers=) to allow more")
        return False

    def _add_node(self, name: str, op: str, attrs: dict[str, Any], inputs: list[str | None],
                  shape: tuple[int, ...] | None, phase: str, span: Span, block: str | None,
                  arg_spans: dict[str, Span], **internal: Any) -> None:
        """Add an input or a layer to the graph: the one place the node's fields are written."""
        self.graph.add_node(name, op=op, attrs=attrs, inputs=inputs, shape=shape, params={}, buffers={},
                            phase=phase, span=span, block=block, macs=0, arg_spans=arg_spans, **internal)
        if op != "input":
            self.added.append(name)
