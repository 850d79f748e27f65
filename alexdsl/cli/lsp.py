"""``alexdsl lsp``: run the language server of :mod:`alexdsl.lsp` (diagnostics, inlay shapes, hover, ...).

pygls is an optional dependency (the ``lsp`` extra), imported only when the
command runs, so the other commands work without it. See docs/editors.md.
"""

from __future__ import annotations

import click

from alexdsl.cli.support import print_diagnostics
from alexdsl.errors import AlexDSLError
from alexdsl.extras import install_command


@click.command("lsp", epilog="\b\nSet-up for VS Code, Neovim, Helix and Emacs: docs/editors.md")
def lsp_command() -> None:
    """Run the language server on stdin/stdout (started by an editor, not by hand)."""
    try:
        from alexdsl.lsp.server import serve
    except ModuleNotFoundError as error:
        print_diagnostics(AlexDSLError(f"error: the language server needs the lsp extra (missing: {error.name}): "
                                       f"{install_command('lsp')}"))
        raise SystemExit(1) from None
    serve()
