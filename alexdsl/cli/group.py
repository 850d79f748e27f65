"""The ``alexdsl`` command group: ``--version``, ``--debug`` and ``--plugin``.

Its commands are added by :mod:`alexdsl.cli`.
"""

from __future__ import annotations

import sys

import click

import alexdsl
from alexdsl.cli.support import print_diagnostics
from alexdsl.errors import AlexDSLError

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
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Load ops from a Python module or .py file (repeatable; also $ALEXDSL_PLUGINS and the "
                   "alexdsl.ops entry points). See docs/extending.md.")
def main(debug: bool, plugins: tuple[str, ...]) -> None:
    """alexdsl: describe, check and run layer-graph neural networks."""
    from alexdsl.plugins import load_plugins, plugin_names

    try:
        load_plugins(plugin_names(plugins))
    except AlexDSLError as error:
        print_diagnostics(error)
        sys.exit(1)
