"""What every command shares: error reporting, option parsing, loading a network, memory checks.

>>> parse_shape_overrides(("data=3x224x224",))
{'data': (3, 224, 224)}
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import click

from alexdsl.errors import AlexDSLError


def print_diagnostics(error: AlexDSLError) -> None:
    """Print every diagnostic to stderr, and the error count when there are several."""
    click.echo(error.render(), err=True)
    count = len(error.errors)
    if count > 1:
        click.echo(f"{count} errors", err=True)


def report_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn AlexDSLError into diagnostics on stderr and exit status 1 (``--debug``: and a traceback).

    A diagnostic that names no place (a backend's error) is attributed to the command's FILE.
    Warnings of :class:`alexdsl.weights.WeightsWarning` print as their message alone
    (``PATH: warning: ...``), without Python's warning prefix.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except (AlexDSLError, MemoryError) as error:
            context = click.get_current_context(silent=True)
            if context is not None and context.find_root().params.get("debug"):
                traceback.print_exc()
            if isinstance(error, MemoryError):
                error = AlexDSLError("error: ran out of memory; try a smaller --batch or --input shape")
            print_diagnostics(_located(error, kwargs.get("file")))
            sys.exit(1)

    return wrapper


def _located(error: AlexDSLError, file: str | None) -> AlexDSLError:
    """``error`` with its diagnostics that name no place attributed to the command's FILE."""
    if not file or all(d.span or d.path for d in error.diagnostics):
        return error
    return AlexDSLError([d if d.span or d.path else dataclasses.replace(d, path=file) for d in error.diagnostics],
                        error.sources)


_python_showwarning = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    from alexdsl.weights import WeightsWarning

    if issubclass(category, WeightsWarning):
        click.echo(str(message), err=True)
    else:
        _python_showwarning(message, category, *args, **kwargs)


# memory -------------------------------------------------------------------------------------------------
MEMORY_LIMIT_VARIABLE = "ALEXDSL_MEMORY_LIMIT"
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def available_memory() -> int | None:
    """Bytes a command may allocate: ``$ALEXDSL_MEMORY_LIMIT`` (e.g. ``8G``), else MemAvailable, else None.

    None lets :func:`~alexdsl.passes.resources.require_memory` fall back to the physical memory.
    """
    text = os.environ.get(MEMORY_LIMIT_VARIABLE)
    if text is not None:
        number, unit = text.strip().lower().removesuffix("ib").removesuffix("b"), ""
        if number[-1:] in _UNITS:
            number, unit = number[:-1], number[-1]
        try:
            value = int(float(number) * _UNITS[unit])
        except (ValueError, OverflowError):
            value = 0
        if value < 1:
            raise AlexDSLError(f"error: {MEMORY_LIMIT_VARIABLE}={text!r} is not a size such as 8G or 512M")
        return value
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(network: Any, batch: int, action: str, copies_of_parameters: int = 1) -> None:
    """Refuse with a clear error when ``action`` would need more than :func:`available_memory`.

    The estimate is :func:`alexdsl.passes.resources.estimate_bytes` (float32 weights, buffers and
    every activation of ``batch`` samples), with ``copies_of_parameters`` copies of the weights.
    """
    from alexdsl.passes.resources import require_memory

    require_memory(network, batch, action, limit=available_memory(), copies_of_parameters=copies_of_parameters)


def parse_shape_overrides(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """``--input`` values such as ``data=3x224x224`` -> ``{"data": (3, 224, 224)}``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, sep, dims = value.partition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
            if not sep or not name or any(d < 1 for d in shape):
                raise ValueError
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected NAME=CxHxW, for example data=3x224x224",
                                     param_hint="--input") from None
        shapes[name] = shape
    return shapes


def read_source(path: str) -> str:
    """A file's text, or an AlexDSLError that says why it cannot be read (see :mod:`alexdsl.syntax.source`)."""
    from alexdsl.syntax.source import read_source as read

    return read(path)


def load_network(path: str, inputs: tuple[str, ...] = (), *, delay: float = 1.0, show: bool | None = None) -> Any:
    """Load a network for a command, printing its warnings to stderr; on a terminal, a progress line says
    so once it has taken ``delay`` seconds (a huge ``repeat`` takes a while to expand and check).
    ``show=False``: no progress line (``train --quiet``)."""
    import alexdsl
    from alexdsl.progress import busy

    with busy(f"parsing {path}", delay=delay, show=show):
        network = alexdsl.load(path, input_shapes=parse_shape_overrides(inputs) or None)
    if network.warnings:
        sources = {path: read_source(path)}
        for warning in network.warnings:
            click.echo(warning.render(sources), err=True)
    return network
