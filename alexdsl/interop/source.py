"""IR -> alexdsl source: how ``alexdsl import json`` turns an IR file back into a program.

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

import functools
import math
import re
from typing import Any

from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.fmt import format_source
from alexdsl.ir.network import Network
from alexdsl.ops.registry import FILLERS, REQUIRED, Filler, lookup
from alexdsl.syntax.parser import grammar_text

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*)*")  # NAME of grammars/alexdsl.lark


@functools.cache
def reserved_words() -> frozenset[str]:
    """The words the grammar spells out (``network``, ``input``, ``true``...): never names."""
    return frozenset(re.findall(r'^[A-Z_]+: "([a-z]+)"$', grammar_text(), re.M))


def is_name(text: object) -> bool:
    """Whether ``text`` can be written as a name in alexdsl source.

    >>> is_name("conv1"), is_name("b1.conv"), is_name("input"), is_name("a\\nsolver()"), is_name("1x")
    (True, True, False, False, False)
    """
    return isinstance(text, str) and bool(NAME.fullmatch(text)) and text not in reserved_words()


def string_literal(text: str) -> str:
    """``text`` as an alexdsl string literal: one line, every character escaped as the parser reads it back.

    >>> print(string_literal('say "hi"\\n\\\\ é'))
    "say \\"hi\\"\\n\\\\ \\xe9"
    """
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


class _Writer:
    """Formats values and names, recording each one that cannot be written, located by its IR path."""

    def __init__(self, file: str):
        self.file = file
        self.diagnostics: list[Diagnostic] = []

    def error(self, path: str, message: str, received: Any, expected: str) -> str:
        self.diagnostics.append(Diagnostic("error", message, path=f"{self.file}:{path}", received=repr(received),
                                           expected=expected))
        return "_"

    def name(self, text: Any, path: str, what: str) -> str:
        if is_name(text):
            return text
        return self.error(path, f"{what} cannot be written as an alexdsl name", text,
                          "letters, digits and '_' (parts joined by '.'), not starting with a digit, "
                          "and not a keyword such as 'input'")

    def number(self, value: Any, path: str) -> str:
        if isinstance(value, float) and not math.isfinite(value):
            return self.error(path, "a number that is not finite cannot be written", value, "a finite number")
        if isinstance(value, float):
            text = repr(value)
            return text[:-2] if text.endswith(".0") and "e" not in text else text
        return str(int(value))

    def value(self, value: Any, path: str) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (tuple, list)):
            items = list(value)
            if len(items) == 2 and items[0] == items[1] and all(type(v) is int for v in items):
                return str(items[0])
            return "(" + ", ".join(self.value(v, f"{path}[{i}]") for i, v in enumerate(items)) + ")"
        if isinstance(value, (int, float)):
            return self.number(value, path)
        if isinstance(value, str):
            return value if is_name(value) else string_literal(value)
        return self.error(path, "this value cannot be written in alexdsl source", value,
                          "a number, true/false, a name, a string or a tuple of these")

    def filler(self, filler: Filler, path: str) -> str:
        defaults = dict(FILLERS.get(filler.type, ()))
        parts = []
        for key, value in filler.args:
            if key in defaults and defaults[key] == value:
                continue
            parts.append(f"{self.name(key, path, 'a filler argument')}={self.value(value, f'{path}.{key}')}")
        return f"{self.name(filler.type, path, 'a filler')}({', '.join(parts)})"

    def settings(self, settings: dict[str, Any], path: str) -> str:
        return ", ".join(f"{self.name(k, path, 'a setting')}={self.value(v, f'{path}.{k}')}"
                         for k, v in settings.items())

    def call(self, layer: Any, path: str) -> str:
        op = lookup(layer.op)
        if op is None:
            return self.error(f"{path}.op", "unknown op", layer.op, "a registered op")
        args: list[str] = []
        positional = True
        for arg in op.args:
            if arg.name not in layer.attrs:
                continue
            value = layer.attrs[arg.name]
            default = arg.default
            if arg.kind == "pair" and isinstance(default, int):
                default = (default, default)
            if arg.name == "stride" and default is None:  # pools: the stride defaults to the kernel
                default = layer.attrs.get("kernel")
            if arg.kind == "bias" and value is True:
                positional = False
                continue
            if default is not REQUIRED and value == default:
                positional = False
                continue
            text = self.value(value, f"{path}.attrs.{arg.name}")
            if positional and arg.positional and default is REQUIRED:
                args.append(text)
            else:
                positional = False
                args.append(f"{arg.name}={text}")
        for name, spec in layer.params.items():
            where = f"{path}.params.{name}"
            if op.default_fillers.get(name) != spec.filler:
                args.append(f"{name}={self.filler(spec.filler, f'{where}.filler')}")
            if spec.lr_mult != 1.0:
                args.append(f"{name}_lr={self.number(spec.lr_mult, f'{where}.lr_mult')}")
            if spec.decay_mult != 1.0:
                args.append(f"{name}_decay={self.number(spec.decay_mult, f'{where}.decay_mult')}")
        return f"{layer.op}({', '.join(args)})" if args else layer.op


def network_to_source(network: Network, file: str = "<network>") -> str:
    """alexdsl source that builds ``network`` again.

    Raises :class:`AlexDSLError` naming each name or value that alexdsl source cannot
    hold, located by its IR path (``file:layers[3].name``); nothing is pasted unchecked.
    """
    write = _Writer(file)
    out = ["# Written from an alexdsl IR file by alexdsl import json.",
           f"network {write.name(network.name, 'name', 'the network name')}"]
    if network.description:
        out.append(f"description {string_literal(network.description)}")
    out.append("")
    index = {name: i for i, name in enumerate(network.layer_names())}
    for name in network.inputs:
        layer = network.layer(name)
        label = write.name(name, f"layers[{index[name]}].name", "the input name")
        if layer.is_label:
            classes = write.number(layer.attrs.get("classes", 1), f"layers[{index[name]}].attrs.classes")
            out.append(f"input {label}: class({classes})")
        else:
            out.append(f"input {label}: {'x'.join(str(int(d)) for d in layer.shape)}")
    for name, settings in network.preprocess.items():
        out.append(f"preprocess {write.name(name, 'preprocess', 'a preprocess target')}("
                   f"{write.settings(settings, f'preprocess.{name}')})")
    if network.solver:
        out.append(f"solver({write.settings(network.solver, 'solver')})")
    out.append("")
    rows = []
    for layer in network.layers():
        if layer.is_input:
            continue
        path = f"layers[{index[layer.name]}]"
        label = write.name(layer.name, f"{path}.name", "the layer name")
        # every input is a layer of the network, whose name is checked on its own line
        body = ", ".join(layer.inputs) + " -> " + write.call(layer, path)
        rows.append((label, body + (f" @{write.name(layer.phase, f'{path}.phase', 'the phase')}"
                                    if layer.phase != "all" else "")))
    if write.diagnostics:
        raise AlexDSLError(write.diagnostics)
    out += [f"{name}: {body}" for name, body in rows]
    source = format_source("\n".join(out), file)  # the one printer lays it out: the result passes fmt --check
    _check_rebuilds(source, network, file)
    return source


def _check_rebuilds(source: str, network: Network, file: str) -> None:
    """Refuse to hand out source that does not build ``network`` again (a bug here, said as such)."""
    from alexdsl import parse

    try:
        again = parse(source, f"{file}.adsl")
    except AlexDSLError as error:
        raise AlexDSLError([Diagnostic("error", f"{file}: the source written from this IR does not build:")]
                           + error.diagnostics, sources=error.sources) from None
    if again.shapes != network.shapes or again.state_keys() != network.state_keys():
        raise AlexDSLError(f"{file}: error: the source written from this IR builds a different network "
                           "(a bug in alexdsl import json; please report it)")
