"""Reading an ONNX model for import: checked, with fixed input shapes and constant subgraphs folded.

What :func:`read_onnx` returns is an :class:`OnnxGraph`: the nodes that compute on the
inputs, in order, with every attribute decoded, the per-sample shape of every value, and
every constant (initializers, ``Constant`` nodes, and what exporters compute from shapes,
such as torch's ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``) as a NumPy array.

The model is a stranger's file: its size is bounded, a malformed, truncated or non-ONNX file
is a clear error, external data must lie in the model's folder, only opsets 11 to 21 of the
default domain are read, and every dimension is checked as source files' are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.extras import install_command
from alexdsl.interop.onnx_layout import channels_first, channels_first_inputs
from alexdsl.interop.torch_scope import namespace_path
from alexdsl.limits import MAX_DIM, MAX_RANK

OPSETS = range(11, 22)  # the default-domain opsets read
OLDEST_CONVERTED = 7  # older opsets, from 7, are converted to 11 first
MAX_FOLDED_ELEMENTS = 1 << 24  # a constant computed while folding, in elements
MAX_NODES = 1_000_000
MAX_NAMESPACE = 4096  # characters of a node's dynamo namespace read (a module path is far shorter)
MAX_FOLD_ROUNDS = 256  # each round folds what the last shape inference resolved (a block's shapes need its input's)
SMALL_CONSTANT = 64  # constants shape inference sees the values of (shapes, axes, pads); larger are weights
BATCH = 1  # the batch size shapes are inferred with; alexdsl shapes leave the batch out
_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
               "If", "Loop", "Scan"}


@dataclass(eq=False)  # a node is itself: sets and `in` compare identity, never attributes
class OnnxNode:
    """One node: ``attrs`` decoded to Python values (tensors as arrays)."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    index: int  # its position in the model's node list
    scope: str | None = None  # the torch module the dynamo exporter says it came from (torch_scope.node_scope)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


@dataclass
class OnnxGraph:
    """A model ready to be mapped onto ops (see :mod:`alexdsl.interop.onnx_import`)."""

    file: str
    name: str
    doc: str
    opset: int
    inputs: dict[str, tuple[int, ...]]  # graph input -> per-sample shape
    outputs: list[str]
    nodes: list[OnnxNode]  # what computes on the inputs, in topological order
    constants: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]  # value -> per-sample shape (batch left out)
    notes: list[str] = field(default_factory=list)  # what a reader of the imported source should know
    integer_inputs: frozenset[str] = frozenset()  # graph inputs of an integer type: token ids
    producer: dict[str, OnnxNode] = field(default_factory=dict)
    consumers: dict[str, list[OnnxNode]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in self.nodes:
            for out in node.outputs:
                self.producer[out] = node
            for value in node.inputs:
                self.consumers.setdefault(value, []).append(node)


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the environment
        raise AlexDSLError(f"error: ONNX import needs the onnx package: {install_command('onnx')}") from None
    return onnx


def _fail(file: str, message: str, hint: str | None = None, **extra: Any) -> AlexDSLError:
    return AlexDSLError([Diagnostic("error", message, path=file, hint=hint, **extra)])


# loading -----------------------------------------------------------------------------------------
def _load(path: Path) -> Any:
    onnx = _onnx()  # first: protobuf comes with onnx, so without it the error must say to install onnx
    from google.protobuf.message import DecodeError

    from alexdsl.weights import max_weights_bytes

    file = str(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise _fail(file, "not a regular file")
        limit = max_weights_bytes()
        if size > limit:
            raise _fail(file, f"the model is {size} bytes, more than the limit of {limit}",
                        hint="raise ALEXDSL_MAX_WEIGHTS_BYTES if the file is trusted")
        data = path.read_bytes()
    except OSError as error:
        raise _fail(file, f"cannot read the model ({error.strerror or error})") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise _fail(file, "not an ONNX model: the file is not a valid ModelProto (malformed or truncated)",
                    received=f"{size} bytes ({str(error)[:120]})",
                    expected="a .onnx file written by an ONNX exporter") from None
    if not model.HasField("graph") or model.ir_version <= 0 or not (model.graph.node or model.graph.output):
        raise _fail(file, "not an ONNX model: it has no graph", received=f"{size} bytes",
                    expected="a .onnx file written by an ONNX exporter")
    return model


def _external_data(model: Any, folder: Path, file: str) -> None:
    """Read each tensor stored outside the model, refusing paths that leave the model's folder."""
    from onnx import TensorProto

    base = folder.resolve()
    for tensor in _all_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        where = f"initializer '{tensor.name}'"
        target = (base / location).resolve()
        if not location or os.path.isabs(location) or (target != base and base not in target.parents):
            raise _fail(file, f"{where}: external data path {location!r} leaves the model's folder",
                        hint="external data must be a relative path inside the folder that holds the model")
        try:
            offset, length = int(info.get("offset", 0)), int(info["length"]) if "length" in info else None
            with open(target, "rb") as handle:
                available = os.fstat(handle.fileno()).st_size
                end = offset + length if length is not None else available
                if offset < 0 or end < offset or end > available:
                    raise _fail(file, f"{where}: external data {location!r} is shorter than the tensor it holds",
                                received=f"offset {offset}, length {length}, file {available} bytes")
                handle.seek(offset)
                raw = handle.read(length if length is not None else available - offset)
        except OSError as error:
            raise _fail(file, f"{where}: cannot read external data {location!r} ({error.strerror or error})") from None
        except ValueError:
            raise _fail(file, f"{where}: external data offset or length is not an integer") from None
        tensor.raw_data = raw
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT


def _all_tensors(model: Any) -> list[Any]:
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    return tensors


# attributes and tensors --------------------------------------------------------------------------
def _array(tensor: Any, file: str) -> np.ndarray:
    from onnx import numpy_helper

    dims = list(tensor.dims)
    if len(dims) > MAX_RANK * 2 or any(d < 0 or d > MAX_DIM for d in dims):
        raise _fail(file, f"tensor '{tensor.name}' has absurd dimensions {dims}")
    try:
        array = numpy_helper.to_array(tensor)
    except Exception as error:  # noqa: BLE001 - onnx raises many kinds for a bad tensor
        raise _fail(file, f"tensor '{tensor.name}' cannot be read: {str(error)[:200]}") from None
    return np.asarray(array)


def _attrs(node: Any, file: str) -> dict[str, Any]:
    from onnx import AttributeProto, helper

    out: dict[str, Any] = {}
    for attribute in node.attribute:
        if attribute.type == AttributeProto.TENSOR:
            out[attribute.name] = _array(attribute.t, file)
        elif attribute.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            out[attribute.name] = "<graph>"
        else:
            value = helper.get_attribute_value(attribute)
            out[attribute.name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else \
                [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value] \
                if isinstance(value, list) else value
    return out


# shapes ------------------------------------------------------------------------------------------
def _dims(value_info: Any) -> list[int | str | None]:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]


def _fix_inputs(model: Any, given: Mapping[str, tuple[int, ...]], file: str) -> dict[str, tuple[int, ...]]:
    """Each graph input's per-sample shape, from the model or ``--input``; the model is made static."""
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in initializers]
    unknown = set(given) - {v.name for v in graph_inputs}
    if unknown:
        raise _fail(file, f"--input names {', '.join(sorted(unknown))}, which the model does not have",
                    expected=", ".join(v.name for v in graph_inputs) or "(no inputs)")
    shapes: dict[str, tuple[int, ...]] = {}
    for value in graph_inputs:
        dims = _dims(value)
        if value.name in given:
            sample = tuple(given[value.name])
            if dims and len(dims) != len(sample) + 1:
                raise _fail(file, f"--input {value.name}: the model's input has {len(dims) - 1} dimensions "
                                  "besides the batch", received="x".join(map(str, sample)))
        else:
            if not dims:
                raise _fail(file, f"input '{value.name}' has no shape in the model",
                            hint=f"give it: --input {value.name}=CxHxW")
            dynamic = [i for i, d in enumerate(dims[1:], 1) if not isinstance(d, int) or d <= 0]
            if dynamic:
                names = ", ".join(str(dims[i] or "?") for i in dynamic)
                raise _fail(file, f"input '{value.name}' has dynamic dimensions ({names}) besides the batch",
                            hint=f"fix them: --input {value.name}=" + "x".join(
                                "H" if not isinstance(d, int) or d <= 0 else str(d) for d in dims[1:]),
                            received="x".join(str(d or "?") for d in dims))
            sample = tuple(int(d) for d in dims[1:])  # type: ignore[arg-type]
        if not sample or len(sample) > MAX_RANK or any(not 0 < d <= MAX_DIM for d in sample):
            raise _fail(file, f"input '{value.name}' has absurd dimensions", received="x".join(map(str, sample)),
                        expected=f"1 to {MAX_RANK} dimensions of 1 to {MAX_DIM}")
        tensor_shape = value.type.tensor_type.shape
        del tensor_shape.dim[:]
        for d in (BATCH, *sample):
            tensor_shape.dim.add().dim_value = d
        shapes[value.name] = sample
    return shapes


def _infer(model: Any, file: str) -> dict[str, list[int | str | None]]:
    onnx = _onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as error:  # noqa: BLE001 - onnx raises several kinds
        raise _fail(file, f"the model's shapes do not check: {str(error).strip()[:400]}",
                    hint="the model is malformed; onnx.checker.check_model says more") from None
    graph = inferred.graph
    return {v.name: _dims(v) for v in [*graph.value_info, *graph.output, *graph.input]}


def _check_single_writers(graph: Any, file: str) -> None:
    """Refuse a value that two nodes write, or that a node writes over a model input or an initializer:
    each value of an ONNX graph has one writer (onnx.checker.check_model refuses such a model too)."""
    given = {v.name: "a model input" for v in graph.input} | {t.name: "an initializer" for t in graph.initializer}
    writers: dict[str, str] = {}
    hint = "each value of an ONNX graph is written once; the model is malformed"
    for i, node in enumerate(graph.node):
        name = f"'{node.name or f'{node.op_type}_{i}'}' ({node.op_type})"
        for out in filter(None, node.output):
            if out in writers:
                raise _fail(file, f"nodes {writers[out]} and {name} both write '{out}'", hint=hint)
            if out in given:
                raise _fail(file, f"node {name} writes '{out}', which is {given[out]}", hint=hint)
            writers[out] = name


# folding -----------------------------------------------------------------------------------------
def _evaluate(node: Any, values: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    """``node`` run by ONNX's reference evaluator as the model's opset defines it (a bare node
    would run the newest version: opset 11's ``Unsqueeze`` takes its axes as an attribute)."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    feeds = {name: value for name, value in zip(node.input, values) if name}
    graph = helper.make_graph([node], "fold", [helper.make_tensor_value_info(name, 0, None) for name in feeds],
                              [helper.make_tensor_value_info(name, 0, None) for name in node.output if name])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return list(ReferenceEvaluator(model).run(None, feeds))


def _fold(model: Any, shapes: dict[str, list[Any]], constants: dict[str, np.ndarray], opset: int,
          file: str) -> bool:
    """Replace each node whose inputs are all known (and ``Shape`` of a known shape) by constants."""

    graph = model.graph
    kept, folded = [], False
    outputs = {v.name for v in graph.output}
    forwarded: dict[str, str] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in forwarded:
                node.input[i] = forwarded[name]
        if node.op_type == "Constant" and len(node.output) == 1:
            attrs = _attrs(node, file)
            if "value" in attrs:
                constants[node.output[0]] = np.asarray(attrs["value"])
            else:
                key = next(iter(attrs), None)
                constants[node.output[0]] = np.asarray(attrs[key]) if key else np.zeros(0, np.float32)
            folded = True
            continue
        if node.op_type == "Shape":
            dims = shapes.get(node.input[0]) or []
            if dims and all(isinstance(d, int) and d > 0 for d in dims):
                attrs = _attrs(node, file)
                rank = len(dims)
                start, end = attrs.get("start", 0), attrs.get("end", rank)
                constants[node.output[0]] = np.asarray(dims, dtype=np.int64)[slice(start, end)]
                folded = True
                continue
        known = all(not name or name in constants for name in node.input)
        source = constants.get(node.input[0]) if node.input else None
        if known and node.op_type == "Expand" and node.output[0] not in outputs and source is not None \
                and _broadcast(source.shape, constants[node.input[1]]) == source.shape:
            forwarded[node.output[0]] = node.input[0]  # a tensor expanded to batch 1 is itself: it keeps its name
            folded = True
            continue
        if known and node.input and node.op_type not in _NOT_FOLDED and not node.domain:
            for out in node.output:
                dims = shapes.get(out)
                if dims and all(isinstance(d, int) for d in dims) and int(np.prod(dims)) > MAX_FOLDED_ELEMENTS:
                    raise _fail(file, f"node '{node.name}' ({node.op_type}) would compute a constant of "
                                      f"{int(np.prod(dims))} elements", expected=f"at most {MAX_FOLDED_ELEMENTS}")
            try:
                results = _evaluate(node, [constants.get(n) for n in node.input], opset)
            except Exception as error:  # noqa: BLE001 - the reference evaluator raises many kinds
                raise _fail(file, f"node '{node.name}' ({node.op_type}) on constants cannot be evaluated: "
                                  f"{str(error).strip()[:200]}") from None
            for out, value in zip(node.output, results):
                array = np.asarray(value)
                if array.size > MAX_FOLDED_ELEMENTS:
                    raise _fail(file, f"node '{node.name}' ({node.op_type}) computes a constant of {array.size} "
                                      f"elements", expected=f"at most {MAX_FOLDED_ELEMENTS}")
                constants[out] = array
            folded = True
            continue
        kept.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
        present = {t.name for t in graph.initializer} | {v.name for v in graph.input}
        needed = {name for node in kept for name in node.input}
        for name in sorted(needed & set(constants) - present):
            _declare(graph, name, constants[name])
    return folded


def _broadcast(shape: tuple[int, ...], to: np.ndarray) -> tuple[int, ...] | None:
    """What ``Expand`` makes of a tensor of ``shape`` by the shape ``to``; None when they do not broadcast."""
    try:
        return tuple(np.broadcast_shapes(shape, tuple(int(d) for d in np.asarray(to).reshape(-1))))
    except ValueError:
        return None


def _declare(graph: Any, name: str, array: np.ndarray) -> None:
    """A constant the shape inference sees: small ones with their values (shapes are computed from
    them), large ones (weights) as inputs of known type and shape, so that inference copies no weights."""
    from onnx import helper, numpy_helper

    if array.size <= SMALL_CONSTANT:
        graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        return
    graph.input.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype),
                                                     list(array.shape)))


def _strip_weights(model: Any, constants: dict[str, np.ndarray]) -> None:
    """Leave in ``model`` only what shape inference and folding need: large constants' data goes."""
    del model.graph.initializer[:]
    inputs = [v for v in model.graph.input if v.name not in constants]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    for name, array in constants.items():
        _declare(model.graph, name, array)


def _converted(model: Any, opset: int, file: str) -> Any:
    """``model`` brought up to the oldest opset read by onnx's version converter."""
    onnx = _onnx()
    try:
        return onnx.version_converter.convert_version(model, OPSETS[0])
    except Exception as error:  # noqa: BLE001 - the converter raises RuntimeError and others
        raise _fail(file, f"the model uses ONNX opset {opset}, and onnx's version converter cannot bring it to "
                          f"{OPSETS[0]}: {str(error).strip()[:200]}",
                    hint="re-export the model at opset 11 or later") from None


def _check_nodes(model: Any, nodes: list[OnnxNode], opset: int, file: str) -> None:
    """Every node of the default domain has the inputs, outputs and attribute types its ONNX schema allows."""
    from onnx import AttributeProto, defs

    problems = []
    for proto, node in zip(model.graph.node, nodes):
        try:
            schema = defs.get_schema(node.op_type, opset)
        except defs.SchemaError:
            continue  # an op type ONNX does not define: the importer lists it as unsupported
        given, made = len(node.inputs), len(node.outputs)
        where = f"node '{node.name}' ({node.op_type})"
        if not schema.min_input <= given <= schema.max_input or not schema.min_output <= made <= schema.max_output:
            problems.append(Diagnostic(
                "error", f"{where} has {given} inputs and {made} outputs", path=file,
                expected=f"{schema.min_input} to {schema.max_input} inputs and {schema.min_output} to "
                         f"{schema.max_output} outputs (ONNX opset {opset})"))
        for attribute in proto.attribute:
            spec = schema.attributes.get(attribute.name)
            if spec is None:
                problems.append(Diagnostic("error", f"{where} has an attribute '{attribute.name}' its op does not "
                                                    "define", path=file,
                                           expected=", ".join(sorted(schema.attributes)) or "no attributes"))
            elif int(spec.type) != int(attribute.type):
                problems.append(Diagnostic("error", f"{where}: attribute '{attribute.name}' has the wrong type",
                                           path=file, expected=str(spec.type).rsplit(".", 1)[-1],
                                           received=AttributeProto.AttributeType.Name(attribute.type)))
    if problems:
        raise AlexDSLError(problems[:20])


# the whole read ----------------------------------------------------------------------------------
def _namespace(node: Any) -> str | None:
    """The torch module path in the node's ``namespace`` metadata (the dynamo exporter's), or None."""
    for prop in node.metadata_props:
        if prop.key == "namespace":
            return namespace_path(prop.value[:MAX_NAMESPACE])
    return None


def read_onnx(path: str | os.PathLike[str], inputs: Mapping[str, tuple[int, ...]] | None = None) -> OnnxGraph:
    """Load, check and simplify the model at ``path``; ``inputs`` fixes input shapes (``name -> (C, H, W)``)."""
    path = Path(path)
    file = str(path)
    model = _load(path)
    opsets = {o.domain or "": o.version for o in model.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx", 0))
    if len(model.graph.node) > MAX_NODES:
        raise _fail(file, f"the model has {len(model.graph.node)} nodes", expected=f"at most {MAX_NODES}")
    _check_single_writers(model.graph, file)
    _external_data(model, path.parent, file)
    if OLDEST_CONVERTED <= opset < OPSETS[0]:  # the model zoo's older files: onnx's converter brings them to 11
        model, opset = _converted(model, opset, file), OPSETS[0]
    if opset not in OPSETS:
        raise _fail(file, f"the model uses ONNX opset {opset}", expected=f"opset {OPSETS[0]} to {OPSETS[-1]}"
                    + (f" (or {OLDEST_CONVERTED} to {OPSETS[0] - 1}, converted)" if opset < OPSETS[0] else ""),
                    hint="re-export the model with an opset in that range (torch.onnx.export(opset_version=17))")
    input_shapes = _fix_inputs(model, dict(inputs or {}), file)
    constants = {t.name: _array(t, file) for t in model.graph.initializer}
    _strip_weights(model, constants)
    for _ in range(MAX_FOLD_ROUNDS):  # fold, infer again with what folding made constant, until nothing folds
        shapes = _infer(model, file)
        if not _fold(model, shapes, constants, opset, file):
            break  # the model is as the last inference saw it
    else:
        shapes = _infer(model, file)
    nodes = [OnnxNode(n.op_type if not n.domain or n.domain == "ai.onnx" else f"{n.domain}.{n.op_type}",
                      n.name or f"{n.op_type}_{i}", list(n.input), list(n.output), _attrs(n, file), i,
                      _namespace(n))
             for i, n in enumerate(model.graph.node)]
    per_sample: dict[str, tuple[int, ...]] = {}
    for name, dims in shapes.items():
        if dims and all(isinstance(d, int) and d >= 0 for d in dims):
            per_sample[name] = tuple(int(d) for d in dims[1:])
    outputs = [v.name for v in model.graph.output]
    _check_nodes(model, nodes, opset, file)
    nodes, notes = channels_first_inputs(nodes, input_shapes, per_sample)
    nodes = channels_first(nodes, constants, per_sample, outputs)
    from onnx import TensorProto

    integers = frozenset(v.name for v in model.graph.input if v.name in input_shapes
                         and v.type.tensor_type.elem_type in (TensorProto.INT64, TensorProto.INT32))
    return OnnxGraph(file, model.graph.name, model.doc_string or model.graph.doc_string, opset, input_shapes,
                     outputs, nodes, constants, per_sample, notes, integers)
