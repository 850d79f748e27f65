"""Click commands for formatting, import, export and drawing (registered by ``alexdsl.cli``).

Heavy modules (onnx, the Caffe grammar) are imported only when a command runs. Every output
file is written atomically. User mistakes print located diagnostics and exit with status 1.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from alexdsl.errors import AlexDSLError
from alexdsl.fileio import write_bytes_atomic, write_text_atomic


def _fail(error: AlexDSLError) -> None:
    click.echo(error.render(), err=True)
    if len(error.errors) > 1:
        click.echo(f"{len(error.errors)} errors", err=True)


def _report_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AlexDSLError as error:
            context = click.get_current_context(silent=True)
            if context is not None and context.find_root().params.get("debug"):
                traceback.print_exc()
            _fail(error)
            sys.exit(1)

    return wrapper


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AlexDSLError(f"{path}: error: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AlexDSLError(f"{path}: error: cannot read the file ({error})") from None


# fmt ----------------------------------------------------------------------------------------------
@click.command("fmt", epilog="\b\nExamples:\n  alexdsl fmt examples/*.adsl\n  alexdsl fmt --check examples/*.adsl")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help="Change nothing; exit 1 and list the files that would change.")
def fmt_command(files: tuple[str, ...], check: bool) -> None:
    """Rewrite FILES in the canonical layout (comments kept, the network unchanged)."""
    from alexdsl.fmt import format_source

    failed = changed = 0
    for path in files:
        try:
            text = _read(path)
            formatted = format_source(text, path)
        except AlexDSLError as error:
            _fail(error)
            failed += 1
            continue
        if formatted == text:
            continue
        changed += 1
        if check:
            click.echo(f"would reformat {path}")
        else:
            write_text_atomic(path, formatted)
            click.echo(f"reformatted {path}", err=True)
    if failed or (check and changed):
        sys.exit(1)


COMMANDS: list[click.Command] = [fmt_command]
