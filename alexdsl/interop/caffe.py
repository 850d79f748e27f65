"""Caffe ``.prototxt`` -> alexdsl source.

The prototxt is parsed by :mod:`alexdsl.interop.prototxt` (protobuf text format, in one linear
pass) so every field keeps its line and column; anything this importer does not
understand (legacy V1 ``layers``, an unknown layer type, an unknown field) is an
:class:`~alexdsl.errors.AlexDSLError` that names it and points at it.

What is carried over:

* deploy-style ``input: "data"`` with ``input_shape { dim: ... }`` or ``input_dim``, ``Input``
  layers and ``Data`` layers (``transform_param`` -> ``preprocess data(crop=, mirror=, mean=, scale=)``);
  a blob used as the label of a loss or accuracy layer becomes ``input label: class(N)``;
* Convolution, InnerProduct, ReLU (leaky when ``negative_slope`` is set), Sigmoid, TanH,
  Pooling (MAX/AVE, always written ``round=ceil`` as Caffe rounds, unless ``round_mode: FLOOR``;
  global pooling -> ``global_avgpool``), LRN, Dropout, Concat, Eltwise SUM, BatchNorm + Scale
  (-> ``batchnorm``), Flatten, Softmax, SoftmaxWithLoss, Accuracy;
* ``include { phase: TRAIN|TEST }`` -> ``@train`` / ``@test``;
* ``param { lr_mult decay_mult }`` and weight/bias fillers -> ``defaults`` lines when two or
  more layers share them, per-layer arguments otherwise (a deploy file without fillers keeps
  alexdsl's default fillers);
* in-place layers (top == bottom) and single-consumer runs become ``|`` chains; a new
  statement starts at each conv, fc and batchnorm layer. Every layer keeps its Caffe name
  (sanitised to an alexdsl name), so weight keys are ``<caffe layer>.weight``.

>>> print(import_prototxt('''
... name: "Tiny"
... input: "data"
... input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
... layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
...         convolution_param { num_output: 4 kernel_size: 3 } }
... layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
... '''), end="")
# Imported from a Caffe prototxt by alexdsl import caffe.
network Tiny
<BLANKLINE>
input data: 3x8x8
<BLANKLINE>
c1: conv(4, 3) | r1: relu
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from alexdsl.errors import AlexDSLError, Diagnostic, DiagnosticSink, Span
from alexdsl.frontend import gc_paused, network_from_module
from alexdsl.interop.prototxt import Message, Scalar, parse_prototxt
from alexdsl.ir.network import Network
from alexdsl.ops.registry import OpDef, caffe_importers, lookup
from alexdsl.syntax import ast
from alexdsl.syntax.build import ModuleBuilder, arg, as_name, call, filler, number

# schema: the fields each message may hold --------------------------------------------------------
_FILLER = {"type", "value", "min", "max", "mean", "std", "variance_norm", "sparse"}
_SCHEMA: dict[str, set[str]] = {
    "net": {"name", "input", "input_shape", "input_dim", "layer", "layers", "force_backward", "debug_info", "state"},
    "input_shape": {"dim"},
    "layer": {"name", "type", "bottom", "top", "param", "include", "exclude", "phase", "loss_weight",
              "propagate_down", "convolution_param", "pooling_param", "lrn_param", "inner_product_param",
              "dropout_param", "concat_param", "eltwise_param", "batch_norm_param", "scale_param",
              "softmax_param", "accuracy_param", "input_param", "data_param", "transform_param", "relu_param",
              "loss_param", "flatten_param", "image_data_param", "memory_data_param", "elu_param", "prelu_param",
              "swish_param", "slice_param"},
    "param": {"lr_mult", "decay_mult", "name"},
    "include": {"phase"},
    "convolution_param": {"num_output", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w",
                          "pad", "pad_h", "pad_w", "dilation", "group", "bias_term", "weight_filler",
                          "bias_filler", "engine", "axis"},
    "inner_product_param": {"num_output", "bias_term", "weight_filler", "bias_filler", "axis", "transpose"},
    "pooling_param": {"pool", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w", "pad",
                      "pad_h", "pad_w", "global_pooling", "round_mode", "engine"},
    "lrn_param": {"local_size", "alpha", "beta", "k", "norm_region", "engine"},
    "dropout_param": {"dropout_ratio"},
    "concat_param": {"axis", "concat_dim"},
    "eltwise_param": {"operation", "coeff", "stable_prod_grad"},
    "batch_norm_param": {"use_global_stats", "moving_average_fraction", "eps"},
    "scale_param": {"bias_term", "axis", "num_axes", "filler", "bias_filler"},
    "softmax_param": {"axis", "engine"},
    "accuracy_param": {"top_k", "axis", "ignore_label"},
    "input_param": {"shape"},
    "shape": {"dim"},
    "data_param": {"source", "batch_size", "backend", "prefetch", "rand_skip", "scale", "mean_file",
                   "crop_size", "mirror", "force_encoded_color"},
    "image_data_param": {"source", "batch_size", "shuffle", "new_height", "new_width", "is_color", "root_folder",
                         "rand_skip"},
    "memory_data_param": {"batch_size", "channels", "height", "width"},
    "transform_param": {"crop_size", "mean_value", "mean_file", "mirror", "scale", "force_color", "force_gray"},
    "relu_param": {"negative_slope", "engine"},
    "elu_param": {"alpha"},
    "prelu_param": {"filler", "channel_shared"},
    "swish_param": {"beta"},
    "loss_param": {"ignore_label", "normalize", "normalization"},
    "flatten_param": {"axis", "end_axis"},
    "slice_param": {"axis", "slice_point", "slice_dim"},
    "weight_filler": _FILLER,
    "bias_filler": _FILLER,
    "filler": _FILLER,
    "state": {"phase", "level", "stage"},
}

DATA_TYPES = ("Input", "Data", "ImageData", "MemoryData")
SCALE = "Scale"  # absorbed by the layer that imports Caffe's BatchNorm (its learned scale and shift)


def layer_types() -> tuple[str, ...]:
    """Every Caffe layer type the importer reads: the data layers, Scale, and what the ops import."""
    return (*DATA_TYPES, *sorted(caffe_importers()), SCALE)


_INT_FIELDS = {"num_output", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w", "pad", "pad_h",
               "pad_w", "dilation", "group", "axis", "local_size", "top_k", "dim", "input_dim", "crop_size",
               "batch_size", "concat_dim", "num_axes", "channels", "height", "width", "new_height", "new_width",
               "rand_skip", "prefetch", "end_axis", "ignore_label", "level", "sparse", "slice_point",
               "slice_dim"}
_FLOAT_FIELDS = {"lr_mult", "decay_mult", "alpha", "beta", "k", "dropout_ratio", "eps", "moving_average_fraction",
                 "negative_slope", "value", "min", "max", "mean", "std", "scale", "mean_value", "coeff",
                 "loss_weight"}
_BOOL_FIELDS = {"bias_term", "mirror", "global_pooling", "use_global_stats", "force_backward", "debug_info",
                "transpose", "shuffle", "is_color", "force_color", "force_gray", "normalize", "stable_prod_grad",
                "force_encoded_color", "propagate_down", "channel_shared"}
_STRING_FIELDS = {"name", "type", "bottom", "top", "input", "source", "mean_file", "root_folder", "stage"}
_ENUM_FIELDS = {"pool", "phase", "norm_region", "operation", "round_mode", "variance_norm", "engine", "backend",
                "normalization"}
_SCALAR_FIELDS = _INT_FIELDS | _FLOAT_FIELDS | _BOOL_FIELDS | _STRING_FIELDS | _ENUM_FIELDS


_FLOAT32_MAX = 3.4028234663852886e38  # Caffe's float fields are 32-bit


def _int_limit(name: str) -> int:
    """Integers of field ``name`` lie in [-limit, limit): BlobShape.dim is int64, the rest 32-bit."""
    return 2**63 if name == "dim" else 2**31


def _is_finite_float32(value: float) -> bool:
    try:
        return math.isfinite(float(value)) and abs(float(value)) <= _FLOAT32_MAX
    except OverflowError:  # an integer too large for a float
        return False


def _scalar_problem(name: str, value: Scalar) -> str | None:
    """What is wrong with ``value`` for field ``name``, or None."""
    if name in _INT_FIELDS:
        if value.kind != "number" or not isinstance(value.value, int):
            return "an integer"
        limit = _int_limit(name)
        return None if -limit <= value.value < limit else f"an integer from {-limit} to {limit - 1}"
    if name in _FLOAT_FIELDS:
        if value.kind != "number":
            return "a number"
        return None if _is_finite_float32(value.value) else "a finite 32-bit float (at most 3.4e38 in size)"
    if name in _BOOL_FIELDS:
        ok = value.kind == "ident" and value.value in ("true", "false", "True", "False", "t", "f") or \
            value.kind == "number" and value.value in (0, 1)
        return None if ok else "true or false"
    if name in _STRING_FIELDS:
        return None if value.kind == "string" else 'a "string"'
    if name in _ENUM_FIELDS:
        return None if value.kind == "ident" else "a name such as MAX"
    return None


def _check_schema(message: Message, kind: str, sink: DiagnosticSink) -> None:
    allowed = _SCHEMA.get(kind)
    for f in message.fields:
        if allowed is not None and f.name not in allowed:
            where = "the net" if kind == "net" else kind
            sink.error(f"unknown field '{f.name}' in {where}", f.span,
                       expected=", ".join(sorted(allowed)), hint="alexdsl import caffe does not support it")
            continue
        if isinstance(f.value, Message):
            if f.name == "layers":  # legacy V1: reported once by the importer
                continue
            if f.name in _SCALAR_FIELDS:
                sink.error(f"field '{f.name}' takes a value, not a message", f.span)
                continue
            _check_schema(f.value, f.name, sink)
            continue
        values = f.value if isinstance(f.value, list) else [f.value]
        if f.name not in _SCALAR_FIELDS:
            sink.error(f"field '{f.name}' is a message: write {f.name} {{ ... }}", f.span)
            continue
        for value in values:
            problem = _scalar_problem(f.name, value)
            if problem is not None:
                sink.error(f"field '{f.name}' expects {problem}", value.span, received=value.text)


# the importer --------------------------------------------------------------------------------------
@dataclass
class _Node:
    """One alexdsl layer to be written."""

    name: str
    op: str
    args: list[Any]  # what its converter returned: values (positional), then ast.Arg keywords
    inputs: list[str]  # node names
    phase: str | None
    caffe: Message
    origin: Span  # the prototxt's 'layer' field it came from
    params: dict[str, dict[str, ast.Value]] = field(default_factory=dict)  # weight/bias -> filler/lr/decay
    consumers: int = 0
    filler_section: str | None = None  # the *_param message its fillers came from


def _op(name: str) -> OpDef:
    op = lookup(name)
    assert op is not None, name
    return op


def _num(s: Scalar | None, default: Any = None) -> Any:
    return s.value if s is not None else default


def _literal(s: Scalar) -> ast.Literal:
    """A number as the prototxt spells it: ``1e-4`` stays ``1e-4``."""
    return number(s.value, s.text)


_T = TypeVar("_T")


def _most_common(items: Iterable[_T]) -> tuple[_T, int] | None:
    """The item found most often and its count (the first found among equals), or None when there are none."""
    counted: list[list[Any]] = []
    for item in items:
        found = next((entry for entry in counted if entry[0] == item), None)
        if found is None:
            counted.append([item, 1])
        else:
            found[1] += 1
    return tuple(max(counted, key=lambda entry: entry[1])) if counted else None  # type: ignore[return-value]


def _keyword(args: list[Any], keyword: str) -> ast.Value | None:
    """The value of ``keyword=`` among a converter's arguments, or None."""
    return next((a.value for a in args if isinstance(a, ast.Arg) and a.keyword == keyword), None)


def _is_true(s: Scalar | None) -> bool | None:
    if s is None:
        return None
    return str(s.value).lower() in ("true", "1")


class CaffeImporter:
    """A prototxt's layers to alexdsl source; what the ops' converters see
    (:class:`~alexdsl.ops.contexts.CaffeImportContext`)."""

    def __init__(self, net: Message, file: str, text: str):
        self.net = net
        self.file = file
        self.text = text
        self.importers = caffe_importers()  # Caffe layer type -> the converter of the op that imports it
        self.sink = DiagnosticSink()
        self.inputs: list[tuple[str, tuple[int, ...] | None, Span]] = []  # blob name, shape (C,H,W) or None
        self.preprocess: dict[str, dict[str, Any]] = {}
        self.nodes: list[_Node] = []
        self.by_name: dict[str, _Node] = {}
        self.blob: dict[str, str] = {}  # Caffe blob -> node or input name producing it now
        self.used_names: set[str] = set()
        self.label_blobs: set[str] = set()  # blobs read as the label of a loss or metric
        self.unavailable: set[str] = set()  # blobs whose producer failed or is missing, already reported

    # names -----------------------------------------------------------------------------------
    def _alex_name(self, caffe_name: str) -> str:
        base = as_name(caffe_name)
        name, i = base, 2
        while name in self.used_names:
            name, i = f"{base}_{i}", i + 1
        self.used_names.add(name)
        return name

    def error(self, message: str, span: Span | None, **extra: Any) -> None:
        self.sink.error(message, span, **extra)

    # inputs ----------------------------------------------------------------------------------
    def _declare_input(self, blob: str, dims: list[int], span: Span) -> None:
        if blob in self.blob:
            return
        shape = tuple(dims[1:]) if len(dims) == 4 else (tuple(dims) if len(dims) == 3 else None)
        if shape is None and len(dims) not in (0, 1, 2):
            self.error(f"input '{blob}' has {len(dims)} dimensions; expected N x C x H x W", span)
        name = self._alex_name(blob)
        self.inputs.append((name, shape, span))
        self.blob[blob] = name

    def deploy_inputs(self) -> None:
        names = self.net.scalars("input")
        shapes = self.net.all("input_shape")
        dims = [int(d.value) for d in self.net.scalars("input_dim")]
        for i, name in enumerate(names):
            if i < len(shapes) and isinstance(shapes[i].value, Message):
                shape = [int(d.value) for d in shapes[i].value.scalars("dim")]
            elif dims:
                shape = dims[4 * i: 4 * i + 4]
            else:
                shape = []
                self.error(f"input '{name.value}' has no input_shape or input_dim", name.span)
            self._declare_input(str(name.value), shape, name.span)

    # layers ----------------------------------------------------------------------------------
    def run(self) -> None:
        _check_schema(self.net, "net", self.sink)
        for legacy in self.net.all("layers"):
            self.error("legacy V1 'layers' are not supported", legacy.span,
                       hint="upgrade the file with Caffe's upgrade_net_proto_text tool, which writes 'layer'")
        if self.sink.has_errors:
            return
        self.deploy_inputs()
        layers = [f for f in self.net.all("layer") if isinstance(f.value, Message)]
        label_blobs = set()
        for f in layers:
            layer = f.value
            ltype = layer.scalar("type")
            if ltype is not None and ltype.value in ("SoftmaxWithLoss", "Accuracy"):
                bottoms = layer.scalars("bottom")
                if len(bottoms) == 2:
                    label_blobs.add(str(bottoms[1].value))
        self.label_blobs = label_blobs
        for f in layers:
            layer: Message = f.value  # type: ignore[assignment]
            self._layer(layer, f.span)
            # the tops of a layer that failed are missing too: what reads them follows from that error
            self.unavailable.update(str(t.value) for t in layer.scalars("top") if str(t.value) not in self.blob)

    def _phase(self, layer: Message) -> str | None:
        phases = []
        for inc in layer.all("include"):
            if isinstance(inc.value, Message):
                p = inc.value.scalar("phase")
                if p is not None:
                    phases.append(p)
        if layer.get("exclude") is not None:
            self.error("'exclude' rules are not supported", layer.get("exclude").span,  # type: ignore[union-attr]
                       hint="write the phase the layer runs in with include { phase: TRAIN } or TEST")
        if len(phases) > 1:
            self.error("a layer included in several phases is not supported", phases[1].span)
        if not phases:
            return None
        value = str(phases[0].value)
        if value not in ("TRAIN", "TEST"):
            self.error(f"unknown phase '{value}'", phases[0].span, expected="TRAIN or TEST")
            return None
        return value.lower()

    def _inputs(self, layer: Message) -> list[str] | None:
        """The alexdsl names a layer reads, or None when one is missing (reported once per blob)."""
        out = []
        for b in layer.scalars("bottom"):
            blob = str(b.value)
            if blob not in self.blob and blob in self.label_blobs:
                self._declare_input(blob, [], b.span)  # a loss label nobody declared: input label: class(N)
            src = self.blob.get(blob)
            if src is None:
                if blob not in self.unavailable:  # a blob of a failed layer was reported there
                    self.error(f"bottom '{blob}' is not produced by any earlier layer or input", b.span,
                               hint="declare it with input: / input_shape, or add the layer that produces it; "
                                    "the layers that depend on it are not checked")
                    self.unavailable.add(blob)
                return None
            out.append(src)
        return out

    def _layer(self, layer: Message, span: Span) -> None:
        tscalar = layer.scalar("type")
        nscalar = layer.scalar("name")
        if tscalar is None:
            self.error("layer has no type", span)
            return
        ltype = str(tscalar.value)
        caffe_name = str(nscalar.value) if nscalar is not None else ltype.lower()
        if ltype not in self.importers and ltype not in (*DATA_TYPES, SCALE):
            self.error(f"unknown layer type '{ltype}' (layer '{caffe_name}')", tscalar.span,
                       expected=", ".join(layer_types()))
            return
        tops = [str(t.value) for t in layer.scalars("top")]
        phase = self._phase(layer)
        if ltype in DATA_TYPES:
            self._data_layer(layer, ltype, tops, span)
            return
        inputs = self._inputs(layer)
        if inputs is None:
            return
        target = self.by_name.get(inputs[0]) if ltype == SCALE and inputs else None
        after_batchnorm = target is not None and "BatchNorm" in _op(target.op).lower.from_caffe \
            and "_scaled" not in target.params
        if ltype == SCALE and (after_batchnorm or ltype not in self.importers):
            if not after_batchnorm:
                self.error("a Scale layer is supported only right after a BatchNorm layer (-> batchnorm)",
                           tscalar.span)
                return
            sp = layer.message("scale_param")
            if sp is not None and _is_true(sp.scalar("bias_term")) is False:
                self.error("Scale without a bias is not supported (alexdsl's batchnorm has a shift)",
                           sp.get("bias_term").span)  # type: ignore[union-attr]
                return
            target.params["_scaled"] = {}
            self._params(layer, target, ("weight", "bias"), sp, "filler")
            for t in tops:
                self.blob[t] = target.name
            return
        converted = self.importers[ltype](layer, caffe_name, self)
        if converted is None:
            return
        parts = converted if isinstance(converted, list) else [converted]  # a list: one layer per top (Slice)
        op = parts[0][0]
        lo, hi = _op(op).inputs
        if len(inputs) < lo or (hi is not None and len(inputs) > hi):
            self.error(f"{ltype} layer '{caffe_name}' has {len(inputs)} bottoms; expected "
                       f"{lo if lo == hi else f'at least {lo}'}", span)
            return
        if len(tops) != len(parts):
            self.error(f"layer '{caffe_name}' has {len(tops)} tops; alexdsl layers have one output", span)
            return
        for top, (op, args, section) in zip(tops, parts):
            node = _Node(self._alex_name(caffe_name if len(parts) == 1 else top), op, args, inputs, phase, layer,
                         span)
            if section is not None:  # the fillers are in the layer's own *_param section
                node.filler_section = section
                self._params(layer, node, ("weight", "bias"), layer.message(section), None)
            for src in inputs:
                if src in self.by_name:
                    self.by_name[src].consumers += 1
            self.nodes.append(node)
            self.by_name[node.name] = node
            self.blob[top] = node.name

    def _params(self, layer: Message, node: _Node, kinds: tuple[str, ...], pmsg: Message | None,
                filler_field: str | None) -> None:
        for kind, param in zip(kinds, layer.all("param")):
            if not isinstance(param.value, Message):
                continue
            entry = node.params.setdefault(kind, {})
            lr, decay = param.value.scalar("lr_mult"), param.value.scalar("decay_mult")
            entry["lr"] = _literal(lr) if lr is not None else number(1)
            entry["decay"] = _literal(decay) if decay is not None else number(1)
        if pmsg is None:
            return
        for kind in kinds:
            fname = (filler_field if kind == "weight" and filler_field else f"{kind}_filler")
            message = pmsg.message(fname)
            if message is None and kind == "weight":  # PReLU's and Scale's one filler is 'filler'
                message = pmsg.message("filler")
            if message is not None:
                built = self._filler(message)
                if built is not None:
                    node.params.setdefault(kind, {})["filler"] = built

    def _filler(self, message: Message) -> ast.Call | None:
        ftype = message.scalar("type")
        kind = str(ftype.value) if ftype is not None else "constant"

        def setting(key: str, default: int) -> ast.Literal:
            found = message.scalar(key)
            return _literal(found) if found is not None else number(default)

        if kind == "constant":
            return filler("constant", setting("value", 0))
        if kind == "gaussian":
            mean = message.scalar("mean")
            if mean is not None and mean.value != 0:
                return filler("gaussian", setting("std", 1), mean=_literal(mean))
            return filler("gaussian", setting("std", 1))
        if kind == "uniform":
            return filler("uniform", setting("min", 0), setting("max", 1))
        if kind in ("xavier", "msra"):
            norm = message.scalar("variance_norm")
            value = str(norm.value).lower() if norm is not None else "fan_in"
            if value not in ("fan_in", "fan_out", "average"):
                self.error(f"unknown variance_norm '{norm.value}'", norm.span)  # type: ignore[union-attr]
                return None
            return filler(kind) if value == "fan_in" else filler(kind, value)
        self.error(f"filler type '{kind}' is not supported", ftype.span if ftype else filler.span,
                   expected="constant, gaussian, uniform, xavier, msra")
        return None

    def _data_layer(self, layer: Message, ltype: str, tops: list[str], span: Span) -> None:
        if ltype == "Input":
            ip = layer.message("input_param")
            shapes = ip.all("shape") if ip is not None else []
            for i, top in enumerate(tops):
                shape_field = shapes[min(i, len(shapes) - 1)] if shapes else None
                dims = [int(d.value) for d in shape_field.value.scalars("dim")] \
                    if shape_field is not None and isinstance(shape_field.value, Message) else []
                if not dims and top not in self.label_blobs:
                    self.error(f"Input layer top '{top}' has no shape", span)
                self._declare_input(top, dims, span)
            return
        tp = layer.message("transform_param")
        crop = tp.scalar("crop_size") if tp is not None else None
        means = tp.scalars("mean_value") if tp is not None else []
        if ltype == "MemoryData":
            mp = layer.message("memory_data_param")
            dims = [1] + [int(_num(mp.scalar(k), 0)) for k in ("channels", "height", "width")] if mp else []
        elif crop is not None:
            channels = len(means) if len(means) > 1 else 3
            dims = [1, channels, int(crop.value), int(crop.value)]
        else:
            dims = []
        for i, top in enumerate(tops):
            if i == 0:
                if top not in self.blob and not dims:
                    self.error(f"{ltype} layer: the size of '{top}' is unknown (no crop_size)", span,
                               hint="add transform_param { crop_size: ... }, or declare the input with "
                                    "input: / input_shape instead")
                    return
                self._declare_input(top, dims, span)
                if tp is not None:
                    self._preprocess(self.blob[top], tp)
            else:
                self._declare_input(top, [], span)

    def _preprocess(self, name: str, tp: Message) -> None:
        settings = self.preprocess.setdefault(name, {})
        if tp.get("mean_file") is not None:
            self.error("transform_param mean_file is not supported", tp.get("mean_file").span,  # type: ignore
                       hint="write the per-channel means with mean_value")
            return
        crop = tp.scalar("crop_size")
        if crop is not None:
            settings.setdefault("crop", _literal(crop))
        if _is_true(tp.scalar("mirror")):
            settings.setdefault("mirror", True)
        means = [_literal(m) for m in tp.scalars("mean_value")]
        if means:
            settings.setdefault("mean", means[0] if len(means) == 1 else means)
        scale = tp.scalar("scale")
        if scale is not None:
            settings.setdefault("scale", _literal(scale))

    # per-type conversion -----------------------------------------------------------------------
    def pair(self, p: Message, name: str, default: int | None) -> int | tuple[int, int] | None:
        """``name`` of ``p`` (``kernel_size``, or ``name_h``/``name_w``): ``3`` or ``(3, 5)``; ``default``
        when absent."""
        h, w = p.scalar(f"{name}_h"), p.scalar(f"{name}_w")
        if h is not None or w is not None:
            hv = int(_num(h, default)) if h is not None or default is not None else None
            wv = int(_num(w, default)) if w is not None or default is not None else None
            if hv is None or wv is None:
                given, missing = (f"{name}_h", f"{name}_w") if wv is None else (f"{name}_w", f"{name}_h")
                self.error(f"{given} is given without {missing}", (h or w).span)  # type: ignore[union-attr]
                return None
            return hv if hv == wv else (hv, wv)
        values = [int(v.value) for v in p.scalars(name if name != "kernel" else "kernel_size")]
        if not values:
            return default
        if len(values) == 1:
            return values[0]
        if len(values) == 2:
            return values[0] if values[0] == values[1] else (values[0], values[1])
        self.error(f"{name} has {len(values)} values; only 2-D layers are supported", p.span)
        return None

    # the context the ops' Caffe converters see (alexdsl.ops.lowering.Lowerings.from_caffe) --------
    @staticmethod
    def section(layer: Message, name: str) -> Message:
        """``layer``'s ``name`` message, or an empty one."""
        return layer.message(name) or Message([], layer.span)

    is_true = staticmethod(_is_true)
    literal = staticmethod(_literal)
    arg = staticmethod(arg)

    # writing -------------------------------------------------------------------------------------
    def _defaults(self) -> tuple[list[tuple[str, dict[str, ast.Value]]], dict[str, dict[str, dict[str, ast.Value]]]]:
        """``defaults`` statements (target, settings) for what two or more layers share, and what
        each layer then need not say: op (``*`` for every op) -> weight/bias -> filler/lr/decay."""
        statements: list[tuple[str, dict[str, ast.Value]]] = []
        effective: dict[str, dict[str, dict[str, ast.Value]]] = {}
        for kind in ("weight", "bias"):
            for key in ("lr", "decay"):
                found = _most_common(n.params[kind][key] for n in self.nodes
                                     if kind in n.params and key in n.params[kind])
                if found is not None:
                    multiplier, count = found
                    if count >= 2 and multiplier.value != 1:  # type: ignore[union-attr]
                        effective.setdefault("*", {}).setdefault(kind, {})[key] = multiplier
            shared = effective.get("*", {}).get(kind, {})
            if shared:
                statements.append((kind, {k: shared[k] for k in ("lr", "decay") if k in shared}))
        for op in dict.fromkeys(n.op for n in self.nodes if n.filler_section):
            nodes = [n for n in self.nodes if n.op == op]
            fillers: dict[str, ast.Value] = {}
            for kind in ("weight", "bias"):
                found = _most_common(n.params[kind]["filler"] for n in nodes if "filler" in n.params.get(kind, {}))
                if found is not None and found[1] >= 2:
                    effective.setdefault(op, {}).setdefault(kind, {})["filler"] = found[0]
                    fillers[kind] = found[0]
            if fillers:
                statements.append((op, fillers))
        return statements, effective

    def _call(self, node: _Node, effective: dict[str, dict[str, dict[str, ast.Value]]], refs: list[str]) -> ast.Call:
        """The node's op with its arguments: ``refs`` (the inputs of a multi-input op), what its
        converter gave, then the fillers and multipliers its ``defaults`` do not say."""
        extra: list[ast.Arg] = []
        bias = _keyword(node.args, "bias")
        no_bias = isinstance(bias, ast.Literal) and bias.value is False
        for kind in ("weight", "bias"):
            entry = node.params.get(kind, {})
            if "filler" in entry and entry["filler"] != effective.get(node.op, {}).get(kind, {}).get("filler"):
                if not (kind == "bias" and no_bias):
                    extra.append(arg(entry["filler"], kind))
            for key in ("lr", "decay"):
                if key not in entry:
                    continue
                default = effective.get("*", {}).get(kind, {}).get(key, number(1))
                if entry[key].value != default.value:  # type: ignore[union-attr]
                    extra.append(arg(entry[key], f"{kind}_{key}"))
        return call(node.op, *refs, *node.args, *extra)

    def module(self, network_name: str) -> ModuleBuilder:
        """The network as a syntax tree, each statement and link with the prototxt field it came from; each label's
        class count is deferred to the shape pass (the width of the logits it is compared with)."""
        out = ModuleBuilder(self.file + ".adsl")
        out.comment("# Imported from a Caffe prototxt by alexdsl import caffe.")
        out.network(network_name)
        out.blank()
        labels = {self.blob.get(b) for b in self.label_blobs}
        for name, shape, span in self.inputs:
            if shape is None or name in labels:
                out.class_input(name, None, origin=span)
            else:
                out.input(name, shape, origin=span)
        for name, settings in self.preprocess.items():
            if settings:
                out.preprocess(name, settings)
        out.blank()
        defaults, effective = self._defaults()
        for target, settings in defaults:  # an error in one points at the first layer that shares it
            first = next((n.origin for n in self.nodes if n.op == target or target in n.params), None)
            out.defaults(target, origin=first, **settings)
        out.blank()
        data_inputs = [n for n, shape, _ in self.inputs if shape is not None and n not in labels]
        prev = data_inputs[0] if data_inputs else None
        statements: list[tuple[str, str | None, list[_Node]]] = []  # label, phase, the nodes it chains
        for node in self.nodes:
            opdef = _op(node.op)
            starts = bool(opdef.default_fillers) or opdef.inputs != (1, 1)  # a layer with parameters starts one
            last = statements[-1] if statements else None
            if (last is not None and not starts and len(node.inputs) == 1 and node.inputs[0] == last[2][-1].name
                    and self.by_name[node.inputs[0]].consumers == 1 and last[1] == node.phase):
                last[2].append(node)
                continue
            statements.append((node.name, node.phase, [node]))
        tail_of: dict[str, str] = {}  # node -> the name that refers to it
        for label, phase, links in statements:
            first = links[0]
            refs = [tail_of.get(src, src) for src in first.inputs]
            multi = _op(first.op).inputs != (1, 1)
            sources = refs[:1] if not multi and refs and refs[0] != prev else []
            chain: list[tuple[str | None, ast.Call]] = [(None, self._call(first, effective, refs if multi else []))]
            chain += [(link.name, self._call(link, effective, [])) for link in links[1:]]
            for link in links:
                tail_of[link.name] = link.name
            tail_of[links[-1].name] = label
            prev = label
            out.layer(label, chain, sources, phase, origin=[link.origin for link in links])
        return out

    def build(self, builder: ModuleBuilder) -> Network:
        """The network ``builder`` holds, elaborated and checked; an error points into the prototxt."""
        try:
            return network_from_module(builder.module(), {self.file: self.text},
                                       deferred_labels=builder.deferred_labels)
        except AlexDSLError as error:  # a bug here, or a value no layer takes (absurd input dims)
            located = builder.locate(error)
            raise AlexDSLError([Diagnostic("error", "the imported network does not check:")] + located.diagnostics,
                               sources=located.sources) from None


def _network_name(net: Message, file: str) -> str:
    name = net.scalar("name")
    raw = str(name.value) if name is not None else file.rsplit("/", 1)[-1].split(".", 1)[0]
    return as_name(raw, "Imported", dotted=False)


def import_prototxt(text: str, file: str = "<string>") -> str:
    """Translate a Caffe prototxt (NetParameter text) into alexdsl source.

    The layers are built as a syntax tree, elaborated and checked, and printed once. Raises
    :class:`AlexDSLError` for syntax errors, for anything not supported and for a network that
    does not check, each located in the prototxt.
    """
    with gc_paused():  # many small objects that all stay alive: collections would make it quadratic
        net = parse_prototxt(text, file)
        importer = CaffeImporter(net, file, text)
        importer.run()
        if importer.sink.has_errors:
            diagnostics = sorted(importer.sink.diagnostics,
                                 key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))
            raise AlexDSLError(diagnostics, sources={file: text})
        builder = importer.module(_network_name(net, file))
        network = importer.build(builder)
        builder.resolve_labels({label: network.layer(label).attrs["classes"] for label in builder.deferred_labels})
        return builder.text()  # the one printer lays it out: it passes fmt --check
