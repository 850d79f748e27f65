"""The ``alexdsl`` command: a thin click layer over the Python API.

User mistakes are printed as located diagnostics with exit status 1, never a traceback
(``--debug`` shows one for bug reports).
"""

from __future__ import annotations

import sys

import click

import alexdsl
from alexdsl.cli_support import load_network, print_diagnostics, report_errors
from alexdsl.errors import AlexDSLError
from alexdsl.report import FORMATS, render

EPILOG = """\b
Examples:
  alexdsl check examples/alexnet.adsl
  alexdsl shapes examples/alexnet.adsl --format markdown
  alexdsl shapes examples/alexnet.adsl --input data=3x224x224 --batch 16
  alexdsl compile examples/alexnet.adsl --backend cupy
"""


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
            print_diagnostics(error)
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
