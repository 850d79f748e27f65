"""Progress on stderr for work that takes more than a moment: one status line, redrawn with the
elapsed time, shown only when stderr is a terminal (nothing at all when it is piped or captured).

Blocks nest, and the line shows them all: ``busy("comparing LeNet")`` around ``busy("torch")``
around ``busy("layer 3/9 (conv2)")`` draws ``comparing LeNet › torch › layer 3/9 (conv2) · 12s``.

>>> with busy("building net.adsl"):  # doctest output is not a terminal: nothing is printed
...     total = sum(range(1000))
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

TICK = 0.25  # seconds between redraws of the elapsed time
CLEAR = "\r\x1b[K"  # back to the start of the line, and erase it


def is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal (a person is watching it)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def elapsed_text(seconds: float) -> str:
    """``7s``, ``1:57``, ``1:02:03``.

    >>> elapsed_text(7.9), elapsed_text(117), elapsed_text(3723)
    ('7s', '1:57', '1:02:03')
    """
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _StatusLine:
    """The line the active :func:`busy` blocks share, redrawn by a background thread."""

    def __init__(self, stream: IO[str], delay: float) -> None:
        self.stream = stream
        self.parts: list[str] = []
        self.started = time.monotonic()
        self.delay = delay
        self.drawn = ""  # the text on the line now
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._tick, name="alexdsl-progress", daemon=True)

    def _tick(self) -> None:
        wait = max(0.0, self.delay)
        while not self.done.wait(wait):
            self.draw()
            wait = TICK

    def push(self, description: str) -> None:
        with self.lock:
            self.parts.append(description)
        if self.drawn:
            self.draw()

    def pop(self) -> None:
        with self.lock:
            self.parts.pop()
        if self.drawn:
            self.draw()

    def draw(self) -> None:
        with self.lock:
            if self.done.is_set() or not self.parts:
                return
            text = f"{' › '.join(self.parts)} · {elapsed_text(time.monotonic() - self.started)}"
            width = _columns(self.stream) - 1
            if len(text) > width > 3:
                text = text[: width - 3] + "..."
            if text != self.drawn:
                self.stream.write(CLEAR + text)
                self.stream.flush()
                self.drawn = text

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        if self.drawn:
            self.stream.write(CLEAR)
            self.stream.flush()


def _columns(stream: IO[str]) -> int:
    """The width of the terminal ``stream`` writes to (80 when it does not say)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):  # no file descriptor (a test's stream), or no size
        return 80


_ACTIVE: dict[int, _StatusLine] = {}  # id(stream) -> its status line while a busy block runs


@contextmanager
def busy(description: str, *, delay: float = 1.0, stream: IO[str] | None = None,
         show: bool | None = None) -> Iterator[None]:
    """Show ``description`` and the elapsed time on ``stream`` (stderr) while the block runs.

    The line appears once the outermost block has run ``delay`` seconds (0: at once), is redrawn
    every quarter second and erased when that block ends; an inner block adds its description to
    the line for as long as it runs. ``show``: None shows it when the stream is a terminal; True
    shows it anyway (a caller that knows better, or a test), False never.
    """
    stream = stream if stream is not None else sys.stderr
    if not (is_terminal(stream) if show is None else show):
        yield
        return
    line = _ACTIVE.get(id(stream))
    if line is not None:  # nested: this description joins the line of the block around it
        line.push(description)
        try:
            yield
        finally:
            line.pop()
        return
    line = _StatusLine(stream, delay)
    line.push(description)
    _ACTIVE[id(stream)] = line
    line.thread.start()
    try:
        yield
    finally:
        del _ACTIVE[id(stream)]
        line.close()
