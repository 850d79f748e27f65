"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Only regular files are written. A symlink is written through: its target is replaced
atomically and the link stays. A directory, FIFO, socket or device (``/dev/null``,
``/dev/full``) is refused before anything is written, and so is a path that cannot be a
file (under a regular file, in ``/proc``): every refusal is an :class:`AlexDSLError`
rendered as ``PATH: error: ...``.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
>>> write_text_atomic(path, "hello\\n")
>>> path.read_text()
'hello\\n'
>>> write_text_atomic(path.parent, "x")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
alexdsl.errors.AlexDSLError: ...: error: cannot write the output: it is a directory; ...
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from alexdsl.errors import AlexDSLError, Diagnostic

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _refuse(path: str | os.PathLike[str], problem: str, hint: str | None = None) -> AlexDSLError:
    return AlexDSLError([Diagnostic("error", f"cannot write the output: {problem}", path=os.fspath(path), hint=hint)])


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def output_target(path: str | os.PathLike[str]) -> Path:
    """The regular file that writing ``path`` replaces (symlinks resolved); refuses anything else.

    Creates missing parent folders. Raises :class:`AlexDSLError` when ``path`` names a
    directory, FIFO, socket or device, lies under a regular file, or its folder cannot be made.
    """
    target = Path(os.path.realpath(path))
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:
        raise _refuse(path, f"'{_file_above(target, path)}' is a file, not a folder") from None
    except OSError as error:
        raise _refuse(path, _reason(error)) from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        shown = "" if target == Path(path).absolute() else f" ('{target}')"
        raise _refuse(path, f"it is {kind}{shown}; alexdsl only writes regular files",
                      hint="give a file name, or '-' for stdout where the command allows it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise _refuse(path, f"'{_file_above(target, path)}' is a file, not a folder") from None
    except OSError as error:
        raise _refuse(path, f"cannot create the folder '{target.parent}' ({_reason(error)})") from None
    return target


def _file_above(target: Path, given: str | os.PathLike[str]) -> str:
    """The nearest existing ancestor of ``target`` that is not a directory, relative when ``given`` is."""
    found = next((p for p in reversed(target.parents) if p.exists() and not p.is_dir()), target.parent)
    return os.fspath(found) if os.path.isabs(given) else os.path.relpath(found)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``'s target; on success rename it over the target.

    The target is ``path`` with symlinks resolved (see :func:`output_target`). On any
    exception the temporary file is removed and the target is left untouched; an OSError
    while writing becomes an :class:`AlexDSLError` naming ``path``.
    """
    target = output_target(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise _refuse(path, f"cannot create a file in '{target.parent}' ({_reason(error)})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise _refuse(path, _reason(error)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _mode_for(target: Path) -> int:
    """The existing file's mode, or what a plain open() would give (mkstemp's is 0600)."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
