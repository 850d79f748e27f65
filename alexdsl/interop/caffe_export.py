"""alexdsl network -> Caffe ``.prototxt`` (deploy-style inputs, one Caffe layer per alexdsl layer).

Each layer keeps its name as the Caffe layer name and its top; ``batchnorm`` becomes a
BatchNorm layer followed by an in-place Scale layer (``<name>_scale``); phases become
``include { phase: ... }``; lr/decay multipliers become ``param { }`` blocks and fillers
``weight_filler`` / ``bias_filler``. A floor-rounded pool is written with ``round_mode: FLOOR``
only where floor and ceil sizes differ (older Caffe builds do not know that field). What
Caffe cannot express (``avgpool`` with ``count_pad=false`` and padding, an ``adaptive_avgpool``
with uneven windows) is an :class:`~alexdsl.errors.AlexDSLError`.

>>> import alexdsl
>>> text = export_prototxt(alexdsl.parse("network T\\ninput x: 3x8x8\\nc: conv(4, 3)\\n"))
>>> print(text.splitlines()[0:3])
['name: "T"', 'input: "x"', 'input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }']
"""

from __future__ import annotations

from typing import Any

from alexdsl.errors import AlexDSLError
from alexdsl.ir.network import Layer, Network
from alexdsl.ops.registry import Filler
from alexdsl.shape_math import pool_output_size

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _q(text: str) -> str:
    """``text`` as a protobuf text-format string: quotes, backslashes and control characters escaped
    (control characters as octal, as protobuf's CEscape writes them), other characters as UTF-8.

    >>> print(_q('a "b"\\n\\x01é'))
    "a \\"b\\"\\n\\001é"
    """
    return '"' + "".join(_ESCAPES.get(c) or (f"\\{ord(c):03o}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
                         for c in text) + '"'


def _n(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def _pair(lines: list[str], name: str, value: Any, default: int | None, indent: str) -> None:
    h, w = value if isinstance(value, (tuple, list)) else (value, value)
    if h == w:
        if default is None or h != default:
            lines.append(f"{indent}{name if name != 'kernel' else 'kernel_size'}: {h}")
    else:
        lines.append(f"{indent}{name}_h: {h}")
        lines.append(f"{indent}{name}_w: {w}")


def _weight_and_bias(body: list[str], layer: Layer) -> None:
    """``bias_term`` and the fillers of a Convolution or InnerProduct layer."""
    if not layer.attrs["bias"]:
        body.append("    bias_term: false")
    _filler(body, "weight_filler", layer.params["weight"].filler, "    ")
    if "bias" in layer.params:
        _filler(body, "bias_filler", layer.params["bias"].filler, "    ")


def _filler(lines: list[str], name: str, filler: Filler, indent: str) -> None:
    args = dict(filler.args)
    lines.append(f"{indent}{name} {{")
    lines.append(f'{indent}  type: "{filler.type}"')
    for key, value in args.items():
        if key == "variance_norm":
            if value != "fan_in":
                lines.append(f"{indent}  variance_norm: {str(value).upper()}")
        else:
            lines.append(f"{indent}  {key}: {_n(value)}")
    lines.append(f"{indent}}}")


def _params(lines: list[str], layer: Layer, kinds: tuple[str, ...]) -> None:
    specs = [layer.params[k] for k in kinds if k in layer.params]
    if any(s.lr_mult != 1 or s.decay_mult != 1 for s in specs):
        for spec in specs:
            lines.append(f"  param {{ lr_mult: {_n(spec.lr_mult)} decay_mult: {_n(spec.decay_mult)} }}")


def export_prototxt(network: Network) -> str:
    out = [f"name: {_q(network.name)}"]
    for name in network.inputs:
        layer = network.layer(name)
        dims = [1] if layer.is_label else [1, *layer.shape]
        out.append(f"input: {_q(name)}")
        out.append("input_shape { " + " ".join(f"dim: {d}" for d in dims) + " }")
    for layer in network.layers():
        if layer.is_input:
            continue
        out.extend(_layer(network, layer))
    return "\n".join(out) + "\n"


def _layer(network: Network, layer: Layer) -> list[str]:
    a, op, name = layer.attrs, layer.op, layer.name
    types = {"conv": "Convolution", "fc": "InnerProduct", "relu": "ReLU", "leaky_relu": "ReLU",
             "sigmoid": "Sigmoid", "tanh": "TanH", "softmax": "Softmax", "maxpool": "Pooling", "avgpool": "Pooling",
             "global_avgpool": "Pooling", "adaptive_avgpool": "Pooling", "lrn": "LRN", "batchnorm": "BatchNorm",
             "dropout": "Dropout", "concat": "Concat", "add": "Eltwise", "flatten": "Flatten",
             "softmax_loss": "SoftmaxWithLoss", "accuracy": "Accuracy"}
    if op not in types:
        raise AlexDSLError(f"error: layer '{name}': op '{op}' has no Caffe equivalent")
    lines = ["layer {", f"  name: {_q(name)}", f"  type: {_q(types[op])}"]
    lines += [f"  bottom: {_q(b)}" for b in layer.inputs]
    lines.append(f"  top: {_q(name)}")
    if layer.phase != "all":
        lines.append(f"  include {{ phase: {layer.phase.upper()} }}")
    body: list[str] = []
    section = None
    if op == "conv":
        _params(lines, layer, ("weight", "bias"))
        section = "convolution_param"
        body.append(f"    num_output: {a['out']}")
        _pair(body, "kernel", a["kernel"], None, "    ")
        _pair(body, "stride", a["stride"], 1, "    ")
        _pair(body, "pad", a["pad"], 0, "    ")
        if tuple(a["dilation"]) != (1, 1):
            _pair(body, "dilation", a["dilation"], 1, "    ")
        if a["groups"] != 1:
            body.append(f"    group: {a['groups']}")
        _weight_and_bias(body, layer)
    elif op == "fc":
        _params(lines, layer, ("weight", "bias"))
        section = "inner_product_param"
        body.append(f"    num_output: {a['out']}")
        _weight_and_bias(body, layer)
    elif op == "leaky_relu":
        section, body = "relu_param", [f"    negative_slope: {_n(a['slope'])}"]
    elif op in ("maxpool", "avgpool"):
        section = "pooling_param"
        body.append(f"    pool: {'MAX' if op == 'maxpool' else 'AVE'}")
        _pair(body, "kernel", a["kernel"], None, "    ")
        _pair(body, "stride", a["stride"], 1, "    ")
        _pair(body, "pad", a["pad"], 0, "    ")
        if op == "avgpool" and not a.get("count_pad", True) and any(a["pad"]):
            raise AlexDSLError(f"error: layer '{name}': Caffe's average pooling always counts the padding; "
                               "count_pad=false has no Caffe equivalent")
        if a["round"] == "floor":
            _, height, width = network.layer(layer.inputs[0]).shape
            sizes = [(pool_output_size(s, a["kernel"][i], a["stride"][i], a["pad"][i], False),
                      pool_output_size(s, a["kernel"][i], a["stride"][i], a["pad"][i], True))
                     for i, s in enumerate((height, width))]
            if any(f != c for f, c in sizes):
                body.append("    round_mode: FLOOR")
    elif op == "global_avgpool":
        section, body = "pooling_param", ["    pool: AVE", "    global_pooling: true"]
    elif op == "adaptive_avgpool":
        _, height, width = network.layer(layer.inputs[0]).shape
        oh, ow = a["size"]
        if height % oh or width % ow:
            raise AlexDSLError(f"error: layer '{name}': adaptive_avgpool to {oh}x{ow} of a {height}x{width} input "
                               "has uneven windows, which Caffe cannot express")
        section = "pooling_param"
        body = ["    pool: AVE"]
        _pair(body, "kernel", (height // oh, width // ow), None, "    ")
        _pair(body, "stride", (height // oh, width // ow), 1, "    ")
    elif op == "lrn":
        section = "lrn_param"
        body = [f"    local_size: {a['size']}", f"    alpha: {_n(a['alpha'])}", f"    beta: {_n(a['beta'])}"]
        if a["k"] != 1:
            body.append(f"    k: {_n(a['k'])}")
    elif op == "batchnorm":
        section = "batch_norm_param"
        body = [f"    eps: {_n(a['eps'])}", f"    moving_average_fraction: {_n(round(1 - a['momentum'], 9))}"]
    elif op == "dropout":
        section, body = "dropout_param", [f"    dropout_ratio: {_n(a['p'])}"]
    elif op == "add":
        section, body = "eltwise_param", ["    operation: SUM"]
    elif op == "accuracy" and a.get("top", 1) != 1:
        section, body = "accuracy_param", [f"    top_k: {a['top']}"]
    if section:
        lines.append(f"  {section} {{")
        lines += body
        lines.append("  }")
    lines.append("}")
    if op == "batchnorm":
        lines += ["layer {", f"  name: {_q(name + '_scale')}", '  type: "Scale"', f"  bottom: {_q(name)}",
                  f"  top: {_q(name)}"]
        if layer.phase != "all":
            lines.append(f"  include {{ phase: {layer.phase.upper()} }}")
        _params(lines, layer, ("weight", "bias"))
        lines += ["  scale_param {", "    bias_term: true"]
        _filler(lines, "filler", layer.params["weight"].filler, "    ")
        _filler(lines, "bias_filler", layer.params["bias"].filler, "    ")
        lines += ["  }", "}"]
    return lines
