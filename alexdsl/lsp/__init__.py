"""A Language Server Protocol server for alexdsl (diagnostics, inlay shapes, hover, ...).

pygls is an optional dependency (the ``lsp`` extra), imported by
:mod:`alexdsl.lsp.server` only; ``alexdsl lsp`` (:mod:`alexdsl.cli.lsp`) starts it. See docs/editors.md.
"""
