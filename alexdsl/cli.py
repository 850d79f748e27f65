"""The ``alexdsl`` command: a thin click layer over the Python API.

User mistakes are printed as located diagnostics with exit status 1, never a traceback
(``--debug`` shows one for bug reports).
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import alexdsl
from alexdsl.errors import AlexDSLError
from alexdsl.report import FORMATS, render

EPILOG = """\b
Examples:
  alexdsl check examples/alexnet.adsl
  alexdsl shapes examples/alexnet.adsl --format markdown
  alexdsl shapes examples/alexnet.adsl --input data=3x224x224 --batch 16
  alexdsl compile examples/alexnet.adsl --backend cupy
"""


def _print_diagnostics(error: AlexDSLError) -> None:
    click.echo(error.render(), err=True)
    count = len(error.errors)
    if count > 1:
        click.echo(f"{count} errors", err=True)


def report_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn AlexDSLError into diagnostics on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AlexDSLError as error:
            if click.get_current_context().find_root().params.get("debug"):
                traceback.print_exc()
            _print_diagnostics(error)
            sys.exit(1)

    return wrapper


def parse_shape_overrides(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """``("data=3x224x224",)`` -> ``{"data": (3, 224, 224)}``."""
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


def load_network(path: str, inputs: tuple[str, ...] = ()) -> alexdsl.Network:
    """Load a network for a command, printing its warnings to stderr."""
    network = alexdsl.load(path, input_shapes=parse_shape_overrides(inputs) or None)
    for warning in network.warnings:
        click.echo(warning.render({path: Path(path).read_text(encoding="utf-8")}), err=True)
    return network


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(alexdsl.__version__, prog_name="alexdsl")
@click.option("--debug", is_flag=True, help="Show Python tracebacks (for bug reports).")
def main(debug: bool) -> None:
    """alexdsl: describe, check and run layer-graph neural networks."""


@main.command(epilog="\b\nExample:\n  alexdsl check examples/*.adsl")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def check(files: tuple[str, ...]) -> None:
    """Check FILES; exit 1 if any has an error. Diagnostics go to stderr."""
    failed = 0
    for path in files:
        try:
            load_network(path)
        except AlexDSLError as error:
            _print_diagnostics(error)
            failed += 1
    if failed:
        click.echo(f"{failed} of {len(files)} file{'s' if len(files) != 1 else ''} failed", err=True)
        sys.exit(1)


@main.command(epilog="""\b
Examples:
  alexdsl shapes examples/alexnet.adsl
  alexdsl shapes examples/alexnet.adsl --input data=3x224x224
  alexdsl shapes examples/resnet18.adsl --batch 32 --format json""")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--input", "inputs", multiple=True, metavar="NAME=CxHxW", help="Override an input's shape.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1),
              help="Batch size for MACs and activation bytes.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@report_errors
def shapes(file: str, inputs: tuple[str, ...], batch: int, fmt: str) -> None:
    """Print each layer's output shape, parameters, MACs and activation bytes, then totals.

    MACs count the multiply-accumulates of conv and fc weights (bias excluded).
    """
    click.echo(render(load_network(file, inputs), fmt, batch), nl=False)


def _register_optional_commands() -> None:
    """Commands whose modules live with their backends (imported lazily: torch is optional)."""
    from alexdsl import commands

    for command in commands.COMMANDS:
        main.add_command(command)


_register_optional_commands()


if __name__ == "__main__":
    main()
