"""What an op declares about its lowering to each backend and format.

An :class:`~alexdsl.ops.registry.OpDef` carries one entry per target; the backends walk the
graph and call them, and hold no op-name tables of their own. Each entry receives the layer
and the target's typed context (a Protocol of :mod:`alexdsl.ops.contexts`, which the backend
implements), and returns source text or builds nodes through the context. Nothing here imports
torch, NumPy or onnx: the lowerings produce text or call back into the context, so
``alexdsl shapes`` needs neither.

Fusion reads :class:`Pattern` and the executor flags, never op names (TVM's ``OpPattern``):

* ``ELEMWISE``: one output element from the same input element (relu, sigmoid).
* ``BROADCAST``: elementwise over inputs of broadcast-compatible shapes (add).
* ``INJECTIVE``: moves elements without arithmetic (flatten, concat, dropout at inference).
* ``OUT_ELEMWISE_FUSABLE``: a reduction whose output an elementwise op may finish in its
  epilogue (conv, fc).
* ``OPAQUE``: anything else (pooling, lrn, softmax, losses).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from alexdsl.ops.contexts import (
    CaffeExportContext,
    CaffeImportContext,
    CaffeMessage,
    ExecutorContext,
    OnnxExportContext,
    OnnxImportContext,
    OnnxNodeView,
    TorchContext,
)


class Pattern(str, Enum):
    ELEMWISE = "elemwise"
    BROADCAST = "broadcast"
    INJECTIVE = "injective"
    OUT_ELEMWISE_FUSABLE = "out_elemwise_fusable"
    OPAQUE = "opaque"


@dataclass(frozen=True)
class TorchLowering:
    """The PyTorch lowering.

    ``module(layer, ctx) -> str``: the constructor source of the ``nn`` module the layer owns
    (``"nn.Conv2d(3, 96, 11, stride=4)"``), or None for a stateless layer. Its parameters are
    filled by the layer's fillers, so use torch's own modules to keep torchvision's keys.
    ``forward(layer, args, ctx) -> str``: the forward expression over the input variable
    names ``args``; for a layer with a module, ``ctx.module(layer)`` is its attribute, and
    without ``forward`` the module is called on the first input (:func:`call_module`). A loss
    returns a scalar tensor and a metric a 0-d tensor from ``(logits, label)``.
    ``overwritable_output``: an elementwise op after this one may run in place during
    training (the op's backward does not read its output).
    ``imports``: the import lines the forward expression needs besides torch (``"import einops"``).
    ``parameter``: ``module`` is an ``nn.Parameter``, registered on the parent module under the
    layer's last name segment (``param``: ``self.class_token``, ``self.encoder.pos_embedding``).
    ``definitions``: module-level source (a small ``nn.Module`` class) that ``module`` constructs;
    the generated file holds each one once, after its imports. A function of the layer gives the source
    a layer needs ("" for none), when only some layers of the op construct the class.
    ``holds_children``: the module may hold the modules of layers named below it, as torchvision's
    Swin attention holds ``qkv`` and ``proj`` beside its relative position bias table (it is an
    ``nn.ModuleDict``).
    ``decode(layer, args, ctx) -> str | None``: for an op that is not per token
    (:meth:`~alexdsl.ops.registry.OpDef.is_per_token`), the expression in a key/value-cached decoder's
    ``decode``, which runs only the new tokens, the first at position ``ctx.offset``; None when this layer
    cannot run so. ``decode_definitions``: module-level source that expression uses (emitted only with it).

    ``ctx`` is a :class:`~alexdsl.ops.contexts.TorchContext`.
    """

    forward: Callable[[Any, list[str], TorchContext], str] | None = None
    module: Callable[[Any, TorchContext], str] | None = None
    overwritable_output: bool = False
    parameter: bool = False
    imports: tuple[str, ...] = ()
    definitions: str | Callable[[Any], str] = ""
    holds_children: bool = False
    decode: Callable[[Any, list[str], TorchContext], str | None] | None = None
    decode_definitions: str = ""

    def __post_init__(self) -> None:
        if self.forward is None:
            if self.module is None:
                raise ValueError("a TorchLowering needs a forward expression, or a module to call")
            object.__setattr__(self, "forward", call_module)


    def definitions_for(self, layer: Any) -> str:
        """The module-level source ``layer``'s module needs."""
        return self.definitions(layer) if callable(self.definitions) else self.definitions


def call_module(layer: Any, args: list[str], ctx: TorchContext) -> str:
    """The layer's own module applied to its first input: ``self.conv1(x)``."""
    return f"{ctx.module(layer)}({args[0]})"


@dataclass(frozen=True)
class ExecutorKernel:
    """One step of the NumPy/CuPy executor, as :meth:`ExecutorLowering.lower` returns it.

    ``code`` is the forward call with ``{out}`` where the output array goes; ``setup`` lines
    run once at load time (``w`` holds the weights, ``self.<ident>_...`` keeps results);
    ``kernel`` names it in the compile summary; ``scratch`` is ``(numpy, cupy)`` per-sample
    im2col elements this step needs in the shared scratch buffer.
    """

    code: str
    kernel: str
    setup: tuple[str, ...] = ()
    note: str = ""
    scratch: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class ExecutorLowering:
    """The NumPy/CuPy executor lowering.

    ``lower(layer, ctx) -> ExecutorKernel``, where ``ctx`` is an
    :class:`~alexdsl.ops.contexts.ExecutorContext` (the input variables, the fused epilogue,
    the weights' setup with any folded affine applied).

    Flags read by fusion and memory planning:

    * ``alias``: no kernel; ``lower`` returns the expression of a view of the input
      (``code`` without ``{out}``), or ``""`` for the identity; ``note`` says which.
    * ``inplace``: the output may share its input's buffer.
    * ``epilogue``: the name under which a fusable producer applies this elementwise op.
    * ``epilogues``: the epilogues this op can apply to its own output (``("relu",)``), or
      :data:`EVERY_EPILOGUE` for every op declaring one: a sole consumer with one of them is
      fused (:meth:`applies`), and ``ctx.epilogue`` names it.
    * ``residual``: this op adds a tensor of its output's shape after its bias and before its epilogue
      (``ctx.residual`` names it, else None): a following op with ``sums_inputs`` of its output and a value
      computed before it fuses in (ResNet's ``conv + bn + add + relu`` is one step; onnxruntime's Conv with
      Sum), and the add's own sole elementwise consumer becomes the epilogue.
    * ``sums_inputs``: the op is the elementwise sum of its inputs (add), which a ``residual`` producer may
      finish.
    * ``folds_affine``: this op folds a following per-channel affine layer (one with
      ``fold``) into its weights: ``ctx.weights_setup(layer)`` writes the folded weights.
    * ``fold(layer, ctx, weight, bias) -> str``: for a per-channel affine op, the source
      of a ``(weight, bias)`` pair with the affine folded into the producer's terms.
    * ``function``: for ops without a runtime kernel (plugins):
      ``function(*inputs, out=None, **attrs)`` written against NumPy/CuPy (use
      ``alexdsl.backends.executor.runtime.array_module(x)``); it returns the output, into
      ``out`` when given. The generated module looks it up by op name.
    * ``decode(layer, ctx) -> ExecutorKernel | None``: the kernel of an op that is not per token
      (:meth:`~alexdsl.ops.registry.OpDef.is_per_token`) in a key/value-cached decoder, which runs
      only the new tokens, the first at position ``ctx.offset`` (positions, rope, causal sdpa with
      ``ctx.cache(...)``); None when this layer cannot run so (non-causal attention).
    """

    lower: Callable[[Any, ExecutorContext], ExecutorKernel] | None = None
    alias: bool = False
    inplace: bool = False
    epilogue: str | None = None
    epilogues: tuple[str, ...] | str = ()
    residual: bool = False
    sums_inputs: bool = False
    folds_affine: bool = False
    fold: Callable[[Any, ExecutorContext, str, str], str] | None = None
    function: Callable[..., Any] | None = None
    decode: Callable[[Any, ExecutorContext], ExecutorKernel | None] | None = None

    def applies(self, epilogue: str | None) -> bool:
        """Whether this op applies ``epilogue`` (an elementwise op's ``epilogue`` name) to its own output."""
        return epilogue is not None and (self.epilogues == EVERY_EPILOGUE or epilogue in self.epilogues)


EVERY_EPILOGUE = "every"
"""The ``epilogues`` of a producer that applies every elementwise op declaring an ``epilogue``: the runtime
kernel ``rt.<epilogue>`` (a plugin's xp ``function`` too) run in place on its output."""


@dataclass(frozen=True)
class XpKernel:
    """An op's math written once against an array module ``xp`` (:func:`alexdsl.ops.xp.array_module`), in its op
    module: ``function(*inputs, *params, *attrs, out=None)``, the layer's ``params`` (weights) and ``attrs``
    (arguments) in the order named here, returns the output, into ``out`` when given (``out`` may be the first
    input: it runs in place). Every target reuses it: the NumPy/CuPy executor calls it as ``rt.<function name>``
    (the runtime holds every declared kernel under its name), and run in float64 on NumPy it is the op's
    reference (:meth:`reference`), what ``compare`` and the contract tests measure every backend against.
    ``align(layer, xs) -> xs``: the inputs as the op aligns them before its math (a broadcasting op's lower-rank
    inputs), for the reference; the executor's generated code aligns them itself."""

    function: Callable[..., Any]
    attrs: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    align: Callable[[Any, list[Any]], list[Any]] | None = None
    compiled: bool = False
    """Whether the executor's optional Numba kernels hold a compiled variant of ``function`` under its name, with
    its signature, which ``rt.<name>`` runs on NumPy where Numba is installed (this function everywhere else)."""

    @property
    def name(self) -> str:
        """The kernel's name in the executor's runtime (``rt.<name>``)."""
        return self.function.__name__

    def reference(self, layer: Any, xs: list[Any], w: Mapping[str, Any], F: Any) -> Any:  # noqa: N803 - F unused
        """The kernel in float64 on NumPy over torch tensors (a :attr:`Lowerings.reference`), returned in the
        dtype of the first input."""
        import numpy
        import torch

        wide = [numpy.asarray(t.detach().cpu(), dtype=numpy.float64) for t in (*xs, *(w[p] for p in self.params))]
        if self.align is not None:
            wide[: len(xs)] = self.align(layer, wide[: len(xs)])
        out = self.function(*wide, *(layer.attrs[a] for a in self.attrs))
        return torch.from_numpy(numpy.asarray(out)).to(xs[0].dtype)


@dataclass(frozen=True)
class CaffeLayer:
    """One Caffe layer an op exports as (see :attr:`Lowerings.caffe`).

    ``section`` is the ``*_param`` message and ``body`` its lines; ``params`` the learnable
    parameters written as ``param { lr_mult decay_mult }`` blocks (when any multiplier is not 1);
    ``suffix`` makes a second layer named ``<layer><suffix>`` that runs in place on the first's
    top (batchnorm's Scale). ``tops`` lists the tops of a layer with several, the layer's own
    output among them (a Slice); by default its one top is the layer's name.
    """

    type: str
    section: str | None = None
    body: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    suffix: str = ""
    tops: tuple[str, ...] = ()


CaffeCall = tuple[str, list[Any], str | None]
"""What a ``from_caffe`` converter makes of a layer: the op, its arguments and the filler section."""
CaffeConverter = Callable[[CaffeMessage, str, CaffeImportContext], CaffeCall | list[CaffeCall] | None]
OnnxConverter = Callable[[OnnxNodeView, OnnxImportContext], "OnnxImport | list[OnnxImport] | None"]


@dataclass(frozen=True)
class Lowerings:
    """Every target's lowering of one op; None where the op has none (a located error then).

    * ``torch``: :class:`TorchLowering`.
    * ``executor``: :class:`ExecutorLowering`.
    * ``onnx(layer, ctx)``: adds the op's nodes through an
      :class:`~alexdsl.ops.contexts.OnnxExportContext` (``ctx.node(op_type, inputs, **attrs)``,
      whose output is the layer's; ``ctx.inputs`` are the ONNX values of the layer's inputs).
    * ``caffe(layer, ctx) -> list[CaffeLayer]``: the Caffe layers, written with a
      :class:`~alexdsl.ops.contexts.CaffeExportContext` (``ctx.fail(message)`` for what Caffe
      cannot express).
    * ``from_caffe``: Caffe layer type -> ``convert(message, name, ctx)`` (a
      :class:`~alexdsl.ops.contexts.CaffeMessage` and a
      :class:`~alexdsl.ops.contexts.CaffeImportContext`) returning
      ``(op, args, section)`` (the alexdsl op; its arguments as :func:`alexdsl.syntax.build.call`
      takes them, values for the positional ones then ``ctx.arg(value, keyword)`` for each
      keyword; and the ``*_param`` section holding the fillers, or None), or None after
      ``ctx.error(...)``; a list of them for a layer with several tops (one alexdsl layer per
      top, named after it). The importer builds the syntax tree from them and prints it. A value
      is a Python value or a syntax node: ``ctx.literal(scalar)`` is a number as the prototxt
      spells it (``1e-4`` stays ``1e-4``).
    * ``from_onnx``: ONNX op type -> ``convert(node, ctx)`` (an
      :class:`~alexdsl.ops.contexts.OnnxNodeView` and an
      :class:`~alexdsl.ops.contexts.OnnxImportContext`) returning an :class:`OnnxImport` (a
      list of them for a node with several outputs), or None when the node is not this op's
      pattern. The converter is keyed by the *last* node of its pattern and may take over nodes
      before it (``ctx.absorb(value, *readers)``: the producer of ``value`` when only this node,
      or only the given nodes of the pattern, read it), as ``fc`` takes the ``Flatten`` before a
      ``Gemm``; where several ops claim a node, the one absorbing most nodes wins
      (``ctx.fail(node, message)`` says why a node is not the op's pattern). Export and
      import are inverses op by op: ``tests/test_onnx_import_ops.py`` checks both for every op.
    * ``onnx_elementwise``: the elementwise ONNX op types among the nodes this op exports as or
      imports from (``("Sigmoid", "Mul")`` for silu): the ONNX importer's layout pass carries a
      channels-last region through nodes of these types (:data:`alexdsl.ops.registry.ONNX_ELEMENTWISE`).
    * ``kernel``: the op's math as an :class:`XpKernel` (a simple elementwise op's), which the
      executor calls and which is the op's ``reference`` unless one is given.
    * ``reference(layer, xs, w, F)``: the output from the input tensors ``xs``, the layer's
      weights ``w`` (``name -> tensor``) and ``torch.nn.functional`` as ``F``; what ``compare``
      measures every backend against. By default the ``kernel``'s, in float64.
    """

    torch: TorchLowering | None = None
    executor: ExecutorLowering | None = None
    onnx: Callable[[Any, OnnxExportContext], None] | None = None
    caffe: Callable[[Any, CaffeExportContext], list[CaffeLayer]] | None = None
    from_caffe: Mapping[str, CaffeConverter] = field(default_factory=dict)
    reference: Callable[[Any, list[Any], Mapping[str, Any], Any], Any] | None = None
    from_onnx: Mapping[str, OnnxConverter] = field(default_factory=dict)
    onnx_elementwise: tuple[str, ...] = ()
    kernel: XpKernel | None = None

    def __post_init__(self) -> None:
        if self.reference is None and self.kernel is not None:
            object.__setattr__(self, "reference", self.kernel.reference)


@dataclass
class OnnxImport:
    """One alexdsl layer made from ONNX nodes (what a ``from_onnx`` converter returns).

    ``op`` None makes no layer: the node is its first input at inference (Dropout, Identity).
    ``inputs`` are the ONNX values the layer reads; ``params`` maps each parameter and buffer
    (``weight``, ``running_mean``...) to the name of the initializer holding it or to an array
    computed from constants; ``absorbed`` are the nodes before the anchor that the layer takes
    over; ``output`` is the ONNX value it stands for (default: the anchor's first output); ``name``, where
    one anchor makes several layers, names the layer when its weights do not: under the anchor's torch module
    where the model has torch's scopes (``"mask"`` gives ``features.1.1.attn.mask``; ``""`` the module
    itself), as it is otherwise.
    """

    op: str | None
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    absorbed: tuple[Any, ...] = ()
    output: str | None = None
    name: str | None = None


NO_LOWERINGS = Lowerings()
