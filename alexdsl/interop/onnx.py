"""Export a network as an ONNX model (opset 17) for inference; :func:`import_onnx` reads one back.

* One ONNX node per layer, named after it; initializers are ``<layer>.<param>`` (the torch
  state_dict keys, see :meth:`Network.state_keys`).
* The batch dimension is symbolic (``N``); graph inputs are the data inputs, graph outputs
  the network's outputs (the scores its losses read); a ``param`` output keeps its value's name,
  ``<layer>.expanded``, since its initializer has the layer's.
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
from typing import Any, NoReturn

import numpy as np

from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.extras import install_command
from alexdsl.ir.network import Layer, Network
from alexdsl.ops.fillers import draw
from alexdsl.ops.registry import lookup

OPSET = 17
PROTOBUF_LIMIT = 2**31  # bytes: the most one serialized ONNX model (a protobuf message) may take
BATCH = "N"
BATCH_SIZE = "batch_size"  # the value batch_size() adds: N as an int64 (1,) tensor


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the environment
        raise AlexDSLError(f"error: ONNX export needs the onnx package: {install_command('onnx')}") from None
    return onnx


# weights -----------------------------------------------------------------------------------------
def initial_weights(network: Network, seed: int = 0) -> dict[str, np.ndarray]:
    """Every parameter drawn from its filler; running means 0 and variances 1; the buffers an op computes from its
    arguments (``buffer_values``) as it computes them."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for layer in network.layers():
        for name, spec in layer.params.items():
            if not spec.tied:  # stored once, under its owner's key
                weights[layer.state_key(name)] = draw(spec.filler, spec.shape, rng).astype(np.float32)
        op = lookup(layer.op)
        computed = op.buffer_values(layer.attrs) if op is not None else {}
        for name, shape in layer.buffers.items():
            if name in computed:
                weights[layer.state_key(name)] = computed[name]
                continue
            value = 1.0 if "var" in name else 0.0
            weights[layer.state_key(name)] = np.full(shape, value, dtype=np.float32)
    return weights


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays keyed ``<layer>.<param>`` from a weights file (see :func:`alexdsl.weights.read_weights`)."""
    from alexdsl.weights import read_weights

    return read_weights(path)


def _check_weights(network: Network, weights: Mapping[str, Any], layers: list[Layer]) -> None:
    """The inference layers' weights present with their shapes; train-only and unknown keys are ignored."""
    from alexdsl.weights import check_state

    keys = network.state_keys()
    names = (layer.state_key(name) for layer in layers for name in [*layer.params, *layer.buffers])
    needed = {key: keys[key] for key in names}
    check_state({key: value for key, value in weights.items() if key in needed}, needed)


# the graph ---------------------------------------------------------------------------------------
class OnnxGraphBuilder:
    """What an op's ONNX lowering (:attr:`alexdsl.ops.lowering.Lowerings.onnx`) sees and adds to
    (:class:`~alexdsl.ops.contexts.OnnxExportContext`): the nodes, initializers and aliases of the graph."""

    inputs: list[str]

    def __init__(self, network: Network, weights: Mapping[str, Any], nodes: list[Any], initializers: list[Any],
                 alias: dict[str, str]):
        from onnx import helper, numpy_helper

        self._helper, self._numpy_helper = helper, numpy_helper
        self.network, self.weights = network, weights
        self.nodes, self.initializers, self.aliases = nodes, initializers, alias
        self.layer: Layer | None = None
        self.inputs: list[str] = []

    def node(self, op_type: str, inputs: list[str], *, output: str | None = None, **attrs: Any) -> str:
        """Add a node; its output (and name) is the layer's unless ``output`` names another value."""
        assert self.layer is not None
        output = output or self.layer.name
        self.nodes.append(self._helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def initializer(self, layer: Layer, name: str) -> str:
        key = layer.state_key(name)
        if all(tensor.name != key for tensor in self.initializers):  # a tied parameter is stored once
            self.initializers.append(self._numpy_helper.from_array(np.asarray(self.weights[key], dtype=np.float32),
                                                                   key))
        return key

    def constant(self, values: Any, *, output: str | None = None, integer: bool = False) -> str:
        """A ``Constant`` node holding ``values`` (float32, or int64 with ``integer``); returns its value name."""
        assert self.layer is not None
        output = output or f"{self.layer.name}.constant{sum(n.op_type == 'Constant' for n in self.nodes)}"
        array = np.asarray(values, dtype=np.int64 if integer else np.float32)
        tensor = self._numpy_helper.from_array(array, output)
        return self.node("Constant", [], output=output, value=tensor)

    def alias(self, value: str) -> None:
        """The layer is ``value`` at inference (dropout): no node."""
        assert self.layer is not None
        self.aliases[self.layer.name] = value

    def batch_size(self) -> str:
        """An int64 (1,) value holding the batch size: ``Shape`` of the first graph input, sliced, added once."""
        if not any(node.output == [BATCH_SIZE] for node in self.nodes):
            first = self.network.inference_view().inputs
            if first:
                self.nodes.append(self._helper.make_node("Shape", [first[0]], [BATCH_SIZE], name=BATCH_SIZE, end=1))
            else:  # no input: a learned tensor alone is one sample
                self.nodes.append(self._helper.make_node(
                    "Constant", [], [BATCH_SIZE], name=BATCH_SIZE,
                    value=self._numpy_helper.from_array(np.ones(1, np.int64), BATCH_SIZE)))
        return BATCH_SIZE

    def input_shape(self, layer: Layer, index: int) -> tuple[int, ...]:
        return self.network.layer(layer.inputs[index]).shape

    def fail(self, message: str) -> NoReturn:
        assert self.layer is not None
        raise AlexDSLError([Diagnostic("error", f"layer '{self.layer.name}': {message}", self.layer.span)])


def export_onnx(network: Network, weights: Mapping[str, Any] | None = None, *, seed: int = 0,
                aliases: dict[str, str] | None = None) -> Any:
    """Build the ONNX ``ModelProto`` of ``network`` (inference graph, opset 17).

    ``aliases``, when given, receives each layer whose ONNX value has another name (a dropout's is its input's;
    a param's is ``<layer>.expanded``, its initializer having the layer's name) -> that value.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper

    view = network.inference_view()
    skipped = set(view.dropped)
    stored = 4 * sum(layer.param_count for layer in view.layers)
    if stored >= PROTOBUF_LIMIT:
        raise AlexDSLError(f"error: {network.name}'s weights take {stored / 2**30:.1f} GiB as float32, more than the "
                           "2 GiB an ONNX model holds in one file (a protobuf message)")
    if weights is None:
        weights = initial_weights(network, seed)
    _check_weights(network, weights, view.layers)

    alias: dict[str, str] = aliases if aliases is not None else {}  # layer -> the ONNX value holding its output
    nodes: list[Any] = []
    initializers: list[Any] = []
    graph_inputs = []
    ctx = OnnxGraphBuilder(network, weights, nodes, initializers, alias)

    def value(name: str) -> str:
        if name in skipped:
            raise AlexDSLError(f"error: a layer used at inference reads '{name}', which does not run then "
                               "(a train-only layer, a loss or a label)")
        return alias.get(name, name)

    for name in view.inputs:
        kind = TensorProto.INT64 if network.layer(name).is_tokens else TensorProto.FLOAT
        graph_inputs.append(helper.make_tensor_value_info(name, kind, [BATCH, *network.layer(name).shape]))
    for layer in view.layers:
        op = lookup(layer.op)
        if op is None or op.lower.onnx is None:
            raise AlexDSLError([Diagnostic("error", f"op '{layer.op}' has no ONNX lowering (layer '{layer.name}')",
                                           layer.span)])
        ctx.layer, ctx.inputs = layer, [value(i) for i in layer.inputs]
        op.lower.onnx(layer, ctx)

    outputs = []
    for target in view.outputs:
        onnx_name = value(target)
        if onnx_name in (o.name for o in outputs):
            continue
        held = {tensor.name for tensor in initializers}
        if onnx_name != target and target not in held:  # an output that is an alias (a dropout): give it its name
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


def import_onnx(path: str | Path, inputs: Mapping[str, tuple[int, ...]] | None = None,
                ) -> tuple[Network, dict[str, np.ndarray]]:
    """The network an ONNX model describes and its weights (see :mod:`alexdsl.interop.onnx_import`)."""
    from alexdsl.interop.onnx_import import import_onnx as read

    return read(path, inputs)
