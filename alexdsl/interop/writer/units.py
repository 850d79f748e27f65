"""What the readable writer works with: layers and block uses (units), the scopes statements are
written in, and the statements themselves (see :mod:`alexdsl.interop.writer.readable`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from alexdsl.errors import Span
from alexdsl.ir.network import Layer
from alexdsl.ops.registry import REQUIRED
from alexdsl.ops.split import SPLITTERS
from alexdsl.syntax import ast

NOWHERE = Span("<built>", 0, 0, 0, 0)
SPLITS = set(SPLITTERS.values())  # the layers 'half: chunk(2)' and 'parts: split((a, b))' make
_CHANNEL_KINDS = ("out", "groups")  # numbers related by a factor (c * 6) and never given a default
_PARAM_NAMES = {"out": "c", "groups": "g", "kernel": "k", "count": "n"}  # a block parameter named after its number
_ROW = 110  # characters of a chain's line (its label unpadded); more links continue on the next line ('| ...')
OUT = "out"  # in a block body, the statement labelled so gives the block's output


class Unwritable(Exception):
    """This form cannot express the network exactly; a simpler form is tried."""


@dataclass(frozen=True)
class Param:
    """A block parameter: ``kind`` names the number it stands for (``out``, ``stride``, ``count``)."""

    name: str
    kind: str
    default: Any = REQUIRED


@dataclass(eq=False)
class Block:
    """A block: its body is written from one instance, with the differing numbers as expressions."""

    name: str
    params: list[Param]
    exprs: dict[tuple, ast.Value]  # a number of the representative's body that differs -> its expression
    rep: Unit  # the first instance: its body is written
    instances: list[str]  # every instance's prefix, with its dot ("layer1.0.")


@dataclass(eq=False)
class Unit:
    """A layer, a block instance ("call") or a repeat of instances, covering layers first..last."""

    kind: str
    name: str  # the layer's name, or the instance's (repeat's) name prefix
    first: int
    last: int
    out: str | None  # the layer whose output it passes on (None after a split)
    layer: Layer | None = None
    source: str | None = None  # call, repeat: the layer the block reads ('in')
    block: Block | None = None
    values: dict[str, Any] = field(default_factory=dict)  # call, repeat: parameter -> number
    count: int = 1
    parts: list[Unit] = field(default_factory=list)  # call: the instance's units; repeat: the calls
    steps: dict[str, int] = field(default_factory=dict)  # repeat: parameter -> what each copy adds ('as i:')
    head: Unit | None = None  # repeat: the first copy when it differs from the others ('first, then')


@dataclass(frozen=True)
class Scope:
    """Where statements are written: the top level (prefix "") or a block body."""

    prefix: str  # the representative instance's prefix with its dot
    source: str | None  # the block's input, read as 'in'
    instances: tuple[str, ...]  # the prefixes the body stands for: a chain is folded only if it fits each

    def local(self, name: str) -> str | None:
        """``name`` as the scope writes it: ``conv1`` for ``layer1.0.conv1``; ``self`` for the instance's own
        name, and ``self_relu`` for the link a chain labelled ``self`` names ``layer1.0_relu``."""
        if not self.prefix:
            return name
        own = self.prefix[:-1]
        if name == own or name.startswith(own + "_"):
            return "self" + name[len(own):]
        return name[len(self.prefix):] if name.startswith(self.prefix) else None


def full_name(local: str, prefix: str) -> str:
    if prefix and (local == "self" or local.startswith("self_")):
        return prefix[:-1] + local[4:]
    return prefix + local


@dataclass(eq=False)
class Statement:
    """One statement to write: a chain of layers, a split, a block use or a repeat."""

    kind: str  # "chain", "split", "call" or "repeat"
    label: str
    units: list[Unit]
    names: list[str | None] = field(default_factory=list)  # chain: each link's inline label
    inputs: list[str] | None = None  # the first op's inputs written out; None: the previous output
    lead: bool = False  # inputs as leading arguments (add(in)) rather than sources (x -> op)
    output: str | None = None


def layers_of(units: Sequence[Unit]) -> Iterator[Unit]:
    """The layer units of ``units``, those inside block uses included."""
    for unit in units:
        if unit.kind == "layer":
            yield unit
        else:
            yield from layers_of(unit.parts)


def blocks_of(units: Sequence[Unit]) -> list[Block]:
    """Every block used, each after the blocks its body uses."""
    order: list[Block] = []

    def visit(units: Sequence[Unit]) -> None:
        for unit in units:
            if unit.head is not None:
                visit([unit.head])
            if unit.block is not None and unit.block not in order:
                visit(unit.block.rep.parts)
                order.append(unit.block)

    visit(units)
    return order


def reads(unit: Unit) -> list[str]:
    if unit.layer is not None:
        return list(unit.layer.inputs)
    return [unit.source] if unit.source is not None else []


def is_number(item: Any) -> bool:
    if isinstance(item, tuple):
        return bool(item) and all(is_number(v) for v in item)
    return isinstance(item, (int, float)) and not isinstance(item, bool)
