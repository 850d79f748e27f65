"""Binding a call's arguments to an op's declared arguments: types, ranges, defaults, fillers."""

from __future__ import annotations

from typing import Any

from alexdsl.errors import Span
from alexdsl.fmt import format_value
from alexdsl.ir.elaboration.state import (
    INVALID,
    CallValue,
    Dims,
    Symbol,
    describe,
)
from alexdsl.ir.elaboration.values import Values
from alexdsl.limits import MAX_DIM, MAX_INTS, MAX_SHAPE_RANK, MAX_SIZES, MAX_STRING_LENGTH
from alexdsl.ops.registry import FILLERS, REQUIRED, VARIANCE_NORMS, Arg, Filler, OpDef
from alexdsl.syntax import ast


def _bound(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


class Binding(Values):
    """Binds and checks the arguments of op calls and parameter settings."""

    def _bind(self, op: OpDef, call: ast.Call, values: list[tuple[str | None, Any, Span, ast.Value]]
              ) -> tuple[dict[str, Any] | None, dict[str, Span], dict[str, dict[str, Any]]]:
        given: dict[str, tuple[Any, Span]] = {}
        written: dict[str, ast.Value] = {}
        param_args: dict[str, tuple[Any, Span]] = {}
        positional = [a for a in op.args if a.positional and a.kind != "sizes"]
        sizes_arg = next((a for a in op.args if a.kind == "sizes"), None)
        sizes: dict[str, tuple[Any, Span]] = {}  # the keywords a sizes argument collects, in written order
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
                                    received=describe(value))
                    continue
                key = positional[position].name
                position += 1
                if seen_keyword:
                    self.sink.error("a positional argument follows a keyword argument", span,
                                    hint="name it: " + f"{key}={describe(value)}")
            else:
                key = keyword
                seen_keyword = True
            if key in param_keys:
                param_args[key] = (value, span)
                continue
            if sizes_arg is not None and key == sizes_arg.name:
                self.sink.error(f"the {key} of {op.name} are written as keywords of their own", span,
                                expected=f"{sizes_arg.words}, as in {op.example}", received=f"{key}={describe(value)}")
                continue
            if sizes_arg is not None and keyword is not None and op.arg(key) is None:
                if key in sizes:
                    self.sink.error(f"size '{key}' of {op.name} is given twice", span)
                else:
                    sizes[key] = (value, span)
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
            if arg is sizes_arg:
                attrs[arg.name] = self._sizes(op, sizes)
                continue
            if arg.name in given:
                value, span = given[arg.name]
            elif arg.name in defaults:
                value, span = defaults[arg.name]
            elif arg.default is not REQUIRED:
                attrs[arg.name] = arg.attr_default
                continue
            else:
                self.sink.error(f"{op.name} is missing required argument '{arg.name}'", call.span,
                                expected=f"{arg.name}: {arg.words}, as in {op.example}")
                ok = False
                continue
            converted = self._convert(op, arg, value, span, written.get(arg.name))
            if converted is None and value is not None:  # reported; go on with the default to find more
                if arg.default is REQUIRED:
                    ok = False
                else:
                    attrs[arg.name] = arg.attr_default
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

    def _convert(self, op: OpDef, arg: Arg, value: Any, span: Span, written: ast.Value | None = None) -> Any:
        """``value`` checked against ``arg``; None after an error. ``written`` is the source of the value."""
        shown = describe(value)
        if isinstance(written, (ast.BinaryOp, ast.Negate)) or (
                isinstance(written, ast.TupleValue) and any(isinstance(v, (ast.BinaryOp, ast.Negate))
                                                            for v in written.items)):
            shown = f"{format_value(written)} = {shown}"
        if isinstance(written, ast.ShapeValue):
            shown = format_value(written)  # as written: a dimension too long to hold is not shown clamped

        def bad() -> None:
            fraction = isinstance(value, float) and arg.kind in ("int", "pair")
            self.sink.error(f"argument '{arg.name}' of {op.name} has the wrong type", span,
                            expected=arg.words, received=shown,
                            hint="divide integers with '//', as in c // 8" if fraction else None)

        if value is INVALID:
            return None

        def in_range(v: float) -> bool:
            low = arg.min if arg.min is not None else (-MAX_DIM if arg.kind in ("int", "pair", "ints") else None)
            high = arg.max if arg.max is not None else (MAX_DIM if arg.kind in ("int", "pair", "ints") else None)
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
                            received=describe(value), hint=self._did_you_mean(str(name), arg.choices))
            return None
        if arg.kind == "bias":
            if isinstance(value, bool):
                return value
            if isinstance(value, CallValue):
                return value  # a filler: the caller records it
            return bad()
        if arg.kind == "shape":
            dims = (value,) if is_int else value.dims if isinstance(value, Dims) else None
            if dims is None:
                return bad()
            if len(dims) > MAX_SHAPE_RANK:
                self.sink.error(f"argument '{arg.name}' of {op.name} has too many dimensions", span,
                                expected=f"at most {MAX_SHAPE_RANK} dimensions", received=shown)
                return None
            if any(d < 1 or d > MAX_DIM for d in dims):
                self.sink.error(f"argument '{arg.name}' of {op.name} has a dimension out of range", span,
                                expected=f"every dimension from 1 to {MAX_DIM:,}", received=shown)
                return None
            return dims
        if arg.kind == "ints":
            items = (value,) if is_int else value if isinstance(value, tuple) else None
            if items is None or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
                return None if items is not None and INVALID in items else bad()
            if len(items) > MAX_INTS:
                self.sink.error(f"argument '{arg.name}' of {op.name} has too many integers", span,
                                expected=f"at most {MAX_INTS}", received=f"{len(items)} integers")
                return None
            return items if all(in_range(v) for v in items) else None
        if arg.kind == "string":
            if not isinstance(value, str):
                self.sink.error(f"argument '{arg.name}' of {op.name} has the wrong type", span,
                                expected=arg.words, received=shown,
                                hint=f'quote it: {arg.name}="{value.name}"' if isinstance(value, Symbol) else None)
                return None
            if len(value) > MAX_STRING_LENGTH:
                self.sink.error(f"argument '{arg.name}' of {op.name} is too long", span,
                                expected=f"at most {MAX_STRING_LENGTH:,} characters",
                                received=f"{len(value):,} characters")
                return None
            return value
        raise AssertionError(arg.kind)

    def _sizes(self, op: OpDef, sizes: dict[str, tuple[Any, Span]]) -> tuple[tuple[str, int], ...]:
        """The keyword sizes of ``op`` in written order, each checked to be an integer from 1; the bad ones reported
        and left out."""
        out = []
        for index, (key, (value, span)) in enumerate(sizes.items()):
            if index == MAX_SIZES:
                self.sink.error(f"{op.name} takes at most {MAX_SIZES} sizes", span,
                                received=f"{len(sizes)} sizes")
                break
            if value is INVALID:
                continue
            if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_DIM:
                out.append((key, value))
            else:
                self.sink.error(f"size '{key}' of {op.name} must be an integer from 1 to {MAX_DIM:,}", span,
                                received=describe(value))
        return tuple(out)

    def _filler(self, value: Any, span: Span) -> Filler | None:
        if not isinstance(value, CallValue):
            self.sink.error(f"expected a filler, received {describe(value)}", span,
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
                    self.sink.error(f"unknown variance_norm {describe(arg_value)}", arg_span,
                                    expected=", ".join(VARIANCE_NORMS),
                                    hint=self._did_you_mean(str(norm), VARIANCE_NORMS))
                    return None
                bound[key] = norm
            elif isinstance(arg_value, (int, float)) and not isinstance(arg_value, bool):
                bound[key] = float(arg_value)
            else:
                self.sink.error(f"filler argument '{key}' must be a number", arg_span,
                                received=describe(arg_value))
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
        self.sink.error(f"'{key}' must be a non-negative number", span, received=describe(value))
        return None
