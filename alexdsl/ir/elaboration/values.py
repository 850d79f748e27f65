"""Values: literals, names and calls evaluated against a block's parameters, arithmetic, settings."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from alexdsl.errors import Span
from alexdsl.fmt import format_value
from alexdsl.ir.elaboration.state import (
    INVALID,
    CallValue,
    Dims,
    ElaborationState,
    Symbol,
    describe,
    listing,
)
from alexdsl.limits import MAX_INT
from alexdsl.settings import convert_setting
from alexdsl.syntax import ast

_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "//": operator.floordiv,
}


class Values(ElaborationState):
    """Evaluates argument expressions and checks settings."""

    def _eval(self, value: ast.Value, values: dict[str, Any], report: bool = True) -> Any:
        """The value of ``value`` with block parameters ``values``; INVALID after a reported error."""
        if isinstance(value, ast.Literal):
            return value.value
        if isinstance(value, ast.Name):
            return values[value.name] if value.name in values else Symbol(value.name)
        if isinstance(value, ast.TupleValue):
            return tuple(self._eval(v, values, report) for v in value.items)
        if isinstance(value, ast.ShapeValue):
            return Dims(value.dims)
        if isinstance(value, (ast.BinaryOp, ast.Negate)):
            return self._arith(value, values, report)
        return CallValue(value.name, tuple((a.keyword, self._eval(a.value, values, report), a.span)
                                           for a in value.args), value.span)

    def _arith(self, value: ast.Value, values: dict[str, Any], report: bool) -> Any:
        """An operand of arithmetic, or INVALID (reported when ``report``): integers stay exact, '/'
        gives a float, and a result past int64 or not finite is a located error."""
        def fail(message: str, span: Span, **extra: str | None) -> Any:
            if report:
                self.sink.error(message, span, **extra)
            return INVALID

        if isinstance(value, ast.Name):
            if value.name not in values:
                known = sorted(values)
                return fail(f"unknown name '{value.name}' in an expression", value.span,
                            expected="a number, or a block parameter (" + listing(known) + ")" if known
                            else "a number: only a block's parameters can be used in arithmetic",
                            hint=self._did_you_mean(value.name, known) if report else None)
            number = values[value.name]
        elif isinstance(value, ast.BinaryOp):
            left, right = self._arith(value.left, values, report), self._arith(value.right, values, report)
            if left is INVALID or right is INVALID:
                return INVALID
            if value.op in ("/", "//") and right == 0:
                return fail("division by zero", value.right.span, expected="a divisor other than 0",
                            received=f"{format_value(value.right)} = 0")
            number = _OPERATORS[value.op](left, right)
        elif isinstance(value, ast.Negate):
            operand = self._arith(value.operand, values, report)
            number = INVALID if operand is INVALID else -operand
        else:
            number = self._eval(value, values, report)
        if number is INVALID:
            return INVALID
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            return fail(f"'{format_value(value)}' is not a number, so it cannot take part in arithmetic", value.span,
                        expected="an integer or a number", received=describe(number))
        if isinstance(number, int) and abs(number) > MAX_INT:
            return fail("the value is too large", value.span, expected=f"at most {MAX_INT:,} (2**63 - 1)",
                        received=f"{format_value(value)} = {number:.3e}")
        if isinstance(number, float) and not math.isfinite(number):
            return fail("the value is too large", value.span, expected="a finite number, at most about 1.8e308",
                        received=format_value(value))
        return number

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
            converted = convert_setting(kind, choices, value.name if isinstance(value, Symbol) else value)
            if converted is None:
                words = {"float": "a number", "int": "an integer", "bool": "true or false",
                         "pair": "an integer or an (h, w) pair", "ints": "an integer or a tuple of integers",
                         "floats": "a number or a tuple of numbers",
                         "choice": "one of " + ", ".join(choices)}[kind]
                self.sink.error(f"{what} setting '{arg.keyword}' has the wrong type", arg.value.span,
                                expected=words, received=describe(value))
                continue
            out[arg.keyword] = converted
        return out
