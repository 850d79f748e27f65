"""IR -> flat alexdsl source: how ``alexdsl import json`` turns an IR file back into a program.

Every layer becomes one statement that names its inputs and writes every argument, filler
and learning-rate multiplier explicitly, so the program builds the same IR (blocks come
back expanded: the IR keeps no block definitions).

>>> import alexdsl
>>> net = alexdsl.parse("network T\\ninput x: 3x8x8\\nc: conv(4, 3) | relu\\n")
>>> print(network_to_source(net), end="")
# Written from an alexdsl IR file by alexdsl import json.
network T
<BLANKLINE>
input x: 3x8x8
<BLANKLINE>
c:      x -> conv(4, 3)
c_relu: c -> relu
"""

from __future__ import annotations

import math
from typing import Any

from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.ir.network import Network
from alexdsl.ops.registry import FILLERS, Filler, lookup
from alexdsl.syntax import ast
from alexdsl.syntax.build import NAME_RULE, ModuleBuilder, arg, call, filler, is_name, number, op_args, value

UNWRITABLE = "_"  # stands in for what cannot be written: the writer reports it and prints nothing


class _Writer:
    """Turns names and values into syntax nodes, recording each one that cannot be written, located by its IR path."""

    def __init__(self, file: str):
        self.file = file
        self.diagnostics: list[Diagnostic] = []

    def error(self, path: str, message: str, received: Any, expected: str) -> str:
        self.diagnostics.append(Diagnostic("error", message, path=f"{self.file}:{path}", received=repr(received),
                                           expected=expected))
        return UNWRITABLE

    def name(self, text: Any, path: str, what: str) -> str:
        if is_name(text):
            return text
        return self.error(path, f"{what} cannot be written as an alexdsl name", text, NAME_RULE)

    def number(self, item: Any, path: str) -> ast.Value:
        if isinstance(item, float) and not math.isfinite(item):
            return value(self.error(path, "a number that is not finite cannot be written", item, "a finite number"))
        return number(item)

    def value(self, item: Any, path: str, pairs: bool = True) -> ast.Value:
        """``item`` as source; with ``pairs``, a pair of equal ints as one number (a setting's ``crop``)."""
        if isinstance(item, bool):
            return value(item)
        if isinstance(item, (tuple, list)):
            items = list(item)
            if pairs and len(items) == 2 and items[0] == items[1] and all(type(v) is int for v in items):
                return number(items[0])
            return value([self.value(v, f"{path}[{i}]") for i, v in enumerate(items)])
        if isinstance(item, (int, float)):
            return self.number(item, path)
        if isinstance(item, str):
            return value(item)
        return value(self.error(path, "this value cannot be written in alexdsl source", item,
                                "a number, true/false, a name, a string or a tuple of these"))

    def filler(self, spec: Filler, path: str) -> ast.Call:
        """``gaussian(0.01)``: the arguments at the filler's defaults left out."""
        defaults = dict(FILLERS.get(spec.type, ()))
        args = [arg(self.value(item, f"{path}.{key}"), self.name(key, path, "a filler argument"))
                for key, item in spec.args if key not in defaults or defaults[key] != item]
        return filler(self.name(spec.type, path, "a filler"), *args)

    def settings(self, settings: dict[str, Any], path: str) -> dict[str, ast.Value]:
        return {self.name(key, path, "a setting"): self.value(item, f"{path}.{key}") for key, item in settings.items()}

    def call(self, layer: Any, path: str) -> ast.Call:
        op = lookup(layer.op)
        if op is None:
            return call(self.error(f"{path}.op", "unknown op", layer.op, "a registered op"))
        # op_args writes a pair argument of equal sides as one number; a tuple of ints such as roll's shifts
        # (-3, -3) stays a tuple (one number would be one shift)
        args = op_args(op, layer.attrs, lambda key, item: self.value(item, f"{path}.attrs.{key}", pairs=False))
        for name, spec in layer.params.items():
            where = f"{path}.params.{name}"
            if op.default_fillers.get(name) != spec.filler:
                args = [a for a in args if a.keyword != name]  # scale's bias=true: its filler says it too
                args.append(arg(self.filler(spec.filler, f"{where}.filler"), name))
            if spec.lr_mult != 1.0:
                args.append(arg(self.number(spec.lr_mult, f"{where}.lr_mult"), f"{name}_lr"))
            if spec.decay_mult != 1.0:
                args.append(arg(self.number(spec.decay_mult, f"{where}.decay_mult"), f"{name}_decay"))
        return call(layer.op, *args)


def network_to_source(network: Network, file: str = "<network>") -> str:
    """alexdsl source that builds ``network`` again.

    Raises :class:`AlexDSLError` naming each name or value that alexdsl source cannot
    hold, located by its IR path (``file:layers[3].name``); nothing unwritable is written.
    """
    write = _Writer(file)
    out = ModuleBuilder(file)
    out.comment("# Written from an alexdsl IR file by alexdsl import json.")
    out.network(write.name(network.name, "name", "the network name"))
    if network.description:
        out.description(network.description)
    out.blank()
    index = {layer.name: i for i, layer in enumerate(network.declared_layers())}  # the IR file's layers[i]
    for name in network.inputs:
        layer = network.layer(name)
        label = write.name(name, f"layers[{index[name]}].name", "the input name")
        if layer.is_label:
            out.class_input(label, write.number(layer.attrs.get("classes", 1), f"layers[{index[name]}].attrs.classes"))
        elif layer.is_tokens:
            out.tokens_input(label, layer.shape[0], layer.attrs.get("vocab"))
        else:
            out.input(label, layer.shape)
    for name, settings in network.preprocess.items():
        target = write.name(name, "preprocess", "a preprocess target")
        out.preprocess(target, write.settings(settings, f"preprocess.{name}"))
    if network.solver:
        out.solver(write.settings(network.solver, "solver"))
    out.blank()
    statements = []
    for layer in network.declared_layers():  # as written, which orders the state keys
        if layer.is_input:
            continue
        path = f"layers[{index[layer.name]}]"
        label = write.name(layer.name, f"{path}.name", "the layer name")
        body = write.call(layer, path)
        phase = write.name(layer.phase, f"{path}.phase", "the phase") if layer.phase != "all" else None
        statements.append((label, body, layer.inputs, phase))
    if write.diagnostics:
        raise AlexDSLError(write.diagnostics)
    for label, body, sources, phase in statements:  # every source is a layer, whose name is checked above
        out.layer(label, [body], sources, phase)
    return out.text()  # printed once by the one printer (it passes fmt --check), not parsed again
