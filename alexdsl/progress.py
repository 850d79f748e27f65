"""Progress on a terminal for work that can take more than a few seconds; silent when piped.

>>> with busy("building net.adsl"):  # doctest output is not a terminal: nothing is printed
...     total = sum(range(1000))
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

TICK = 0.25  # seconds between refreshes of the elapsed time


@contextmanager
def busy(description: str, *, delay: float = 1.0, stream: IO[str] | None = None) -> Iterator[None]:
    """Show ``description: <elapsed>`` on stderr while the block runs, once it has run ``delay`` seconds.

    For work with no natural unit of progress (building a huge network, exporting a model). The
    line is redrawn from a background thread, erased when the block ends, and never shown when
    the stream is not a terminal (output piped or captured).
    """
    stream = stream if stream is not None else sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        yield
        return
    from tqdm import tqdm

    bar = tqdm(total=None, desc=description, bar_format="{desc}: {elapsed}", file=stream, leave=False,
               delay=delay, dynamic_ncols=True)
    started = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(TICK):
            if time.monotonic() - started >= delay:
                bar.refresh()

    thread = threading.Thread(target=tick, name="alexdsl-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        bar.close()
