"""Commands beyond check/shapes, gathered from the modules that own them.

Backends are imported only when a command runs, so ``alexdsl shapes`` works without torch
or cupy installed.
"""

from __future__ import annotations

import click

from alexdsl.interop.commands import COMMANDS as INTEROP_COMMANDS

COMMANDS: list[click.Command] = [*INTEROP_COMMANDS]
