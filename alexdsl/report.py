"""The per-layer summary behind ``alexdsl shapes``: one row builder, four renderings.

>>> import alexdsl
>>> net = alexdsl.parse("network T\\ninput x: 3x8x8\\nc: conv(2, 3)\\n")
>>> print(render(net, "csv").strip())
name,op,inputs,shape,params,macs,bytes
x,input,,3x8x8,0,0,768
c,conv,x,2x6x6,56,1944,288
total,,,,56,1944,1056
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

from alexdsl.ops.registry import format_shape

if TYPE_CHECKING:  # only annotations: `alexdsl --help` (whose check command names FORMATS) skips networkx
    from alexdsl.ir.network import Network

FORMATS = ("table", "json", "csv", "markdown")


def rows(network: Network, batch: int = 1) -> list[dict[str, Any]]:
    """One dict per layer: name, op, inputs, shape, params, macs, bytes (MACs and bytes for ``batch``)."""
    return [
        {
            "name": layer.name,
            "op": layer.op,
            "inputs": list(layer.inputs),
            "shape": list(layer.shape),
            "params": layer.param_count,
            "macs": layer.macs * batch,
            "bytes": layer.activation_bytes(batch),
            "phase": layer.phase,
            "classes": layer.attrs.get("classes"),
        }
        for layer in network.layers()
    ]


def as_dict(network: Network, batch: int = 1) -> dict[str, Any]:
    layer_rows = [{k: v for k, v in row.items() if k not in ("phase", "classes")} for row in rows(network, batch)]
    return {"network": network.name, "batch": batch, "layers": layer_rows, "totals": network.totals(batch)}


def _shape_text(row: dict[str, Any]) -> str:
    if row["classes"] is not None:
        return f"class({row['classes']})"
    return format_shape(tuple(row["shape"]))


def render(network: Network, fmt: str = "table", batch: int = 1) -> str:
    """Render the summary as ``table`` (aligned text), ``json``, ``csv`` or ``markdown``."""
    if fmt == "json":
        return json.dumps(as_dict(network, batch), indent=2) + "\n"
    totals = network.totals(batch)
    table = rows(network, batch)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["name", "op", "inputs", "shape", "params", "macs", "bytes"])
        for row in table:
            writer.writerow([row["name"], row["op"], " ".join(row["inputs"]), _shape_text(row), row["params"],
                             row["macs"], row["bytes"]])
        writer.writerow(["total", "", "", "", totals["params"], totals["macs"], totals["activation_bytes"]])
        return out.getvalue()
    header = ["layer", "op", "output", "params", "MACs", "bytes"]
    body = [
        [row["name"] + ("" if row["phase"] == "all" else f" @{row['phase']}"), row["op"], _shape_text(row),
         f"{row['params']:,}", f"{row['macs']:,}", f"{row['bytes']:,}"]
        for row in table
    ]
    footer = ["total", "", "", f"{totals['params']:,}", f"{totals['macs']:,}", f"{totals['activation_bytes']:,}"]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 3) + "|"]
        lines += ["| " + " | ".join(f"`{c}`" if i == 2 and c else c for i, c in enumerate(r)) + " |" for r in body]
        lines.append("| " + " | ".join(f"**{c}**" if c else "" for c in footer) + " |")
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in [header, *body, footer]) for i in range(len(header))]
    numeric = {3, 4, 5}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
                         ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    title = f"{network.name}" + (f" (batch {batch})" if batch != 1 else "")
    return "\n".join([title, line(header), rule, *map(line, body), rule, line(footer)]) + "\n"
