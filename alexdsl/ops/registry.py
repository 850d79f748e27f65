"""The op registry: each op is declared once, with everything every pass and backend needs.

An :class:`OpDef` holds the op's typed signature (so argument checking is generated, not
hand-written), its shape rule, its parameter shapes, its MAC count, a one-line doc with an
example, its fusion pattern and its lowering to every backend and format
(:mod:`alexdsl.ops.lowering`). Backends walk the graph and ask the op; a plugin op
(:mod:`alexdsl.plugins`) is declared and registered the same way.

>>> conv = lookup("conv")
>>> conv.infer({"out": 96, "kernel": (11, 11), "stride": (4, 4), "pad": (0, 0),
...             "dilation": (1, 1), "groups": 1, "bias": True}, [(3, 227, 227)])
(96, 55, 55)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from alexdsl.ops.fillers import FILLERS, VARIANCE_NORMS, Filler  # noqa: F401 - re-exported
from alexdsl.ops.lowering import NO_LOWERINGS, Lowerings, Pattern

Shape = tuple[int, ...]
Attrs = Mapping[str, Any]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class ShapeError(Exception):
    """Raised by a shape rule; the shape pass adds the layer name and the source span.

    ``arg`` names the argument at fault (its span is used when known).
    """

    def __init__(self, message: str, *, arg: str | None = None, expected: str | None = None,
                 received: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.arg = arg
        self.expected = expected
        self.received = received
        self.hint = hint


@dataclass(frozen=True)
class Arg:
    """One argument of an op's signature.

    ``kind`` is one of: int, float, bool, pair (an int or an (h, w) pair), choice, bias
    (true, false or a filler for the bias), and, held as the attribute value shown:

    - shape: a shape literal ``1x197x768`` or one int, every dimension >= 1 and at most
      ``MAX_SHAPE_RANK`` of them; ``tuple[int, ...]``.
    - ints: an int or a tuple of ints, negatives allowed unless ``min`` says otherwise;
      ``tuple[int, ...]`` (a lone int is a 1-tuple).
    - string: a string literal; ``str``.
    - sizes: keyword-only; every keyword the op does not otherwise declare, each an int >= 1;
      ``tuple[tuple[str, int], ...]`` in written order (``()`` when none is given).
    """

    name: str
    kind: str
    default: Any = REQUIRED
    doc: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    positional: bool = True
    names_layer: bool = False  # a string that names another layer (unembed's tied=): the language server renames it

    @property
    def words(self) -> str:
        """What the argument takes, in words (errors, hover and completion say it)."""
        return {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "pair": "an integer or an (h, w) pair",
            "choice": "one of " + ", ".join(self.choices),
            "bias": "true, false or a filler such as constant(0)",
            "shape": "a shape such as 1x197x768, or one integer",
            "ints": "an integer or a tuple of integers such as (0, 2, 1)",
            "string": 'a string such as "b c -> c b"',
            "sizes": "keyword sizes such as p=16, each an integer at least 1",
        }[self.kind]

    @property
    def attr_default(self) -> Any:
        """The attribute value the default gives: a pair's int as an (h, w) tuple, a shape's or ints' int as a
        1-tuple, no sizes as ``()``; REQUIRED when the argument must be given."""
        plain_int = isinstance(self.default, int) and not isinstance(self.default, bool)
        if self.kind == "pair" and plain_int:
            return (self.default, self.default)
        if self.kind in ("shape", "ints") and plain_int:
            return (self.default,)
        if self.kind == "sizes" and self.default is REQUIRED:
            return ()
        return self.default


def _no_params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    return {}


def _no_macs(attrs: Attrs, inputs: list[Shape], output: Shape) -> int:
    return 0


def _no_lint(attrs: Attrs, inputs: list[Shape]) -> list[tuple[str, str | None]]:
    return []


def last_axis(attrs: Attrs, inputs: list[Shape]) -> bool:
    """The ``per_token`` of an op acting on the last axis alone: per token when the first input has a token
    axis before it (LxD)."""
    return len(inputs[0]) >= 2


def _no_values(attrs: Attrs) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class OpDef:
    """Everything about one op. See the module docstring."""

    name: str
    summary: str
    example: str
    args: tuple[Arg, ...]
    infer: Callable[[Attrs, list[Shape]], Shape]
    family: str
    inputs: tuple[int, int | None] = (1, 1)
    params: Callable[[Attrs, list[Shape]], dict[str, Shape]] = _no_params
    buffers: Callable[[Attrs, list[Shape]], dict[str, Shape]] = _no_params
    buffer_values: Callable[[Attrs], dict[str, Any]] = _no_values
    """The buffers whose values the op computes from its arguments (an index table), as NumPy arrays, integer
    ones as int64 (a weights file may hold them so); other buffers are running statistics."""
    macs: Callable[[Attrs, list[Shape], Shape], int] = _no_macs
    lint: Callable[[Attrs, list[Shape]], list[tuple[str, str | None]]] = _no_lint
    default_fillers: Mapping[str, Filler] = field(default_factory=dict)
    role: str = "layer"  # "layer", "loss" or "metric"
    reads_label: bool = True  # a loss or metric whose second input is a label (not the network's own token ids)
    own_key: str | None = None  # the parameter kept under the layer's own name (param's), not <layer>.<name>
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    pattern: Pattern = Pattern.OPAQUE
    lower: Lowerings = NO_LOWERINGS
    per_token: Callable[[Attrs, list[Shape]], bool] | None = None
    """Whether each output token depends on the same token of the inputs alone (the first per-sample axis is
    the sequence), so a key/value-cached decoder runs the op on the new tokens only; None derives it from the
    pattern (:meth:`is_per_token`)."""
    per_sample: bool | None = None
    """Whether each sample's output depends on that sample alone (the batch axis is never mixed), so the executor
    may split a batch over threads; None derives it from the role (:meth:`is_per_sample`). An op whose kernels
    mix the batch (a statistic over it, say) declares False."""

    @property
    def arg_names(self) -> list[str]:
        return [a.name for a in self.args]

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)

    def integer_buffers(self, attrs: Attrs) -> list[str]:
        """The buffers of integer values (an index table) among :attr:`buffer_values`."""
        return [name for name, value in self.buffer_values(attrs).items() if value.dtype.kind in "iu"]

    def is_per_token(self, attrs: Attrs, inputs: list[Shape]) -> bool:
        """:attr:`per_token`; undeclared, an elementwise op is, and a broadcasting one whose inputs all have the
        output's shape."""
        if self.per_token is not None:
            return self.per_token(attrs, inputs)
        if self.pattern is Pattern.BROADCAST:
            return len({tuple(shape) for shape in inputs}) == 1
        return self.pattern is Pattern.ELEMWISE

    def is_per_sample(self) -> bool:
        """:attr:`per_sample`; undeclared, a layer is (the language's shapes leave the batch out), a loss or metric
        (an average over the batch) is not."""
        return self.per_sample if self.per_sample is not None else self.role == "layer"

    def param_kinds(self) -> list[str]:
        """The learnable parameter names this op can have (weight, bias, ...)."""
        return list(self.default_fillers)

    @property
    def takes_label(self) -> bool:
        return self.role in ("loss", "metric") and self.reads_label


_REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef, *, override: bool = False) -> OpDef:
    """Add ``op`` to the registry; a name already taken is an error unless ``override`` says so."""
    if op.name in _REGISTRY and not override:
        raise ValueError(f"op {op.name!r} is already registered (by {_REGISTRY[op.name].family}); "
                         "pass override=True to replace it")
    _REGISTRY[op.name] = op
    return op


def lookup(name: str) -> OpDef | None:
    _load_families()
    return _REGISTRY.get(name)


def all_ops() -> list[OpDef]:
    _load_families()
    return sorted(_REGISTRY.values(), key=lambda op: (op.family, op.name))


def caffe_importers() -> dict[str, Callable[..., Any]]:
    """Caffe layer type -> the converter of the op that imports it (``Lowerings.from_caffe``)."""
    return {ctype: convert for op in all_ops() for ctype, convert in op.lower.from_caffe.items()}


def onnx_importers() -> dict[str, list[Callable[..., Any]]]:
    """ONNX op type -> the converters of the ops that may import a node of it (``Lowerings.from_onnx``)."""
    found: dict[str, list[Callable[..., Any]]] = {}
    for op in all_ops():
        for op_type, convert in op.lower.from_onnx.items():
            found.setdefault(op_type, []).append(convert)
    return found


class _OnnxElementwise(Set[str]):
    """The ONNX op types that registered ops declare elementwise (``Lowerings.onnx_elementwise``), read from the
    registry at each use, so that a plugin op registered later counts too."""

    def _types(self) -> frozenset[str]:
        return frozenset(t for op in all_ops() for t in op.lower.onnx_elementwise)

    def __contains__(self, op_type: object) -> bool:
        return op_type in self._types()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._types()))

    def __len__(self) -> int:
        return len(self._types())


ONNX_ELEMENTWISE: Set[str] = _OnnxElementwise()
"""The ONNX op types through which the ONNX importer's layout pass carries a channels-last region."""


def op_names() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


_FAMILIES_LOADED = False
_FAMILIES_LOCK = threading.RLock()


def _load_families() -> None:
    """Import the op modules once; other threads wait until every op is registered."""
    global _FAMILIES_LOADED
    if _FAMILIES_LOADED:
        return
    with _FAMILIES_LOCK:
        if not _FAMILIES_LOADED:
            from alexdsl.ops import (  # noqa: F401
                activation,
                arith,
                attention,
                conv,
                language,
                linear,
                loss,
                norm,
                padding,
                pool,
                reduce,
                resample,
                split,
                tensor,
                tokens,
            )

            _FAMILIES_LOADED = True


# Shared helpers for shape rules -------------------------------------------------------------

def rank_layout(rank: int) -> str:
    """The words for a per-sample layout of ``rank`` axes, as shape errors name it.

    >>> [rank_layout(r) for r in (1, 2, 3, 4)]
    ['a vector (C)', 'LxD (tokens x features)', 'CxHxW', 'rank 4']
    """
    return {1: "a vector (C)", 2: "LxD (tokens x features)", 3: "CxHxW"}.get(rank, f"rank {rank}")


def expect_rank(shape: Shape, rank: int, what: str = "input") -> None:
    """A :class:`ShapeError` unless ``shape`` has ``rank`` axes, naming the layout wanted and the shape received."""
    if len(shape) != rank:
        layout = rank_layout(rank)
        raise ShapeError(
            f"expects {what} of rank {rank} ({layout})",
            expected=layout,
            received=format_shape(shape),
        )


def expect_min_rank(shape: Shape, rank: int, what: str = "input") -> None:
    """A ShapeError when ``shape`` has fewer than ``rank`` axes (a token op on a vector, say)."""
    if len(shape) < rank:
        raise ShapeError(f"expects {what} of rank {rank} or more", expected=f"rank >= {rank}",
                         received=format_shape(shape))


def normalize_axis(axis: int, rank: int, arg: str = "axis") -> int:
    """``axis`` (negative counts from the end) as a per-sample axis in ``0..rank-1``, or a ShapeError naming
    ``arg``."""
    if not -rank <= axis < rank:
        raise ShapeError(f"{arg}={axis} is out of range for an input of rank {rank}", arg=arg,
                         expected=f"an axis from {-rank} to {rank - 1} (the batch axis is never named)",
                         received=f"{arg}={axis}")
    return axis % rank


def format_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def numel(shape: Shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total
