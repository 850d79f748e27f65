"""Statements from units: which layers form one chain (``conv1: conv(64, 7) | bn1: batchnorm | relu``),
which make one ``chunk``/``split``, and how each statement names its inputs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from alexdsl.interop.writer.units import SPLITS, Scope, Statement, Unit, Unwritable, full_name
from alexdsl.ir.network import Layer, Network
from alexdsl.ops.registry import lookup
from alexdsl.ops.split import SPLITTERS
from alexdsl.syntax.build import is_name


class Planner:
    """Groups a scope's units into statements: chains (when ``chains``), splits, block uses and repeats."""

    def __init__(self, network: Network, chains: bool):
        self.network = network
        self.chains = chains
        self.readers = {name: set(network.graph.successors(name)) for name in network.graph}
        self.outputs = set(network.outputs)

    def plan(self, units: Sequence[Unit], scope: Scope) -> list[Statement]:
        """Group a scope's units into statements: chains, splits, block uses and repeats."""
        statements: list[Statement] = []
        prev = scope.source if scope.prefix else next(iter(self.network.data_inputs), None)
        i = 0
        while i < len(units):
            unit = units[i]
            label = scope.local(unit.name)
            if label is None:
                raise Unwritable(unit.name)
            if unit.kind != "layer":
                inputs = None if unit.source == prev else [unit.source]
                statements.append(Statement(unit.kind, label, [unit], inputs=inputs, output=unit.out))
                prev = unit.out
                i += 1
                continue
            layer = unit.layer
            assert layer is not None
            size = self._split_size(units, i)
            if size:
                parts = units[i:i + size]
                inputs = None if layer.inputs == [prev] else list(layer.inputs)
                statements.append(Statement("split", label.rsplit(".", 1)[0], parts, inputs=inputs))
                prev = None
                i += size
                continue
            statement = Statement("chain", label, [unit], [None], output=layer.name)
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

    def _continues(self, statement: Statement, units: Sequence[Unit], i: int, counts: Counter[str],
                   scope: Scope) -> bool:
        """Whether ``units[i]`` continues ``statement``'s chain; its inline label (or None) is added to it."""
        unit, end = units[i], statement.units[-1]
        layer, before = unit.layer, end.layer
        if layer is None or before is None or layer.inputs != [before.name] or layer.phase != before.phase \
                or layer.op in SPLITS:
            return False
        local = scope.local(layer.name)
        if local is None or local == "self":
            return False
        if len(statement.units) == 1:  # the label names the chain's output: the first op must not be read
            for prefix in scope.instances:
                first = full_name(scope.local(before.name) or "", prefix)
                if self.readers.get(first, set()) != {full_name(local, prefix)} or first in self.outputs:
                    return False
        base = next((name for name in reversed(statement.names) if name), statement.label)  # see ast.chain_names
        counts[layer.op] += 1
        if local == f"{base}_{layer.op}{counts[layer.op] if counts[layer.op] > 1 else ''}":
            statement.names.append(None)
            return True
        op = lookup(layer.op)
        starts = op is not None and op.arg("out") is not None  # conv, fc: a named one starts a statement
        module = local.rpartition(".")[0]  # a layer of another module, unless the link before holds it (timm's bn.act)
        elsewhere = module not in (statement.label.rpartition(".")[0], scope.local(before.name))
        if starts or elsewhere:  # the names after it follow its label wherever its statement starts
            counts[layer.op] -= 1
            return False
        statement.names.append(local)
        counts.clear()  # the links after a labelled one are named after it
        counts[layer.op] = 1
        return True

    def _split_size(self, units: Sequence[Unit], i: int) -> int:
        """How many units from ``i`` are the parts of one 'chunk(n)' or 'split((a, b))' statement; 0 if none."""
        head = units[i].layer
        if head is None or head.op not in SPLITS or not head.name.endswith(".0"):
            return 0
        base = head.name[:-2]
        parts: list[Layer] = []
        for unit in units[i:]:
            layer = unit.layer
            if layer is None or layer.op != head.op or layer.name != f"{base}.{len(parts)}" \
                    or layer.inputs != head.inputs or layer.phase != head.phase \
                    or layer.attrs.get("axis", 0) != head.attrs.get("axis", 0):
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

