"""What every command module shares: error reporting and option parsing.

Kept apart from :mod:`alexdsl.cli` so command modules of the backends and interop tools can
use it without importing the command group.

>>> parse_shape_overrides(("data=3x224x224",))
{'data': (3, 224, 224)}
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from alexdsl.errors import AlexDSLError


def print_diagnostics(error: AlexDSLError) -> None:
    """Print every diagnostic to stderr, and the error count when there are several."""
    click.echo(error.render(), err=True)
    count = len(error.errors)
    if count > 1:
        click.echo(f"{count} errors", err=True)


def report_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn AlexDSLError into diagnostics on stderr and exit status 1 (``--debug``: and a traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AlexDSLError as error:
            context = click.get_current_context(silent=True)
            if context is not None and context.find_root().params.get("debug"):
                traceback.print_exc()
            print_diagnostics(error)
            sys.exit(1)

    return wrapper


def parse_shape_overrides(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """``--input`` values such as ``data=3x224x224`` -> ``{"data": (3, 224, 224)}``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, sep, dims = value.partition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
            if not sep or not name or any(d < 1 for d in shape):
                raise ValueError
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected NAME=CxHxW, for example data=3x224x224",
                                     param_hint="--input") from None
        shapes[name] = shape
    return shapes


def read_source(path: str) -> str:
    """A file's text, or an AlexDSLError that says why it cannot be read (see :mod:`alexdsl.syntax.source`)."""
    from alexdsl.syntax.source import read_source as read

    return read(path)


def load_network(path: str, inputs: tuple[str, ...] = ()) -> Any:
    """Load a network for a command, printing its warnings to stderr."""
    import alexdsl

    network = alexdsl.load(path, input_shapes=parse_shape_overrides(inputs) or None)
    if network.warnings:
        sources = {path: read_source(path)}
        for warning in network.warnings:
            click.echo(warning.render(sources), err=True)
    return network
