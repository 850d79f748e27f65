"""Commands beyond check/shapes; backends are imported only when a command runs."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
