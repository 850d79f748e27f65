"""The syntax tree of the readable source: ``defaults`` lines, block definitions, chains with their
arguments (what differs from the op's and the file's defaults), and the statements that use blocks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from alexdsl.errors import Span
from alexdsl.fmt import format_call, format_value
from alexdsl.interop.writer.chains import Planner
from alexdsl.interop.writer.units import (
    NOWHERE,
    Scope,
    Statement,
    Unit,
    Unwritable,
    blocks_of,
    is_number,
)
from alexdsl.ir.network import Layer, Network
from alexdsl.ops.registry import FILLERS, REQUIRED, Filler, OpDef, lookup
from alexdsl.ops.split import SPLITTERS
from alexdsl.syntax import ast
from alexdsl.syntax.build import Link, ModuleBuilder, arg, call, filler, is_name, op_args, value

_ROW = 110  # characters of a chain's line (its label unpadded); more links continue on the next line ('| ...')


class Builder(ModuleBuilder):
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


class Emitter:
    """Adds a network's statements to a :class:`Builder`: its inputs and settings, ``defaults`` lines,
    each block's body, and the top-level statements; :meth:`text` prints them."""

    def __init__(self, network: Network, file: str, defaults: dict[str, dict[str, Any]], planner: Planner,
                 units: list[Unit]):
        self.network = network
        self.file = file
        self.defaults = defaults
        self.planner = planner
        self.units = units

    def _op_call(self, layer: Layer, local: str, exprs: dict[tuple, ast.Value],
                 leading: Sequence[ast.Value] = ()) -> ast.Call:
        """``op(args)``: what differs from the op's and the file's defaults, by the shortest-arguments rule
        of :func:`~alexdsl.syntax.build.op_args`; a number of a block body that differs between
        instances is the parameter's expression in ``exprs``."""
        op = lookup(layer.op)
        if op is None:
            raise Unwritable(layer.op)
        defaults = self.defaults.get(layer.op, {})
        attrs: dict[str, Any] = {}
        for spec in op.args:
            if spec.kind == "bias" or spec.name not in layer.attrs:
                continue  # the bias is written with the parameters
            item = _with_exprs(layer.attrs[spec.name], (local, spec.name), exprs)
            if spec.name in defaults:
                if item == defaults[spec.name]:
                    continue  # the file's default: left out
                if spec.kind == "pair" and isinstance(item, tuple) and len(item) == 2 and item[0] == item[1]:
                    item = item[0]  # a pair of equal sides as one number, as op_args writes it
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

    def _block_call(self, unit: Unit, local: str, exprs: dict[tuple, ast.Value], where: str = "arg",
                    index: str | None = None) -> ast.Call:
        """``blk(args)`` for a use of a block; a repeat's argument that grows per copy is ``a + step * index``."""
        block = unit.block
        assert block is not None
        steps = unit.steps if where == "arg" else {}
        positional: list[ast.Value] = []
        keywords: dict[str, ast.Value] = {}
        for param in block.params:
            node = exprs.get((local, where, param.name))
            step = steps.get(param.name)
            if step is not None and index is not None:
                node = _indexed(node if node is not None else value(unit.values[param.name]), step, index)
            if param.default is REQUIRED:
                positional.append(node if node is not None else value(unit.values[param.name]))
            elif node is not None:
                keywords[param.name] = node
            elif unit.values[param.name] != param.default:
                keywords[param.name] = value(unit.values[param.name])
        return call(block.name, *positional, **keywords)

    def _repeat(self, builder: Builder, statement: Statement, sources: list[str], exprs: dict[tuple, ast.Value],
                taken: AbstractSet[str]) -> None:
        """``label: repeat n [as i:] [first, then] blk(...)``; ``taken`` holds the names the index must not be."""
        unit, label = statement.units[0], statement.label
        count = exprs.get((label, "count"), value(unit.count))
        index = next(name for name in ("i", "j", "k", "index") if name not in taken) if unit.steps else None
        head = unit.head
        first = None
        if head is not None and head.block is not None:
            first = self._block_call(head, label, exprs, "first")
        elif head is not None and head.layer is not None:
            first = self._op_call(head.layer, label + head.name[len(unit.name):], exprs)
        builder.repeat(label, count, self._block_call(unit, label, exprs, index=index), sources,
                       index=index, first=first)

    def _write(self, builder: Builder, statements: list[Statement], scope: Scope,
               exprs: dict[tuple, ast.Value], taken: AbstractSet[str] = frozenset()) -> Callable[..., str]:
        """Add ``statements`` to ``builder``, naming each input as the scope resolves it; returns that naming.
        ``taken``: the block's parameters, which a repeat's index must not shadow."""
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
                    raise Unwritable(target)
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
                axis = [arg(layer.attrs["axis"], "axis")] if layer.attrs.get("axis", 0) else []
                if layer.op == SPLITTERS["chunk"]:
                    node = call("chunk", len(statement.units), *axis)
                else:
                    node = call("split", tuple(u.layer.attrs["stop"] - u.layer.attrs["start"]  # type: ignore
                                               for u in statement.units), *axis)
                builder.layer(statement.label, [node], sources, layer.phase if layer.phase != "all" else None)
            elif statement.kind == "call":
                builder.layer(statement.label, [self._block_call(first, statement.label, exprs)], sources)
            else:
                self._repeat(builder, statement, sources, exprs, taken)
        return ref

    def text(self, header: str | None) -> str:
        network = self.network
        builder = Builder(self.file)
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
            elif layer.is_tokens:
                builder.tokens_input(name, layer.shape[0], layer.attrs.get("vocab"))
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
        for block in blocks_of(self.units):
            scope = Scope(block.rep.name + ".", block.rep.source, tuple(block.instances))
            params = [p.name if p.default is REQUIRED else (p.name, p.default) for p in block.params]
            with builder.block(block.name, params):
                self._write(builder, self.planner.plan(block.rep.parts, scope), scope, block.exprs,
                            {p.name for p in block.params})
            builder.blank()
        top = Scope("", None, ("",))
        ref = self._write(builder, self.planner.plan(self.units, top), top, {})
        if network.outputs and network.outputs != _default_outputs(network):
            builder.blank()
            builder.output([ref(name, own=True) for name in network.outputs])
        return builder.text()


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
    if isinstance(item, tuple) and is_number(item):
        return tuple(_Expr(exprs[where + (i,)]) if where + (i,) in exprs else v for i, v in enumerate(item))
    return _Expr(exprs[where]) if where in exprs else item


def _node(item: Any) -> ast.Value:
    if isinstance(item, _Kept):
        item = item.item
    if isinstance(item, _Expr):
        return item.node
    if isinstance(item, tuple):
        return ast.TupleValue([_node(v) for v in item], NOWHERE)
    return value(item)


def _indexed(start: ast.Value, step: int, index: str) -> ast.Value:
    """``start + step * index`` as a repeat writes a number that grows per copy (``c + 16 * i``, ``i``, ``8 - i``)."""
    grown: ast.Value = ast.Name(index, NOWHERE)
    if abs(step) != 1:
        grown = ast.BinaryOp("*", value(abs(step)), grown, NOWHERE, NOWHERE)
    if isinstance(start, ast.Literal) and start.value == 0 and step > 0:
        return grown
    return ast.BinaryOp("+" if step > 0 else "-", start, grown, NOWHERE, NOWHERE)


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


def _trailing_metrics(statements: list[Statement]) -> int:
    """Index of the first of the losses and metrics that end the file (a blank line goes before them)."""
    k = len(statements)
    while k > 0:
        units = statements[k - 1].units
        op = lookup(units[0].layer.op) if units[0].layer is not None else None
        if op is None or op.role not in ("loss", "metric"):
            break
        k -= 1
    return k


def choose_defaults(layers: list[Layer]) -> dict[str, dict[str, Any]]:
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
