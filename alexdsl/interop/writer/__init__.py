"""IR -> alexdsl syntax tree: the writers behind ``import json`` and ``import onnx``.

Both build the tree through :mod:`alexdsl.syntax.build` and print it once with the formatter
(:func:`alexdsl.fmt.format_module`); nothing they write is parsed again (the tests check that
it builds the same network).

* :mod:`~alexdsl.interop.writer.flat`: one statement per layer, every argument spelled out
  (``import json``);
* :mod:`~alexdsl.interop.writer.readable`: as a person writes it, with chains, ``defaults``
  and blocks (``import onnx``), in parts: :mod:`~alexdsl.interop.writer.units` (what a scope
  holds), :mod:`~alexdsl.interop.writer.blocks` (repeated structure folded into blocks),
  :mod:`~alexdsl.interop.writer.chains` (statements and chains) and
  :mod:`~alexdsl.interop.writer.syntax` (the tree of each statement).

Caffe and ONNX layers, which are not yet an IR, are built into a tree by their importers
(:mod:`alexdsl.interop.caffe`, :mod:`alexdsl.interop.onnx_import`) with the same builder.
"""

from alexdsl.interop.writer.flat import network_to_source
from alexdsl.interop.writer.readable import readable_source

__all__ = ["network_to_source", "readable_source"]
