"""Every docstring example in the alexdsl package runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
from conftest import ROOT

import alexdsl

MODULES = sorted(info.name for info in pkgutil.walk_packages(alexdsl.__path__, "alexdsl."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # examples name files as examples/...
    try:
        module = importlib.import_module(name)
    except ImportError as error:  # an optional extra (pygls) that this environment lacks
        pytest.skip(f"{name}: {error}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see above)"
