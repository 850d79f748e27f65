"""``alexdsl check`` and ``alexdsl shapes``: is a network valid, and what are its shapes and costs."""

from __future__ import annotations

import sys

import click

from alexdsl.cli.support import load_network, report_errors
from alexdsl.errors import AlexDSLError
from alexdsl.report import FORMATS, render


@click.command(epilog="\b\nExamples:\n  alexdsl check examples/*.adsl\n  alexdsl check -q net.adsl\n"
                     "  cat net.adsl | alexdsl check -")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="Print nothing for files without errors.")
def check(files: tuple[str, ...], quiet: bool) -> None:
    """Check FILES (- reads standard input); exit 1 if any has an error.

    Prints one line per clean file (`FILE: ok (N layers, P params)`); diagnostics and a line
    per failed file (`FILE: failed (N errors)`) go to stderr, and with several files how many failed.
    """
    failed = 0
    for path in files:
        try:
            network = load_network(path)
        except AlexDSLError as error:
            click.echo(error.render(), err=True)  # the count is in the line below, said once
            count = len(error.errors)
            click.echo(f"{path}: failed ({count} error{'s' if count != 1 else ''})", err=True)
            failed += 1
        else:
            if not quiet:
                click.echo(f"{path}: ok ({len(network.layers()):,} layers, {network.totals()['params']:,} params)")
    if failed:
        if len(files) > 1:
            click.echo(f"{failed} of {len(files)} files failed", err=True)
        sys.exit(1)


@click.command(epilog="""\b
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
