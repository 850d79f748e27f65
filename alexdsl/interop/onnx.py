"""Export a network as an ONNX model (opset 17) for inference.

* One ONNX node per layer, named after it; initializers are ``<layer>.<param>`` (the torch
  state_dict keys, see :meth:`Network.state_keys`).
* The batch dimension is symbolic (``N``); graph inputs are the data inputs, graph outputs
  the network's outputs (the scores its losses read).
* Layers of the test phase are kept and layers only run while training are dropped, as are
  loss and metric layers, label inputs and dropout (identity at inference).
* ``fc`` is ``Flatten`` + ``Gemm`` (transB=1); ``maxpool``/``avgpool`` keep alexdsl's windows
  with floor rounding and explicit end pads (ONNX's ``ceil_mode`` would keep a window that starts
  in the padding), and a ``Pad`` node where an average counts the padding but not the overhang;
  ``lrn`` maps straight onto ONNX ``LRN`` (both divide alpha by size, as Caffe does);
  ``batchnorm`` is ``BatchNormalization`` with its running statistics; ``add`` of two inputs
  is ``Add``, of more ``Sum``; ``adaptive_avgpool`` becomes an ``AveragePool`` when the input
  size is a multiple of the output size and is an error otherwise.
* Weights come from a dict of arrays (:func:`load_weights` reads .safetensors or .npz), or are
  drawn from each parameter's filler with a seeded NumPy generator (Caffe's filler meanings).

The model is checked with ``onnx.checker.check_model(full_check=True)`` and returned after
``onnx.shape_inference.infer_shapes``; a model that fails either is an :class:`AlexDSLError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from alexdsl.errors import AlexDSLError
from alexdsl.ir.network import Layer, Network
from alexdsl.ops.registry import Filler, lookup

OPSET = 17
BATCH = "N"


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the environment
        raise AlexDSLError("error: ONNX export needs the onnx package: pip install 'alexdsl[onnx]'") from None
    return onnx


# weights -----------------------------------------------------------------------------------------
def fill(filler: Filler, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw an array as Caffe's filler would (float32)."""
    args = dict(filler.args)
    count = int(np.prod(shape)) if shape else 1
    fan_in = count // shape[0] if shape else 1
    fan_out = count // shape[1] if len(shape) > 1 else count
    norm = {"fan_in": fan_in, "fan_out": fan_out, "average": (fan_in + fan_out) / 2}
    if filler.type == "constant":
        out = np.full(shape, args.get("value", 0.0))
    elif filler.type == "gaussian":
        out = rng.normal(args.get("mean", 0.0), args.get("std", 1.0), shape)
    elif filler.type == "uniform":
        out = rng.uniform(args.get("min", 0.0), args.get("max", 1.0), shape)
    elif filler.type == "xavier":
        scale = np.sqrt(3.0 / max(norm[args.get("variance_norm", "fan_in")], 1))
        out = rng.uniform(-scale, scale, shape)
    elif filler.type == "msra":
        out = rng.normal(0.0, np.sqrt(2.0 / max(norm[args.get("variance_norm", "fan_in")], 1)), shape)
    else:
        raise AlexDSLError(f"error: unknown filler '{filler.type}'")
    return np.asarray(out, dtype=np.float32)


def initial_weights(network: Network, seed: int = 0) -> dict[str, np.ndarray]:
    """Every parameter drawn from its filler; running means 0 and variances 1."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for layer in network.layers():
        for name, spec in layer.params.items():
            weights[f"{layer.name}.{name}"] = fill(spec.filler, spec.shape, rng)
        for name, shape in layer.buffers.items():
            value = 1.0 if "var" in name else 0.0
            weights[f"{layer.name}.{name}"] = np.full(shape, value, dtype=np.float32)
    return weights


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays keyed ``<layer>.<param>`` from a .safetensors or .npz file."""
    path = Path(path)
    if not path.exists():
        raise AlexDSLError(f"{path}: error: no such file")
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise AlexDSLError("error: reading .safetensors needs the safetensors package") from None
        try:
            return dict(load_file(str(path)))
        except Exception as error:  # noqa: BLE001 - a corrupt file is the user's to fix
            raise AlexDSLError(f"{path}: error: not a readable safetensors file ({error})") from None
    raise AlexDSLError(f"{path}: error: weights must be a .safetensors or .npz file")


def _check_weights(network: Network, weights: Mapping[str, Any], layers: list[Layer]) -> None:
    keys = network.state_keys()
    problems = []
    for layer in layers:
        for pname in [*layer.params, *layer.buffers]:
            key = f"{layer.name}.{pname}"
            if key not in weights:
                problems.append(f"missing '{key}'")
            elif tuple(np.shape(weights[key])) != tuple(keys[key]):
                problems.append(f"'{key}' has shape {tuple(np.shape(weights[key]))}, expected {tuple(keys[key])}")
    if problems:
        raise AlexDSLError("error: the weights do not fit the network: " + "; ".join(problems[:10])
                           + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""))


# the graph ---------------------------------------------------------------------------------------
def _pair(value: Any) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [int(value), int(value)]


def _pool_nodes(layer: Layer, x: str, input_shape: tuple[int, ...]) -> list[Any]:
    """``maxpool``/``avgpool`` as ONNX nodes that keep exactly alexdsl's (torch's, Caffe's) windows.

    ONNX's ``ceil_mode`` keeps a last window that starts in the right padding, which alexdsl
    drops, so every pool is written with floor rounding and end pads that reach the last
    window alexdsl keeps. An average that counts the padding but not the part of a window
    past it (the divisor torch and Caffe use) zero-pads with a ``Pad`` node first and then
    averages with ``count_include_pad=0`` over that padded input.
    """
    from onnx import TensorProto, helper

    a, name = layer.attrs, layer.name
    kernel, stride, pad = _pair(a["kernel"]), _pair(a["stride"]), _pair(a["pad"])
    end = [max(p, (out - 1) * s + k - size - p)
           for out, s, k, size, p in zip(layer.shape[1:], stride, kernel, input_shape[1:], pad)]
    window = {"kernel_shape": kernel, "strides": stride}
    if layer.op == "maxpool":
        return [helper.make_node("MaxPool", [x], [name], name=name, pads=pad + end, **window)]
    count_pad = bool(a.get("count_pad", True))
    overhang = [e - p for e, p in zip(end, pad)]
    if not count_pad or not any(overhang) or not any(pad):
        return [helper.make_node("AveragePool", [x], [name], name=name, pads=pad + end,
                                 count_include_pad=int(count_pad and any(pad)), **window)]
    pads = f"{name}.pads"
    return [
        helper.make_node("Constant", [], [pads], name=pads, value=helper.make_tensor(
            pads, TensorProto.INT64, [8], [0, 0, *pad, 0, 0, *pad])),
        helper.make_node("Pad", [x, pads], [f"{name}.padded"], name=f"{name}.padded"),
        helper.make_node("AveragePool", [f"{name}.padded"], [name], name=name, pads=[0, 0, *overhang],
                         count_include_pad=0, **window),
    ]


def export_onnx(network: Network, weights: Mapping[str, Any] | None = None, *, seed: int = 0) -> Any:
    """Build the ONNX ``ModelProto`` of ``network`` (inference graph, opset 17)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    layers = [layer for layer in network.layers("test")]
    skipped = {layer.name for layer in network.layers() if layer.phase == "train"}
    if weights is None:
        weights = initial_weights(network, seed)
    _check_weights(network, weights, layers)

    alias: dict[str, str] = {}  # layer -> the ONNX value holding its output
    nodes: list[Any] = []
    initializers: list[Any] = []
    graph_inputs = []

    def value(name: str) -> str:
        if name in skipped:
            raise AlexDSLError(f"error: a layer used at inference reads '{name}', which runs only while training")
        return alias.get(name, name)

    def init(layer: Layer, pname: str) -> str:
        key = f"{layer.name}.{pname}"
        initializers.append(numpy_helper.from_array(np.asarray(weights[key], dtype=np.float32), key))
        return key

    for layer in layers:
        a = layer.attrs
        op = layer.op
        name = layer.name
        if op == "input":
            if layer.is_label:
                continue
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH, *layer.shape]))
            continue
        opdef = lookup(op)
        if opdef is not None and opdef.role in ("loss", "metric"):
            continue
        xs = [value(i) for i in layer.inputs]
        if op == "dropout":
            alias[name] = xs[0]
            continue
        if op == "conv":
            ph, pw = _pair(a["pad"])
            inputs = [xs[0], init(layer, "weight")] + ([init(layer, "bias")] if "bias" in layer.params else [])
            nodes.append(helper.make_node("Conv", inputs, [name], name=name, kernel_shape=_pair(a["kernel"]),
                                          strides=_pair(a["stride"]), pads=[ph, pw, ph, pw],
                                          dilations=_pair(a["dilation"]), group=int(a["groups"])))
        elif op == "fc":
            source = xs[0]
            if len(network.layer(layer.inputs[0]).shape) != 1:
                source = f"{name}.flatten"
                nodes.append(helper.make_node("Flatten", [xs[0]], [source], name=source, axis=1))
            inputs = [source, init(layer, "weight")] + ([init(layer, "bias")] if "bias" in layer.params else [])
            nodes.append(helper.make_node("Gemm", inputs, [name], name=name, transB=1))
        elif op in ("maxpool", "avgpool"):
            nodes.extend(_pool_nodes(layer, xs[0], network.layer(layer.inputs[0]).shape))
        elif op == "global_avgpool":
            nodes.append(helper.make_node("GlobalAveragePool", [xs[0]], [name], name=name))
        elif op == "adaptive_avgpool":
            _, height, width = network.layer(layer.inputs[0]).shape
            oh, ow = _pair(a["size"])
            if height % oh or width % ow:
                raise AlexDSLError(
                    f"error: layer '{name}': adaptive_avgpool to {oh}x{ow} of a {height}x{width} input has uneven "
                    f"windows, which ONNX cannot express; use an input size whose last feature map is a multiple "
                    f"of {oh}x{ow} (--input), or an avgpool")
            if (oh, ow) == (1, 1):
                nodes.append(helper.make_node("GlobalAveragePool", [xs[0]], [name], name=name))
            else:
                kernel = [height // oh, width // ow]
                nodes.append(helper.make_node("AveragePool", [xs[0]], [name], name=name, kernel_shape=kernel,
                                              strides=kernel))
        elif op == "lrn":
            nodes.append(helper.make_node("LRN", [xs[0]], [name], name=name, size=int(a["size"]),
                                          alpha=float(a["alpha"]), beta=float(a["beta"]), bias=float(a["k"])))
        elif op == "batchnorm":
            inputs = [xs[0], init(layer, "weight"), init(layer, "bias"), init(layer, "running_mean"),
                      init(layer, "running_var")]
            nodes.append(helper.make_node("BatchNormalization", inputs, [name], name=name,
                                          epsilon=float(a["eps"]), momentum=1.0 - float(a["momentum"])))
        elif op in ("relu", "sigmoid", "tanh"):
            nodes.append(helper.make_node(op.capitalize(), xs, [name], name=name))
        elif op == "leaky_relu":
            nodes.append(helper.make_node("LeakyRelu", xs, [name], name=name, alpha=float(a["slope"])))
        elif op == "softmax":
            nodes.append(helper.make_node("Softmax", xs, [name], name=name, axis=1))
        elif op == "concat":
            nodes.append(helper.make_node("Concat", xs, [name], name=name, axis=1))
        elif op == "add":
            nodes.append(helper.make_node("Add" if len(xs) == 2 else "Sum", xs, [name], name=name))
        elif op == "flatten":
            nodes.append(helper.make_node("Flatten", xs, [name], name=name, axis=1))
        else:
            raise AlexDSLError(f"error: layer '{name}': op '{op}' has no ONNX export")

    outputs = []
    for out in network.outputs:
        opdef = lookup(network.layer(out).op)
        target = network.layer(out).inputs[0] if opdef is not None and opdef.role in ("loss", "metric") else out
        if target in skipped:
            continue
        onnx_name = value(target)
        if onnx_name in (o.name for o in outputs):
            continue
        if onnx_name != target:  # an output that is an alias (a dropout): give it its own name
            nodes.append(helper.make_node("Identity", [onnx_name], [target], name=target))
            onnx_name = target
        shape = network.layer(target).shape
        outputs.append(helper.make_tensor_value_info(onnx_name, TensorProto.FLOAT, [BATCH, *shape]))
    if not outputs:
        raise AlexDSLError(f"error: {network.name} has no inference output to export")

    graph = helper.make_graph(nodes, network.name or "network", graph_inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="alexdsl", doc_string=network.description or "")
    model.ir_version = min(model.ir_version, 8)
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise AlexDSLError(f"error: the ONNX model exported from {network.name} fails onnx.checker "
                           f"(full_check=True): {str(error).strip()}; this is a bug in alexdsl's ONNX export, "
                           "please report it") from None
