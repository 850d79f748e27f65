"""The ``alexdsl`` command: a thin click layer over the Python API, and the only code that imports click.

User mistakes are printed as located diagnostics with exit status 1, never a traceback
(``--debug`` shows one for bug reports). Each command's module imports its backend (torch,
cupy, onnx, pygls) only when the command runs, so ``alexdsl shapes`` needs the base
dependencies alone.
"""

from __future__ import annotations

import click

from alexdsl.cli.check import check, shapes
from alexdsl.cli.compile import compile_command
from alexdsl.cli.generate import generate_command
from alexdsl.cli.group import main
from alexdsl.cli.interop import compare_command, draw_command, export_command, fmt_command, import_group
from alexdsl.cli.lsp import lsp_command
from alexdsl.cli.run import run_command
from alexdsl.cli.train import train_command

COMMANDS: list[click.Command] = [check, shapes, compile_command, run_command, train_command, fmt_command,
                                 import_group, export_command, draw_command, compare_command, lsp_command,
                                 generate_command]

for _command in COMMANDS:
    main.add_command(_command)

__all__ = ["COMMANDS", "main"]
