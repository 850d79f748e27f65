"""Reading a source file: the one place alexdsl reads text a user hands it.

The size is bounded (so ``/dev/zero`` or a huge file is refused, not read into memory), a
UTF-8 byte order mark is accepted, and a decoding error says where the bad byte is.
"""

from __future__ import annotations

import os
import sys

from alexdsl.errors import AlexDSLError, Diagnostic, Span, line_column
from alexdsl.limits import max_source_bytes

_stdin_read: tuple[object, bytes] | None = None  # (the stdin stream, what it held): "-" is read only once


def _read_stdin(limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of standard input; a second reader of "-" (warnings, errors) gets the same."""
    global _stdin_read
    if _stdin_read is None or _stdin_read[0] is not sys.stdin:
        _stdin_read = (sys.stdin, sys.stdin.buffer.read(limit + 1))
    return _stdin_read[1]


def read_source(path: str | os.PathLike[str], max_bytes: int | None = None) -> str:
    """The text of ``path`` (``-``: standard input; UTF-8, an optional BOM dropped), or an AlexDSLError why not.

    ``max_bytes`` defaults to :func:`alexdsl.limits.max_source_bytes` (4 MiB).
    """
    limit = max_source_bytes(max_bytes)
    name = os.fspath(path)
    try:
        if name == "-":  # standard input
            data = _read_stdin(limit)
        else:
            with open(name, "rb") as stream:
                data = stream.read(limit + 1)
    except FileNotFoundError:
        raise AlexDSLError(f"{name}: error: no such file") from None
    except IsADirectoryError:
        raise AlexDSLError(f"{name}: error: is a directory, not a file") from None
    except OSError as error:
        raise AlexDSLError(f"{name}: error: cannot read the file ({error.strerror or error})") from None
    if len(data) > limit:
        raise AlexDSLError([Diagnostic(
            "error", f"the file is larger than the limit of {limit:,} bytes", path=name,
            hint="set ALEXDSL_MAX_SOURCE_BYTES to read a larger file")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        text = data[:error.start].decode("utf-8-sig")
        line, column = line_column(text, len(text))
        bad = data[error.start:error.end]
        raise AlexDSLError([Diagnostic(
            "error", "the file is not valid UTF-8", Span(name, line, column, line, column + 1),
            expected="UTF-8 text", received=f"the byte{'s' if len(bad) > 1 else ''} {bad.hex(' ')}",
            hint="save the file as UTF-8")], sources={name: text}) from None
