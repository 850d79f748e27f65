"""The old name of :mod:`alexdsl.backends.executor` (the NumPy/CuPy executor), kept so that modules
generated before the rename, which import ``alexdsl.backends.cupy.runtime``, still load.

``alexdsl.backends.cupy`` and every ``alexdsl.backends.cupy.<module>`` are the very module objects of
``alexdsl.backends.executor`` and ``alexdsl.backends.executor.<module>``:

>>> import alexdsl.backends.cupy.runtime as old
>>> import alexdsl.backends.executor.runtime as new
>>> old is new
True
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

from alexdsl.backends import executor as _executor

_OLD, _NEW = __name__, _executor.__name__


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``alexdsl.backends.cupy.X`` as the already importable ``alexdsl.backends.executor.X``."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_OLD + "."):
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(_NEW + spec.name[len(_OLD):])

    def exec_module(self, module: ModuleType) -> None:
        """The module ran when it was imported under its own name."""


if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Alias())
sys.modules[_OLD] = _executor
