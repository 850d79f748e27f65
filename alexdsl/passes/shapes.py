"""Shape inference: each layer's output shape, parameters, buffers and MACs.

Runs each op's shape rule in topological order. A rule's :class:`ShapeError` becomes a
located diagnostic; layers downstream of a failed one are skipped, so one mistake is
reported once. Warnings come from each op's lint rule.
"""

from __future__ import annotations

import networkx as nx

from alexdsl.errors import DiagnosticSink
from alexdsl.ir.network import ParamSpec
from alexdsl.ops.loss import class_count
from alexdsl.ops.registry import Filler, ShapeError, format_shape, lookup


def infer_shapes(graph: nx.DiGraph, order: list[str], sink: DiagnosticSink) -> None:
    """Fill ``shape``, ``params``, ``buffers`` and ``macs`` on every node of ``graph``."""
    for name in order:
        data = graph.nodes[name]
        if data["op"] == "input":
            continue
        op = lookup(data["op"])
        assert op is not None
        inputs = data["inputs"]
        if not data.get("ok", True) or any(i is None or graph.nodes[i]["shape"] is None for i in inputs):
            data["shape"] = None
            continue
        in_shapes = [graph.nodes[i]["shape"] for i in inputs]
        attrs = data["attrs"]
        try:
            if op.takes_label:
                _check_label(graph, name, inputs, attrs)
            for position in range(len(inputs)):
                if graph.nodes[inputs[position]]["attrs"].get("kind") == "label" and not (
                        op.takes_label and position == 1):
                    raise ShapeError(f"input '{inputs[position]}' is a label; {op.name} needs a tensor",
                                     expected="a tensor input", received=f"the label '{inputs[position]}'")
            shape = op.infer(attrs, in_shapes)
        except ShapeError as error:
            span = data["arg_spans"].get(error.arg, data["span"]) if error.arg else data["span"]
            sink.error(f"{name}: {error.message}", span, expected=error.expected,
                       received=error.received or f"input shape{'s' if len(in_shapes) > 1 else ''} "
                                                  + ", ".join(format_shape(s) for s in in_shapes),
                       hint=error.hint)
            data["shape"] = None
            continue
        data["shape"] = tuple(shape)
        config = data.get("param_config", {})
        data["params"] = {}
        for pname, pshape in op.params(attrs, in_shapes).items():
            # A reader that gave no settings for a parameter (IR JSON without it) gets the op's defaults;
            # the reader then reports the parameter as missing.
            entry = config.get(pname) or {"filler": op.default_fillers.get(pname, Filler("constant")), "lr": 1.0,
                                          "decay": 1.0}
            data["params"][pname] = ParamSpec(tuple(pshape), entry["filler"], entry["lr"], entry["decay"])
        data["buffers"] = {bname: tuple(b) for bname, b in op.buffers(attrs, in_shapes).items()}
        data["macs"] = op.macs(attrs, in_shapes, data["shape"])
        for message, arg in op.lint(attrs, in_shapes):
            span = data["arg_spans"].get(arg, data["span"]) if arg else data["span"]
            sink.warning(f"{name}: {message}", span)


def _check_label(graph: nx.DiGraph, name: str, inputs: list[str], attrs: dict) -> None:
    logits, label = inputs
    label_data = graph.nodes[label]
    if label_data["attrs"].get("kind") != "label":
        raise ShapeError(
            f"needs a label as its second input, but '{label}' is not one",
            expected="a label input declared as 'input label: class(N)'",
            received=f"'{label}' ({format_shape(label_data['shape'])})",
        )
    classes = class_count(graph.nodes[logits]["shape"])
    if classes != label_data["attrs"]["classes"]:
        raise ShapeError(
            f"'{logits}' scores {classes} classes but the label '{label}' has {label_data['attrs']['classes']}",
            expected=f"{label_data['attrs']['classes']} class scores",
            received=format_shape(graph.nodes[logits]["shape"]),
        )
    if attrs.get("top", 1) > classes:
        raise ShapeError(f"top={attrs['top']} is more than the {classes} classes", arg="top",
                         expected=f"top <= {classes}", received=f"top={attrs['top']}")
