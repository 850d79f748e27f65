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

import json
from typing import Any

from alexdsl.ir.network import Network
from alexdsl.ops.registry import FILLERS, REQUIRED, Filler, lookup


def _num(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") and "e" not in text else text


def format_attr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        items = list(value)
        if len(items) == 2 and items[0] == items[1] and all(isinstance(v, int) for v in items):
            return str(items[0])
        return "(" + ", ".join(format_attr(v) for v in items) + ")"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value if value.isidentifier() else json.dumps(value)
    return str(value)


def format_filler(filler: Filler) -> str:
    defaults = dict(FILLERS.get(filler.type, ()))
    parts = []
    for key, value in filler.args:
        if key in defaults and defaults[key] == value:
            continue
        parts.append(f"{key}={value}" if isinstance(value, str) else f"{key}={_num(value)}")
    return f"{filler.type}({', '.join(parts)})"


def _call(layer: Any) -> str:
    op = lookup(layer.op)
    args: list[str] = []
    positional = True
    for arg in op.args if op else ():
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
        if positional and arg.positional and default is REQUIRED:
            args.append(format_attr(value))
        else:
            positional = False
            args.append(f"{arg.name}={format_attr(value)}")
    builtin = op.default_fillers if op else {}
    for name, spec in layer.params.items():
        if builtin.get(name) != spec.filler:
            args.append(f"{name}={format_filler(spec.filler)}")
        if spec.lr_mult != 1.0:
            args.append(f"{name}_lr={_num(spec.lr_mult)}")
        if spec.decay_mult != 1.0:
            args.append(f"{name}_decay={_num(spec.decay_mult)}")
    return f"{layer.op}({', '.join(args)})" if args else layer.op


def network_to_source(network: Network) -> str:
    out = ["# Written from an alexdsl IR file by alexdsl import json.", f"network {network.name}"]
    if network.description:
        out.append(f"description {json.dumps(network.description)}")
    out.append("")
    for name in network.inputs:
        layer = network.layer(name)
        if layer.is_label:
            out.append(f"input {name}: class({layer.attrs.get('classes', 1)})")
        else:
            out.append(f"input {name}: {'x'.join(map(str, layer.shape))}")
    for name, settings in network.preprocess.items():
        out.append(f"preprocess {name}(" + ", ".join(f"{k}={format_attr(v)}" for k, v in settings.items()) + ")")
    if network.solver:
        out.append("solver(" + ", ".join(f"{k}={format_attr(v)}" for k, v in network.solver.items()) + ")")
    out.append("")
    rows = []
    for layer in network.layers():
        if layer.is_input:
            continue
        body = ", ".join(layer.inputs) + " -> " + _call(layer)
        rows.append((layer.name, body + (f" @{layer.phase}" if layer.phase != "all" else "")))
    width = max((len(n) for n, _ in rows), default=0) + 1
    out += [f"{name + ':':<{width}} {body}" for name, body in rows]
    return "\n".join(out).rstrip() + "\n"
