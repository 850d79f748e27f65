"""The typed contexts an op's lowerings receive, one per target.

Each entry of :class:`~alexdsl.ops.lowering.Lowerings` is called with the layer (or the foreign
node) and a context: what the backend or format offers the op of the network being lowered.
The contexts are :class:`typing.Protocol` s, so the ops import no backend, a backend's context
class conforms by having these members (``tests/test_lowering_contexts.py`` checks each one),
and a lowering can be tested with a small fake context and no network at all:

============================  =====================================================================
protocol                      implemented by
============================  =====================================================================
:class:`TorchContext`         :class:`alexdsl.backends.torch.codegen.TorchCodegenContext`
:class:`ExecutorContext`      :class:`alexdsl.backends.executor.codegen.ExecutorCodegenContext`
:class:`OnnxExportContext`    :class:`alexdsl.interop.onnx.OnnxExportGraph`
:class:`OnnxImportContext`    :class:`alexdsl.interop.onnx_import.OnnxMatchContext`
:class:`CaffeExportContext`   :class:`alexdsl.interop.caffe_export.CaffeExportContext`
:class:`CaffeImportContext`   :class:`alexdsl.interop.caffe.CaffeImporter`
============================  =====================================================================

The foreign nodes that importers hand to converters are Protocols too: :class:`OnnxNodeView`
(:class:`alexdsl.interop.onnx_graph.OnnxNode`), :class:`CaffeMessage` and :class:`CaffeScalar`
(:class:`alexdsl.interop.caffe.Message` and ``Scalar``). The layer is the IR's
:class:`alexdsl.ir.network.Layer`, typed ``Any`` here since the ops sit below the IR.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

if TYPE_CHECKING:
    import numpy as np

    from alexdsl.errors import Span
    from alexdsl.ops.fillers import Filler
    from alexdsl.syntax import ast


class TorchContext(Protocol):
    """What a :class:`~alexdsl.ops.lowering.TorchLowering` sees of the module being generated.

    Every value an op writes into generated source goes through :meth:`int`, :meth:`float` or
    :meth:`pair`, which check it and name the layer when it is not what they expect. (``int`` and
    ``float`` are members here, hence ``builtins.int`` in the other signatures.)
    """

    def pair(self, value: Any) -> str:
        """``3`` or ``(3, 5)`` as source, from an int or an ``(h, w)`` pair."""
        ...

    def input_shape(self, layer: Any, index: builtins.int) -> tuple[builtins.int, ...]:
        """The per-sample shape of the layer's ``index``-th input."""
        ...

    def module(self, layer: Any) -> str:
        """The expression of the layer's own module (``self.conv1``, ``self.features['0']``)."""
        ...

    def batch_size(self) -> str:
        """The expression of the batch size in ``forward`` (``x.shape[0]``, of the first input)."""
        ...

    offset: str
    """In a key/value-cached decoder's ``decode`` (:attr:`~alexdsl.ops.lowering.TorchLowering.decode`): the
    variable holding the position of the first new token."""

    def cache(self, layer: Any, shapes: tuple[tuple[builtins.int, ...], ...]) -> str:
        """In ``decode``: the expression of the layer's cached tensors, one per sample of each per-sample shape
        in ``shapes`` (the longest sequence first)."""
        ...

    def may_run_inplace(self, layer: Any) -> bool:
        """Whether an elementwise layer may overwrite its input while training (its producer's backward
        does not read it, nothing else reads it, it is no output, and both run in the same phase)."""
        ...

    def int(self, value: Any) -> str:
        """An integer as source (``repr``), checked."""
        ...

    def float(self, value: Any) -> str:
        """A finite number as source (``repr`` of a float), checked."""
        ...


class ConvPlanView(Protocol):
    """What a convolution's lowering reads of the executor's im2col plan (:meth:`ExecutorContext.conv_plan`)."""

    is_pointwise: bool

    def cols_size(self, batch: int = 1) -> int:
        """Scratch elements of the im2col columns for a batch of ``batch``."""
        ...

    def wide_size(self, batch: int = 1) -> int:
        """Scratch elements of the wide output buffer for a batch of ``batch``."""
        ...


class ExecutorContext(Protocol):
    """What an :class:`~alexdsl.ops.lowering.ExecutorLowering` sees of the executor being generated."""

    inputs: list[str]
    """The Python variables holding the layer's inputs."""
    ident: str
    """A prefix for the ``self`` attributes the step's setup binds (``self.<ident>_w``)."""
    epilogue: str | None
    """The epilogue fused into this step (``"relu"``), or None."""
    residual: str | None
    """The Python variable of a tensor of the output's shape this step adds after its bias and before its
    epilogue (an add fused in: :attr:`~alexdsl.ops.lowering.ExecutorLowering.residual`), or None."""

    def lit(self, value: Any) -> str:
        """A Python literal for a number, string, bool, None, tuple, list or dict."""
        ...

    def weight(self, layer: Any, name: str) -> str:
        """The weights-table expression of the layer's parameter ``name`` (``w['conv1.weight']``)."""
        ...

    def input_shape(self, layer: Any, index: int) -> tuple[int, ...]:
        """The per-sample shape of the layer's ``index``-th input."""
        ...

    def has_bias(self, layer: Any) -> bool:
        """Whether the step adds a bias: the layer's own, or one from a folded affine layer."""
        ...

    def conv_plan(self, *geometry: Any) -> ConvPlanView:
        """The runtime's im2col plan of a convolution of ``geometry`` ``(c, h, w, out, kernel, stride, pad,
        dilation, groups)``: ``is_pointwise``, ``cols_size(n)`` and ``wide_size(n)`` (scratch elements)."""
        ...

    def weights_setup(self, layer: Any) -> list[str]:
        """Setup lines binding ``self.<ident>_w`` and ``self.<ident>_b`` (``None`` without a bias), with the
        affine layer folded into this one, if any, applied."""
        ...

    offset: str
    """In a key/value-cached decoder (:attr:`~alexdsl.ops.lowering.ExecutorLowering.decode`): the variable
    holding the position of the first token of this call."""

    def cache(self, layer: Any, shapes: tuple[tuple[int, ...], ...]) -> str:
        """In a key/value-cached decoder: the expression of the layer's persistent buffers, one per sample of
        each per-sample shape in ``shapes`` (the longest sequence first), planned with the activations."""
        ...


class OnnxExportContext(Protocol):
    """What an ONNX lowering (:attr:`~alexdsl.ops.lowering.Lowerings.onnx`) sees and adds to."""

    inputs: list[str]
    """The ONNX values of the layer's inputs."""

    def node(self, op_type: str, inputs: list[str], *, output: str | None = None, **attrs: Any) -> str:
        """Add a node; its output (and name) is the layer's unless ``output`` names another value.
        Returns the output's name."""
        ...

    def initializer(self, layer: Any, name: str) -> str:
        """Add the layer's parameter ``name`` as an initializer; returns its name, the state key (``<layer>.<name>``,
        or the layer's name for ``param``'s tensor)."""
        ...

    def constant(self, values: Any, *, output: str | None = None, integer: bool = False) -> str:
        """Add a ``Constant`` node holding ``values`` (float32, or int64 with ``integer``); returns its value."""
        ...

    def alias(self, value: str) -> None:
        """The layer is ``value`` at inference (dropout): it adds no node."""
        ...

    def batch_size(self) -> str:
        """An int64 value of shape (1,) holding the batch size, of the first graph input (added once)."""
        ...

    def input_shape(self, layer: Any, index: int) -> tuple[int, ...]:
        """The per-sample shape of the layer's ``index``-th input."""
        ...

    def fail(self, message: str) -> NoReturn:
        """Raise a located error: the layer cannot be expressed in ONNX."""
        ...


class OnnxNodeView(Protocol):
    """One node of the ONNX graph being imported, its attributes decoded to Python values."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]

    def attr(self, key: str, default: Any = None) -> Any:
        """The attribute ``key`` (a tensor as an array), or ``default`` when absent."""
        ...


class OnnxImportContext(Protocol):
    """What a ``from_onnx`` converter (:attr:`~alexdsl.ops.lowering.Lowerings.from_onnx`) sees of the graph.

    Values are ONNX value names; shapes are per sample (the batch axis left out).
    """

    opset: int
    """The model's default-domain opset."""
    outputs: list[str]
    """The graph's output values."""

    def const(self, value: str) -> np.ndarray | None:
        """The array a constant value holds, or None for a computed value (or ``""``, an absent input)."""
        ...

    def shape(self, value: str) -> tuple[int, ...] | None:
        """The value's per-sample shape, or None when shape inference did not find it."""
        ...

    def producer(self, value: str) -> OnnxNodeView | None:
        """The node computing ``value``, or None for a graph input or a constant."""
        ...

    def readers(self, value: str) -> list[OnnxNodeView]:
        """The nodes that read ``value``."""
        ...

    def absorb(self, value: str, *readers: OnnxNodeView | None) -> OnnxNodeView | None:
        """The node computing ``value`` when only ``readers`` (default: the node being converted) read its
        outputs, for the converter to take over; None when another node or the graph's outputs read it,
        or another layer took it."""
        ...

    def constants_ending(self, suffix: str) -> list[str]:
        """The names of the constants (initializers among them) that end with ``suffix``, in the model's order."""
        ...

    def fail(self, node: OnnxNodeView, message: str) -> None:
        """Record why ``node`` is not this op's pattern (reported when no op takes it); returns None."""
        ...


class CaffeExportContext(Protocol):
    """What a Caffe lowering (:attr:`~alexdsl.ops.lowering.Lowerings.caffe`) sees; it returns the lines."""

    def number(self, value: Any) -> str:
        """A number or bool as prototxt writes it (``1``, ``0.5``, ``true``)."""
        ...

    def pair(self, name: str, value: Any, default: int | None) -> list[str]:
        """``kernel_size: 3``, or ``<name>_h``/``<name>_w`` lines; nothing when square and ``default``."""
        ...

    def filler(self, name: str, filler: Filler) -> list[str]:
        """A ``weight_filler { ... }`` block named ``name``."""
        ...

    def weight_and_bias(self, layer: Any) -> list[str]:
        """``bias_term`` and the fillers of a Convolution or InnerProduct layer."""
        ...

    def input_shape(self, layer: Any, index: int) -> tuple[int, ...]:
        """The per-sample shape of the layer's ``index``-th input."""
        ...

    def fail(self, message: str) -> NoReturn:
        """Raise a located error: Caffe cannot express the layer."""
        ...


class CaffeScalar(Protocol):
    """One scalar field value of a prototxt message."""

    kind: str
    """``"string"``, ``"number"`` or ``"ident"``."""
    value: Any
    text: str
    """As the prototxt spells it."""
    span: Span


class CaffeMessage(Protocol):
    """A prototxt message (a layer, or its ``*_param`` section)."""

    span: Span

    def scalar(self, name: str) -> CaffeScalar | None:
        """The last scalar field ``name``, or None."""
        ...

    def scalars(self, name: str) -> list[CaffeScalar]:
        """Every scalar field ``name``, in order."""
        ...

    def message(self, name: str) -> CaffeMessage | None:
        """The last message field ``name``, or None."""
        ...


class CaffeImportContext(Protocol):
    """What a ``from_caffe`` converter (:attr:`~alexdsl.ops.lowering.Lowerings.from_caffe`) sees."""

    def section(self, layer: CaffeMessage, name: str) -> CaffeMessage:
        """The layer's ``name`` message (``"pooling_param"``), or an empty one."""
        ...

    def pair(self, p: CaffeMessage, name: str, default: int | None) -> int | tuple[int, int] | None:
        """``name`` of ``p`` (``kernel_size``, or ``<name>_h``/``<name>_w``): ``3`` or ``(3, 5)``; ``default``
        when absent; None after an error."""
        ...

    def is_true(self, s: CaffeScalar | None) -> bool | None:
        """A bool field's value, or None when absent."""
        ...

    def literal(self, s: CaffeScalar) -> ast.Literal:
        """A number as the prototxt spells it (``1e-4`` stays ``1e-4``)."""
        ...

    def arg(self, item: Any, keyword: str | None = None) -> ast.Arg:
        """One argument of the op's call: positional, or ``keyword=item``."""
        ...

    def error(self, message: str, span: Span | None, **extra: Any) -> None:
        """Report a located error (``expected=``, ``hint=``...); the converter then returns None."""
        ...

