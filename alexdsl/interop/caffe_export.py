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

from typing import Any, NoReturn

from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.ir.network import Layer, Network
from alexdsl.ops.registry import Filler, lookup

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


class CaffeLayerContext:
    """What an op's Caffe lowering (:attr:`alexdsl.ops.lowering.Lowerings.caffe`) sees of the layer it writes
    (:class:`~alexdsl.ops.contexts.CaffeExportContext`)."""

    def __init__(self, network: Network, layer: Layer):
        self.network = network
        self.layer = layer

    number = staticmethod(_n)

    @staticmethod
    def pair(name: str, value: Any, default: int | None) -> list[str]:
        """``kernel_size: 3``, or ``pad_h``/``pad_w`` lines; nothing when square and the default."""
        h, w = value if isinstance(value, (tuple, list)) else (value, value)
        if h != w:
            return [f"{name}_h: {h}", f"{name}_w: {w}"]
        if default is not None and h == default:
            return []
        return [f"{name if name != 'kernel' else 'kernel_size'}: {h}"]

    @staticmethod
    def filler(name: str, filler: Filler) -> list[str]:
        lines = [f"{name} {{", f"  type: {_q(filler.type)}"]
        for key, value in filler.args:
            if key != "variance_norm":
                lines.append(f"  {key}: {_n(value)}")
            elif value != "fan_in":
                lines.append(f"  variance_norm: {str(value).upper()}")
        return [*lines, "}"]

    def weight_and_bias(self, layer: Layer) -> list[str]:
        """``bias_term`` and the fillers of a Convolution or InnerProduct layer."""
        lines = [] if layer.attrs["bias"] else ["bias_term: false"]
        lines += self.filler("weight_filler", layer.params["weight"].filler)
        if "bias" in layer.params:
            lines += self.filler("bias_filler", layer.params["bias"].filler)
        return lines

    def input_shape(self, layer: Layer, index: int) -> tuple[int, ...]:
        return self.network.layer(layer.inputs[index]).shape

    def fail(self, message: str) -> NoReturn:
        raise AlexDSLError([Diagnostic("error", f"layer '{self.layer.name}': {message}", self.layer.span)])


def _params(layer: Layer, kinds: tuple[str, ...]) -> list[str]:
    specs = [layer.params[k] for k in kinds if k in layer.params]
    if not any(s.lr_mult != 1 or s.decay_mult != 1 for s in specs):
        return []
    return [f"  param {{ lr_mult: {_n(spec.lr_mult)} decay_mult: {_n(spec.decay_mult)} }}" for spec in specs]


def export_prototxt(network: Network) -> str:
    out = [f"name: {_q(network.name)}"]
    for name in network.inputs:
        layer = network.layer(name)
        dims = [1] if layer.is_label else [1, *layer.shape]
        out.append(f"input: {_q(name)}")
        out.append("input_shape { " + " ".join(f"dim: {d}" for d in dims) + " }")
    missing = [Diagnostic("error", f"op '{layer.op}' has no Caffe layer (layer '{layer.name}')", layer.span,
                          hint="export to ONNX instead, or replace the op")
               for layer in network.layers() if not layer.is_input and _caffe_lowering(layer) is None]
    if missing:  # every layer Caffe cannot hold, in one run
        raise AlexDSLError(missing)
    for layer in network.layers():
        if layer.is_input:
            continue
        out.extend(_layer(network, layer))
    return "\n".join(out) + "\n"


def _caffe_lowering(layer: Layer) -> Any:
    op = lookup(layer.op)
    return op.lower.caffe if op is not None else None


def _layer(network: Network, layer: Layer) -> list[str]:
    op = lookup(layer.op)
    if op is None or op.lower.caffe is None:
        raise AlexDSLError([Diagnostic("error", f"op '{layer.op}' has no Caffe layer (layer '{layer.name}')",
                                       layer.span, hint="export to ONNX instead, or replace the op")])
    lines: list[str] = []
    for caffe in op.lower.caffe(layer, CaffeLayerContext(network, layer)):
        bottoms = [layer.name] if caffe.suffix else layer.inputs
        lines += ["layer {", f"  name: {_q(layer.name + caffe.suffix)}", f"  type: {_q(caffe.type)}"]
        lines += [f"  bottom: {_q(b)}" for b in bottoms]
        lines += [f"  top: {_q(top)}" for top in caffe.tops or (layer.name,)]
        if layer.phase != "all":
            lines.append(f"  include {{ phase: {layer.phase.upper()} }}")
        lines += _params(layer, caffe.params)
        if caffe.section:
            lines += [f"  {caffe.section} {{", *(f"    {line}" for line in caffe.body), "  }"]
        lines.append("}")
    return lines
