"""Draw a network as a Graphviz graph (DOT text; no Python graphviz package needed).

* one node per layer: its name, its op with the arguments that matter, and its parameter count;
* inputs are ellipses; loss and metric layers are octagons;
* each edge is labelled with the shape that flows along it;
* block instances are clusters (nested when one block expands inside another);
* layers that run only while training are dashed and orange, test-only layers dashed and blue.

:func:`render` runs Graphviz's ``dot`` to make SVG, PNG or PDF.

>>> import alexdsl
>>> dot = to_dot(alexdsl.parse("network T\\ninput x: 3x8x8\\nc: conv(4, 3)\\n"))
>>> print(dot.splitlines()[0])
digraph "T" {
>>> '"x" -> "c" [label="3x8x8"]' in dot
True
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from alexdsl.errors import AlexDSLError
from alexdsl.ir.network import Layer, Network
from alexdsl.ops.registry import REQUIRED, format_shape, lookup

PHASE_STYLE = {
    "train": 'style="rounded,dashed,filled", color="#d9822b", fillcolor="#fff1e0"',
    "test": 'style="rounded,dashed,filled", color="#2b6cd9", fillcolor="#e6efff"',
}
RENDER_FORMATS = ("svg", "png", "pdf")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _human(count: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= size:
            return f"{count / size:.1f}{unit}".replace(".0" + unit, unit)
    return str(count)


def _value(value: Any) -> str:
    if isinstance(value, tuple):
        return str(value[0]) if len(set(value)) == 1 else "x".join(map(str, value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def op_summary(layer: Layer) -> str:
    """``conv(96, 11, stride=4)``: the op and its arguments that differ from the defaults."""
    opdef = lookup(layer.op)
    if opdef is None:
        return layer.op
    parts = []
    for arg in opdef.args:
        if arg.name not in layer.attrs or arg.kind == "bias":
            continue
        value = layer.attrs[arg.name]
        default = arg.default
        if arg.kind == "pair" and isinstance(default, int):
            default = (default, default)
        if arg.name == "stride" and default is None:
            default = layer.attrs.get("kernel")
        if value == default:
            continue
        parts.append(_value(value) if arg.positional and arg.default is REQUIRED else f"{arg.name}={_value(value)}")
    return f"{layer.op}({', '.join(parts)})" if parts else layer.op


def _node(layer: Layer) -> str:
    if layer.is_input:
        kind = f"class({layer.attrs.get('classes')})" if layer.is_label else format_shape(layer.shape)
        label = _quote(layer.name + "\n" + kind)
        return f'{_quote(layer.name)} [label={label}, shape=ellipse, style=filled, fillcolor="#f2f2f2"]'
    lines = [layer.name, op_summary(layer)]
    if layer.param_count:
        lines.append(f"{_human(layer.param_count)} params")
    opdef = lookup(layer.op)
    shape = "octagon" if opdef is not None and opdef.role != "layer" else "box"
    style = PHASE_STYLE.get(layer.phase, 'style="rounded,filled", fillcolor="#ffffff"')
    return f"{_quote(layer.name)} [label={_quote(chr(10).join(lines))}, shape={shape}, {style}]"


def to_dot(network: Network) -> str:
    """The network as Graphviz DOT text."""
    layers = network.layers()
    blocks = sorted({layer.block for layer in layers if layer.block}, key=lambda b: (b.count("."), b))
    parent: dict[str, str | None] = {}
    for block in blocks:
        candidates = [b for b in blocks if b != block and block.startswith(b + ".")]
        parent[block] = max(candidates, key=len) if candidates else None
    children: dict[str | None, list[str]] = {}
    for block in sorted(blocks):
        children.setdefault(parent[block], []).append(block)
    members: dict[str | None, list[Layer]] = {}
    for layer in layers:
        members.setdefault(layer.block, []).append(layer)

    out = [f"digraph {_quote(network.name or 'network')} {{",
           "  rankdir=TB;",
           '  graph [fontname="Helvetica", fontsize=11, labeljust=l];',
           '  node [fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=9, color="#555555"];']
    if network.description:
        out.append(f"  label={_quote(network.name + ': ' + network.description)}; labelloc=t;")

    def emit(block: str | None, depth: int) -> None:
        pad = "  " * depth
        for layer in members.get(block, []):
            out.append(pad + _node(layer) + ";")
        for child in children.get(block, []):
            cluster = "cluster_" + "".join(c if c.isalnum() else "_" for c in child)
            out.append(f"{pad}subgraph {_quote(cluster)} {{")
            out.append(f'{pad}  label={_quote(child)}; style="rounded"; color="#999999";')
            emit(child, depth + 1)
            out.append(pad + "}")

    emit(None, 1)
    for layer in layers:
        for source in layer.inputs:
            shape = network.layer(source)
            label = f"class({shape.attrs.get('classes')})" if shape.is_label else format_shape(shape.shape)
            out.append(f"  {_quote(source)} -> {_quote(layer.name)} [label={_quote(label)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def render(dot: str, fmt: str) -> bytes:
    """Run Graphviz ``dot -T<fmt>``; a clear error when Graphviz is not installed."""
    if fmt not in RENDER_FORMATS:
        raise AlexDSLError(f"error: cannot draw to .{fmt}; use .dot, " + ", ".join(f".{f}" for f in RENDER_FORMATS))
    exe = shutil.which("dot")
    if exe is None:
        raise AlexDSLError([_missing_graphviz(fmt)])
    try:
        done = subprocess.run([exe, f"-T{fmt}"], input=dot.encode("utf-8"), capture_output=True, timeout=120,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise AlexDSLError(f"error: running Graphviz failed: {error}") from None
    if done.returncode != 0:
        raise AlexDSLError(f"error: Graphviz failed: {done.stderr.decode('utf-8', 'replace').strip()}")
    return done.stdout


def _missing_graphviz(fmt: str) -> Any:
    from alexdsl.errors import Diagnostic

    return Diagnostic("error", f"drawing to .{fmt} needs Graphviz's 'dot' program, which is not on PATH",
                      hint="install Graphviz (apt install graphviz, brew install graphviz), or write .dot text "
                           "with -o net.dot")
