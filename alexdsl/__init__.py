"""alexdsl: describe, check and run layer-graph neural networks.

>>> import alexdsl
>>> net = alexdsl.parse('''
... network Tiny
... input data: 1x28x28
... conv1: conv(20, 5) | maxpool(2, stride=2)
... fc1: fc(10)
... ''')
>>> net.shapes["fc1"], net.totals()["params"]
((10,), 29330)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alexdsl.errors import AlexDSLError, Diagnostic, Span
from alexdsl.syntax.source import read_source

if TYPE_CHECKING:
    from alexdsl.ir.network import Layer, Network, ParamSpec
    from alexdsl.ops.registry import Filler

__version__ = "0.1.0"
__all__ = ["AlexDSLError", "Diagnostic", "Filler", "Layer", "Network", "ParamSpec", "Span", "from_json", "load",
           "parse", "__version__"]

# The IR classes are imported on first use, so that `import alexdsl` (and with it the CLI's
# start-up, `alexdsl --help`) does not load networkx, lark and NumPy.
_LAZY = {"Layer": "alexdsl.ir.network", "Network": "alexdsl.ir.network", "ParamSpec": "alexdsl.ir.network",
         "Filler": "alexdsl.ops.registry"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alexdsl' has no attribute {name!r}")


def parse(text: str, file: str = "<string>", input_shapes: dict[str, tuple[int, ...]] | None = None,
          max_layers: int | None = None) -> Network:
    """Build a checked :class:`Network` from alexdsl source text.

    ``input_shapes`` overrides declared input shapes, e.g. ``{"data": (3, 224, 224)}``.
    ``max_layers`` bounds the layers after expansion (default ``$ALEXDSL_MAX_LAYERS`` or 20,000).
    Raises :class:`AlexDSLError` with every problem found.
    """
    from alexdsl.frontend import build_network

    return build_network(text, file, input_shapes, max_layers=max_layers)


def from_json(text: str, file: str = "<json>") -> Network:
    """Build a checked :class:`Network` from IR JSON (what :meth:`Network.to_json` writes; docs/ir.md).

    The file is checked as source is (every field, then every shape recomputed); ``file`` names it in
    errors. Raises :class:`AlexDSLError` with every problem found.
    """
    from alexdsl.frontend import network_from_json

    return network_from_json(text, file)


def load(path: str | os.PathLike[str], input_shapes: dict[str, tuple[int, ...]] | None = None,
         max_layers: int | None = None, max_bytes: int | None = None) -> Network:
    """Read and check an ``.adsl`` file (or an IR ``.json`` file written by ``to_json``).

    ``max_bytes`` bounds the file's size (default ``$ALEXDSL_MAX_SOURCE_BYTES`` or 4 MiB).
    """
    from alexdsl.frontend import build_network, network_from_json

    text = read_source(path, max_bytes)
    if Path(path).suffix == ".json":
        return network_from_json(text, os.fspath(path))
    return build_network(text, os.fspath(path), input_shapes, max_layers=max_layers)
