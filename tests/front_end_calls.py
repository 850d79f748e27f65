"""Counting the front end's work during an import: how often text is parsed and a syntax tree elaborated."""

from __future__ import annotations

from typing import Any

import pytest

import alexdsl.frontend as frontend


def count_front_end(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counters that the front end's parse and elaboration steps add to while the test runs."""
    calls = {"parse": 0, "elaborate": 0}

    def counted(name: str, function: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return function(*args, **kwargs)
        return run

    monkeypatch.setattr(frontend, "parse_recovering", counted("parse", frontend.parse_recovering))
    monkeypatch.setattr(frontend, "elaborate", counted("elaborate", frontend.elaborate))
    return calls
