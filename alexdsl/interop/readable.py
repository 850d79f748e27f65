"""IR -> alexdsl source that reads as a person writes it: what ``alexdsl import onnx`` prints.

:func:`readable_source` writes any :class:`~alexdsl.ir.network.Network` as source that builds the
same network again (layer names, ops, arguments, inputs, shapes, parameters, phases, outputs and
state keys), laid out as the hand-written examples are:

* layers that feed one another form chains (``conv1: conv(64, 7) | bn1: batchnorm | relu``): a link
  keeps the name a chain gives it (``conv1_relu``) or is named inline;
* ``defaults`` lines hold the bias settings, fillers and learning-rate multipliers most layers of
  an op share, so the layers leave them out;
* repeated structure becomes blocks. The layers under a name prefix (``layer2.0``: ``layer2.0.conv1``,
  ``layer2.0.bn1``, ...) form an instance when they are consecutive and read one layer from outside.
  Instances with the same ops, names, connections and settings, up to their numbers (channel
  counts, strides, kernels, probabilities), become one ``block``: a number equal in every instance
  is written in the body, one that differs becomes a parameter (``c * 6`` when a channel count is
  a fixed multiple of another). Deeper prefixes are folded first, so blocks use blocks; equal
  consecutive uses named ``p.0``, ``p.1``... become ``p: repeat n blk(...)``. A group is folded
  when that does not make the file longer.

The text is built as a syntax tree (:mod:`alexdsl.syntax.build`) and printed once by the formatter,
so it passes ``fmt --check``; it is not parsed again. When blocks or chains cannot say something
exactly, the network is written without them.

>>> import alexdsl
>>> net = alexdsl.parse('''network T
... input x: 8x16x16
... s.0.a: conv(8, 3, pad=1) | relu
... s.0.b: conv(8, 1)
... s.1.a: conv(8, 3, pad=1) | relu
... s.1.b: conv(8, 1)
... s.2.a: conv(8, 3, pad=1) | relu
... s.2.b: conv(8, 1)
... ''')
>>> print(readable_source(net), end="")
network T
<BLANKLINE>
input x: 8x16x16
<BLANKLINE>
block s() {
  a: conv(8, 3, pad=1) | relu
  b: conv(8, 1)
}
<BLANKLINE>
s: repeat 3 s
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from alexdsl.errors import AlexDSLError, Diagnostic, Span
from alexdsl.fmt import format_call, format_value
from alexdsl.ir.network import Layer, Network
from alexdsl.ops.registry import FILLERS, REQUIRED, Filler, OpDef, lookup
from alexdsl.ops.split import SPLITTERS
from alexdsl.syntax import ast
from alexdsl.syntax.build import NAME_RULE, Link, ModuleBuilder, arg, call, filler, is_name, op_args, value

_NOWHERE = Span("<built>", 0, 0, 0, 0)
_SPLITS = set(SPLITTERS.values())  # the layers 'half: chunk(2)' and 'parts: split((a, b))' make
_CHANNEL_KINDS = ("out", "groups")  # numbers related by a factor (c * 6) and never given a default
_PARAM_NAMES = {"out": "c", "groups": "g", "kernel": "k", "count": "n"}  # a block parameter named after its number
_ROW = 110  # characters of a chain's line (its label unpadded); more links continue on the next line ('| ...')
_OUT = "out"  # in a block body, the statement labelled so gives the block's output


class _Unwritable(Exception):
    """This form cannot express the network exactly; a simpler form is tried."""


# units: what one scope holds -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Param:
    """A block parameter: ``kind`` names the number it stands for (``out``, ``stride``, ``count``)."""

    name: str
    kind: str
    default: Any = REQUIRED


@dataclass(eq=False)
class _Block:
    """A block: its body is written from one instance, with the differing numbers as expressions."""

    name: str
    params: list[_Param]
    exprs: dict[tuple, ast.Value]  # a number of the representative's body that differs -> its expression
    rep: _Unit  # the first instance: its body is written
    instances: list[str]  # every instance's prefix, with its dot ("layer1.0.")


@dataclass(eq=False)
class _Unit:
    """A layer, a block instance ("call") or a repeat of instances, covering layers first..last."""

    kind: str
    name: str  # the layer's name, or the instance's (repeat's) name prefix
    first: int
    last: int
    out: str | None  # the layer whose output it passes on (None after a split)
    layer: Layer | None = None
    source: str | None = None  # call, repeat: the layer the block reads ('in')
    block: _Block | None = None
    values: dict[str, Any] = field(default_factory=dict)  # call, repeat: parameter -> number
    count: int = 1
    parts: list[_Unit] = field(default_factory=list)  # call: the instance's units; repeat: the calls


@dataclass(frozen=True)
class _Scope:
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


def _full(local: str, prefix: str) -> str:
    if prefix and (local == "self" or local.startswith("self_")):
        return prefix[:-1] + local[4:]
    return prefix + local


@dataclass(eq=False)
class _Statement:
    """One statement to write: a chain of layers, a split, a block use or a repeat."""

    kind: str  # "chain", "split", "call" or "repeat"
    label: str
    units: list[_Unit]
    names: list[str | None] = field(default_factory=list)  # chain: each link's inline label
    inputs: list[str] | None = None  # the first op's inputs written out; None: the previous output
    lead: bool = False  # inputs as leading arguments (add(in)) rather than sources (x -> op)
    output: str | None = None


# the writer ---------------------------------------------------------------------------------------
class _Builder(ModuleBuilder):
    """A :class:`ModuleBuilder` whose chains may go on over several lines, as long chains do in the examples."""

    def chain(self, label: str, rows: list[list[Link]], sources: Sequence[str] = (), phase: str | None = None
              ) -> None:
        """``label: [sources ->] links`` with each row of links on its own line (``| ...`` after the first)."""
        self.layer(label, [link for row in rows for link in row], sources, phase)
        statement = (self._body if self._body is not None else self._statements)[-1]
        assert isinstance(statement, ast.LayerStmt)
        first = statement.span.line
        self._lines += ["."] * (len(rows) - 1)
        links = iter(statement.links)
        for line, row in enumerate(rows, start=first):
            for _ in row:
                next(links).span = Span(self.file, line, 1, line, 2)
        statement.span = Span(self.file, first, 1, first + len(rows) - 1, 2)


class _Writer:
    """Writes one network in one form: with or without blocks, with or without chains."""

    def __init__(self, network: Network, file: str, *, blocks: bool, chains: bool):
        self.network = network
        self.file = file
        self.chains = chains
        self.layers = [layer for layer in network.layers() if not layer.is_input]
        self.readers = {name: set(network.graph.successors(name)) for name in network.graph}
        self.outputs = set(network.outputs)
        self.shapes = network.shapes
        self.defaults = _choose_defaults(self.layers)
        units = [_Unit("layer", layer.name, i, i, layer.name, layer=layer) for i, layer in enumerate(self.layers)]
        self.units = self._fold(units) if blocks else units
        self._name_blocks()

    # blocks ---------------------------------------------------------------------------------------
    def _fold(self, units: list[_Unit]) -> list[_Unit]:
        """Fold the instances of each name prefix, deepest prefixes first."""
        members: dict[str, list[int]] = {}
        for i, layer in enumerate(self.layers):
            parts = layer.name.split(".")
            for depth in range(1, len(parts)):
                members.setdefault(".".join(parts[:depth]), []).append(i)
        index = {layer.name: i for i, layer in enumerate(self.layers)}
        for i, layer in enumerate(self.layers):  # 'layer1.0_relu': a link after the instance's 'self' layer
            for cut in (m.start() for m in re.finditer("_", layer.name)):
                head = layer.name[:cut]
                if "." not in layer.name[cut:] and head in members and head in index:
                    members[head].append(i)
        for depth in sorted({p.count(".") + 1 for p in members}, reverse=True):
            starts = {unit.first: k for k, unit in enumerate(units)}
            classes: dict[tuple, list[_Candidate]] = {}
            for prefix, found in members.items():
                if prefix.count(".") + 1 != depth:
                    continue
                candidate = self._candidate(prefix, found, index.get(prefix), units, starts)
                if candidate is not None:
                    classes.setdefault(candidate.signature, []).append(candidate)
            folded: dict[int, _Unit] = {}  # first layer -> the unit that replaces the units from there
            for group in classes.values():
                if len(group) > 1:
                    folded.update(self._fold_class(group, members))
            if folded:
                out: list[_Unit] = []
                skip_to = -1
                for unit in units:
                    if unit.first <= skip_to:
                        continue
                    replacement = folded.get(unit.first)
                    if replacement is not None:
                        out.append(replacement)
                        skip_to = replacement.last
                    else:
                        out.append(unit)
                units = out
        return units

    def _candidate(self, prefix: str, found: list[int], itself: int | None, units: list[_Unit],
                   starts: dict[int, int]) -> _Candidate | None:
        """The units under ``prefix`` as a block instance, or None when they cannot be one."""
        first, last = min(found), max(found)
        if itself is not None:  # a layer named like the instance: the block's 'self'
            first, last = min(first, itself), max(last, itself)
        if last - first + 1 != len(found) + (itself is not None) or first not in starts:
            return None
        inner: list[_Unit] = []
        for unit in itertools.islice(units, starts[first], None):
            if unit.first > last:
                break
            inner.append(unit)
        if inner[-1].last != last or (len(inner) == 1 and inner[0].name == prefix):
            return None
        scope = _Scope(prefix + ".", None, (prefix + ".",))
        inside = {layer.name for layer in self.layers[first:last + 1]}
        outside = {name for unit in inner for name in _reads(unit) if name not in inside}
        if len(outside) != 1:
            return None
        source = outside.pop()
        signature: list[tuple] = []
        width = self.shapes[source][:1]
        positions: list[tuple[tuple, str, Any]] = [(("\0in",), "out", width[0] if width else 0)]
        passed = {unit.out: ("\0use", scope.local(unit.name)) for unit in inner if unit.kind != "layer"}
        for unit in inner:
            local = scope.local(unit.name)
            if local is None or local == "in" or not is_name(local):
                return None
            refs = tuple("\0in" if name == source else passed.get(name, scope.local(name)) for name in _reads(unit))
            if unit.kind == "layer":
                assert unit.layer is not None
                signature.append(_layer_signature(unit.layer, local, refs))
                positions += _layer_positions(unit.layer, local)
            else:
                assert unit.block is not None
                signature.append((unit.kind, local, id(unit.block), refs))
                positions += [((local, "arg", p.name), p.kind, unit.values[p.name]) for p in unit.block.params]
                if unit.kind == "repeat":
                    positions.append(((local, "count"), "count", unit.count))
        signature.append(tuple((key, kind, type(number).__name__) for key, kind, number in positions))
        return _Candidate(prefix, first, last, inner, source, tuple(signature), positions)

    def _fold_class(self, group: list[_Candidate], members: dict[str, list[int]]) -> dict[int, _Unit]:
        """One block for the instances in ``group`` if that does not make the file longer; their units."""
        rep = group[0]
        scope = _Scope(rep.prefix + ".", rep.source, tuple(c.prefix + "." for c in group))
        statements = self._plan(rep.units, scope)
        if any(name.startswith("self_") for s in statements for name in [s.label, *s.names] if name is not None):
            return {}  # only a link of the chain labelled 'self' gets a name after the instance
        output = _body_output(statements, scope)
        outs = [_full(output, c.prefix + ".") if output is not None else None for c in group]
        for candidate, out in zip(group, outs):
            if candidate.prefix in self.readers and out != candidate.prefix and (
                    candidate.prefix in self.outputs
                    or self.readers[candidate.prefix] - {unit.name for unit in _layers_of(candidate.units)}):
                return {}  # a 'self' layer read from outside would be named by the label of its instance
        params, exprs, values = _parameters([c.positions for c in group], _body_names(statements, scope))
        runs = self._repeat_runs(group, outs, values, members)
        if len(statements) + 2 + len(group) - sum(len(run) - 1 for run in runs) > len(statements) * len(group):
            return {}
        calls = [_Unit("call", c.prefix, c.first, c.last, out, source=c.source, values=v, parts=c.units)
                 for c, out, v in zip(group, outs, values)]
        block = _Block("", params, exprs, calls[0], list(scope.instances))  # named when all are known
        for unit in calls:
            unit.block = block
        replaced = {unit.first: unit for unit in calls}
        for run in runs:
            first, last = calls[run[0]], calls[run[-1]]
            name = first.name.rsplit(".", 1)[0]
            replaced[first.first] = _Unit("repeat", name, first.first, last.last, last.out, source=first.source,
                                          block=block, values=first.values, count=len(run),
                                          parts=[calls[i] for i in run])
        return replaced

    def _repeat_runs(self, group: list[_Candidate], outs: list[str | None], values: list[dict[str, Any]],
                     members: dict[str, list[int]]) -> list[list[int]]:
        """Runs of instances ``q.0 .. q.{n-1}`` that are all of ``q``, equal and chained: one repeat each."""
        by_parent: dict[str, list[int]] = {}
        for i, candidate in enumerate(group):
            parent, _, last = candidate.prefix.rpartition(".")
            if parent and last.isdigit():
                by_parent.setdefault(parent, []).append(i)
        names = {layer.name for layer in self.layers}
        runs = []
        for parent, run in by_parent.items():
            if len(run) < 2 or parent in names:
                continue
            if [group[i].prefix for i in run] != [f"{parent}.{k}" for k in range(len(run))]:
                continue
            if len(members[parent]) != sum(group[i].last - group[i].first + 1 for i in run):
                continue
            if any(values[i] != values[run[0]] for i in run):
                continue
            if any(group[i].source != outs[j] or outs[j] is None or group[i].first != group[j].last + 1
                   for j, i in zip(run, run[1:])):
                continue
            runs.append(run)
        return runs

    def _name_blocks(self) -> None:
        """Name each block after its instances (``layer2.0`` -> layer); when blocks share that stem, the
        first keeps it and the others add what tells them apart: ``_res`` for an identity shortcut
        (an op that reads the block's input again), else a part of a name only they have (``_downsample``)."""
        by_stem: dict[str, list[_Block]] = {}
        for block in self._blocks():
            stems = sorted({_stem(prefix[:-1]) for prefix in block.instances})
            stem = stems[0] if len(stems) == 1 else os.path.commonprefix(stems)  # inc3a, inc4a -> inc
            fits = is_name(stem) and (len(stems) == 1 or len(stem) > 1)
            by_stem.setdefault(stem if fits else "unit", []).append(block)
        taken: set[str] = set()
        for stem, group in by_stem.items():
            words = [{_stem(u.name) for u in _layers_of(b.rep.parts)} for b in group]
            for k, block in enumerate(group):
                others = set().union(*(w for j, w in enumerate(words) if j != k))
                suffixes = [] if k == 0 else ["res"] * _has_shortcut(block) + sorted(words[k] - others)
                names = [f"{stem}_{suffix}" for suffix in suffixes] + [stem] + [f"{stem}{n}" for n in range(2, 999)]
                block.name = next(n for n in names if n not in taken and is_name(n) and lookup(n) is None
                                  and n not in ("chunk", "split"))
                taken.add(block.name)

    # statements -----------------------------------------------------------------------------------
    def _plan(self, units: Sequence[_Unit], scope: _Scope) -> list[_Statement]:
        """Group a scope's units into statements: chains, splits, block uses and repeats."""
        statements: list[_Statement] = []
        prev = scope.source if scope.prefix else next(iter(self.network.data_inputs), None)
        i = 0
        while i < len(units):
            unit = units[i]
            label = scope.local(unit.name)
            if label is None:
                raise _Unwritable(unit.name)
            if unit.kind != "layer":
                inputs = None if unit.source == prev else [unit.source]
                statements.append(_Statement(unit.kind, label, [unit], inputs=inputs, output=unit.out))
                prev = unit.out
                i += 1
                continue
            layer = unit.layer
            assert layer is not None
            size = self._split_size(units, i)
            if size:
                parts = units[i:i + size]
                inputs = None if layer.inputs == [prev] else list(layer.inputs)
                statements.append(_Statement("split", label.rsplit(".", 1)[0], parts, inputs=inputs))
                prev = None
                i += size
                continue
            statement = _Statement("chain", label, [unit], [None], output=layer.name)
            op = lookup(layer.op)
            lowest = op.inputs[0] if op is not None else 1
            if layer.inputs == [prev] and lowest <= 1:
                statement.inputs = None
            elif layer.op == "add" and layer.inputs[0] == prev and len(layer.inputs) == 2:  # a residual: add(in)
                statement.inputs, statement.lead = layer.inputs[1:], True
            else:
                statement.inputs, statement.lead = list(layer.inputs), len(layer.inputs) > 1
            counts = Counter([layer.op])
            i += 1
            while self.chains and i < len(units) and self._continues(statement, units, i, counts, scope):
                statement.units.append(units[i])
                statement.output = units[i].name
                i += 1
            statements.append(statement)
            prev = statement.output
        return statements

    def _continues(self, statement: _Statement, units: Sequence[_Unit], i: int, counts: Counter[str],
                   scope: _Scope) -> bool:
        """Whether ``units[i]`` continues ``statement``'s chain; its inline label (or None) is added to it."""
        unit, end = units[i], statement.units[-1]
        layer, before = unit.layer, end.layer
        if layer is None or before is None or layer.inputs != [before.name] or layer.phase != before.phase \
                or layer.op in _SPLITS:
            return False
        local = scope.local(layer.name)
        if local is None or local == "self":
            return False
        if len(statement.units) == 1:  # the label names the chain's output: the first op must not be read
            for prefix in scope.instances:
                first = _full(scope.local(before.name) or "", prefix)
                if self.readers.get(first, set()) != {_full(local, prefix)} or first in self.outputs:
                    return False
        counts[layer.op] += 1
        if local == f"{statement.label}_{layer.op}{counts[layer.op] if counts[layer.op] > 1 else ''}":
            statement.names.append(None)
            return True
        op = lookup(layer.op)
        starts = op is not None and op.arg("out") is not None  # conv, fc: a named one starts a statement
        elsewhere = local.rpartition(".")[0] != statement.label.rpartition(".")[0]  # a layer of another module
        if (starts or elsewhere) and not _named_later(statement.label, units, i, counts, scope):
            counts[layer.op] -= 1
            return False
        statement.names.append(local)
        return True

    def _split_size(self, units: Sequence[_Unit], i: int) -> int:
        """How many units from ``i`` are the parts of one 'chunk(n)' or 'split((a, b))' statement; 0 if none."""
        head = units[i].layer
        if head is None or head.op not in _SPLITS or not head.name.endswith(".0"):
            return 0
        base = head.name[:-2]
        parts: list[Layer] = []
        for unit in units[i:]:
            layer = unit.layer
            if layer is None or layer.op != head.op or layer.name != f"{base}.{len(parts)}" \
                    or layer.inputs != head.inputs or layer.phase != head.phase:
                break
            parts.append(layer)
        if head.op == SPLITTERS["chunk"]:
            if len(parts) < parts[0].attrs["chunks"]:
                return 0
            parts = parts[:parts[0].attrs["chunks"]]
            ok = all(p.attrs["chunks"] == len(parts) and p.attrs["index"] == k for k, p in enumerate(parts))
        else:
            stops = [p.attrs["stop"] for p in parts]
            total = next((k + 1 for k, p in enumerate(parts) if p.attrs["channels"]), 0)
            parts = parts[:total]
            starts = [0] + stops[:total - 1]
            ok = total >= 2 and all(p.attrs["start"] == s and p.attrs["stop"] > s for p, s in zip(parts, starts)) \
                and all(p.attrs["channels"] == 0 for p in parts[:-1]) \
                and parts[-1].attrs["channels"] == stops[total - 1]
        return len(parts) if ok and is_name(base.rsplit(".", 1)[-1]) and base not in self.network.graph else 0

    # syntax ---------------------------------------------------------------------------------------
    def _op_call(self, layer: Layer, local: str, exprs: dict[tuple, ast.Value],
                 leading: Sequence[ast.Value] = ()) -> ast.Call:
        """``op(args)``: what differs from the op's and the file's defaults, by the shortest-arguments rule
        of :func:`~alexdsl.syntax.build.op_args`; a number of a block body that differs between
        instances is the parameter's expression in ``exprs``."""
        op = lookup(layer.op)
        if op is None:
            raise _Unwritable(layer.op)
        defaults = self.defaults.get(layer.op, {})
        attrs: dict[str, Any] = {}
        for spec in op.args:
            if spec.kind == "bias" or spec.name not in layer.attrs:
                continue  # the bias is written with the parameters
            item = _with_exprs(layer.attrs[spec.name], (local, spec.name), exprs)
            if spec.name in defaults:
                if item == defaults[spec.name]:
                    continue  # the file's default: left out
                item = _Kept(item)  # may equal the op's default, which the file's overrides: written
            attrs[spec.name] = item
        args = op_args(op, attrs, lambda key, item: _node(item))
        if len(op.args) == 1 and op.args[0].kind == "float" and args:  # dropout(0.2), as in the examples
            args[0] = ast.Arg(None, args[0].value, args[0].span)
        args += [arg(node, key) for key, node in self._param_args(op, layer).items()]
        return call(layer.op, *[arg(node) for node in leading], *args)

    def _param_args(self, op: OpDef, layer: Layer) -> dict[str, ast.Value]:
        """The bias setting, fillers and multipliers that differ from the op's (or the file's) defaults."""
        defaults = self.defaults.get(layer.op, {})
        out: dict[str, ast.Value] = {}
        bias_arg = op.arg("bias")
        has_bias_arg = bias_arg is not None and bias_arg.kind == "bias"
        if has_bias_arg:
            setting = layer.params["bias"].filler if "bias" in layer.params else False
            default = defaults.get("bias", _bias_default(op))
            if setting != default:
                if setting is False:
                    out["bias"] = value(False)
                elif default is False and setting == op.default_fillers.get("bias"):
                    out["bias"] = value(True)
                else:
                    out["bias"] = _filler_node(setting)
        for name, spec in layer.params.items():
            if not (has_bias_arg and name == "bias"):
                filler = defaults.get(name, op.default_fillers.get(name))
                if spec.filler != filler:
                    out[name] = _filler_node(spec.filler)
            for suffix, number in (("lr", spec.lr_mult), ("decay", spec.decay_mult)):
                if number != defaults.get(f"{name}_{suffix}", self.defaults.get(name, {}).get(suffix, 1.0)):
                    out[f"{name}_{suffix}"] = value(number)
        return out

    def _block_call(self, unit: _Unit, local: str, exprs: dict[tuple, ast.Value]) -> ast.Call:
        block = unit.block
        assert block is not None
        positional: list[ast.Value] = []
        keywords: dict[str, ast.Value] = {}
        for param in block.params:
            node = exprs.get((local, "arg", param.name))
            if param.default is REQUIRED:
                positional.append(node if node is not None else value(unit.values[param.name]))
            elif node is not None:
                keywords[param.name] = node
            elif unit.values[param.name] != param.default:
                keywords[param.name] = value(unit.values[param.name])
        return call(block.name, *positional, **keywords)

    def _write(self, builder: _Builder, statements: list[_Statement], scope: _Scope,
               exprs: dict[tuple, ast.Value]) -> Callable[..., str]:
        """Add ``statements`` to ``builder``, naming each input as the scope resolves it; returns that naming."""
        labels: dict[str, str | None] = {}
        if not scope.prefix:
            labels.update({name: name for name in self.network.inputs})
        for statement in statements:
            if statement.kind == "split":
                labels[statement.label] = None
                for part in statement.units:
                    labels[statement.label + part.name[part.name.rfind("."):]] = part.name
            else:
                labels[statement.label] = statement.output
        named = {}
        for label, target in labels.items():
            if target is not None:
                named.setdefault(target, label)

        def ref(target: str, own: bool = False) -> str:
            """How the scope names ``target``: 'in', a statement's label (its output), else the layer's own
            name; with ``own``, the layer's own name first."""
            local = scope.local(target)
            writable = local is not None and local != "self" and is_name(local) and labels.get(local, target) == target
            if scope.prefix and target == scope.source:
                return "in"
            if own and writable or target not in named:
                if not writable:
                    raise _Unwritable(target)
                return local  # type: ignore[return-value]
            return named[target]

        trailing = _trailing_metrics(statements)
        for k, statement in enumerate(statements):
            if k == trailing and k > 0 and not scope.prefix:
                builder.blank()
            inputs = [ref(name) for name in statement.inputs] if statement.inputs is not None else []
            sources = [] if statement.lead else inputs
            leading = [value(name) for name in inputs] if statement.lead else []
            first = statement.units[0]
            if statement.kind == "chain":
                rows: list[list[Link]] = [[]]
                width = len(statement.label) + 2 + sum(len(name) + 2 for name in sources) + 2 * bool(sources)
                for unit, name in zip(statement.units, statement.names):
                    assert unit.layer is not None
                    local = scope.local(unit.name) or ""
                    node = self._op_call(unit.layer, local, exprs, leading if unit is first else ())
                    size = len(format_call(node)) + (len(name) + 2 if name is not None else 0)
                    if rows[-1] and width + 3 + size > _ROW:
                        rows.append([])
                        width = len(statement.label)
                    width += size + 3 * bool(rows[-1])
                    rows[-1].append((name, node) if name is not None else node)
                phase = first.layer.phase if first.layer is not None and first.layer.phase != "all" else None
                builder.chain(statement.label, rows, sources, phase)
            elif statement.kind == "split":
                layer = first.layer
                assert layer is not None
                if layer.op == SPLITTERS["chunk"]:
                    node = call("chunk", len(statement.units))
                else:
                    node = call("split", tuple(u.layer.attrs["stop"] - u.layer.attrs["start"]  # type: ignore
                                               for u in statement.units))
                builder.layer(statement.label, [node], sources, layer.phase if layer.phase != "all" else None)
            elif statement.kind == "call":
                builder.layer(statement.label, [self._block_call(first, statement.label, exprs)], sources)
            else:
                count = exprs.get((statement.label, "count"), value(first.count))
                builder.repeat(statement.label, count, self._block_call(first, statement.label, exprs), sources)
        return ref

    def text(self, header: str | None) -> str:
        network = self.network
        builder = _Builder(self.file)
        for line in (header or "").splitlines():
            builder.comment(line)
        builder.network(network.name)
        if network.description:
            builder.description(network.description)
        builder.blank()
        for name in network.inputs:
            layer = network.layer(name)
            if layer.is_label:
                builder.class_input(name, layer.attrs.get("classes", 1))
            else:
                builder.input(name, layer.shape)
        for name, settings in network.preprocess.items():
            builder.preprocess(name, settings)
        if network.solver:
            builder.solver(network.solver)
        builder.blank()
        for op_name, settings in self.defaults.items():
            builder.defaults(op_name, **{key: _setting_node(v) for key, v in settings.items()})
        builder.blank()
        for block in self._blocks():
            scope = _Scope(block.rep.name + ".", block.rep.source, tuple(block.instances))
            params = [p.name if p.default is REQUIRED else (p.name, p.default) for p in block.params]
            with builder.block(block.name, params):
                self._write(builder, self._plan(block.rep.parts, scope), scope, block.exprs)
            builder.blank()
        top = _Scope("", None, ("",))
        ref = self._write(builder, self._plan(self.units, top), top, {})
        if network.outputs and network.outputs != _default_outputs(network):
            builder.blank()
            builder.output([ref(name, own=True) for name in network.outputs])
        return builder.text()

    def _blocks(self) -> list[_Block]:
        """Every block used, each after the blocks its body uses."""
        order: list[_Block] = []

        def visit(units: Sequence[_Unit]) -> None:
            for unit in units:
                if unit.block is not None and unit.block not in order:
                    visit(unit.block.rep.parts)
                    order.append(unit.block)

        visit(self.units)
        return order


@dataclass(eq=False)
class _Candidate:
    """The units under one name prefix, as a block instance."""

    prefix: str
    first: int
    last: int
    units: list[_Unit]
    source: str
    signature: tuple
    positions: list[tuple[tuple, str, Any]]  # (where in the body, kind, number)


# helpers ------------------------------------------------------------------------------------------
def _reads(unit: _Unit) -> list[str]:
    if unit.layer is not None:
        return list(unit.layer.inputs)
    return [unit.source] if unit.source is not None else []


def _layer_signature(layer: Layer, local: str, refs: tuple) -> tuple:
    """What two instances' layers must share: everything but the numbers (see :func:`_layer_positions`)."""
    attrs = tuple((k, v if layer.op in _SPLITS or not _is_number(v) else _number_shape(v))
                  for k, v in layer.attrs.items())
    params = tuple((n, s.filler, s.lr_mult, s.decay_mult) for n, s in layer.params.items())
    return ("layer", local, layer.op, layer.phase, attrs, params, refs)


def _layer_positions(layer: Layer, local: str) -> list[tuple[tuple, str, Any]]:
    """The numbers of a layer's arguments that may differ between instances: (where, kind, number)."""
    if layer.op in _SPLITS:
        return []
    out: list[tuple[tuple, str, Any]] = []
    for key, number in layer.attrs.items():
        if isinstance(number, tuple) and _is_number(number):
            out += [((local, key, i), key, item) for i, item in enumerate(number)]
        elif _is_number(number):
            out.append(((local, key), key, number))
    return out


def _is_number(item: Any) -> bool:
    if isinstance(item, tuple):
        return bool(item) and all(_is_number(v) for v in item)
    return isinstance(item, (int, float)) and not isinstance(item, bool)


def _number_shape(item: Any) -> Any:
    return tuple(type(v).__name__ for v in item) if isinstance(item, tuple) else type(item).__name__


@dataclass(frozen=True, eq=False)
class _Expr:
    """A number of a block body that a parameter gives: equal to another only when written the same."""

    node: ast.Value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Expr) and format_value(self.node) == format_value(other.node)

    def __hash__(self) -> int:
        return hash(format_value(self.node))


@dataclass(frozen=True, eq=False)
class _Kept:
    """A value that differs from a ``defaults`` line: written even where it equals the op's default."""

    item: Any


def _with_exprs(item: Any, where: tuple, exprs: dict[tuple, ast.Value]) -> Any:
    """``item``, with each number that a parameter gives replaced by its :class:`_Expr`."""
    if isinstance(item, tuple) and _is_number(item):
        return tuple(_Expr(exprs[where + (i,)]) if where + (i,) in exprs else v for i, v in enumerate(item))
    return _Expr(exprs[where]) if where in exprs else item


def _node(item: Any) -> ast.Value:
    if isinstance(item, _Kept):
        item = item.item
        if isinstance(item, tuple) and len(item) == 2 and item[0] == item[1]:
            item = item[0]
    if isinstance(item, _Expr):
        return item.node
    if isinstance(item, tuple):
        return ast.TupleValue([_node(v) for v in item], _NOWHERE)
    return value(item)


def _bias_default(op: OpDef) -> Filler | bool:
    arg = op.arg("bias")
    return op.default_fillers.get("bias", False) if arg is not None and arg.default is True else False


def _filler_node(spec: Filler) -> ast.Call:
    """``msra(fan_out)``, ``gaussian(0.01)``: positional arguments up to the last that is not the default."""
    order = FILLERS.get(spec.type, ())
    given = dict(spec.args)
    shown = 1 if order and not isinstance(order[0][1], str) else 0  # constant(0), but xavier()
    last = max((i + 1 for i, (name, default) in enumerate(order) if given.get(name, default) != default), default=0)
    return filler(spec.type, *[given.get(name, default) for name, default in order[:max(last, shown)]])


def _setting_node(setting: Any) -> ast.Value:
    return _filler_node(setting) if isinstance(setting, Filler) else value(setting)


def _stem(prefix: str) -> str:
    """A block's name from an instance's: the last part with letters, without its digits (``layer2.0`` -> layer)."""
    for part in reversed(prefix.split(".")):
        letters = re.sub(r"[^A-Za-z_]", "", part.split("-")[0]).strip("_")
        if letters:
            return letters if is_name(letters) else {"block": "blk"}.get(letters, letters + "_")
    return "unit"


def _named_later(label: str, units: Sequence[_Unit], i: int, counts: Counter[str], scope: _Scope) -> bool:
    """Whether a layer soon after ``units[i]``, down the same chain, has the name this chain would give it
    (``b_relu`` after ``b: global_avgpool | fc1: conv(8, 1)``): then the chain goes on through ``units[i]``."""
    seen = Counter(counts)
    for j in range(i + 1, min(i + 8, len(units))):
        layer, before = units[j].layer, units[j - 1].layer
        if layer is None or before is None or layer.inputs != [before.name] or layer.phase != before.phase:
            return False
        seen[layer.op] += 1
        if scope.local(layer.name) == f"{label}_{layer.op}{seen[layer.op] if seen[layer.op] > 1 else ''}":
            return True
    return False


def _layers_of(units: Sequence[_Unit]) -> Iterator[_Unit]:
    """The layer units of ``units``, those inside block uses included."""
    for unit in units:
        if unit.kind == "layer":
            yield unit
        else:
            yield from _layers_of(unit.parts)


def _has_shortcut(block: _Block) -> bool:
    """Whether an op after the first reads the block's input again, as a residual add does."""
    return any(unit.layer is not None and len(unit.layer.inputs) > 1 and block.rep.source in unit.layer.inputs
               for unit in block.rep.parts[1:])


def _body_output(statements: list[_Statement], scope: _Scope) -> str | None:
    """The local name of what a block body passes on: its 'out' statement's output, else its last."""
    chosen = next((s for s in statements if s.label == _OUT), statements[-1])
    return scope.local(chosen.output) if chosen.output is not None else None


def _body_names(statements: list[_Statement], scope: _Scope) -> set[str]:
    """Names a block parameter must not take: the body's labels and the layer names it may read."""
    names = {"in", "self", _OUT}
    for statement in statements:
        names.add(statement.label)
        for unit in statement.units:
            local = scope.local(unit.name)
            if local is not None:
                names.add(local)
    return names


def _trailing_metrics(statements: list[_Statement]) -> int:
    """Index of the first of the losses and metrics that end the file (a blank line goes before them)."""
    k = len(statements)
    while k > 0:
        units = statements[k - 1].units
        op = lookup(units[0].layer.op) if units[0].layer is not None else None
        if op is None or op.role not in ("loss", "metric"):
            break
        k -= 1
    return k


def _parameters(instances: list[list[tuple[tuple, str, Any]]], taken: set[str]
                ) -> tuple[list[_Param], dict[tuple, ast.Value], list[dict[str, Any]]]:
    """Block parameters for the numbers that differ between instances.

    Numbers of one family (channel counts; strides; kernels...) that agree in every instance share
    a parameter, and a channel count that is a fixed multiple (or floor fraction) of another is
    written as one (``c * 6``). Position 0 of each instance is its input's channel count: written
    nowhere, but a base for the others when two or more differ. Returns the parameters (those
    without a default first), the expression of each differing number of the body, and each
    instance's arguments.
    """
    first = instances[0]
    groups: dict[tuple, list[int]] = {}  # (family, the numbers of every instance) -> the positions holding them
    for j in range(len(first)):
        numbers = tuple((type(inst[j][2]), inst[j][2]) for inst in instances)
        if len(set(numbers)) > 1:
            groups.setdefault(("out" if first[j][1] in _CHANNEL_KINDS else first[j][1],) + numbers, []).append(j)

    def numbers_of(group: tuple) -> list[Any]:
        return [number for _, number in group[1:]]

    channel = [g for g in groups if g[0] == "out" and all(t is int for t, _ in g[1:])]
    written = [g for g in channel if groups[g] != [0]]
    order = sorted(written, key=lambda g: (groups[g][0] != 0, numbers_of(g)[0], groups[g][0]))
    if len(written) > 1:
        order = [g for g in channel if groups[g] == [0]] + order
    bases: list[tuple] = []
    related: dict[tuple, tuple[tuple, str, int]] = {}  # a group -> (its base, '*' or '//', factor)
    for group in order:
        numbers = numbers_of(group)
        for base in bases:
            known = numbers_of(base)
            if numbers[0] % known[0] == 0 and numbers[0] // known[0] > 1 and \
                    all(n == b * (numbers[0] // known[0]) for n, b in zip(numbers, known)):
                related[group] = (base, "*", numbers[0] // known[0])
                break
            if known[0] % numbers[0] == 0 and known[0] // numbers[0] > 1 and \
                    all(n == b // (known[0] // numbers[0]) for n, b in zip(numbers, known)):
                related[group] = (base, "//", known[0] // numbers[0])
                break
        else:
            bases.append(group)
    used_bases = {base for base, _, _ in related.values()}
    bases = [g for g in bases if groups[g] != [0] or g in used_bases] + [g for g in groups if g not in channel]

    def appears(group: tuple) -> int:
        return min(j for g, js in groups.items() if g == group or related.get(g, (None,))[0] == group for j in js)

    named: dict[tuple, _Param] = {}
    used = set(taken)
    for group in sorted(bases, key=appears):
        kind = first[groups[group][0]][1]
        stem = _PARAM_NAMES.get(kind, kind if is_name(kind) else "x")
        name, number = stem, 1
        while name in used or not is_name(name):
            number += 1
            name = f"{stem}{number}"
        used.add(name)
        default = REQUIRED
        if kind not in _CHANNEL_KINDS and kind != "count":
            (common, times), = Counter(numbers_of(group)).most_common(1)
            if times >= 2 and 2 * times >= len(instances):
                default = common
        named[group] = _Param(name, kind, default)
    exprs: dict[tuple, ast.Value] = {}
    for group, positions in groups.items():
        if group in related:
            base, operator, factor = related[group]
            node: ast.Value = ast.BinaryOp(operator, ast.Name(named[base].name, _NOWHERE), value(factor),
                                           _NOWHERE, _NOWHERE)
        elif group in named:
            node = ast.Name(named[group].name, _NOWHERE)
        else:
            continue
        for j in positions:
            exprs[first[j][0]] = node
    params = sorted(named.values(), key=lambda p: p.default is not REQUIRED)
    arguments = [{param.name: numbers_of(group)[i] for group, param in named.items()} for i in range(len(instances))]
    return params, exprs, arguments


def _choose_defaults(layers: list[Layer]) -> dict[str, dict[str, Any]]:
    """The ``defaults`` lines: target (an op, or a parameter kind) -> settings.

    A parameter kind gets a multiplier every parameter of that kind has (``defaults bias(lr=2)``).
    An op gets a bias setting, filler, multiplier or number argument (``eps``) that most of its
    layers share, at least three, when it is not already the default.
    """
    chosen: dict[str, dict[str, Any]] = {}
    by_kind: dict[str, list[Any]] = {}
    by_op: dict[str, list[Layer]] = {}
    for layer in layers:
        by_op.setdefault(layer.op, []).append(layer)
        for kind, spec in layer.params.items():
            by_kind.setdefault(kind, []).append(spec)
    for kind, specs in by_kind.items():
        for key, numbers in (("lr", {s.lr_mult for s in specs}), ("decay", {s.decay_mult for s in specs})):
            if len(specs) >= 2 and len(numbers) == 1 and numbers != {1.0}:
                chosen.setdefault(kind, {})[key] = numbers.pop()
    for op_name, group in by_op.items():
        op = lookup(op_name)
        if op is None:
            continue
        settings: dict[str, Any] = {}

        def consider(key: str, items: list[Any], builtin: Any, settings: dict[str, Any] = settings) -> None:
            if items:
                (common, times), = Counter(items).most_common(1)
                if times >= 3 and 2 * times > len(items) and common != builtin:
                    settings[key] = common

        has_bias_arg = op.arg("bias") is not None and op.arg("bias").kind == "bias"  # type: ignore[union-attr]
        if has_bias_arg:
            consider("bias", [layer.params["bias"].filler if "bias" in layer.params else False for layer in group],
                     _bias_default(op))
        for kind, builtin in op.default_fillers.items():
            having = [layer.params[kind] for layer in group if kind in layer.params]
            if not (has_bias_arg and kind == "bias"):
                consider(kind, [spec.filler for spec in having], builtin)
            for key, attribute in (("lr", "lr_mult"), ("decay", "decay_mult")):
                consider(f"{kind}_{key}", [getattr(spec, attribute) for spec in having],
                         chosen.get(kind, {}).get(key, 1.0))
        for spec in op.args:
            if spec.kind == "float" and spec.default is not REQUIRED:
                consider(spec.name, [layer.attrs[spec.name] for layer in group if spec.name in layer.attrs],
                         spec.default)
        if settings:
            chosen[op_name] = settings
    return dict(sorted(chosen.items(), key=lambda item: lookup(item[0]) is None))  # ops, then kinds


def _default_outputs(network: Network) -> list[str]:
    """The outputs a file without an ``output`` statement gets (see passes.validate.choose_outputs)."""
    layers = network.layers()

    def role(layer: Layer) -> str:
        op = lookup(layer.op)
        return op.role if op is not None else "input"

    scored = list(dict.fromkeys(layer.inputs[0] for layer in layers if role(layer) in ("loss", "metric")))
    if scored:
        return scored
    sinks = [layer.name for layer in layers if role(layer) == "layer" and not network.consumers(layer.name)]
    return sinks[-1:]


def _unwritable(network: Network, file: str) -> list[Diagnostic]:
    """A located error for each name or number of ``network`` that alexdsl source cannot hold."""
    found = []
    if not is_name(network.name):
        found.append(Diagnostic("error", "the network name cannot be written as an alexdsl name",
                                path=f"{file}:name", received=repr(network.name), expected=NAME_RULE))
    for i, layer in enumerate(network.layers()):
        if not is_name(layer.name):
            found.append(Diagnostic("error", "the layer name cannot be written as an alexdsl name",
                                    path=f"{file}:layers[{i}].name", received=repr(layer.name), expected=NAME_RULE))
        numbers = [(f"attrs.{k}", v) for k, v in layer.attrs.items()]
        for name, spec in layer.params.items():
            numbers += [(f"params.{name}.filler.{k}", v) for k, v in spec.filler.args]
            numbers += [(f"params.{name}.lr_mult", spec.lr_mult), (f"params.{name}.decay_mult", spec.decay_mult)]
        for where, item in numbers:
            items = item if isinstance(item, tuple) else (item,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in items):
                found.append(Diagnostic("error", "a number that is not finite cannot be written",
                                        path=f"{file}:layers[{i}].{where}", received=repr(item),
                                        expected="a finite number"))
    return found


def _forms() -> Iterator[dict[str, bool]]:
    yield {"blocks": True, "chains": True}
    yield {"blocks": False, "chains": True}
    yield {"blocks": False, "chains": False}


def readable_source(network: Network, *, header: str | None = None, file: str = "<network>") -> str:
    """alexdsl source for ``network`` as a person would write it (see the module docstring).

    ``header`` is written first as comment lines; ``file`` names the network in errors. Raises
    :class:`AlexDSLError` for a name alexdsl source cannot hold (located by its IR path). The
    tree is printed once and not parsed again (tests/test_readable.py checks that what is written
    builds ``network``); a form that cannot say something exactly gives way to a simpler one.
    """
    problems = _unwritable(network, file)
    if problems:
        raise AlexDSLError(problems)
    for form in _forms():
        try:
            return _Writer(network, file, **form).text(header)
        except (_Unwritable, ValueError):
            continue
    raise AlexDSLError(f"{file}: error: network {network.name} cannot be written as source "
                       "(a bug in alexdsl's source writer; please report it)")
