"""Shape inference: each layer's output shape, parameters, buffers and MACs.

Runs each op's shape rule in topological order. A rule's :class:`ShapeError` becomes a
located diagnostic; layers downstream of a failed one are skipped, so one mistake is
reported once. Warnings come from each op's lint rule.
"""

from __future__ import annotations

from dataclasses import replace

import networkx as nx

from alexdsl.errors import DiagnosticSink, did_you_mean
from alexdsl.ir.network import Layer, ParamSpec, layer_of
from alexdsl.ops.loss import class_count
from alexdsl.ops.registry import Filler, ShapeError, format_shape, lookup


def infer_shapes(graph: nx.DiGraph, order: list[str], sink: DiagnosticSink) -> None:
    """Compute each layer's shape, parameters, buffers and MACs (:meth:`Layer.computed`), in ``order``."""
    for name in order:
        layer = layer_of(graph, name)
        if layer.is_input:
            continue
        op = lookup(layer.op)
        assert op is not None
        sources = [layer_of(graph, i) for i in layer.inputs if i in graph] if layer.ok else []
        if not layer.ok or len(sources) < len(layer.inputs) or any(source.shape is None for source in sources):
            layer.unshaped()
            continue
        in_shapes = [source.shape for source in sources]
        attrs = layer.attrs
        try:
            if op.takes_label:
                _check_label(sources, attrs)
            for position, source in enumerate(sources):
                if source.is_label and not (op.takes_label and position == 1):
                    raise ShapeError(f"input '{source.name}' is a label; {op.name} needs a tensor",
                                     expected="a tensor input", received=f"the label '{source.name}'")
            shape = tuple(op.infer(attrs, in_shapes))
        except ShapeError as error:
            span = layer.arg_spans.get(error.arg, layer.span) if error.arg else layer.span
            sink.error(f"{name}: {error.message}", span, expected=error.expected,
                       received=error.received or f"input shape{'s' if len(in_shapes) > 1 else ''} "
                                                  + ", ".join(format_shape(s) for s in in_shapes),
                       hint=error.hint)
            layer.unshaped()
            continue
        params = {}
        for pname, pshape in op.params(attrs, in_shapes).items():
            # A reader that gave no settings for a parameter (IR JSON without it) gets the op's defaults;
            # the reader then reports the parameter as missing.
            entry = layer.param_config.get(pname) or {
                "filler": op.default_fillers.get(pname, Filler("constant")), "lr": 1.0, "decay": 1.0}
            params[pname] = ParamSpec(tuple(pshape), entry["filler"], entry["lr"], entry["decay"])
        if op.arg("tied") is not None and attrs.get("tied"):
            owner = _tied_weight(graph, layer, attrs["tied"], params.get("weight"), sink)
            if owner is None:
                layer.unshaped()
                continue
            params["weight"] = replace(params["weight"], tied=owner)
        buffers = {bname: tuple(b) for bname, b in op.buffers(attrs, in_shapes).items()}
        layer.computed(shape, params, buffers, op.macs(attrs, in_shapes, shape))
        for message, arg in op.lint(attrs, in_shapes):
            span = layer.arg_spans.get(arg, layer.span) if arg else layer.span
            sink.warning(f"{name}: {message}", span)


def _tied_weight(graph: nx.DiGraph, layer: Layer, owner: str, spec: ParamSpec | None,
                 sink: DiagnosticSink) -> str | None:
    """The state key of the ``weight`` that an op's ``tied`` argument names (another layer's, of the same shape),
    or None after a located error."""
    span = layer.arg_spans.get("tied", layer.span)
    names = [n for n in graph if not layer_of(graph, n).is_input]
    if owner not in graph or layer_of(graph, owner).is_input or owner == layer.name:
        sink.error(f"{layer.name}: tied='{owner}' names no other layer", span,
                   expected="the name of a layer with a weight, such as an embedding",
                   hint=did_you_mean(owner, names))
        return None
    source = layer_of(graph, owner).params.get("weight")
    if spec is None or source is None or source.tied or tuple(source.shape) != tuple(spec.shape):
        sink.error(f"{layer.name}: tied='{owner}' names a layer without a weight of this layer's shape", span,
                   expected=f"a weight of shape {format_shape(spec.shape) if spec else '?'}, before this layer",
                   received=f"'{owner}': " + (format_shape(source.shape) if source else "no weight (yet)"))
        return None
    return layer_of(graph, owner).state_key("weight")


def _check_label(sources: list[Layer], attrs: dict) -> None:
    logits, label = sources
    if not label.is_label:
        raise ShapeError(
            f"needs a label as its second input, but '{label.name}' is not one",
            expected="a label input declared as 'input label: class(N)'",
            received=f"'{label.name}' ({format_shape(label.shape)})",
        )
    classes = class_count(logits.shape)
    if label.attrs["classes"] is None:  # a deferred label (an importer's): the first logits read with it say
        label.attrs["classes"] = classes
    if classes != label.attrs["classes"]:
        raise ShapeError(
            f"'{logits.name}' scores {classes} classes but the label '{label.name}' has {label.attrs['classes']}",
            expected=f"{label.attrs['classes']} class scores",
            received=format_shape(logits.shape),
        )
    if attrs.get("top", 1) > classes:
        raise ShapeError(f"top={attrs['top']} is more than the {classes} classes", arg="top",
                         expected=f"top <= {classes}", received=f"top={attrs['top']}")
