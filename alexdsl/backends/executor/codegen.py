"""IR -> readable Python source of a NumPy/CuPy inference executor.

:func:`lower` turns a :class:`~alexdsl.ir.network.Network` into a list of
:class:`Step` s (one kernel call each) after the compile-time rewrites:

* train-only layers, losses and metrics are dropped; ``dropout`` is the identity and
  ``flatten`` a reshape view (neither gets a kernel nor a buffer);
* a batchnorm whose only producer is a conv/fc (and whose input nobody else reads) is
  folded into that layer's weight and bias;
* a ReLU that is the only consumer of a conv/fc/add is fused into its epilogue
  (bias + ReLU applied in place on the GEMM output);
* every conv gets a :class:`~alexdsl.backends.executor.runtime.ConvPlan` (im2col geometry)
  built once, and all convs share one im2col scratch buffer;
* activations go to reusable buffers by the liveness plan of
  :mod:`alexdsl.backends.executor.memory`.

``lower(network, decoder=True)`` lowers a causal language model for generation with a key/value
cache (:mod:`alexdsl.backends.executor.decoder`): each call runs only the new tokens, the first at
position ``offset``. Every layer must be per token (:meth:`~alexdsl.ops.registry.OpDef.is_per_token`)
or have a ``decode`` kernel (positions, rope, causal sdpa); anything else is refused
(:class:`~alexdsl.backends.decoding.NotCacheable`). The caches are persistent values of the memory plan.

:func:`emit` prints the steps as a module with one class.  Every user-supplied string
reaches the source through ``repr()`` (or as a sanitised identifier), so nothing in a
network file can inject code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alexdsl.backends import naming
from alexdsl.backends.decoding import is_per_token, not_a_language_model, not_cacheable
from alexdsl.backends.executor.conv import ConvPlan
from alexdsl.backends.executor.executor import COMPUTED
from alexdsl.backends.executor.memory import MemoryPlan, Value, plan_memory
from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.ir.network import Layer, Network
from alexdsl.ops import contexts
from alexdsl.ops.lowering import ExecutorKernel, ExecutorLowering
from alexdsl.ops.registry import lookup

ITEMSIZE = 4  # the plan counts float32 bytes; other dtypes scale it
RESERVED = {"self", "rt", "v", "n", "w", "scratch", "math", "numpy", "Executor"}
DECODER_RESERVED = RESERVED | {"offset", "Decoder"}


@dataclass
class Step:
    """One kernel call: the value it writes, the layers it covers, and its code."""

    name: str  # the value (IR layer name) this step produces
    kernel: str  # runtime function, e.g. "conv2d"
    layers: list[str]  # IR layers this step implements (fusion: more than one)
    inputs: list[str]  # values read (after alias resolution)
    shape: tuple[int, ...]
    code: str  # the forward line, with {out} for the output view expression
    setup: list[str] = field(default_factory=list)
    inplace: bool = False
    note: str = ""


@dataclass
class Lowered:
    """Everything :func:`emit` and :func:`summary` need."""

    network: Network
    class_name: str
    inputs: dict[str, tuple[int, ...]]
    input_vars: dict[str, str]
    outputs: list[str]
    steps: list[Step]
    lines: list[str]  # forward body, in order (kernel calls, reshape views, comments)
    memory: MemoryPlan
    scratch: int  # per-sample elements of the shared im2col buffer (NumPy: batched GEMM layout)
    scratch_wide: int  # the same for CuPy's channel-major layout (columns + GEMM result)
    scratch_per_layer: int  # what one column buffer per conv would take
    state: dict[str, tuple[tuple[int, ...], str, dict[str, Any]]]
    unused: list[str]  # state keys of layers that do not run at inference (accepted, ignored)
    dropped: list[str]
    var: dict[str, str]
    decoder: bool = False  # the steps of a key/value-cached decoder
    caches: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)  # a decoder's, per sample
    per_sample: bool = False  # every layer's output depends on its own sample alone: a batch may be split


# ------------------------------------------------------------------------------------ naming


def class_name(name: str, reserved: set[str] = RESERVED) -> str:
    return naming.class_name(name, reserved | {"ConvPlan", "PoolPlan"})


def lit(value: Any) -> str:
    """A Python literal for ``value`` (numbers, strings, bools, None, tuples, lists, dicts)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"float({str(value)!r})"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(lit(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(lit(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{lit(k)}: {lit(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "item"):  # numpy scalar
        return lit(value.item())
    raise TypeError(f"cannot emit {type(value).__name__} as a literal")


def comment(text: str) -> str:
    """Text safe inside a ``#`` comment: no newlines or control characters."""
    return repr(str(text))[1:-1]


# ------------------------------------------------------------------------------------ lowering


def executor_lowering(layer: Layer) -> ExecutorLowering:
    """The op's executor lowering, or a located error naming the op and the backend."""
    op = lookup(layer.op)
    lowering = op.lower.executor if op is not None else None
    if lowering is None or (lowering.lower is None and lowering.function is None):
        raise AlexDSLError([Diagnostic(
            "error", f"op '{layer.op}' has no cupy lowering (layer '{layer.name}')", layer.span,
            hint="the op's definition must declare lower=Lowerings(executor=ExecutorLowering(...))")])
    return lowering


class ExecutorCodegenContext:
    """What an op's :class:`~alexdsl.ops.lowering.ExecutorLowering` sees of the executor being generated
    (:class:`~alexdsl.ops.contexts.ExecutorContext`)."""

    inputs: list[str]
    ident: str
    epilogue: str | None
    residual: str | None

    offset: str = "offset"

    def __init__(self, inputs: list[str], ident: str, epilogue: str | None, affine: Layer | None,
                 by_name: dict[str, Layer], caches: dict[str, tuple[tuple[int, ...], ...]] | None = None,
                 residual: str | None = None):
        self.inputs = inputs
        self.ident = ident
        self.epilogue = epilogue
        self.residual = residual
        self.affine = affine  # the per-channel affine layer folded into this step's weights, if any
        self._by_name = by_name
        self._caches = caches  # a decoder's: layer name -> per-sample cache shapes

    def cache(self, layer: Layer, shapes: tuple[tuple[int, ...], ...]) -> str:
        """``self.cache[<layer>]``: the layer's persistent buffers of ``shapes`` per sample (a decoder's)."""
        assert self._caches is not None, "only a decoder's kernels have a cache"
        self._caches[layer.name] = tuple(tuple(shape) for shape in shapes)
        return f"self.cache[{lit(layer.name)}]"

    def lit(self, value: Any) -> str:
        return lit(value)

    def weight(self, layer: Layer, name: str) -> str:
        return f"w[{lit(layer.state_key(name))}]"

    def input_shape(self, layer: Layer, index: int) -> tuple[int, ...]:
        return tuple(self._by_name[layer.inputs[index]].shape)

    def has_bias(self, layer: Layer) -> bool:
        return "bias" in layer.params or self.affine is not None

    def conv_plan(self, *geometry: Any) -> contexts.ConvPlanView:
        """The runtime's :class:`ConvPlan` for ``geometry`` (its im2col strategy and scratch sizes)."""
        return ConvPlan(*geometry)

    def weights_setup(self, layer: Layer) -> list[str]:
        """Bind ``self.<ident>_w`` and ``self.<ident>_b``, folding the affine layer that follows, if any."""
        weight = self.weight(layer, "weight")
        bias = self.weight(layer, "bias") if "bias" in layer.params else "None"
        if self.affine is None:
            return [f"self.{self.ident}_w = {weight}", f"self.{self.ident}_b = {bias}"]
        fold = executor_lowering(self.affine).fold
        assert fold is not None
        return [f"self.{self.ident}_w, self.{self.ident}_b = {fold(self.affine, self, weight, bias)}"]


def _function_call(layer: Layer, ctx: ExecutorCodegenContext) -> ExecutorKernel:
    """A plugin op's xp function, looked up by op name when the module loads. A keyword-only argument at its
    default is left out: the function takes the same default."""
    op = lookup(layer.op)
    assert op is not None

    def default(name: str, value: Any) -> bool:
        arg = op.arg(name)
        return arg is not None and not arg.positional and value == arg.default

    attrs = "".join(f", {name}={lit(value)}" for name, value in layer.attrs.items() if not default(name, value))
    return ExecutorKernel(
        code=f"self.{ctx.ident}_fn({', '.join(ctx.inputs)}{attrs}, out={{out}})",
        kernel=layer.op,
        setup=(f"self.{ctx.ident}_fn = rt.op_function({lit(layer.op)})",),
    )


@dataclass
class _InferenceGraph:
    """The layers of a network that run at inference (data inputs first), and who reads each."""

    by_name: dict[str, Layer]
    kept: list[Layer]
    consumers: dict[str, list[str]]
    data_inputs: list[str]
    outputs: list[str]
    dropped: list[str]


def _inference_graph(network: Network) -> _InferenceGraph:
    """The network without its train-only layers, losses and metrics; an error when no output is left."""
    view = network.inference_view()
    by_name = {layer.name: layer for layer in network.layers()}
    kept = [by_name[name] for name in view.inputs] + view.layers
    consumers: dict[str, list[str]] = {layer.name: [] for layer in kept}
    for layer in kept:
        for src in layer.inputs:
            if src in consumers:
                consumers[src].append(layer.name)
    if not view.outputs:
        raise AlexDSLError(f"network {network.name} has no output to compute")
    return _InferenceGraph(by_name, kept, consumers, view.inputs, view.outputs, view.dropped)


def _computed(layer: Layer, buffer: str) -> tuple[tuple[int, ...], str, dict[str, Any]] | None:
    """The state entry of a buffer that the layer's op computes from its arguments (``buffer_values``): its filler
    is :data:`~alexdsl.backends.executor.executor.COMPUTED`; None for another buffer."""
    op = lookup(layer.op)
    if op is None or buffer not in op.buffer_values(layer.attrs):
        return None
    return tuple(layer.buffers[buffer]), COMPUTED, {"op": layer.op, "attrs": dict(layer.attrs)}


def _state_table(layers: list[Layer]) -> dict[str, tuple[tuple[int, ...], str, dict[str, Any]]]:
    """Each parameter's and buffer's shape and filler (running variances 1, other buffers 0), by state key, in the
    order of ``layers`` (declaration order, as state_keys())."""
    state: dict[str, tuple[tuple[int, ...], str, dict[str, Any]]] = {}
    for layer in layers:
        for pname, spec in layer.params.items():
            if not spec.tied:  # stored once, under its owner's key
                state[layer.state_key(pname)] = (tuple(spec.shape), spec.filler.type, dict(spec.filler.args))
        for bname, shape in layer.buffers.items():
            value = 1.0 if bname == "running_var" else 0.0
            state[f"{layer.name}.{bname}"] = _computed(layer, bname) or (tuple(shape), "constant", {"value": value})
    return state


def _check_runs_at_inference(layer: Layer, var: dict[str, str]) -> None:
    """A located error when the layer reads a value that is not computed at inference."""
    missing = [i for i in layer.inputs if i not in var]
    if missing:
        raise AlexDSLError(
            [
                Diagnostic(
                    "error",
                    f"layer '{layer.name}' runs at inference but reads '{missing[0]}', which does not "
                    "(a train-only layer, loss or label)",
                    layer.span,
                    hint="mark the reader @train too, or make the layer it reads run in every phase",
                )
            ]
        )


class _StepWriter:
    """Turns the inference layers into :class:`Step` s and forward lines, one layer (or fused group) at a time."""

    def __init__(self, graph: _InferenceGraph, decoder: bool = False):
        self.graph = graph
        self.caches: dict[str, tuple[tuple[int, ...], ...]] | None = {} if decoder else None
        self.names = naming.IdentifierMap(DECODER_RESERVED if decoder else RESERVED)
        self.input_vars = {n: self.names(n) for n in graph.data_inputs}
        self.var: dict[str, str] = dict(self.input_vars)  # value name -> python variable holding it
        self.root: dict[str, str] = {n: n for n in graph.data_inputs}  # value -> value owning its memory
        self.steps: list[Step] = []
        self.lines: list[str] = []
        self.fused: set[str] = set()
        self.scratch = self.scratch_wide = self.scratch_per_layer = 0

    def write(self, layer: Layer) -> None:
        """The layer's step (with what fuses into it), or its alias line; nothing for an input or a fused layer."""
        if layer.is_input or layer.name in self.fused:
            return
        _check_runs_at_inference(layer, self.var)
        lowering = executor_lowering(layer)
        ins = [self.var[i] for i in layer.inputs]
        ident = self.names(layer.name)
        if self.caches is not None:
            lowering = self._decoding(layer, lowering)
        if lowering.alias:
            self._alias(layer, lowering, ins, ident)
        else:
            self._kernel(layer, lowering, ins, ident)

    def _decoding(self, layer: Layer, lowering: ExecutorLowering) -> ExecutorLowering:
        """The lowering of ``layer`` in a decoder: its own when it is per token, else its ``decode`` kernel (which
        may decline); a :class:`NotCacheable` error otherwise."""
        if is_per_token(layer, [tuple(self.graph.by_name[i].shape) for i in layer.inputs]):
            return lowering
        decode = lowering.decode
        ctx = ExecutorCodegenContext([self.var[i] for i in layer.inputs], self.names(layer.name), None, None,
                                     self.graph.by_name, self.caches)
        if decode is None or decode(layer, ctx) is None:
            raise not_cacheable(layer, declined=decode is not None)
        return ExecutorLowering(lower=decode)

    def _sole_consumer(self, name: str, accepts: Callable[[ExecutorLowering], bool]) -> Layer | None:
        """The one layer reading ``name`` (and only it), when its op's lowering ``accepts``; else None."""
        users = self.graph.consumers.get(name, [])
        if len(users) != 1 or name in self.graph.outputs:
            return None
        user = self.graph.by_name[users[0]]
        lowering = executor_lowering(user)
        return user if user.inputs == [name] and accepts(lowering) else None

    def _alias(self, layer: Layer, lowering: ExecutorLowering, ins: list[str], ident: str) -> None:
        """A view of the input, or the identity: no kernel, no buffer."""
        ctx = ExecutorCodegenContext(ins, ident, None, None, self.graph.by_name)
        view = lowering.lower(layer, ctx)  # type: ignore[misc]
        self.root[layer.name] = self.root[layer.inputs[0]]
        if view.code:
            self.var[layer.name] = ident
            self.lines.append(f"{ident} = {view.code}  # {comment(layer.name)}: {comment(view.note)}")
        else:
            self.var[layer.name] = ins[0]
            self.lines.append(f"# {comment(layer.name)}: {comment(view.note)}")

    def _fusion(self, layer: Layer, lowering: ExecutorLowering) -> tuple[Layer | None, list[Layer], Layer | None]:
        """The affine layer folded into ``layer``'s weights, the add that sums its output with a value computed
        before it, with the identities between them (:meth:`_summed`), and the elementwise layer run as its
        epilogue (None or empty when there is none)."""
        affine = self._sole_consumer(layer.name, lambda c: c.fold is not None) if lowering.folds_affine else None
        last = affine if affine is not None else layer
        summed = self._summed(last) if lowering.residual else []
        last = summed[-1] if summed else last
        finisher = self._sole_consumer(last.name, lambda c: lowering.applies(c.epilogue)) if lowering.epilogues \
            else None
        return affine, summed, finisher

    def _summed(self, last: Layer) -> list[Layer]:
        """The layers from ``last``'s sole consumer on, through identities at inference (stochastic depth), to a
        sum (``sums_inputs``) of that value and one other of the same shape that is computed already, each the
        sole reader of the one before and none a network output; else empty."""
        chain: list[Layer] = []
        while True:
            users = self.graph.consumers.get(last.name, [])
            if len(users) != 1 or last.name in self.graph.outputs:
                return []
            user = self.graph.by_name[users[0]]
            if not self._is_identity(user):
                break
            chain.append(user)
            last = user
        if not executor_lowering(user).sums_inputs or len(user.inputs) != 2 or user.inputs.count(last.name) != 1:
            return []
        (other,) = [name for name in user.inputs if name != last.name]
        shapes = {tuple(self.graph.by_name[name].shape) for name in (other, last.name, user.name)}
        return [*chain, user] if other in self.var and len(shapes) == 1 else []

    def _is_identity(self, layer: Layer) -> bool:
        """Whether the layer is the identity at inference: an alias whose lowering returns no view (asked with
        placeholder names, so that no identifier is taken for a layer that may never be written)."""
        lowering = executor_lowering(layer)
        if not lowering.alias or len(layer.inputs) != 1 or lowering.lower is None:
            return False
        ctx = ExecutorCodegenContext(["x"], "x", None, None, self.graph.by_name)
        return not lowering.lower(layer, ctx).code

    def _kernel(self, layer: Layer, lowering: ExecutorLowering, ins: list[str], ident: str) -> None:
        """One kernel call for the layer and what fuses into it, writing a planned buffer."""
        affine, summed, finisher = self._fusion(layer, lowering)
        chain = [fused for fused in (layer, affine, *summed, finisher) if fused is not None]
        covered, last = [fused.name for fused in chain], chain[-1]
        epilogue = executor_lowering(finisher).epilogue if finisher is not None else None
        residual = None
        if summed:
            (residual,) = [name for name in summed[-1].inputs if name not in covered]
        ctx = ExecutorCodegenContext(ins, ident, epilogue, affine, self.graph.by_name, self.caches,
                                     None if residual is None else self.var[residual])
        kernel = lowering.lower(layer, ctx) if lowering.lower is not None else _function_call(layer, ctx)
        self.scratch = max(self.scratch, kernel.scratch[0])
        self.scratch_wide = max(self.scratch_wide, kernel.scratch[1])
        self.scratch_per_layer += kernel.scratch[0]

        self.fused.update(covered)
        out_name = last.name
        out_ident = self.names(out_name)
        for name in covered:
            self.var[name] = out_ident
            self.root[name] = out_name
        step = Step(
            name=out_name,
            kernel=kernel.kernel + ("+add" if summed else "") + (f"+{epilogue}" if epilogue else ""),
            layers=covered,
            inputs=[self.root[i] for i in layer.inputs] + ([] if residual is None else [self.root[residual]]),
            shape=tuple(last.shape),
            code=kernel.code.replace("{out}", f"v[{lit(out_name)}]"),
            setup=list(kernel.setup),
            inplace=lowering.inplace and tuple(self.graph.by_name[layer.inputs[0]].shape) == tuple(last.shape),
            note=f"{affine.name} folded into the weights" if affine is not None else kernel.note,
        )
        self.steps.append(step)
        what = " + ".join(comment(n) for n in covered)
        self.lines.append(_wrap(f"{out_ident} = {step.code}", what))


def _check_decodable(graph: _InferenceGraph) -> None:
    """A :class:`NotCacheable` error unless the network's one input is a sequence of token ids."""
    inputs = [graph.by_name[name] for name in graph.data_inputs]
    if len(inputs) != 1 or not inputs[0].is_tokens:
        raise not_a_language_model()


def lower(network: Network, decoder: bool = False) -> Lowered:
    """Network -> steps, memory plan and state table (see the module docstring); ``decoder``: the steps of a
    key/value-cached decoder, or a :class:`~alexdsl.backends.decoding.NotCacheable` error."""
    graph = _inference_graph(network)
    if decoder:
        _check_decodable(graph)
    writer = _StepWriter(graph, decoder)
    kept = {layer.name for layer in graph.kept}
    state = _state_table([layer for layer in network.declared_layers() if layer.name in kept])
    for layer in graph.kept:
        writer.write(layer)
    values = [Value(s.name, ITEMSIZE * math.prod(s.shape), tuple(s.inputs), s.inplace) for s in writer.steps]
    caches = writer.caches or {}
    memory = plan_memory(values, outputs=[writer.root[o] for o in graph.outputs],
                         persistent={name: ITEMSIZE * sum(map(math.prod, shapes)) for name, shapes in caches.items()})
    return Lowered(
        network=network,
        class_name=class_name(network.name, DECODER_RESERVED if decoder else RESERVED),
        inputs={n: tuple(graph.by_name[n].shape) for n in graph.data_inputs},
        input_vars=writer.input_vars,
        outputs=graph.outputs,
        steps=writer.steps,
        lines=writer.lines,
        memory=memory,
        scratch=writer.scratch,
        scratch_wide=writer.scratch_wide,
        scratch_per_layer=writer.scratch_per_layer,
        state=state,
        unused=[k for k in network.state_keys() if k not in state],
        dropped=graph.dropped,
        var=writer.var,
        decoder=decoder,
        caches=caches,
        per_sample=not decoder and all(_is_per_sample(layer) for layer in graph.kept if not layer.is_input),
    )


def _is_per_sample(layer: Layer) -> bool:
    """Whether the layer's op declares each sample's output its own sample's alone (:meth:`OpDef.is_per_sample`)."""
    op = lookup(layer.op)
    return op is not None and op.is_per_sample()


# ------------------------------------------------------------------------------------ emitting


def _wrap(statement: str, note: str, width: int = 120 - 8) -> str:
    """``statement  # note``, or the call's arguments on their own line when too long."""
    line = f"{statement}  # {note}"
    if len(line) <= width:
        return line
    head, _, args = statement.partition("(")
    args = args[:-1]
    opening = f"{head}(  # {note}"
    if len(opening) > width:  # long layer names: the note goes on its own line above
        comment = f"# {note}"
        opening = (comment + "  # noqa: E501" if len(comment) > width else comment) + f"\n{head}("
    if len(args) + 4 <= width:
        return f"{opening}\n    {args}\n)"
    return f"{opening}\n" + "".join(f"    {a},\n" for a in _split_args(args)) + ")"


def _wrap_setup(statement: str, width: int = 120 - 8) -> str:
    """A one-line setup statement, or its call's arguments one per line when it is too long."""
    if len(statement) <= width or "\n" in statement or not statement.endswith(")"):
        return statement
    head, _, args = statement.partition("(")
    return f"{head}(\n" + "".join(f"            {a},\n" for a in _split_args(args[:-1])) + "        )"


def _split_args(args: str) -> list[str]:
    """Split a call's argument text at top-level commas (string literals respected)."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(args):
        ch = args[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(args[start:i].strip())
            start = i + 1
        i += 1
    parts.append(args[start:].strip())
    return [p for p in parts if p]


def _marked(code: str, width: int = 120) -> str:
    """``code`` with each line longer than ``width`` marked for ruff: identifiers and weight keys made from long
    layer names (MaxViT's ``blocks.0.layers.0.layers.MBconv.layers.pre_norm``) do not fit a line."""
    return "\n".join(line + "  # noqa: E501" if len(line) > width and "# noqa" not in line else line
                     for line in code.split("\n"))


def _table(name: str, items: dict[Any, Any], indent: str = "    ") -> list[str]:
    if not items:
        return [f"{indent}{name} = {{}}"]
    out = [f"{indent}{name} = {{"]
    entries = [f"{indent}    {lit(k)}: {lit(v)}," for k, v in items.items()]
    out += [entry + "  # noqa: E501" if len(entry) > 120 else entry for entry in entries]  # a computed buffer's recipe
    out.append(f"{indent}}}")
    return out


def _itemsize(dtype: str) -> int:
    import numpy

    return numpy.dtype(dtype).itemsize


def emit(low: Lowered, dtype: str = "float32") -> str:
    """The module source for a lowered network; ``dtype`` is the executor's default dtype."""
    net = low.network
    mem = low.memory
    elems = [b // ITEMSIZE for b in mem.buffers]
    keep_all = mem.keep_all_bytes // ITEMSIZE
    item = _itemsize(dtype)
    src = net.source_file or "<string>"
    cache_elems = sum(math.prod(shape) for shapes in low.caches.values() for shape in shapes)
    base = "Decoder" if low.decoder else "Executor"
    head = [
        f"# Generated by alexdsl (cupy backend) from {comment(src)}; do not edit.",
        f"# Network {comment(net.name)}: {sum(len(s.layers) for s in low.steps)} layers in {len(low.steps)} kernel "
        "calls.",
        f"# Activations per sample ({dtype}): {sum(elems) * item / 2**20:.2f} MiB planned in {len(elems)} buffers "
        f"vs {keep_all * item / 2**20:.2f} MiB keeping every tensor alive;",
        f"# plus im2col scratch shared by all convs: {item * low.scratch / 2**20:.2f} MiB (NumPy), "
        f"{item * low.scratch_wide / 2**20:.2f} MiB (CuPy).",
    ]
    if low.decoder:
        head.append(f"# Key/value caches per sample: {cache_elems * item / 2**20:.2f} MiB in {len(low.caches)} layers.")
    head += [
        '"""A NumPy/CuPy inference executor generated by alexdsl; see docs/cupy.md."""',
        "",
        "from alexdsl.backends.executor import runtime as rt",
        "from alexdsl.backends.executor.decoder import Decoder" if low.decoder else
        "from alexdsl.backends.executor.executor import Executor",
        "",
        "",
        f"class {low.class_name}({base}):",
        '    """Call with token ids and the position of the first (NumPy or CuPy): each call runs only the new tokens '
        'over\n    the key/value caches; returns the output as a NumPy array."""' if low.decoder else
        '    """Call with NCHW arrays (NumPy or CuPy); returns the output in the same library."""',
        "",
        f"    network_name = {lit(net.name)}",
        f"    source_file = {lit(net.source_file)}",
    ]
    head += _table("inputs", low.inputs)
    tokens = tuple(name for name in low.inputs if net.layer(name).is_tokens)
    if tokens:
        head.append(f"    token_inputs = {lit(tokens)}")
    head.append(f"    outputs = {lit(tuple(low.outputs))}")
    head += _table("state", low.state)
    if low.unused:
        head.append(f"    unused = {lit(tuple(low.unused))}")
    head.append(f"    buffers = {lit(tuple(elems))}")
    head += _table(
        "values",
        {s.name: (mem.assignment[s.name], s.shape) for s in low.steps},
    )
    head.append(f"    scratch = {low.scratch}")
    head.append(f"    scratch_wide = {low.scratch_wide}")
    head.append(f"    default_dtype = {lit(str(dtype))}")
    head.append(f"    keep_all = {keep_all}")
    if low.decoder:
        head += _table("caches", low.caches)
    else:
        head.append(f"    per_sample = {low.per_sample}")
    head += ["", "    def setup(self, w):", '        """Compile time: fold batchnorms, build conv/pool plans."""']
    setup = [_wrap_setup(line) for s in low.steps for line in s.setup]
    head += [_marked(f"        {line}") for line in setup] or ["        pass"]
    args = ", ".join(low.input_vars.values())
    first = next(iter(low.input_vars.values()), None)
    if low.decoder:
        head += [
            "",
            f"    def forward(self, {args}, offset):",
            '        """One line per kernel over the new tokens, the first at position offset; every activation lives '
            'in a\n        planned buffer."""',
            f"        n = {first}.shape[0]",
            f"        v, scratch = self.arena(n, {first}.shape[1])",
        ]
    else:
        batch = f"n = {first}.shape[0]" if first else "n = 1  # no input: a learned tensor alone is one sample"
        head += [
            "",
            f"    def forward(self, {args}):",
            '        """One line per kernel; every activation lives in a planned buffer."""',
            f"        {batch}",
            "        v, scratch = self.arena(n)",
        ]
    head += [_marked("        " + line.replace("\n", "\n        ")) for line in low.lines]
    outs = [low.var[o] for o in low.outputs]
    head.append(f"        return {outs[0]}" if len(outs) == 1 else f"        return ({', '.join(outs)},)")
    return "\n".join(head) + "\n"


def generate_source(network: Network, dtype: str = "float32", decoder: bool = False) -> str:
    """Readable Python source of the executor module for ``network`` (default ``dtype``); ``decoder``: of its
    key/value-cached decoder (:mod:`alexdsl.backends.executor.decoder`)."""
    from alexdsl.backends.executor.executor import check_dtype

    return emit(lower(network, decoder), check_dtype(dtype).name)
