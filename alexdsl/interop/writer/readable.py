"""IR -> alexdsl source that reads as a person writes it: what ``alexdsl import onnx`` prints.

:func:`readable_source` writes any :class:`~alexdsl.ir.network.Network` as source that builds the
same network again (layer names, ops, arguments, inputs, shapes, parameters, phases, outputs and
state keys), laid out as the hand-written examples are:

* layers that feed one another form chains (``conv1: conv(64, 7) | bn1: batchnorm | relu``): a link
  keeps the name a chain gives it (``conv1_relu``) or is named inline;
* ``defaults`` lines hold the bias settings, fillers and learning-rate multipliers most layers of
  an op share, so the layers leave them out;
* repeated structure becomes blocks. The layers under a name prefix (``layer2.0``: ``layer2.0.conv1``,
  ``layer2.0.bn1``, ...) form an instance when they are consecutive and read one layer from outside.
  Instances with the same ops, names, connections and settings, up to their numbers (channel
  counts, strides, kernels, probabilities), become one ``block``: a number equal in every instance
  is written in the body, one that differs becomes a parameter (``c * 6`` when a channel count is
  a fixed multiple of another). Deeper prefixes are folded first, so blocks use blocks; equal
  consecutive uses named ``p.0``, ``p.1``... become ``p: repeat n blk(...)``. A group is folded
  when that does not make the file longer.

The text is built as a syntax tree (:mod:`alexdsl.syntax.build`) and printed once by the formatter,
so it passes ``fmt --check``; it is not parsed again. When blocks or chains cannot say something
exactly, the network is written without them.

>>> import alexdsl
>>> net = alexdsl.parse('''network T
... input x: 8x16x16
... s.0.a: conv(8, 3, pad=1) | relu
... s.0.b: conv(8, 1)
... s.1.a: conv(8, 3, pad=1) | relu
... s.1.b: conv(8, 1)
... s.2.a: conv(8, 3, pad=1) | relu
... s.2.b: conv(8, 1)
... ''')
>>> print(readable_source(net), end="")
network T
<BLANKLINE>
input x: 8x16x16
<BLANKLINE>
block s() {
  a: conv(8, 3, pad=1) | relu
  b: conv(8, 1)
}
<BLANKLINE>
s: repeat 3 s
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.interop.writer.blocks import Folder, name_blocks
from alexdsl.interop.writer.chains import Planner
from alexdsl.interop.writer.syntax import Emitter, choose_defaults
from alexdsl.interop.writer.units import Unit, Unwritable
from alexdsl.ir.network import Network
from alexdsl.syntax.build import NAME_RULE, is_name


class _Writer:
    """Writes one network in one form: with or without blocks, with or without chains. The parts:
    units (:mod:`.units`), folded into block uses (:mod:`.blocks`), grouped into statements
    (:mod:`.chains`) and built as syntax (:mod:`.syntax`)."""

    def __init__(self, network: Network, file: str, *, blocks: bool, chains: bool):
        layers = [layer for layer in network.declared_layers() if not layer.is_input]  # as written: the keys' order
        planner = Planner(network, chains)
        units = [Unit("layer", layer.name, i, i, layer.name, layer=layer) for i, layer in enumerate(layers)]
        if blocks:
            units = Folder(layers, network.shapes, planner).fold(units)
        name_blocks(units)
        self.emitter = Emitter(network, file, choose_defaults(layers), planner, units)

    def text(self, header: str | None) -> str:
        return self.emitter.text(header)


def _unwritable(network: Network, file: str) -> list[Diagnostic]:
    """A located error for each name or number of ``network`` that alexdsl source cannot hold."""
    found = []
    if not is_name(network.name):
        found.append(Diagnostic("error", "the network name cannot be written as an alexdsl name",
                                path=f"{file}:name", received=repr(network.name), expected=NAME_RULE))
    for i, layer in enumerate(network.declared_layers()):  # the IR file's layers[i]
        if not is_name(layer.name):
            found.append(Diagnostic("error", "the layer name cannot be written as an alexdsl name",
                                    path=f"{file}:layers[{i}].name", received=repr(layer.name), expected=NAME_RULE))
        numbers = [(f"attrs.{k}", v) for k, v in layer.attrs.items()]
        for name, spec in layer.params.items():
            numbers += [(f"params.{name}.filler.{k}", v) for k, v in spec.filler.args]
            numbers += [(f"params.{name}.lr_mult", spec.lr_mult), (f"params.{name}.decay_mult", spec.decay_mult)]
        for where, item in numbers:
            items = item if isinstance(item, tuple) else (item,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in items):
                found.append(Diagnostic("error", "a number that is not finite cannot be written",
                                        path=f"{file}:layers[{i}].{where}", received=repr(item),
                                        expected="a finite number"))
    return found


def _forms() -> Iterator[dict[str, bool]]:
    yield {"blocks": True, "chains": True}
    yield {"blocks": False, "chains": True}
    yield {"blocks": False, "chains": False}


def readable_source(network: Network, *, header: str | None = None, file: str = "<network>") -> str:
    """alexdsl source for ``network`` as a person would write it (see the module docstring).

    ``header`` is written first as comment lines; ``file`` names the network in errors. Raises
    :class:`AlexDSLError` for a name alexdsl source cannot hold (located by its IR path). The
    tree is printed once and not parsed again (tests/test_readable.py checks that what is written
    builds ``network``); a form that cannot say something exactly gives way to a simpler one.
    """
    problems = _unwritable(network, file)
    if problems:
        raise AlexDSLError(problems)
    for form in _forms():
        try:
            return _Writer(network, file, **form).text(header)
        except (Unwritable, ValueError):
            continue
    raise AlexDSLError(f"{file}: error: network {network.name} cannot be written as source "
                       "(a bug in alexdsl's source writer; please report it)")
