"""Reading the IR's versioned JSON, which other tools read and write (:meth:`Network.to_json` writes it).

The schema is documented in docs/ir.md. ``from_json(net.to_json())`` gives an equal graph.

Reading is a trust boundary: an IR file may come from anyone. :func:`read_ir` checks every
field against the schema and the op registry (types, names, arguments and their ranges,
fillers, settings); the front end (:func:`alexdsl.frontend.network_from_json`) then runs the
same checks as for source, recomputing every shape, parameter, buffer and MAC count, and
compares them with the file. Every problem is reported, located by its JSON path
(``layers[3].shape[1]``).

>>> import alexdsl
>>> net = alexdsl.parse("network T\\ninput x: 3x8x8\\nc: conv(2, 3)\\n")
>>> again = alexdsl.from_json(net.to_json())
>>> again.shapes == net.shapes and again.totals() == net.totals()
True
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import networkx as nx

from alexdsl.errors import MAX_DIAGNOSTICS_PER_FILE, AlexDSLError, Diagnostic, DiagnosticSink, Span, did_you_mean
from alexdsl.ir.network import FORMAT, VERSION, Layer, add_layers, layer_of
from alexdsl.limits import MAX_INTS, MAX_SHAPE_RANK, MAX_SIZES, MAX_STRING_LENGTH
from alexdsl.ops.registry import FILLERS, REQUIRED, VARIANCE_NORMS, Arg, Filler, OpDef, format_shape, lookup, op_names
from alexdsl.settings import PREPROCESS_KEYS, SOLVER_KEYS, convert_setting

PHASES = ("all", "train", "test")
MAX_NAME_LENGTH = 256
MAX_DIM = 2**31 - 1  # any one dimension, channel count, kernel size or stride
MAX_RANK = 8
MAX_INT = 2**63 - 1  # the largest integer a number field holds, as in source
NETWORK_NAME = re.compile(r"[^\x00-\x1f\x7f]+")  # any printable text: generated code sanitizes it
MAX_INT_DIGITS = 640  # longer JSON integers are refused unconverted (the least limit Python's str -> int can have)
MAX_DEPTH = 32  # nesting of arrays and objects (the schema needs 6)
_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # a JSON string, or a bracket outside one


# ------------------------------------------------------------------------------------ reading


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite float, or an int that a float holds (JSON integers may have any number of digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= MAX_INT if isinstance(value, int) else math.isfinite(value)


def _show(value: Any) -> str:
    """A short, safe rendering of a received JSON value for a message."""
    text = json.dumps(value, allow_nan=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class _Reader:
    """Checks one IR dict field by field, recording every problem with its JSON path."""

    def __init__(self, file: str, unreadable: list[Diagnostic]):
        self.file = file
        self.sink = DiagnosticSink(list(unreadable))
        self.reported = {d.path for d in unreadable}  # values already reported as unreadable (now null)

    def error(self, path: str, message: str, **extra: str | None) -> None:
        where = f"{self.file}:{path}"
        if where not in self.reported:
            self.sink.diagnostics.append(Diagnostic("error", message, path=where, **extra))

    # scalars -------------------------------------------------------------------------------
    def field(self, data: dict[str, Any], key: str, path: str, check: Callable[[Any], bool], expected: str,
              default: Any = REQUIRED) -> Any:
        if key not in data:
            if default is REQUIRED:
                self.error(f"{path}.{key}" if path else key, f"missing field '{key}'", expected=expected)
                return None
            return default
        value = data[key]
        if not check(value):
            self.error(f"{path}.{key}" if path else key, f"field '{key}' has the wrong type or value",
                       expected=expected, received=_show(value))
            return default if default is not REQUIRED else None
        return value

    def shape(self, value: Any, path: str, *, allow_scalar: bool = True) -> tuple[int, ...] | None:
        if not isinstance(value, list) or len(value) > MAX_RANK or (not value and not allow_scalar):
            self.error(path, "a shape must be a list of positive integers", received=_show(value),
                       expected=f"a list of at most {MAX_RANK} integers, such as [96, 55, 55]")
            return None
        ok = True
        for i, dim in enumerate(value):
            if not _is_int(dim) or not 1 <= dim <= MAX_DIM:
                self.error(f"{path}[{i}]", "a dimension must be a positive integer", received=_show(dim),
                           expected=f"an integer from 1 to {MAX_DIM}")
                ok = False
        return tuple(value) if ok else None

    def name(self, value: Any, path: str, what: str) -> str | None:
        """A name that source could spell: the round trip IR -> source -> IR keeps every layer."""
        from alexdsl.syntax.build import is_name

        if not is_name(value) or len(value) > MAX_NAME_LENGTH:
            self.error(path, f"{what} is not a valid name", received=_show(value),
                       expected="letters, digits and '_' in dot-separated parts, not starting with a digit and "
                                "not a keyword (such as layer2.0.conv1)")
            return None
        return value

    # op arguments ----------------------------------------------------------------------------
    def arg_value(self, op: OpDef, arg: Arg, value: Any, path: str) -> Any:
        def bad() -> None:
            words = {"int": "an integer", "float": "a finite number", "bool": "true or false",
                     "pair": "a list of two integers", "choice": "one of " + ", ".join(arg.choices),
                     "bias": "true or false",
                     "shape": f"a list of 1 to {MAX_SHAPE_RANK} integers from 1 to {MAX_DIM}, such as [1, 197, 768]",
                     "ints": f"a list of 1 to {MAX_INTS} integers, such as [0, 2, 1]",
                     "string": f"a string of at most {MAX_STRING_LENGTH} characters",
                     "sizes": f"a list of at most {MAX_SIZES} [name, size] pairs, such as [[\"p\", 16]]"}[arg.kind]
            self.error(path, f"argument '{arg.name}' of {op.name} has the wrong type", expected=words,
                       received=_show(value))

        def in_range(number: float) -> bool:
            low = arg.min if arg.min is not None else (-MAX_DIM if arg.kind in ("int", "pair", "ints") else None)
            high = arg.max if arg.max is not None else (MAX_DIM if arg.kind in ("int", "pair", "ints") else None)
            if (low is not None and number < low) or (high is not None and number > high):
                self.error(path, f"argument '{arg.name}' of {op.name} is out of range", received=_show(number),
                           expected=f"a value from {low:g} to {high:g}" if low is not None and high is not None
                           else (f"at least {low:g}" if low is not None else f"at most {high:g}"))
                return False
            return True

        if value is None and arg.default is None:  # an optional argument left unset (pool's stride, sdpa's scale)
            return None
        if arg.kind == "int":
            return value if _is_int(value) and in_range(value) else bad() if not _is_int(value) else None
        if arg.kind == "float":
            return float(value) if _is_number(value) and in_range(value) else bad() if not _is_number(value) else None
        if arg.kind in ("bool", "bias"):
            return value if isinstance(value, bool) else bad()
        if arg.kind == "choice":
            if isinstance(value, str) and value in arg.choices:
                return value
            return bad()
        if arg.kind == "pair":
            if isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value):
                return tuple(value) if all(in_range(v) for v in value) else None
            return bad()
        if arg.kind == "shape":
            if isinstance(value, list) and 1 <= len(value) <= MAX_SHAPE_RANK and all(
                    _is_int(v) and 1 <= v <= MAX_DIM for v in value):
                return tuple(value)
            return bad()
        if arg.kind == "ints":
            if isinstance(value, list) and 1 <= len(value) <= MAX_INTS and all(_is_int(v) for v in value):
                return tuple(value) if all(in_range(v) for v in value) else None
            return bad()
        if arg.kind == "string":
            if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
                self.error(path, f"argument '{arg.name}' of {op.name} is too long",
                           expected=f"at most {MAX_STRING_LENGTH:,} characters", received=f"{len(value):,} characters")
                return None
            return value if isinstance(value, str) else bad()
        if arg.kind == "sizes":
            return self.sizes(op, value, path) if isinstance(value, list) and len(value) <= MAX_SIZES else bad()
        raise AssertionError(arg.kind)

    def sizes(self, op: OpDef, value: list[Any], path: str) -> tuple[tuple[str, int], ...] | None:
        """A sizes argument's [name, size] pairs: each name one source could write as a keyword that the op does
        not otherwise take, once; each size an integer from 1."""
        taken = set(op.arg_names) | {f"{k}{s}" for k in op.param_kinds() for s in ("", "_lr", "_decay")}
        out: list[tuple[str, int]] = []
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            if not (isinstance(item, list) and len(item) == 2 and _is_int(item[1]) and 1 <= item[1] <= MAX_DIM):
                self.error(where, f"a size of {op.name} must be a [name, size] pair", received=_show(item),
                           expected=f"a name and an integer from 1 to {MAX_DIM}, such as [\"p\", 16]")
                return None
            key = self.name(item[0], f"{where}[0]", "the size's name")
            if key is None:
                return None
            if key in taken or "." in key:
                again = any(key == k for k, _ in out)
                self.error(f"{where}[0]", f"size '{key}' of {op.name} is given twice" if again
                           else f"size '{key}' of {op.name} cannot be written as a keyword",
                           expected="each name once" if again
                           else "a name without dots that is not an argument of " + op.name,
                           received=_show(key))
                return None
            taken.add(key)
            out.append((key, item[1]))
        return tuple(out)

    def attrs(self, op: OpDef, value: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(path, "attrs must be an object", received=_show(value))
            return None
        attrs: dict[str, Any] = {}
        ok = True
        for key in value:
            if op.arg(key) is None:  # a sizes argument's keywords are inside it: {"sizes": [["p", 16]]}
                self.error(f"{path}.{key}", f"unknown argument '{key}' for {op.name}",
                           expected=", ".join(op.arg_names) or f"{op.name} takes no arguments",
                           hint=did_you_mean(str(key), op.arg_names))
                ok = False
        for arg in op.args:
            if arg.name not in value:
                if arg.default is REQUIRED:
                    self.error(path, f"{op.name} is missing required argument '{arg.name}'", expected=op.example)
                    ok = False
                    continue
                attrs[arg.name] = arg.attr_default
                continue
            converted = self.arg_value(op, arg, value[arg.name], f"{path}.{arg.name}")
            if converted is None and not (arg.default is None and value[arg.name] is None):
                ok = False
            attrs[arg.name] = converted
        if not ok:
            return None
        return op.normalize(attrs) if op.normalize is not None else attrs

    # parameters ------------------------------------------------------------------------------
    def filler(self, value: Any, path: str) -> Filler | None:
        if not isinstance(value, dict) or not isinstance(value.get("type"), str) or value["type"] not in FILLERS:
            kind = value.get("type") if isinstance(value, dict) else None
            self.error(path, "unknown or missing filler", expected=", ".join(FILLERS), received=_show(value),
                       hint=did_you_mean(str(kind), FILLERS) if isinstance(kind, str) else None)
            return None
        spec = FILLERS[value["type"]]
        names = [n for n, _ in spec]
        bound: dict[str, Any] = {}
        for key, item in value.items():
            if key == "type":
                continue
            if key not in names:
                self.error(f"{path}.{key}", f"unknown argument '{key}' for filler {value['type']}",
                           expected=", ".join(names), hint=did_you_mean(str(key), names))
                return None
            if key == "variance_norm":
                if item not in VARIANCE_NORMS:
                    self.error(f"{path}.{key}", "unknown variance_norm", expected=", ".join(VARIANCE_NORMS),
                               received=_show(item))
                    return None
                bound[key] = item
            elif _is_number(item):
                bound[key] = float(item)
            else:
                self.error(f"{path}.{key}", f"filler argument '{key}' must be a finite number",
                           received=_show(item))
                return None
        if value["type"] == "gaussian" and bound.get("std", 1.0) < 0:
            self.error(f"{path}.std", "gaussian std must not be negative", received=_show(bound["std"]))
            return None
        return Filler(value["type"], tuple((n, bound.get(n, default)) for n, default in spec))

    def param_config(self, op: OpDef, value: Any, path: str) -> dict[str, dict[str, Any]] | None:
        if not isinstance(value, dict):
            self.error(path, "params must be an object", received=_show(value))
            return None
        config: dict[str, dict[str, Any]] = {}
        ok = True
        for pname, spec in value.items():
            where = f"{path}.{pname}"
            if pname not in op.param_kinds():
                self.error(where, f"{op.name} has no parameter '{pname}'",
                           expected=", ".join(op.param_kinds()) or f"{op.name} has no parameters")
                ok = False
                continue
            if not isinstance(spec, dict):
                self.error(where, "a parameter must be an object", received=_show(spec))
                ok = False
                continue
            filler = self.filler(spec.get("filler"), f"{where}.filler")
            lr = self.field(spec, "lr_mult", where, lambda v: _is_number(v) and v >= 0, "a non-negative number",
                            default=1.0)
            decay = self.field(spec, "decay_mult", where, lambda v: _is_number(v) and v >= 0,
                               "a non-negative number", default=1.0)
            if filler is None or lr is None or decay is None:
                ok = False
                continue
            config[pname] = {"filler": filler, "lr": float(lr), "decay": float(decay)}
        return config if ok else None

    def settings(self, value: Any, path: str, keys: dict[str, tuple[str, tuple[str, ...]]]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.error(path, "settings must be an object", received=_show(value))
            return {}
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key not in keys:
                self.error(f"{path}.{key}", f"unknown setting '{key}'", expected=", ".join(keys),
                           hint=did_you_mean(str(key), keys))
                continue
            kind, choices = keys[key]
            plain = tuple(item) if isinstance(item, list) and kind in ("pair", "ints", "floats") else item
            if any(_is_int(n) and not _is_number(n) for n in (plain if isinstance(plain, tuple) else (plain,))):
                self.error(f"{path}.{key}", f"setting '{key}' is out of range", received=_show(item),
                           expected=f"a number of at most {MAX_INT}")
                continue
            converted = convert_setting(kind, choices, plain)
            numbers = converted if isinstance(converted, (list, tuple)) else [converted]
            if converted is None or any(isinstance(n, float) and not math.isfinite(n) for n in numbers) or any(
                    _is_int(n) and abs(n) > MAX_DIM for n in numbers):
                self.error(f"{path}.{key}", f"setting '{key}' has the wrong type or value", received=_show(item),
                           expected={"choice": "one of " + ", ".join(choices)}.get(kind, f"a value of kind {kind}"))
                continue
            out[key] = list(converted) if kind == "pair" else converted
        return out


def _span(value: Any) -> Span | None:
    """A span from the file when it is well formed; anything else is dropped (it is informative)."""
    if isinstance(value, list) and len(value) == 5 and isinstance(value[0], str) and len(value[0]) <= 4096 \
            and all(_is_int(v) and 0 <= v <= MAX_DIM for v in value[1:]):
        return Span.from_json(value)
    return None


@dataclass
class IRFile:
    """An IR file whose form is checked: the graph (shapes of inputs only) and what the file claims.

    :func:`alexdsl.frontend.network_from_json` runs the shape pass on ``graph`` as it does for
    source, then :meth:`compare` checks the file's claims against what the pass computed.
    """

    reader: _Reader
    name: str
    description: str
    source: str | None
    solver: dict[str, Any]
    preprocess: dict[str, dict[str, Any]]
    inputs: list[str]
    outputs: list[str]
    graph: nx.DiGraph
    declared: dict[str, dict[str, Any]]  # layer -> what the file says it computes
    index: dict[str, int]  # layer -> its position in the file's layers list

    def locate(self, layer: str) -> str:
        return f"{self.reader.file}:layers[{self.index[layer]}]" if layer in self.index else self.reader.file

    def compare(self, order: list[str]) -> None:
        """Record an error for every shape, parameter, buffer or MAC count the file gets wrong."""
        for name in order:
            _compare(self.reader, layer_of(self.graph, name), self.declared[name], f"layers[{self.index[name]}]")


def read_ir(text: str, file: str = "<json>") -> IRFile:
    """Parse IR JSON and check its form (see the module docstring); raise every problem of form at once."""
    data, unreadable = _parse(text, file)

    if data.get("format") != FORMAT:
        raise AlexDSLError(f"{file}: error: not an alexdsl IR file (format is {_show(data.get('format'))}, "
                           f"expected {FORMAT!r})")
    if data.get("version") != VERSION:
        raise AlexDSLError(f"{file}: error: IR version {_show(data.get('version'))} is not supported; "
                           f"this alexdsl reads version {VERSION}")
    read = _Reader(file, unreadable)
    name = read.field(data, "name", "", lambda v: isinstance(v, str) and bool(NETWORK_NAME.fullmatch(v))
                      and len(v) <= MAX_NAME_LENGTH, "a network name (printable, at most 256 characters)")
    description = read.field(data, "description", "", lambda v: isinstance(v, str) and len(v) <= 65536,
                             "a string", default="")
    source = read.field(data, "source", "", lambda v: v is None or (isinstance(v, str) and len(v) <= 4096),
                        "a file name or null", default=None)
    solver = read.settings(data.get("solver", {}), "solver", SOLVER_KEYS)
    layers = read.field(data, "layers", "", lambda v: isinstance(v, list) and bool(v), "a non-empty list")
    built: dict[str, Layer] = {}  # layer name -> its layer, in file order
    index_of: dict[str, int] = {}
    declared: dict[str, dict[str, Any]] = {}  # what the file says each layer computes, to compare
    for i, layer in enumerate(layers or []):
        path = f"layers[{i}]"
        if not isinstance(layer, dict):
            read.error(path, "a layer must be an object", received=_show(layer))
            continue
        lname = read.name(layer.get("name"), f"{path}.name", "the layer name")
        if lname is not None and lname in built:
            read.error(f"{path}.name", f"duplicate layer name '{lname}'",
                       hint=f"layers[{index_of[lname]}] has the same name")
            lname = None
        op_name = layer.get("op")
        op = lookup(op_name) if isinstance(op_name, str) else None
        if op_name != "input" and op is None:
            read.error(f"{path}.op", f"unknown op {_show(op_name)}", expected="an op (" + ", ".join(op_names()) + ")",
                       hint=did_you_mean(str(op_name), op_names()))
        inputs = read.field(layer, "inputs", path, lambda v: isinstance(v, list) and all(
            isinstance(s, str) and len(s) <= MAX_NAME_LENGTH for s in v), "a list of layer names")
        phase = read.field(layer, "phase", path, lambda v: v in PHASES, "all, train or test", default="all")
        block = read.field(layer, "block", path, lambda v: v is None or (isinstance(v, str) and len(v) <= 4096),
                           "a block instance name or null", default=None)
        shape = read.shape(layer.get("shape"), f"{path}.shape")
        declared_params = layer.get("params", {})
        if op_name == "input":
            attrs = layer.get("attrs")
            if attrs == {"kind": "tensor"}:
                if shape is not None and not shape:
                    read.error(f"{path}.shape", "a tensor input needs a shape", expected="such as [3, 227, 227]")
            elif isinstance(attrs, dict) and attrs.get("kind") == "tokens":
                if not (set(attrs) == {"kind", "vocab"} and (attrs["vocab"] is None or (
                        _is_int(attrs["vocab"]) and 1 <= attrs["vocab"] <= MAX_DIM))):
                    read.error(f"{path}.attrs", "a tokens input's attrs must be {\"kind\": \"tokens\", "
                               "\"vocab\": N or null}", received=_show(attrs))
                    attrs = None
                elif shape is not None and len(shape) != 1:
                    read.error(f"{path}.shape", "a tokens input has one axis, its longest length",
                               expected="such as [1024]", received=_show(shape))
            elif not (isinstance(attrs, dict) and set(attrs) == {"kind", "classes"} and attrs["kind"] == "label"
                      and _is_int(attrs["classes"]) and 1 <= attrs["classes"] <= MAX_DIM):
                read.error(f"{path}.attrs", "an input's attrs must be {\"kind\": \"tensor\"}, "
                           "{\"kind\": \"label\", \"classes\": N} or {\"kind\": \"tokens\", \"vocab\": N or null}",
                           received=_show(attrs))
                attrs = None
            elif shape:
                read.error(f"{path}.shape", "a label input has no shape", expected="[]", received=_show(shape))
            if declared_params or layer.get("buffers"):
                read.error(path, "an input has no parameters or buffers")
            config: dict[str, dict[str, Any]] | None = {}
        elif op is not None:
            attrs = read.attrs(op, layer.get("attrs"), f"{path}.attrs")
            config = read.param_config(op, declared_params, f"{path}.params")
            if inputs is not None:
                lo, hi = op.inputs
                if len(inputs) < lo or (hi is not None and len(inputs) > hi):
                    want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
                    read.error(f"{path}.inputs", f"{op.name} takes {want} inputs, received {len(inputs)}")
                    inputs = None
        else:
            attrs, config = None, None
        if lname is None:
            continue
        index_of[lname] = i
        ok = attrs is not None and config is not None and inputs is not None and shape is not None and (
            op_name == "input" or op is not None)
        built[lname] = Layer(lname, op_name if isinstance(op_name, str) else "?", attrs or {}, list(inputs or []),
                             shape if op_name == "input" else None, phase=phase or "all", span=_span(layer.get("span")),
                             block=block, param_config=config or {}, ok=ok)
        declared[lname] = {"shape": shape, "params": declared_params, "buffers": layer.get("buffers", {}),
                           "macs": layer.get("macs")}
    for lname, built_layer in built.items():
        for position, src in enumerate(built_layer.inputs):
            if src not in built:
                read.error(f"layers[{index_of[lname]}].inputs[{position}]",
                           f"layer '{lname}' reads {_show(src)}, which is not a layer in the file",
                           hint=did_you_mean(src, built))
                built_layer.fail()
                built_layer.inputs[position] = None  # type: ignore[call-overload]
    graph = nx.DiGraph()
    add_layers(graph, built.values())
    inputs_list = _names_list(read, data, "inputs", graph, lambda n: layer_of(graph, n).is_input,
                              "a declared input (a layer with op 'input')")
    outputs_list = _names_list(read, data, "outputs", graph, lambda n: True, "a layer in the file")
    for lname, built_layer in built.items():
        if built_layer.is_input and inputs_list is not None and lname not in inputs_list:
            read.error(f"layers[{index_of[lname]}]", f"input layer '{lname}' is not listed in 'inputs'")
    preprocess: dict[str, dict[str, Any]] = {}
    raw_pre = data.get("preprocess", {})
    if not isinstance(raw_pre, dict):
        read.error("preprocess", "preprocess must be an object", received=_show(raw_pre))
    else:
        for target, settings in raw_pre.items():
            if target not in graph or not layer_of(graph, target).is_input:
                read.error(f"preprocess.{target}", f"preprocess names {_show(target)}, which is not an input")
                continue
            preprocess[target] = read.settings(settings, f"preprocess.{target}", PREPROCESS_KEYS)
    if read.sink.has_errors:
        raise AlexDSLError(read.sink.diagnostics)
    return IRFile(read, name, description, source, solver, preprocess, inputs_list or [], outputs_list or [], graph,
                  declared, index_of)


def _names_list(read: _Reader, data: dict[str, Any], key: str, graph: nx.DiGraph, allowed: Callable[[str], bool],
                what: str) -> list[str] | None:
    value = data.get(key)
    if not isinstance(value, list):
        read.error(key, f"'{key}' must be a list of layer names", received=_show(value))
        return None
    for i, item in enumerate(value):
        if not isinstance(item, str) or item not in graph or not allowed(item):
            read.error(f"{key}[{i}]", f"{_show(item)} is not {what}")
            return None
    if len(set(value)) != len(value):
        read.error(key, f"'{key}' lists a layer twice")
        return None
    return list(value)


def _compare(read: _Reader, layer: Layer, declared: dict[str, Any], path: str) -> None:
    """The file's shape, parameters, buffers and MACs must be what the shape pass computes."""
    if layer.shape != declared["shape"]:
        read.error(f"{path}.shape", "the shape in the file is not what the layer computes",
                   expected=format_shape(layer.shape), received=_show(declared["shape"]))
    params = {n: spec.shape for n, spec in layer.params.items()}
    if not isinstance(declared["params"], dict) or {n: _tuple(p.get("shape") if isinstance(p, dict) else None)
                                                    for n, p in declared["params"].items()} != params:
        read.error(f"{path}.params", "the parameters in the file are not what the layer has",
                   expected=", ".join(f"{n} {format_shape(s)}" for n, s in params.items()) or "none",
                   received=_show(declared["params"]))
    buffers = dict(layer.buffers)
    if not isinstance(declared["buffers"], dict) or {n: _tuple(s) for n, s in declared["buffers"].items()} != buffers:
        read.error(f"{path}.buffers", "the buffers in the file are not what the layer has",
                   expected=", ".join(f"{n} {format_shape(s)}" for n, s in buffers.items()) or "none",
                   received=_show(declared["buffers"]))
    if declared["macs"] is not None and declared["macs"] != layer.macs:
        read.error(f"{path}.macs", "the MAC count in the file is not what the layer computes",
                   expected=f"{layer.macs}", received=_show(declared["macs"]))


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class _Unreadable:
    """A JSON number the IR cannot hold, kept as written: NaN, Infinity, a float that overflows (``1e999``),
    or an integer of more than :data:`MAX_INT_DIGITS` digits (left unconverted: converting is slow)."""

    def __init__(self, text: str):
        self.text = text

    def diagnostic(self, where: str) -> Diagnostic:
        if self.text.lstrip("-") in ("NaN", "Infinity"):
            return Diagnostic("error", f"{self.text} is not a number (strict JSON has no NaN or Infinity)",
                              path=where, expected="a finite number")
        digits = self.text.lstrip("-")
        if digits.isdigit():
            return Diagnostic("error", f"the integer has {len(digits):,} digits", path=where,
                              received=f"{digits[:12]}...", expected=f"an integer of at most {MAX_INT_DIGITS} digits")
        return Diagnostic("error", "the number is too large for a float", path=where, received=self.text[:40],
                          expected="a finite number (at most about 1.8e308)")


def _integer(text: str) -> int | _Unreadable:
    return int(text) if len(text) <= MAX_INT_DIGITS else _Unreadable(text)


def _float(text: str) -> float | _Unreadable:
    value = float(text)
    return value if math.isfinite(value) else _Unreadable(text)


_CHECKED = {dict, list, _Unreadable}  # the value types _unreadable looks at


def _child(path: str, key: str | int) -> str:
    """The JSON path of item ``key`` of the value at ``path`` (``layers[3].shape``)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _unreadable(container: dict[str, Any] | list[Any], file: str, path: str = "", level: int = 1,
                found: list[Diagnostic] | None = None) -> list[Diagnostic]:
    """Every number in ``container`` the IR cannot hold (:class:`_Unreadable`) and every array or object nested
    deeper than :data:`MAX_DEPTH`, located by its JSON path and replaced by null, in document order. The
    checks of form then see null there, and report nothing more at that path."""
    found = [] if found is None else found
    pairs = container.items() if isinstance(container, dict) else enumerate(container)
    for key, value in [(key, value) for key, value in pairs if type(value) in _CHECKED]:
        where = _child(path, key)
        if isinstance(value, _Unreadable):
            found.append(value.diagnostic(f"{file}:{where}"))
        elif level < MAX_DEPTH:
            _unreadable(value, file, where, level + 1, found)  # recursion at most MAX_DEPTH deep
            continue
        else:
            found.append(Diagnostic("error", "the JSON is nested too deeply", path=f"{file}:{where}",
                                    expected=f"at most {MAX_DEPTH} levels of arrays and objects"))
        container[key] = None  # type: ignore[index]
    return found


def _line_column(text: str, depth: int) -> tuple[int, int]:
    """Where ``text`` first nests deeper than ``depth`` (1-based line and column), brackets in strings aside."""
    level = 0
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token in "[{":
            level += 1
            if level > depth:
                line = text.count("\n", 0, match.start()) + 1
                return line, match.start() - text.rfind("\n", 0, match.start())
        elif token in "]}":
            level -= 1
    return 1, 1


def _parse(text: str, file: str) -> tuple[dict[str, Any], list[Diagnostic]]:
    """The JSON object of an IR file and every value in it the IR cannot hold (see :func:`_unreadable`).

    JSON itself that does not parse, or nests past what the parser takes, is a located error here.
    """
    try:
        data = json.loads(text, parse_int=_integer, parse_float=_float, parse_constant=_Unreadable)
    except json.JSONDecodeError as error:
        raise AlexDSLError(f"{file}:{error.lineno}:{error.colno}: error: not valid JSON: {error.msg}") from None
    except RecursionError:
        line, column = _line_column(text, MAX_DEPTH)
        raise AlexDSLError([Diagnostic("error", "the JSON is nested too deeply", path=f"{file}:{line}:{column}",
                                       expected=f"at most {MAX_DEPTH} levels of arrays and objects")]) from None
    if not isinstance(data, dict):
        raise AlexDSLError(f"{file}: error: an IR file holds one JSON object")
    return data, _unreadable(data, file)[:MAX_DIAGNOSTICS_PER_FILE]
