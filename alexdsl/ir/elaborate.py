"""Syntax tree -> IR graph: resolves names, binds arguments, applies defaults, expands blocks.

Every mistake is recorded in a :class:`~alexdsl.errors.DiagnosticSink` and elaboration goes
on, so one run reports every problem. Shapes are not known yet: :mod:`alexdsl.passes.shapes`
fills them in.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from alexdsl.errors import MAX_DIAGNOSTICS_PER_FILE, DiagnosticSink, Span, did_you_mean
from alexdsl.fmt import format_value
from alexdsl.limits import MAX_DIM, MAX_INT, MAX_NAME_LENGTH, MAX_RANK, max_layers
from alexdsl.ops.registry import FILLERS, REQUIRED, VARIANCE_NORMS, Arg, Filler, OpDef, lookup, op_names
from alexdsl.ops.split import SPLITTERS  # front-end forms -> the op of each part; re-exported
from alexdsl.settings import PREPROCESS_KEYS, SOLVER_KEYS  # noqa: F401 - re-exported
from alexdsl.syntax import ast

PHASES = ("train", "test")
BROKEN = "\0broken"  # the output of a statement that failed: layers reading it report nothing more
SELF = "self"  # inside a block, the label of a layer named like the instance itself
PENDING = "\0pending"  # a block instance's input while its source is not resolved yet; never left in the IR
SPLIT = "\0split:"  # prefix of a split statement's output: its parts are named, the whole is not
MAX_BLOCK_DEPTH = 32  # blocks using blocks, this many deep at most


class _Unexpandable(Exception):
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


@dataclass
class _Scope:
    prefix: str
    values: dict[str, Any]
    in_node: str | None
    prev: str | None
    block: str | None
    labels: dict[str, str | None] = field(default_factory=dict)
    pending: list[tuple[str, int, ast.Name]] = field(default_factory=list)


def _describe(value: Any) -> str:
    if isinstance(value, Symbol):
        return value.name
    if isinstance(value, CallValue):
        return f"{value.name}(...)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "(" + ", ".join(_describe(v) for v in value) + ")"
    return repr(value) if isinstance(value, str) else str(value)


def _kind_words(arg: Arg) -> str:
    return {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "pair": "an integer or an (h, w) pair",
        "choice": "one of " + ", ".join(arg.choices),
        "bias": "true, false or a filler such as constant(0)",
    }[arg.kind]


def _listing(names: list[str], most: int = 20) -> str:
    """Names joined by commas, the first ``most`` of a long list (a diagnostic stays short).

    >>> _listing(["a", "b", "c"], most=2)
    'a, b, ... (3 in all)'
    """
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, ... ({len(names)} in all)"


def _bound(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _default(arg: Arg) -> Any:
    """An argument's default value, a pair default as an (h, w) tuple."""
    return (arg.default, arg.default) if arg.kind == "pair" and isinstance(arg.default, int) else arg.default


class Elaborator:
    """Builds the graph for one module. Use :func:`elaborate`."""

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

    # entry ---------------------------------------------------------------------------------
    def run(self) -> tuple[nx.DiGraph, Meta]:
        statements = self.module.statements
        for stmt in statements:
            if isinstance(stmt, ast.BlockDef):
                self._declare_block(stmt)
            elif isinstance(stmt, ast.BrokenStmt) and stmt.kind == "block" and stmt.label is not None:
                self.broken_blocks.add(stmt.label.name)
        for stmt in statements:
            self._declare(stmt)
        for name in self.input_shapes:
            if name not in self.meta.inputs:
                hint = self._did_you_mean(name, self.meta.inputs)
                self.sink.error(f"--input names '{name}', which is not a declared input",
                                expected=", ".join(self.meta.inputs) or "a declared input", hint=hint)
        data_inputs = [n for n in self.meta.inputs if self.graph.nodes[n]["attrs"]["kind"] == "tensor"]
        broken_input = any(isinstance(s, ast.BrokenStmt) and s.kind == "input" for s in statements)
        scope = _Scope(prefix="", values={}, in_node=None, block=None,
                       prev=data_inputs[0] if data_inputs else BROKEN if broken_input else None)
        for name in self.meta.inputs:
            scope.labels[name] = name
        for stmt in statements:
            if isinstance(stmt, (ast.LayerStmt, ast.RepeatStmt, ast.BrokenStmt)):
                self._statement(stmt, scope)
        self._resolve(scope)
        for stmt in statements:
            if isinstance(stmt, ast.OutputStmt):
                for name in stmt.names:
                    target = self._lookup(name, scope)
                    if target is not None:
                        self.meta.outputs.append((target, name.span))
        self._connect()
        if not self.meta.name:
            stem = self.module.file.rsplit("/", 1)[-1].split(".", 1)[0] or "Network"
            self.meta.name = "".join(part.capitalize() for part in stem.replace("-", "_").split("_")) or "Network"
        return self.graph, self.meta

    def _did_you_mean(self, name: str, candidates: Iterable[str]) -> str | None:
        """:func:`did_you_mean` for the first errors only: each call may compare against every layer name."""
        if self.hints_left <= 0:
            return None
        self.hints_left -= 1
        return did_you_mean(name, candidates)

    # declarations --------------------------------------------------------------------------
    def _declare_block(self, stmt: ast.BlockDef) -> None:
        name = stmt.name.name
        if name in self.blocks:
            first = self.blocks[name].name.span
            self.sink.error(f"block '{name}' is defined twice", stmt.name.span,
                            hint=f"the first definition is at line {first.line}")
        elif lookup(name) is not None:
            self.sink.error(f"block '{name}' has the name of a built-in op", stmt.name.span,
                            hint="rename the block")
        else:
            self.blocks[name] = stmt
        seen: set[str] = set()
        for param in stmt.params:
            if param.name.name in seen:
                self.sink.error(f"block parameter '{param.name.name}' is declared twice", param.name.span)
            seen.add(param.name.name)

    def _declare(self, stmt: ast.Statement) -> None:
        if isinstance(stmt, ast.NetworkStmt):
            if self.meta.name:
                self.sink.error("the network is named twice", stmt.span, hint=f"it is already '{self.meta.name}'")
            self.meta.name = stmt.name.name
            self._check_name_length(stmt.name.name, stmt.name.span)
        elif isinstance(stmt, ast.DescriptionStmt):
            self.meta.description = str(stmt.text.value)
        elif isinstance(stmt, ast.InputStmt):
            self._input(stmt)
        elif isinstance(stmt, ast.DefaultsStmt):
            self._defaults(stmt)
        elif isinstance(stmt, ast.SolverStmt):
            self.meta.solver.update(self._settings(stmt.args, SOLVER_KEYS, "solver", {}))
        elif isinstance(stmt, ast.PreprocessStmt):
            target = stmt.target.name
            if target not in self.meta.inputs:
                self.sink.error(f"preprocess names '{target}', which is not a declared input", stmt.target.span,
                                hint=self._did_you_mean(target, self.meta.inputs))
            settings = self._settings(stmt.args, PREPROCESS_KEYS, "preprocess", {})
            self.meta.preprocess.setdefault(target, {}).update(settings)

    def _input(self, stmt: ast.InputStmt) -> None:
        name = stmt.name.name
        if name in self.graph:
            self.sink.error(f"input '{name}' is declared twice", stmt.name.span)
            return
        if not self._check_name_length(name, stmt.name.span):
            return
        if stmt.type_call is not None:
            call = stmt.type_call
            values = [self._eval(a.value, {}) for a in call.args]
            if call.name != "class" or len(values) != 1 or not isinstance(values[0], int) or values[0] < 1 \
                    or isinstance(values[0], bool) or values[0] > MAX_DIM:
                self.sink.error(
                    f"unknown input type '{call.name}({', '.join(_describe(v) for v in values)})'", call.span,
                    expected="a shape such as 3x227x227, or class(N) for a label with N classes",
                    hint=self._did_you_mean(call.name, ["class"]),
                )
                return
            if name in self.input_shapes:
                self.sink.error(f"--input gives a shape to '{name}', a label input, which takes none", stmt.span,
                                received="x".join(map(str, self.input_shapes[name])),
                                hint="override only tensor inputs (declared with a shape such as 3x224x224)")
            attrs: dict[str, Any] = {"kind": "label", "classes": values[0]}
            shape: tuple[int, ...] = ()
        else:
            assert stmt.shape is not None
            written = str(stmt.shape.value)
            dims = written.split("x")
            if any(len(d.lstrip("0")) > len(str(MAX_DIM)) for d in dims):
                dims = [str(MAX_DIM + 1)]  # refused below; int() of thousands of digits is slow
            shape = tuple(int(d) for d in dims)
            if name in self.input_shapes:
                shape = tuple(self.input_shapes[name])
                written = "x".join(map(str, shape))
            if any(d > MAX_DIM for d in shape) or len(shape) > MAX_RANK:
                self.sink.error(f"input '{name}' is too large", stmt.shape.span,
                                expected=f"at most {MAX_RANK} dimensions of at most {MAX_DIM:,} each",
                                received=written)
                return
            if any(d < 1 for d in shape):
                self.sink.error(f"input '{name}' has a dimension below 1", stmt.shape.span,
                                received="x".join(map(str, shape)))
                return
            attrs = {"kind": "tensor"}
        self.meta.inputs.append(name)
        self.graph.add_node(name, op="input", attrs=attrs, inputs=[], shape=shape, params={}, buffers={},
                            phase="all", span=stmt.span, block=None, macs=0, arg_spans={})

    def _defaults(self, stmt: ast.DefaultsStmt) -> None:
        target = stmt.target.name
        op = lookup(target)
        kinds = sorted({k for o in map(lookup, op_names()) if o for k in o.param_kinds()})
        if op is not None:
            allowed = op.arg_names + [f"{k}{s}" for k in op.param_kinds() for s in ("", "_lr", "_decay")]
            store = self.op_defaults.setdefault(target, {})
        elif target in kinds:
            allowed = list(PARAM_KIND_KEYS)
            store = self.kind_defaults.setdefault(target, {})
        else:
            self.sink.error(f"defaults for unknown op or parameter '{target}'", stmt.target.span,
                            expected="an op such as conv, or a parameter kind: " + ", ".join(kinds),
                            hint=self._did_you_mean(target, op_names() + kinds))
            return
        for arg in stmt.args:
            if arg.keyword is None:
                self.sink.error("defaults take keyword arguments only", arg.span,
                                expected=f"name=value, for example {allowed[0]}=...")
                continue
            if arg.keyword not in allowed:
                self.sink.error(f"unknown argument '{arg.keyword}' for defaults {target}", arg.span,
                                expected=", ".join(allowed), hint=self._did_you_mean(arg.keyword, allowed))
                continue
            store[arg.keyword] = (self._eval(arg.value, {}), arg.span)
        if op is None:
            for key, (value, span) in store.items():
                self._param_setting(key, value, span)

    def _settings(self, args: list[ast.Arg], keys: dict[str, tuple[str, tuple[str, ...]]], what: str,
                  values: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for arg in args:
            if arg.keyword is None:
                self.sink.error(f"{what} settings are keyword arguments", arg.span,
                                expected=", ".join(keys))
                continue
            if arg.keyword not in keys:
                self.sink.error(f"unknown {what} setting '{arg.keyword}'", arg.span, expected=", ".join(keys),
                                hint=self._did_you_mean(arg.keyword, keys))
                continue
            kind, choices = keys[arg.keyword]
            value = self._eval(arg.value, values)
            if value is INVALID:
                continue
            converted = self._convert_setting(kind, choices, value)
            if converted is None:
                words = {"float": "a number", "int": "an integer", "bool": "true or false",
                         "pair": "an integer or an (h, w) pair", "ints": "an integer or a tuple of integers",
                         "floats": "a number or a tuple of numbers",
                         "choice": "one of " + ", ".join(choices)}[kind]
                self.sink.error(f"{what} setting '{arg.keyword}' has the wrong type", arg.value.span,
                                expected=words, received=_describe(value))
                continue
            out[arg.keyword] = converted
        return out

    @staticmethod
    def _convert_setting(kind: str, choices: tuple[str, ...], value: Any) -> Any:
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if kind == "float" and is_num(value):
            return float(value)
        if kind == "int" and is_int(value) and 0 <= value <= MAX_DIM:
            return value
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "choice":
            name = value.name if isinstance(value, Symbol) else value
            return name if name in choices else None
        if kind == "pair":
            if is_int(value) and 0 < value <= MAX_DIM:
                return (value, value)
            if isinstance(value, tuple) and len(value) == 2 and all(is_int(v) and 0 < v <= MAX_DIM for v in value):
                return value
        if kind == "ints":
            items = value if isinstance(value, tuple) else (value,)
            return list(items) if all(is_int(v) and abs(v) <= MAX_DIM for v in items) else None
        if kind == "floats":
            items = value if isinstance(value, tuple) else (value,)
            return [float(v) for v in items] if all(is_num(v) for v in items) else None
        return None

    # values ----------------------------------------------------------------------------------
    def _eval(self, value: ast.Value, values: dict[str, Any], report: bool = True) -> Any:
        """The value of ``value`` with block parameters ``values``; INVALID after a reported error."""
        if isinstance(value, ast.Literal):
            return value.value
        if isinstance(value, ast.Name):
            return values[value.name] if value.name in values else Symbol(value.name)
        if isinstance(value, ast.TupleValue):
            return tuple(self._eval(v, values, report) for v in value.items)
        if isinstance(value, (ast.BinaryOp, ast.Negate)):
            return self._arith(value, values, report)
        return CallValue(value.name, tuple((a.keyword, self._eval(a.value, values, report), a.span)
                                           for a in value.args), value.span)

    def _arith(self, value: ast.Value, values: dict[str, Any], report: bool) -> Any:
        """An operand of integer arithmetic, or INVALID (reported when ``report``)."""
        def fail(message: str, span: Span, **extra: str | None) -> Any:
            if report:
                self.sink.error(message, span, **extra)
            return INVALID

        if isinstance(value, ast.Name):
            if value.name not in values:
                known = sorted(values)
                return fail(f"unknown name '{value.name}' in an expression", value.span,
                            expected="a number, or a block parameter (" + _listing(known) + ")" if known
                            else "a number: only a block's parameters can be used in arithmetic",
                            hint=self._did_you_mean(value.name, known) if report else None)
            number = values[value.name]
        elif isinstance(value, ast.BinaryOp):
            left, right = self._arith(value.left, values, report), self._arith(value.right, values, report)
            if left is INVALID or right is INVALID:
                return INVALID
            if value.op == "//" and right == 0:
                return fail("division by zero", value.right.span, expected="a divisor other than 0",
                            received=f"{format_value(value.right)} = 0")
            number = {"+": left + right, "-": left - right, "*": left * right}[value.op] if value.op != "//" \
                else left // right
        elif isinstance(value, ast.Negate):
            operand = self._arith(value.operand, values, report)
            number = INVALID if operand is INVALID else -operand
        else:
            number = self._eval(value, values, report)
        if number is INVALID:
            return INVALID
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            return fail(f"'{format_value(value)}' is not a number, so it cannot take part in arithmetic", value.span,
                        expected="an integer or a number", received=_describe(number))
        if isinstance(number, int) and abs(number) > MAX_INT:
            return fail("the value is too large", value.span, expected=f"at most {MAX_INT:,} (2**63 - 1)",
                        received=f"{format_value(value)} = {number:.3e}")
        if isinstance(number, float) and not math.isfinite(number):
            return fail("the value is too large", value.span, expected="a finite number, at most about 1.8e308",
                        received=format_value(value))
        return number

    def _filler(self, value: Any, span: Span) -> Filler | None:
        if not isinstance(value, CallValue):
            self.sink.error(f"expected a filler, received {_describe(value)}", span,
                            expected="constant(v), gaussian(std), uniform(min, max), xavier() or msra()")
            return None
        if value.name not in FILLERS:
            self.sink.error(f"unknown filler '{value.name}'", value.span, expected=", ".join(FILLERS),
                            hint=self._did_you_mean(value.name, FILLERS))
            return None
        spec = FILLERS[value.name]
        names = [n for n, _ in spec]
        bound: dict[str, Any] = {}
        for i, (keyword, arg_value, arg_span) in enumerate(value.args):
            if arg_value is INVALID:
                return None
            key = keyword if keyword is not None else (names[i] if i < len(names) else None)
            if key is None:
                self.sink.error(f"too many arguments for {value.name}", arg_span,
                                expected=f"{value.name}({', '.join(names)})")
                return None
            if key not in names:
                self.sink.error(f"unknown argument '{key}' for filler {value.name}", arg_span,
                                expected=", ".join(names), hint=self._did_you_mean(key, names))
                return None
            if key == "variance_norm":
                norm = arg_value.name if isinstance(arg_value, Symbol) else arg_value
                if norm not in VARIANCE_NORMS:
                    self.sink.error(f"unknown variance_norm {_describe(arg_value)}", arg_span,
                                    expected=", ".join(VARIANCE_NORMS),
                                    hint=self._did_you_mean(str(norm), VARIANCE_NORMS))
                    return None
                bound[key] = norm
            elif isinstance(arg_value, (int, float)) and not isinstance(arg_value, bool):
                bound[key] = float(arg_value)
            else:
                self.sink.error(f"filler argument '{key}' must be a number", arg_span,
                                received=_describe(arg_value))
                return None
        if value.name == "gaussian" and bound.get("std", 1.0) < 0:
            self.sink.error("gaussian std must not be negative", value.span, received=str(bound["std"]))
            return None
        return Filler(value.name, tuple((n, bound.get(n, default)) for n, default in spec))

    def _param_setting(self, key: str, value: Any, span: Span) -> Any:
        """Check a parameter setting (``filler``, ``lr`` or ``decay``) and return it."""
        if key == "filler":
            return self._filler(value, span)
        if value is INVALID:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        self.sink.error(f"'{key}' must be a non-negative number", span, received=_describe(value))
        return None

    def _convert(self, op: OpDef, arg: Arg, value: Any, span: Span, written: ast.Value | None = None) -> Any:
        """``value`` checked against ``arg``; None after an error. ``written`` is the source of the value."""
        shown = _describe(value)
        if isinstance(written, (ast.BinaryOp, ast.Negate)) or (
                isinstance(written, ast.TupleValue) and any(isinstance(v, (ast.BinaryOp, ast.Negate))
                                                            for v in written.items)):
            shown = f"{format_value(written)} = {shown}"

        def bad() -> None:
            fraction = isinstance(value, float) and arg.kind in ("int", "pair")
            self.sink.error(f"argument '{arg.name}' of {op.name} has the wrong type", span,
                            expected=_kind_words(arg), received=shown,
                            hint="divide integers with '//', as in c // 8" if fraction else None)

        if value is INVALID:
            return None

        def in_range(v: float) -> bool:
            low = arg.min if arg.min is not None else (-MAX_DIM if arg.kind in ("int", "pair") else None)
            high = arg.max if arg.max is not None else (MAX_DIM if arg.kind in ("int", "pair") else None)
            if low is not None and v < low:
                self.sink.error(f"argument '{arg.name}' of {op.name} must be at least {_bound(low)}", span,
                                received=shown)
                return False
            if high is not None and v > high:
                self.sink.error(f"argument '{arg.name}' of {op.name} must be at most {_bound(high)}", span,
                                received=shown)
                return False
            return True

        is_int = isinstance(value, int) and not isinstance(value, bool)
        if arg.kind == "int":
            return value if is_int and in_range(value) else (None if is_int else bad())
        if arg.kind == "float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value) if in_range(value) else None
            return bad()
        if arg.kind == "bool":
            return value if isinstance(value, bool) else bad()
        if arg.kind == "pair":
            if value is None:
                return None
            pair = (value, value) if is_int else value
            if isinstance(pair, tuple) and len(pair) == 2 and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in pair):
                return pair if all(in_range(v) for v in pair) else None
            return bad()
        if arg.kind == "choice":
            name = value.name if isinstance(value, Symbol) else value
            if name in arg.choices:
                return name
            self.sink.error(f"argument '{arg.name}' of {op.name} must be one of {', '.join(arg.choices)}", span,
                            received=_describe(value), hint=self._did_you_mean(str(name), arg.choices))
            return None
        if arg.kind == "bias":
            if isinstance(value, bool):
                return value
            if isinstance(value, CallValue):
                return value  # a filler: the caller records it
            return bad()
        raise AssertionError(arg.kind)

    # layers ------------------------------------------------------------------------------------
    def _statement(self, stmt: ast.LayerStmt | ast.RepeatStmt | ast.BrokenStmt, scope: _Scope) -> None:
        if isinstance(stmt, ast.BrokenStmt):  # reported by the parser: what it defines reports nothing more
            if stmt.label is not None:
                scope.labels[stmt.label.name] = BROKEN
            if stmt.kind in ("layer", "statement"):
                scope.prev = BROKEN
            return
        label = stmt.label.name
        full = scope.prefix + label
        if label == SELF and scope.prefix:  # the block instance's own name (ConvNeXt's features.1.0.layer_scale)
            full = scope.prefix[:-1]
        if label in scope.labels or full in self.graph:
            self.sink.error(f"duplicate name '{label}'", stmt.label.span,
                            hint=self._first_definition(full))
            label, full = f"{label}\0dup", f"{full}\0dup"
        if not self._check_name_length(full, stmt.label.span):
            scope.labels[label] = scope.prev = BROKEN
            return
        phase = "all"
        if stmt.phase is not None:
            if stmt.phase.name in PHASES:
                phase = stmt.phase.name
            else:
                self.sink.error(f"unknown phase '@{stmt.phase.name}'", stmt.phase.span, expected="@train or @test",
                                hint=self._did_you_mean(stmt.phase.name, PHASES))
        if isinstance(stmt, ast.RepeatStmt):
            output = self._repeat(stmt, scope, full, phase)
        else:
            output = self._chain(stmt, scope, full, phase)
        scope.labels[label] = output if output is not None else BROKEN
        scope.prev = output if output is not None else BROKEN

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

    def _chain(self, stmt: ast.LayerStmt, scope: _Scope, full: str, phase: str) -> str | None:
        prev = scope.prev
        counts: Counter[str] = Counter()
        for i, link in enumerate(stmt.links):
            call = link.call
            counts[call.name] += 1
            if link.label is not None:
                name = scope.prefix + link.label.name
                if name in self.graph or link.label.name in scope.labels:
                    self.sink.error(f"duplicate name '{link.label.name}'", link.label.span,
                                    hint=self._first_definition(name))
                    return None
            elif i == 0:
                name = full
            else:
                suffix = str(counts[call.name]) if counts[call.name] > 1 else ""
                name = f"{full}_{call.name}{suffix}"
            sources = stmt.sources if i == 0 else []
            if self._is_splitter(call):
                if i < len(stmt.links) - 1:
                    self.sink.error(f"{call.name} must end its chain: its parts are read by name", call.span,
                                    hint=f"start a new statement that reads a part, as in 'b: {stmt.label.name}.0 "
                                         "-> conv(...)'")
                    return None
                local = link.label.name if link.label is not None else stmt.label.name
                return self._split(call, local, name, sources, prev, i > 0 or not stmt.sources, scope, phase)
            out = self._apply(call, name, sources, prev, i > 0 or not stmt.sources, scope, phase)
            if out is None:
                return None
            prev = out
        return prev

    def _repeat(self, stmt: ast.RepeatStmt, scope: _Scope, full: str, phase: str) -> str | None:
        count = self._eval(stmt.count, scope.values)
        if count is INVALID:
            return None
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            shown = _describe(count)
            if isinstance(stmt.count, (ast.BinaryOp, ast.Negate)):
                shown = f"{format_value(stmt.count)} = {shown}"
            self.sink.error("repeat needs a count of at least 1", stmt.count.span, received=shown,
                            expected="a positive integer: a number, a block parameter or an expression of them")
            return None
        try:
            size = count * self._call_size(stmt.call, scope.values, [])
        except _Unexpandable as error:
            self.sink.error(error.message, stmt.call.span, hint=error.hint)
            return None
        if not self._fits(size, f"repeat {count} {stmt.call.name}", stmt.count.span):
            return None
        prev = scope.prev
        for i in range(count):
            out = self._apply(stmt.call, f"{full}.{i}", stmt.sources if i == 0 else [], prev,
                              i > 0 or not stmt.sources, scope, phase)
            if out is None:
                return None
            prev = out
        return prev

    def _is_splitter(self, call: ast.Call) -> bool:
        return call.name in SPLITTERS and call.name not in self.blocks and lookup(call.name) is None

    def _split(self, call: ast.Call, local: str, name: str, sources: list[ast.Name], implicit: str | None,
               implicit_allowed: bool, scope: _Scope, phase: str) -> str | None:
        """``chunk(n)`` / ``split(sizes)``: one layer per part, ``<name>.<i>``; returns the SPLIT marker."""
        leading = 0
        while leading < len(call.args) and call.args[leading].keyword is None and \
                isinstance(call.args[leading].value, ast.Name) and call.args[leading].value.name not in scope.values:
            leading += 1
        refs, rest = call.args[:leading], call.args[leading:]
        keyword = "chunks" if call.name == "chunk" else "sizes"
        example = "half: chunk(2)" if call.name == "chunk" else "parts: split((24, 40))"
        if len(rest) != 1 or rest[0].keyword not in (None, keyword):
            self.sink.error(f"{call.name} takes one argument, {keyword}", call.span, expected=example,
                            received=", ".join(format_value(a.value) for a in rest) or "no argument")
            return None
        arg = rest[0]
        value = self._eval(arg.value, scope.values)
        if value is INVALID:
            return None
        items = value if isinstance(value, tuple) and call.name == "split" else (value,)
        if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_DIM for v in items) \
                or (call.name == "split" and not isinstance(value, tuple)):
            shown = _describe(value)
            if isinstance(arg.value, (ast.BinaryOp, ast.Negate, ast.TupleValue)):
                shown = f"{format_value(arg.value)} = {shown}"
            self.sink.error(f"{call.name} needs " + ("a number of parts of at least 1" if call.name == "chunk"
                                                     else "the size of each part, each at least 1"),
                            arg.value.span, expected=example, received=shown,
                            hint="for parts of equal size write chunk(n)" if call.name == "split" else None)
            return None
        count = items[0] if call.name == "chunk" else len(items)
        if not self._fits(count, f"{call.name}({_describe(value)})", call.span):
            return None
        starts = list(itertools.accumulate(items, initial=0)) if call.name == "split" else []
        for index in range(count):
            def number(v: int) -> ast.Arg:
                return ast.Arg(None, ast.Literal(v, arg.span, str(v)), arg.span)

            if call.name == "chunk":
                extra = [number(count), number(index)]
            else:
                extra = [number(starts[index]), number(starts[index + 1])]
                if index == count - 1:  # the last part checks the sizes add up to the input's channels
                    extra.append(ast.Arg("channels", ast.Literal(starts[-1], arg.span, str(starts[-1])), arg.span))
            part = ast.Call(SPLITTERS[call.name], refs + extra, call.span, call.name_span)
            out = self._apply(part, f"{name}.{index}", sources, implicit, implicit_allowed, scope, phase)
            if out is None:
                return None
            scope.labels[f"{local}.{index}"] = out
        return SPLIT + f"{local}\0{count}"

    def _split_error(self, marker: str, span: Span) -> None:
        local, count = marker[len(SPLIT):].split("\0")
        names = [f"{local}.{i}" for i in range(int(count))]
        self.sink.error(f"'{local}' is split into {count} parts: read one of them by name", span,
                        expected=_listing(names), hint=f"write '{names[0]} -> ...' to read the first part")

    def _apply(self, call: ast.Call, name: str, sources: list[ast.Name], implicit: str | None,
               implicit_allowed: bool, scope: _Scope, phase: str) -> str | None:
        """Add the op or block instance ``call`` as ``name``; return the name of its output."""
        if implicit is not None and implicit.startswith(SPLIT) and implicit_allowed and not sources and (
                call.name in self.blocks or not (call.args and call.args[0].keyword is None
                                                 and isinstance(call.args[0].value, ast.Name)
                                                 and call.args[0].value.name not in scope.values)):
            self._split_error(implicit, call.span)
            return None
        if call.name in self.blocks:
            return self._instantiate(call, name, sources, implicit, scope, phase)
        if call.name in self.broken_blocks:
            return None
        op = lookup(call.name)
        if op is None:
            self.sink.error(f"unknown op '{call.name}'", call.name_span,
                            expected="an op (" + ", ".join(op_names()) + ")" +
                                     (" or a block (" + _listing(sorted(self.blocks)) + ")" if self.blocks else ""),
                            hint=self._did_you_mean(call.name, op_names() + list(self.blocks)))
            return None
        values = [(a.keyword, self._eval(a.value, scope.values), a.span, a.value) for a in call.args]
        refs: list[ast.Name] = list(sources)
        while values and values[0][0] is None and isinstance(values[0][1], Symbol):
            refs.append(values.pop(0)[3])  # type: ignore[arg-type]
        lo, hi = op.inputs
        inputs: list[str | None] = []
        if len(refs) < lo or not refs:
            if implicit == BROKEN and implicit_allowed:
                inputs.append(None)
            elif implicit is None or not implicit_allowed:
                if not refs:
                    self.sink.error(f"layer '{name}' has no input", call.span,
                                    hint="declare an input first, or name one: 'x -> " + call.name + "'")
                    return None
            else:
                inputs.append(implicit)
        count = len(inputs) + len(refs)
        if count < lo or (hi is not None and count > hi):
            want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            self.sink.error(f"{call.name} takes {want} input{'s' if lo != 1 or hi != 1 else ''}, received {count}",
                            call.span, expected=op.example)
            return None
        attrs, arg_spans, param_cfg = self._bind(op, call, values)
        if name in self.graph:
            self.sink.error(f"duplicate name '{name}'", call.span, hint=self._first_definition(name))
            return None
        if not self._check_name_length(name, call.span):
            return None
        pending_index = len(inputs)
        inputs.extend([None] * len(refs))
        for j, ref in enumerate(refs):
            scope.pending.append((name, pending_index + j, ref))
        self.graph.add_node(name, op=op.name, attrs=attrs or {}, inputs=inputs, shape=None, params={}, buffers={},
                            phase=phase, span=call.span, block=scope.block, macs=0, arg_spans=arg_spans,
                            param_config=param_cfg, ok=attrs is not None)
        self.added.append(name)
        return name

    def _bind(self, op: OpDef, call: ast.Call, values: list[tuple[str | None, Any, Span, ast.Value]]
              ) -> tuple[dict[str, Any] | None, dict[str, Span], dict[str, dict[str, Any]]]:
        given: dict[str, tuple[Any, Span]] = {}
        written: dict[str, ast.Value] = {}
        param_args: dict[str, tuple[Any, Span]] = {}
        positional = [a for a in op.args if a.positional]
        position = 0
        ok = True
        seen_keyword = False
        param_keys = [f"{k}{s}" for k in op.param_kinds() for s in ("_lr", "_decay")] + [
            k for k in op.param_kinds() if op.arg(k) is None]
        for keyword, value, span, source in values:
            if keyword is None:
                if position >= len(positional):
                    names = ", ".join(a.name for a in positional) or "no arguments"
                    self.sink.error(f"too many positional arguments for {op.name}", span,
                                    expected=f"{op.name} takes {len(positional)} positional ({names})",
                                    received=_describe(value))
                    continue
                key = positional[position].name
                position += 1
                if seen_keyword:
                    self.sink.error("a positional argument follows a keyword argument", span,
                                    hint="name it: " + f"{key}={_describe(value)}")
            else:
                key = keyword
                seen_keyword = True
            if key in param_keys:
                param_args[key] = (value, span)
                continue
            if op.arg(key) is None:
                allowed = op.arg_names + param_keys
                self.sink.error(f"unknown argument '{key}' for {op.name}", span,
                                expected=", ".join(allowed) if allowed else f"{op.name} takes no arguments",
                                hint=self._did_you_mean(key, allowed))
                continue
            if key in given:
                self.sink.error(f"argument '{key}' of {op.name} is given twice", span)
                continue
            given[key] = (value, span)
            written[key] = source
        defaults = self.op_defaults.get(op.name, {})
        attrs: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        for arg in op.args:
            if arg.name in given:
                value, span = given[arg.name]
            elif arg.name in defaults:
                value, span = defaults[arg.name]
            elif arg.default is not REQUIRED:
                attrs[arg.name] = _default(arg)
                continue
            else:
                self.sink.error(f"{op.name} is missing required argument '{arg.name}'", call.span,
                                expected=f"{arg.name}: {_kind_words(arg)}, as in {op.example}")
                ok = False
                continue
            converted = self._convert(op, arg, value, span, written.get(arg.name))
            if converted is None and value is not None:  # reported; go on with the default to find more
                if arg.default is REQUIRED:
                    ok = False
                else:
                    attrs[arg.name] = _default(arg)
                continue
            spans[arg.name] = span
            attrs[arg.name] = converted
        for key, (value, span) in defaults.items():
            if key in param_keys and key not in param_args:
                param_args[key] = (value, span)
        param_cfg = self._param_config(op, attrs, param_args)
        if not ok:
            return None, spans, param_cfg
        if op.normalize is not None:
            attrs = op.normalize(attrs)
        return attrs, spans, param_cfg

    def _param_config(self, op: OpDef, attrs: dict[str, Any], param_args: dict[str, tuple[Any, Span]]
                      ) -> dict[str, dict[str, Any]]:
        config: dict[str, dict[str, Any]] = {}
        for kind in op.param_kinds():
            kind_defaults = self.kind_defaults.get(kind, {})
            filler: Filler | None = None
            bias_like = attrs.get(kind)
            if isinstance(bias_like, CallValue):  # bias=constant(1)
                filler = self._filler(bias_like, bias_like.span)
                attrs[kind] = True
            elif kind in param_args:
                value, span = param_args[kind]
                filler = self._filler(value, span)
            elif "filler" in kind_defaults:
                filler = self._filler(*kind_defaults["filler"])
            entry = {"filler": filler or op.default_fillers[kind], "lr": 1.0, "decay": 1.0}
            for short, key in (("lr", f"{kind}_lr"), ("decay", f"{kind}_decay")):
                if key in param_args:
                    setting = self._param_setting(short, *param_args[key])
                elif short in kind_defaults:
                    setting = self._param_setting(short, *kind_defaults[short])
                else:
                    setting = None
                if setting is not None:
                    entry[short] = setting
            config[kind] = entry
        return config

    def _instantiate(self, call: ast.Call, name: str, sources: list[ast.Name], implicit: str | None,
                     scope: _Scope, phase: str) -> str | None:
        block = self.blocks[call.name]
        if len(sources) > 1:
            self.sink.error(f"block {call.name} takes one input, received {len(sources)}", call.span)
            return None
        values = self._block_values(block, call, scope.values, report=True)
        if values is None:
            return None
        try:
            size = self._block_size(call.name, values, [])
        except _Unexpandable as error:
            self.sink.error(error.message, call.span, hint=error.hint)
            return None
        if not self._fits(size, f"block {call.name}", call.span):
            return None
        input_node = PENDING if sources else implicit
        inner = _Scope(prefix=name + ".", values=values, in_node=input_node, prev=input_node, block=name)
        first_node = len(self.added)
        for stmt in block.body:
            self._statement(stmt, inner)
        output = inner.labels.get("out", inner.prev)
        source = self._lookup(sources[0], scope, report=False) if sources else None
        if source is not None:
            inner.in_node = source
        self._resolve(inner)
        if not sources:
            return output
        for node in self.added[first_node:]:  # the instance's layers that read its input
            inputs = self.graph.nodes[node]["inputs"]
            for index, item in enumerate(inputs):
                if item == PENDING:
                    if source is None:  # defined later: resolved with the layers that read it
                        scope.pending.append((node, index, sources[0]))
                    else:
                        inputs[index] = source
        if output != PENDING:
            return output
        if source is None:
            self.sink.error(f"block {call.name} has no layers, so '{name}' would only pass on "
                            f"'{sources[0].name}', which is defined later", call.span,
                            hint=f"read '{sources[0].name}' directly, or define it before '{name}'")
            return None
        return source

    def _block_values(self, block: ast.BlockDef, call: ast.Call, outer: dict[str, Any], report: bool
                      ) -> dict[str, Any] | None:
        """The block's parameters bound to the call's arguments; None (reported) on a mistake.

        With ``report=False`` nothing is reported and a best-effort binding is returned.
        """
        params = [p.name.name for p in block.params]
        values: dict[str, Any] = {}
        position = 0
        for arg in call.args:
            value = self._eval(arg.value, outer, report)
            if arg.keyword is None:
                if position >= len(params):
                    if report:
                        self.sink.error(f"too many arguments for block {call.name}", arg.span,
                                        expected=f"{call.name}({_listing(params)})")
                        return None
                    continue
                key = params[position]
                position += 1
            else:
                key = arg.keyword
                if key not in params:
                    if report:
                        self.sink.error(f"unknown argument '{key}' for block {call.name}", arg.span,
                                        expected=_listing(params), hint=self._did_you_mean(key, params))
                        return None
                    continue
            values[key] = value
        for param in block.params:
            if param.name.name not in values:
                if param.default is None:
                    if report:
                        self.sink.error(f"block {call.name} is missing argument '{param.name.name}'", call.span,
                                        expected=f"{call.name}({_listing(params)})")
                        return None
                    continue
                values[param.name.name] = self._eval(param.default, {}, report)
        return values

    # expansion size ------------------------------------------------------------------------------
    def _call_size(self, call: ast.Call, values: dict[str, Any], chain: list[str]) -> int:
        """Layers that ``call`` adds: 1 for an op, the expanded size for a block."""
        block = self.blocks.get(call.name)
        if block is None:
            return 1
        return self._block_size(call.name, self._block_values(block, call, values, report=False) or {}, chain)

    def _block_size(self, name: str, values: dict[str, Any], chain: list[str]) -> int:
        """Layers one instance of block ``name`` expands to, computed without expanding it.

        Memoised per (block, arguments), so even a block used 2**40 times through nesting costs
        one walk of each body. Raises :class:`_Unexpandable` for a block that uses itself.
        """
        key = (name, tuple(sorted(values.items())))
        if key in self.block_sizes:
            return self.block_sizes[key]
        if name in chain:
            cycle = " -> ".join(chain[chain.index(name):] + [name])
            raise _Unexpandable(f"block {name} expands into itself",
                                f"a block may not use itself, directly or through another block: {cycle}")
        if len(chain) >= MAX_BLOCK_DEPTH:
            path = chain[:3] + ["..."] + chain[-2:] + [name]
            raise _Unexpandable(f"blocks are nested more than {MAX_BLOCK_DEPTH} deep here",
                                "use fewer levels of blocks inside blocks: " + " -> ".join(path))
        inner = chain + [name]
        total = 0
        for stmt in self.blocks[name].body:
            if isinstance(stmt, ast.RepeatStmt):
                count = self._eval(stmt.count, values, report=False)
                if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                    total += count * self._call_size(stmt.call, values, inner)
            elif isinstance(stmt, ast.LayerStmt):
                total += sum(self._call_size(link.call, values, inner) for link in stmt.links)
        self.block_sizes[key] = total
        return total

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

    # names -------------------------------------------------------------------------------------
    def _lookup(self, ref: ast.Name, scope: _Scope, report: bool = True) -> str | None:
        name = ref.name
        if name in scope.labels:
            target = scope.labels[name]
            if target is not None and target.startswith(SPLIT):
                if report:
                    self._split_error(target, ref.span)
                return None
            return target
        if name == "in" and scope.in_node is not None:
            return scope.in_node
        if scope.prefix + name in self.graph:
            return scope.prefix + name
        if not scope.prefix and name in self.graph:
            return name
        if report:
            candidates = itertools.chain((n for n in scope.labels if "\0" not in n), ["in"] if scope.in_node else [])
            if name == "in":
                self.sink.error("'in' is only defined inside a block", ref.span,
                                hint="name the layer to read from instead")
            else:
                self.sink.error(f"unknown input name '{name}'", ref.span,
                                expected="a declared input or a layer defined in this " +
                                         ("block" if scope.prefix else "file"),
                                hint=self._did_you_mean(name, candidates))
        return None

    def _resolve(self, scope: _Scope) -> None:
        reported: set[int] = set()  # a block's input read by several of its layers is reported once
        for node, index, ref in scope.pending:
            target = self._lookup(ref, scope, report=id(ref) not in reported)
            reported.add(id(ref))
            self.graph.nodes[node]["inputs"][index] = target
        scope.pending.clear()

    def _connect(self) -> None:
        for node, data in list(self.graph.nodes(data=True)):
            for index, source in enumerate(data["inputs"]):
                if source is None or source not in self.graph:
                    data["ok"] = False
                    continue
                if self.graph.has_edge(source, node):
                    self.graph.edges[source, node]["index"].append(index)
                else:
                    self.graph.add_edge(source, node, index=[index])


def elaborate(module: ast.Module, sink: DiagnosticSink, input_shapes: dict[str, tuple[int, ...]] | None = None,
              max_layers: int | None = None) -> tuple[nx.DiGraph, Meta]:
    """Build the IR graph (without shapes) for ``module``, recording problems in ``sink``.

    ``max_layers`` bounds the layers after expansion (see :func:`alexdsl.limits.max_layers`).
    """
    return Elaborator(module, sink, input_shapes, max_layers).run()
