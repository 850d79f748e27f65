"""Declarations: the network's name, inputs, defaults, solver and preprocess settings, and blocks."""

from __future__ import annotations

from typing import Any

from alexdsl.ir.elaboration.binding import Binding
from alexdsl.ir.elaboration.state import (
    PARAM_KIND_KEYS,
    describe,
)
from alexdsl.limits import MAX_DIM, MAX_RANK
from alexdsl.ops.registry import lookup, op_names
from alexdsl.settings import PREPROCESS_KEYS, SOLVER_KEYS
from alexdsl.syntax import ast


class Declarations(Binding):
    """Records what a file declares besides layers."""

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
        if stmt.type_call is not None and stmt.type_call.name == "tokens":
            typed = self._tokens_input(stmt)
            if typed is None:
                return
            attrs, shape = typed
        elif stmt.type_call is not None:
            call = stmt.type_call
            values = [self._eval(a.value, {}) for a in call.args]
            if call.name != "class" or len(values) != 1 or not isinstance(values[0], int) or values[0] < 1 \
                    or isinstance(values[0], bool) or values[0] > MAX_DIM:
                self.sink.error(
                    f"unknown input type '{call.name}({', '.join(describe(v) for v in values)})'", call.span,
                    expected="a shape such as 3x227x227, class(N) for a label with N classes, or tokens(N) for "
                             "up to N token ids",
                    hint=self._did_you_mean(call.name, ["class", "tokens"]),
                )
                return
            if name in self.input_shapes:
                self.sink.error(f"--input gives a shape to '{name}', a label input, which takes none", stmt.span,
                                received="x".join(map(str, self.input_shapes[name])),
                                hint="override only tensor inputs (declared with a shape such as 3x224x224)")
            attrs = {"kind": "label", "classes": values[0]}
            shape = ()
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
        self._add_node(name, "input", attrs, [], shape, "all", stmt.span, None, {})

    def _tokens_input(self, stmt: ast.InputStmt) -> tuple[dict[str, Any], tuple[int, ...]] | None:
        """``tokens(N)`` or ``tokens(N, vocab=V)``: a sequence of up to N token ids (below V when given); its
        shape is (N,), the longest sequence, which ``--input ids=L`` may change."""
        call = stmt.type_call
        assert call is not None
        written = "tokens(N) or tokens(N, vocab=V), N and V integers from 1 to " + f"{MAX_DIM:,}"
        values: dict[str, Any] = {}
        for index, arg in enumerate(call.args):
            key = arg.keyword or ("length" if index == 0 else "vocab" if index == 1 else "")
            value = self._eval(arg.value, {})
            if key not in ("length", "vocab") or key in values:
                what = f"unknown argument '{arg.keyword}'" if arg.keyword else f"unexpected argument {describe(value)}"
                self.sink.error(f"{what} for tokens", arg.span, expected=written,
                                hint=self._did_you_mean(arg.keyword, ["length", "vocab"]) if arg.keyword else None)
                return None
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIM:
                self.sink.error(f"tokens takes an integer {key}, not {describe(value)}", arg.span, expected=written)
                return None
            values[key] = value
        if "length" not in values:
            self.sink.error("tokens needs the longest sequence length", call.span, expected=written)
            return None
        length = values["length"]
        override = self.input_shapes.get(stmt.name.name)
        if override is not None:
            if len(override) != 1 or not 1 <= override[0] <= MAX_DIM:
                self.sink.error(f"--input gives '{stmt.name.name}', a tokens input, the shape "
                                f"{'x'.join(map(str, override))}", stmt.span, expected="one length, such as ids=64")
                return None
            length = override[0]
        return {"kind": "tokens", "vocab": values.get("vocab")}, (length,)

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
