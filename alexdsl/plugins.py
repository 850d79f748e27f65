"""Plugin ops: a user's Python module that registers ops exactly as the built-in ones do.

A plugin module calls :func:`alexdsl.ops.registry.register` with an
:class:`~alexdsl.ops.registry.OpDef` at import time (see docs/extending.md and
examples/plugins/scaled_tanh.py). Every command then knows the op. Plugins are found in
three places, in this order:

* ``alexdsl --plugin MODULE`` (a module name, or the path of a ``.py`` file), repeatable;
* ``ALEXDSL_PLUGINS=mod1,mod2`` in the environment;
* the entry-point group ``alexdsl.ops`` of installed packages
  (``[project.entry-points."alexdsl.ops"] myops = "mypackage.ops"``).

The CLI, the language server and the test suite load them at start-up; ``alexdsl.parse`` and
``all_ops()`` do not, so a program calls ``load_plugins(plugin_names())`` first.

>>> import os
>>> loaded = load_plugins([os.path.join("examples", "plugins", "scaled_tanh.py")])
>>> from alexdsl.ops.registry import lookup
>>> lookup("scaled_tanh").summary
'LeCun’s scaled hyperbolic tangent: a * tanh(b * x).'
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from alexdsl.errors import AlexDSLError

ENV_VAR = "ALEXDSL_PLUGINS"
ENTRY_POINT_GROUP = "alexdsl.ops"

_LOADED: dict[str, ModuleType] = {}
_LOCK = threading.RLock()


def plugin_names(cli: Iterable[str] = (), *, environ: dict[str, str] | None = None) -> list[str]:
    """The plugin modules to load: those named on the command line, then in ``$ALEXDSL_PLUGINS``."""
    env = (os.environ if environ is None else environ).get(ENV_VAR, "")
    names = [*cli, *(part.strip() for part in env.split(",") if part.strip())]
    return list(dict.fromkeys(names))


def load_plugins(names: Iterable[str] = (), *, entry_points: bool = True) -> list[str]:
    """Import each plugin module once, then those of the ``alexdsl.ops`` entry points; return what loaded.

    A module that cannot be imported, or that registers an op name already taken, is an
    :class:`AlexDSLError` naming the plugin.
    """
    from alexdsl.ops.registry import op_names

    op_names()  # the built-in ops first, so a clash names the plugin
    loaded = []
    with _LOCK:
        for name in names:
            loaded.append(_load(name, lambda n=name: _import(n)))
        if entry_points:
            for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                loaded.append(_load(f"{point.name} ({point.value})", point.load))
    return loaded


def _load(label: str, importer: object) -> str:
    if label in _LOADED:
        return label
    try:
        _LOADED[label] = importer()  # type: ignore[operator]
    except AlexDSLError:
        raise
    except ValueError as error:  # register(): a name already taken
        raise AlexDSLError(f"error: plugin {label}: {error}") from None
    except Exception as error:  # noqa: BLE001 - any failure of the user's module is reported, not a traceback
        raise AlexDSLError(f"error: plugin {label} could not be loaded: {type(error).__name__}: {error}") from None
    return label


def _import(name: str) -> ModuleType:
    """A module by name, or a ``.py`` file by path."""
    if name.endswith(".py") or os.sep in name or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise AlexDSLError(f"{name}: error: no such plugin file")
        module_name = f"alexdsl_plugin_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise AlexDSLError(f"{name}: error: cannot load this file as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        return module
    return importlib.import_module(name)
