"""Repeated structure found and folded into blocks: instances under name prefixes with the same ops,
names, connections and settings become one ``block``; the numbers that differ become its parameters
(see :mod:`alexdsl.interop.writer.readable`)."""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from alexdsl.interop.writer.chains import Planner
from alexdsl.interop.writer.units import (
    NOWHERE,
    OUT,
    SPLITS,
    Block,
    Param,
    Scope,
    Statement,
    Unit,
    blocks_of,
    full_name,
    is_number,
    layers_of,
    reads,
)
from alexdsl.ir.network import Layer
from alexdsl.ops.registry import REQUIRED, lookup
from alexdsl.syntax import ast
from alexdsl.syntax.build import is_name, value

_CHANNEL_KINDS = ("out", "groups")  # numbers related by a factor (c * 6) and never given a default
_PARAM_NAMES = {"out": "c", "groups": "g", "kernel": "k", "count": "n"}  # a block parameter named after its number


class Folder:
    """Folds the instances of each name prefix into block uses, deepest prefixes first."""

    def __init__(self, layers: list[Layer], shapes: dict[str, tuple[int, ...]], planner: Planner):
        self.layers = layers
        self.shapes = shapes
        self.planner = planner
        self.readers = planner.readers
        self.outputs = planner.outputs

    def fold(self, units: list[Unit]) -> list[Unit]:
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
            classes: dict[tuple, list[Candidate]] = {}
            for prefix, found in members.items():
                if prefix.count(".") + 1 != depth:
                    continue
                candidate = self._candidate(prefix, found, index.get(prefix), units, starts)
                if candidate is not None:
                    classes.setdefault(candidate.signature, []).append(candidate)
            folded: dict[int, Unit] = {}  # first layer -> the unit that replaces the units from there
            for group in classes.values():
                if len(group) > 1:
                    folded.update(self._fold_class(group, members))
            if folded:
                out: list[Unit] = []
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
            units = self._stage_repeats(units, members)
        return units

    def _stage_repeats(self, units: list[Unit], members: dict[str, list[int]]) -> list[Unit]:
        """Stages ``q.0 .. q.{n-1}``, chained and all of ``q``, whose copies after the first use one block with
        arguments equal or growing by a step per copy: one repeat each (``repeat n as i: first, then blk(c + 2 * i)``);
        runs of equal uses of one block are already repeats (:meth:`_repeat_runs`)."""
        names = {layer.name for layer in self.layers}
        out: list[Unit] = []
        k = 0
        while k < len(units):
            head = units[k]
            stage, _, number = head.name.rpartition(".")
            run = [head]
            if number == "0" and stage and stage not in names and head.kind in ("call", "layer"):
                for unit in units[k + 1:]:
                    if unit.kind != "call" or unit.name != f"{stage}.{len(run)}" or unit.source != run[-1].out \
                            or unit.first != run[-1].last + 1 or unit.out is None:
                        break
                    run.append(unit)
            repeat = _stage_repeat(stage, run) if len(members.get(stage, ())) == run[-1].last - head.first + 1 \
                else None
            out.append(repeat or head)
            k += len(run) if repeat is not None else 1
        return out

    def _candidate(self, prefix: str, found: list[int], itself: int | None, units: list[Unit],
                   starts: dict[int, int]) -> Candidate | None:
        """The units under ``prefix`` as a block instance, or None when they cannot be one."""
        first, last = min(found), max(found)
        if itself is not None:  # a layer named like the instance: the block's 'self'
            first, last = min(first, itself), max(last, itself)
        if last - first + 1 != len(found) + (itself is not None) or first not in starts:
            return None
        inner: list[Unit] = []
        for unit in itertools.islice(units, starts[first], None):
            if unit.first > last:
                break
            inner.append(unit)
        if inner[-1].last != last or (len(inner) == 1 and inner[0].name == prefix):
            return None
        scope = Scope(prefix + ".", None, (prefix + ".",))
        inside = {layer.name for layer in self.layers[first:last + 1]}
        outside = {name for unit in inner for name in reads(unit) if name not in inside}
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
            refs = tuple("\0in" if name == source else passed.get(name, scope.local(name)) for name in reads(unit))
            if unit.kind == "layer":
                assert unit.layer is not None
                signature.append(_layer_signature(unit.layer, local, refs))
                positions += _layer_positions(unit.layer, local)
            else:
                assert unit.block is not None
                signature.append((unit.kind, local, id(unit.block), refs, tuple(sorted(unit.steps.items()))))
                positions += [((local, "arg", p.name), p.kind, unit.values[p.name]) for p in unit.block.params]
                if unit.kind == "repeat":
                    positions.append(((local, "count"), "count", unit.count))
                head = unit.head
                if head is not None and head.block is not None:
                    signature.append(("first", id(head.block)))
                    positions += [((local, "first", p.name), p.kind, head.values[p.name]) for p in head.block.params]
                elif head is not None and head.layer is not None:
                    first = scope.local(head.name)
                    if first is None:
                        return None
                    signature.append(_layer_signature(head.layer, first, ()))
                    positions += _layer_positions(head.layer, first)
        signature.append(tuple((key, kind, type(number).__name__) for key, kind, number in positions))
        return Candidate(prefix, first, last, inner, source, tuple(signature), positions)

    def _fold_class(self, group: list[Candidate], members: dict[str, list[int]]) -> dict[int, Unit]:
        """One block for the instances in ``group`` if that does not make the file longer; their units."""
        rep = group[0]
        scope = Scope(rep.prefix + ".", rep.source, tuple(c.prefix + "." for c in group))
        statements = self.planner.plan(rep.units, scope)
        output = _body_output(statements, scope)
        under = {layer.name for layer in layers_of(rep.units)}
        if any(name.startswith("self_") and rep.prefix + "." + name not in under
               for s in statements for name in [s.label, *s.names] if name is not None) \
                or (output or "").startswith("self_"):
            return {}  # only a link of the chain labelled 'self' gets a name after the instance; a layer labelled
            # self_<name> under it (torchvision ViT's self_attention) is written as it is, unless it is the output
        outs = [full_name(output, c.prefix + ".") if output is not None else None for c in group]
        at = next((k for k, unit in enumerate(rep.units) if unit.out == outs[0]), None)
        if at is not None:  # what each instance's own unit passes on: a repeat's last copy depends on its count
            outs = [c.units[at].out for c in group]
        for candidate, out in zip(group, outs):
            if candidate.prefix in self.readers and out != candidate.prefix and (
                    candidate.prefix in self.outputs
                    or self.readers[candidate.prefix] - {unit.name for unit in layers_of(candidate.units)}):
                return {}  # a 'self' layer read from outside would be named by the label of its instance
        params, exprs, values = _parameters([c.positions for c in group], _body_names(statements, scope))
        runs = self._repeat_runs(group, outs, values, members)
        saved = sum(len(run) - 1 for run in runs) if runs else self._stage_lines_saved(group, values, members)
        if len(statements) + 2 + len(group) - saved > len(statements) * len(group):
            return {}
        calls = [Unit("call", c.prefix, c.first, c.last, out, source=c.source, values=v, parts=c.units)
                 for c, out, v in zip(group, outs, values)]
        block = Block("", params, exprs, calls[0], list(scope.instances))  # named when all are known
        for unit in calls:
            unit.block = block
        replaced = {unit.first: unit for unit in calls}
        for run in runs:
            first, last = calls[run[0]], calls[run[-1]]
            name = first.name.rsplit(".", 1)[0]
            replaced[first.first] = Unit("repeat", name, first.first, last.last, last.out, source=first.source,
                                          block=block, values=first.values, count=len(run),
                                          parts=[calls[i] for i in run])
        return replaced

    def _stage_lines_saved(self, group: list[Candidate], values: list[dict[str, Any]],
                           members: dict[str, list[int]]) -> int:
        """Lines the stage repeats of :meth:`_stage_repeats` would save: each run of instances ``q.j .. q.k``
        whose arguments grow by a step makes one line, the first copy ``q.0`` included when ``j`` is 1."""
        by_parent: dict[str, list[int]] = {}
        for i, candidate in enumerate(group):
            parent, _, last = candidate.prefix.rpartition(".")
            if parent and last.isdigit():
                by_parent.setdefault(parent, []).append(i)
        def grows(run: list[int]) -> bool:
            steps = {key: values[run[1]][key] - values[run[0]][key] if len(run) > 2 else 0 for key in values[run[0]]}
            return all(values[i][key] == values[run[0]][key] + step * j for j, i in enumerate(run)
                       for key, step in steps.items())

        saved = 0
        for parent, run in by_parent.items():
            numbers = [int(group[i].prefix.rpartition(".")[2]) for i in run]
            if numbers != list(range(numbers[0], numbers[0] + len(run))) or numbers[0] > 1:
                continue
            if numbers[0] == 0 and len(run) > 2 and not grows(run):
                run, numbers = run[1:], numbers[1:]  # the first copy differs: 'first, then'
            first = f"{parent}.0" if numbers[0] == 1 else None  # a block's use, or a layer before two or more
            head = first in members or (first in self.planner.readers and len(run) >= 2)
            if len(run) >= 2 and grows(run) or head:
                saved += len(run) - 1 + head
        return saved

    def _repeat_runs(self, group: list[Candidate], outs: list[str | None], values: list[dict[str, Any]],
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


def _stage_repeat(stage: str, run: list[Unit]) -> Unit | None:
    """One repeat for the stage ``run`` (see :meth:`Folder._stage_repeats`), or None when it is not one:
    every copy a use of one block, its arguments growing by a step; else the copies after the first so."""
    if len(run) < 2:
        return None
    for start in (0, 1):
        calls = run[start:]
        if any(unit.kind != "call" or unit.block is not calls[0].block for unit in calls) \
                or len(calls) < (2 if start == 0 or run[0].kind != "call" else 1):
            continue  # a layer and a single use read better written out
        values, steps = dict(calls[0].values), {}
        for param, first in calls[0].values.items():
            numbers = [unit.values[param] for unit in calls]
            step = numbers[1] - numbers[0] if len(numbers) > 2 and all(type(n) is int for n in numbers) else 0
            if numbers != [numbers[0] + step * j for j in range(len(numbers))]:  # two numbers make no step
                break
            if step:  # the index counts every copy, the first included
                values[param], steps[param] = first - step * start, step
        else:
            if start == 0 and not steps:
                return None  # equal uses of one block: a plain repeat, where they are one (Folder._repeat_runs)
            last, sources = run[-1], reads(run[0])
            if len(sources) != 1:
                return None
            return Unit("repeat", stage, run[0].first, last.last, last.out, source=sources[0],
                        block=calls[0].block, values=values, count=len(run), parts=list(run), steps=steps,
                        head=run[0] if start else None)
    return None


def name_blocks(units: list[Unit]) -> None:
    """Name each block after its instances (``layer2.0`` -> layer); when blocks share that stem, the
    first keeps it and the others add what tells them apart: ``_res`` for an identity shortcut
    (an op that reads the block's input again), else a part of a name only they have (``_downsample``)."""
    by_stem: dict[str, list[Block]] = {}
    for block in blocks_of(units):
        stems = sorted({_stem(prefix[:-1]) for prefix in block.instances})
        stem = stems[0] if len(stems) == 1 else os.path.commonprefix(stems)  # inc3a, inc4a -> inc
        fits = is_name(stem) and (len(stems) == 1 or len(stem) > 1)
        by_stem.setdefault(stem if fits else "unit", []).append(block)
    taken: set[str] = set()
    labels = {id(block): {prefix[:-1].rpartition(".")[2] for prefix in block.instances} for block in blocks_of(units)}
    for stem, group in by_stem.items():
        words = [{_stem(u.name) for u in layers_of(b.rep.parts)} for b in group]
        for k, block in enumerate(group):
            others = set().union(*(w for j, w in enumerate(words) if j != k))
            suffixes = [] if k == 0 else ["res"] * _has_shortcut(block) + sorted(words[k] - others)
            names = [f"{stem}_{suffix}" for suffix in suffixes] + [stem] + [f"{stem}{n}" for n in range(2, 999)]
            elsewhere = set().union(*(used for key, used in labels.items() if key != id(block)))
            block.name = next(n for n in names if n not in taken and n not in elsewhere and is_name(n)
                              and lookup(n) is None and n not in ("chunk", "split"))
            taken.add(block.name)  # and not the label of another block's use: 'ghost1: ghost2(...)' misleads


@dataclass(eq=False)
class Candidate:
    """The units under one name prefix, as a block instance."""

    prefix: str
    first: int
    last: int
    units: list[Unit]
    source: str
    signature: tuple
    positions: list[tuple[tuple, str, Any]]  # (where in the body, kind, number)


def _layer_signature(layer: Layer, local: str, refs: tuple) -> tuple:
    """What two instances' layers must share: everything but the numbers (see :func:`_layer_positions`)."""
    attrs = tuple((k, v if layer.op in SPLITS or not is_number(v) else _number_shape(v))
                  for k, v in layer.attrs.items())
    params = tuple((n, s.filler, s.lr_mult, s.decay_mult) for n, s in layer.params.items())
    return ("layer", local, layer.op, layer.phase, attrs, params, refs)


def _layer_positions(layer: Layer, local: str) -> list[tuple[tuple, str, Any]]:
    """The numbers of a layer's arguments that may differ between instances: (where, kind, number)."""
    if layer.op in SPLITS:
        return []
    out: list[tuple[tuple, str, Any]] = []
    for key, number in layer.attrs.items():
        if isinstance(number, tuple) and is_number(number):
            out += [((local, key, i), key, item) for i, item in enumerate(number)]
        elif is_number(number):
            out.append(((local, key), key, number))
    return out


def _number_shape(item: Any) -> Any:
    return tuple(type(v).__name__ for v in item) if isinstance(item, tuple) else type(item).__name__


def _stem(prefix: str) -> str:
    """A block's name from an instance's: the last part with letters, without its digits (``layer2.0`` -> layer)."""
    for part in reversed(prefix.split(".")):
        letters = re.sub(r"[^A-Za-z_]", "", part.split("-")[0]).strip("_")
        if letters:
            return letters if is_name(letters) else {"block": "blk"}.get(letters, letters + "_")
    return "unit"


def _has_shortcut(block: Block) -> bool:
    """Whether an op after the first reads the block's input again, as a residual add does."""
    return any(unit.layer is not None and len(unit.layer.inputs) > 1 and block.rep.source in unit.layer.inputs
               for unit in block.rep.parts[1:])


def _body_output(statements: list[Statement], scope: Scope) -> str | None:
    """The local name of what a block body passes on: its 'out' statement's output, else its last."""
    chosen = next((s for s in statements if s.label == OUT), statements[-1])
    return scope.local(chosen.output) if chosen.output is not None else None


def _body_names(statements: list[Statement], scope: Scope) -> set[str]:
    """Names a block parameter must not take: the body's labels and the layer names it may read."""
    names = {"in", "self", OUT}
    for statement in statements:
        names.add(statement.label)
        for unit in statement.units:
            local = scope.local(unit.name)
            if local is not None:
                names.add(local)
    return names


def _parameters(instances: list[list[tuple[tuple, str, Any]]], taken: set[str]
                ) -> tuple[list[Param], dict[tuple, ast.Value], list[dict[str, Any]]]:
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

    named: dict[tuple, Param] = {}
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
        named[group] = Param(name, kind, default)
    exprs: dict[tuple, ast.Value] = {}
    for group, positions in groups.items():
        if group in related:
            base, operator, factor = related[group]
            node: ast.Value = ast.BinaryOp(operator, ast.Name(named[base].name, NOWHERE), value(factor),
                                           NOWHERE, NOWHERE)
        elif group in named:
            node = ast.Name(named[group].name, NOWHERE)
        else:
            continue
        for j in positions:
            exprs[first[j][0]] = node
    params = sorted(named.values(), key=lambda p: p.default is not REQUIRED)
    arguments = [{param.name: numbers_of(group)[i] for group, param in named.items()} for i in range(len(instances))]
    return params, exprs, arguments
