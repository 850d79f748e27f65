"""IR -> one standalone PyTorch source file: ``class <Network>(torch.nn.Module)``.

The generated module imports only torch. Its submodules are named after the layers, so its
``state_dict`` keys are the IR's :meth:`~alexdsl.ir.network.Network.state_keys`
(``conv1.weight``; ``layer2.0.conv1.weight`` through nested ``nn.ModuleDict`` s). It has:

* ``forward(*inputs)``: straight-line code, one statement per layer, taking the non-label
  inputs in declaration order and returning the output (a tuple when there are several);
* ``loss(outputs, label)`` and ``metrics(outputs, label)`` from the softmax_loss and accuracy layers;
* ``reset_parameters()``: the fillers with Caffe's meaning (called by the constructor);
* ``param_groups(base_lr, weight_decay)``: optimizer groups with each parameter's lr_mult and
  decay_mult;
* with ``decoder=True`` (a causal language model's key/value-cached decoder), also
  ``decode(ids, offset, cache)``, the forward pass of the new tokens only, and ``new_cache(batch)``
  (:mod:`alexdsl.backends.decoding` says which networks can have one).

Nothing from a network file reaches the source except sanitised identifiers and ``repr()`` /
``ascii()`` of checked values, so a layer name or description cannot inject code.

>>> import alexdsl
>>> net = alexdsl.parse("network Tiny\\ninput x: 3x8x8\\nc1: conv(4, 3) | relu\\n")
>>> print(generate_source(net).split("def forward")[1].split("def loss")[0].strip())
(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.c1(x)
        c1_relu = F.relu(c1, inplace=True)
        return c1_relu
"""

from __future__ import annotations

import builtins
import keyword
import linecache
import math
import re
from dataclasses import dataclass, field
from typing import Any

from alexdsl.backends import naming
from alexdsl.backends.decoding import is_per_token, not_a_language_model, not_cacheable
from alexdsl.backends.torch.module_attributes import MODULE_ATTRIBUTES, MODULE_DICT_ATTRIBUTES
from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.ir.network import Layer, Network, ParamSpec
from alexdsl.ops.fillers import caffe_fans, distribution  # noqa: F401 - caffe_fans is part of this API
from alexdsl.ops.lowering import TorchLowering
from alexdsl.ops.registry import lookup

# Names the generated class defines; a top-level layer may not take one of them.
CLASS_ATTRS = {"input_shapes", "label_classes", "output_names", "description", "source_file", "MULTIPLIERS",
               "forward", "loss", "metrics", "reset_parameters", "param_groups", "code"}
RESERVED_LOCALS = {"self", "m", "torch", "F", "nn", "label", "labels", "outputs", "groups", "group", "name", "param",
                   "lr_mult", "decay_mult", "base_lr", "weight_decay"} | set(dir(builtins))
DECODER_ATTRS = {"decode", "new_cache", "KV_CACHES"}  # what a decoder's class adds to CLASS_ATTRS


def _is_plain_identifier(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text)) and not keyword.iskeyword(text)


def class_name(network: Network) -> str:
    return naming.class_name(network.name, {"torch", "F", "nn"} | set(dir(builtins)))


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise AlexDSLError(f"torch backend: {what} must be an integer, got {value!r}")
    return int(value)


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AlexDSLError(f"torch backend: {what} must be a finite number, got {value!r}")
    return float(value)


def _pair(value: Any, what: str) -> str:
    """A (h, w) pair as source: ``3`` when square, else ``(3, 5)``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise AlexDSLError(f"torch backend: {what} must be an (h, w) pair, got {value!r}")
    h, w = _int(value[0], what), _int(value[1], what)
    return repr(h) if h == w else repr((h, w))


def _shape(shape: Any, what: str) -> tuple[int, ...]:
    return tuple(_int(d, what) for d in shape)


def filler_statement(target: str, spec: ParamSpec, key: str) -> tuple[str, str]:
    """One ``nn.init`` call implementing ``spec.filler`` with Caffe's meaning, and a comment (or "")."""
    try:
        kind, a, b, note = distribution(spec.filler, _shape(spec.shape, key))
    except ValueError as error:
        raise AlexDSLError(f"torch backend: {key}: {error}") from None
    if kind == "constant":
        return f"nn.init.constant_({target}, {_float(a, key)!r})", note
    if kind == "normal":
        return f"nn.init.normal_({target}, {_float(a, key)!r}, {_float(b, key)!r})", note
    return f"nn.init.uniform_({target}, {_float(a, key)!r}, {_float(b, key)!r})", note


@dataclass
class _Tree:
    """The submodule hierarchy: path segment -> subtree, leaves hold the layer."""

    children: dict[str, _Tree] = field(default_factory=dict)
    layer: Layer | None = None


def torch_lowering(layer: Layer) -> TorchLowering:
    """The op's PyTorch lowering, or a located error naming the op and the backend."""
    op = lookup(layer.op)
    lowering = op.lower.torch if op is not None else None
    if lowering is None:
        raise AlexDSLError([Diagnostic("error", f"op '{layer.op}' has no torch lowering (layer '{layer.name}')",
                                       layer.span, hint="the op's definition must declare lower=Lowerings(torch=...)")])
    return lowering


def _role(layer: Layer) -> str:
    op = lookup(layer.op)
    return op.role if op is not None else "input"


def _takes_label(layer: Layer) -> bool:
    op = lookup(layer.op)
    return op is not None and op.takes_label


class TorchCodegenContext:
    """What an op's :class:`~alexdsl.ops.lowering.TorchLowering` sees of the module being generated
    (:class:`~alexdsl.ops.contexts.TorchContext`)."""

    def __init__(self, network: Network):
        self.network = network
        self.layers = network.layers()
        self.by_name = {layer.name: layer for layer in self.layers}
        self.consumers = {layer.name: network.consumers(layer.name) for layer in self.layers}
        self.access: dict[str, str] = {}  # parametric layer name -> expression for its module
        self.what = ""  # the layer being lowered, for error messages
        self.first_input: str | None = None  # the variable of forward's first input, once named
        self.caches: dict[str, tuple[tuple[builtins.int, ...], ...]] = {}  # decode's, per sample

    offset: str = "offset"

    def cache(self, layer: Layer, shapes: tuple[tuple[builtins.int, ...], ...]) -> str:
        self.caches[layer.name] = tuple(_shape(shape, self.what) for shape in shapes)
        return f"cache[{layer.name!r}]"

    def int(self, value: Any) -> str:
        return repr(_int(value, self.what))

    def float(self, value: Any) -> str:
        return repr(_float(value, self.what))

    def pair(self, value: Any) -> str:
        return _pair(value, self.what)

    def input_shape(self, layer: Layer, index: builtins.int) -> tuple[builtins.int, ...]:
        return _shape(self.network.layer(layer.inputs[index]).shape, self.what)

    def module(self, layer: Layer) -> str:
        return self.access[layer.name]

    def batch_size(self) -> str:
        return f"{self.first_input}.shape[0]" if self.first_input else "1"

    def may_run_inplace(self, layer: Layer) -> bool:
        """An elementwise layer may overwrite its input: the producer's backward does not read its output,
        nothing else reads it, it is no network output, and it runs in the same phase."""
        producer = self.by_name.get(layer.inputs[0])
        return (producer is not None and not producer.is_input and torch_lowering(producer).overwritable_output
                and len(self.consumers[producer.name]) == 1 and producer.name not in self.network.outputs
                and producer.phase == layer.phase)


class _Generator:
    def __init__(self, network: Network, source_file: str | None, decoder: bool = False):
        self.network = network
        self.decoder = decoder
        self.source_file = source_file if source_file is not None else network.source_file
        self.cls = class_name(network)
        self.ctx = TorchCodegenContext(network)
        self.layers = self.ctx.layers
        self.tree = _Tree()
        self.owns_module = {layer.name for layer in self.layers
                            if not layer.is_input and torch_lowering(layer).module is not None}

    # submodules -----------------------------------------------------------------------------
    def build_tree(self) -> None:
        forbidden_top = CLASS_ATTRS | MODULE_ATTRIBUTES | (DECODER_ATTRS if self.decoder else set())
        forbidden_nested = MODULE_DICT_ATTRIBUTES
        for layer in self.network.declared_layers():  # registered as written, as state_keys() lists them
            if layer.name not in self.owns_module:
                continue
            segments = layer.name.split(".")
            if any(not s for s in segments):
                raise AlexDSLError(f"torch backend: layer name {layer.name!r} has an empty path segment")
            node = self.tree
            for depth, segment in enumerate(segments):
                bad = forbidden_top if depth == 0 else forbidden_nested
                if segment in bad:
                    owner = "torch.nn.Module" if depth == 0 else "torch.nn.ModuleDict"
                    raise AlexDSLError(
                        f"torch backend: layer name {layer.name!r}: {segment!r} clashes with an attribute of "
                        f"{owner} or of the generated class; rename the layer")
                if node.layer is not None and not self.holds_children(node.layer):
                    raise AlexDSLError(f"torch backend: layer {layer.name!r} would be a child of layer "
                                       f"{node.layer.name!r}, which has parameters; rename one of them")
                node = node.children.setdefault(segment, _Tree())
            if node.children and not self.holds_children(layer):
                raise AlexDSLError(f"torch backend: layer {layer.name!r} is also a prefix of other layer names")
            node.layer = layer

    def holds_children(self, layer: Layer) -> bool:
        """A layer whose module is an ``nn.ParameterDict`` (a bare parameter such as ConvNeXt's
        ``features.1.0.layer_scale``), or one declared ``holds_children`` (Swin's relative position bias), may
        share its path with other layers' modules, as in torchvision."""
        lowering = torch_lowering(layer)
        return lowering.holds_children or lowering.module(layer, self.ctx).startswith("nn.ParameterDict(")

    @staticmethod
    def _top(segment: str) -> str:
        return f"self.{segment}" if _is_plain_identifier(segment) else f"getattr(self, {segment!r})"

    def init_lines(self) -> list[str]:
        lines: list[str] = []

        def visit(node: _Tree, expr: str | None, segment: str) -> None:
            if expr is None:  # top level
                target = self._top(segment)
                if _is_plain_identifier(segment):
                    assign = f"self.{segment} = {{}}"
                else:
                    assign = f"self.add_module({segment!r}, {{}})"
            else:
                target = f"{expr}[{segment!r}]"
                assign = f"{target} = {{}}"
            if node.layer is not None and torch_lowering(node.layer).parameter:
                self.ctx.what = f"layer {node.layer.name!r}"
                tensor = torch_lowering(node.layer).module(node.layer, self.ctx)
                parent = expr or "self"
                if _is_plain_identifier(segment):
                    lines.append(f"{parent}.{segment} = {tensor}")
                    self.ctx.access[node.layer.name] = f"{parent}.{segment}"
                else:
                    lines.append(f"{parent}.register_parameter({segment!r}, {tensor})")
                    self.ctx.access[node.layer.name] = f"getattr({parent}, {segment!r})"
                return
            if node.layer is not None:
                self.ctx.what = f"layer {node.layer.name!r}"
                lines.append(assign.format(torch_lowering(node.layer).module(node.layer, self.ctx)))
                self.ctx.access[node.layer.name] = target
                for child, sub in node.children.items():
                    visit(sub, target, child)
                return
            lines.append(assign.format("nn.ModuleDict()"))
            for child, sub in node.children.items():
                visit(sub, target, child)

        for segment, node in self.tree.children.items():
            visit(node, None, segment)
        return lines

    # forward --------------------------------------------------------------------------------
    def expression(self, layer: Layer, args: list[str]) -> str:
        self.ctx.what = f"layer {layer.name!r}"
        return torch_lowering(layer).forward(layer, args, self.ctx)

    def forward(self) -> tuple[list[str], list[str], dict[str, str]]:
        names = naming.IdentifierMap(RESERVED_LOCALS)
        params = [names(n) for n in self.network.data_inputs]
        self.ctx.first_input = params[0] if params else None
        body: list[str] = []
        labels = set(self.network.label_inputs)
        for layer in self.layers:
            if layer.is_input or _role(layer) != "layer":
                continue
            if any(i in labels for i in layer.inputs):
                raise AlexDSLError(f"torch backend: layer {layer.name!r} reads a label; only loss and accuracy "
                                   "layers may")
            args = [names(i) for i in layer.inputs]
            expr = self.expression(layer, args)
            same_shape = args and self.network.layer(layer.inputs[0]).shape == layer.shape
            if layer.phase == "train" and same_shape:
                expr = f"{expr} if self.training else {args[0]}"
            elif layer.phase == "test" and same_shape:
                expr = f"{args[0]} if self.training else {expr}"
            body.append(f"{names(layer.name)} = {expr}")
        outputs = [names(n) for n in self.network.outputs]
        if not outputs:
            raise AlexDSLError(f"torch backend: network {self.network.name!r} has no outputs")
        body.append(f"return {outputs[0]}" if len(outputs) == 1 else f"return ({', '.join(outputs)})")
        return params, body, names.assigned

    def decode_method(self) -> list[str]:
        """``decode`` (the inference layers over the new tokens: per-token layers as in forward, the others by
        their ``decode`` expression), ``new_cache`` and the table of cache shapes; a NotCacheable error when a
        layer is neither."""
        view = self.network.inference_view()
        if len(view.inputs) != 1 or not self.network.layer(view.inputs[0]).is_tokens:
            raise not_a_language_model()
        names = naming.IdentifierMap(RESERVED_LOCALS | {"offset", "cache", "like", "batch"})
        param = names(view.inputs[0])
        body = []
        for layer in view.layers:
            args = [names(i) for i in layer.inputs]
            lowering = torch_lowering(layer)
            self.ctx.what = f"layer {layer.name!r}"
            if is_per_token(layer, [tuple(self.network.layer(i).shape) for i in layer.inputs]):
                expr = lowering.forward(layer, args, self.ctx)
            else:
                expr = lowering.decode(layer, args, self.ctx) if lowering.decode is not None else None
                if expr is None:
                    raise not_cacheable(layer, declined=lowering.decode is not None)
            body.append(f"{names(layer.name)} = {expr}")
        outputs = [names(n) for n in view.outputs]
        ret = "torch.Tensor" if len(outputs) == 1 else "tuple[torch.Tensor, ...]"
        caches = [f"    {name!r}: {shapes!r}," for name, shapes in self.ctx.caches.items()]
        table = ["KV_CACHES = {", *caches, "}"] if caches else \
            ["KV_CACHES: dict[str, tuple[tuple[int, ...], ...]] = {}"]
        return [
            *table,
            "",
            f"def decode(self, {param}: torch.Tensor, offset: int, cache: dict[str, tuple[torch.Tensor, ...]]) "
            f"-> {ret}:",
            '    """forward() of the new tokens (N, L), the first at position offset, over the key/value cache of the '
            'tokens',
            '    before them (new_cache(); each call writes its own tokens\' keys and values into it)."""',
            *("    " + line for line in body),
            f"    return {outputs[0]}" if len(outputs) == 1 else f"    return ({', '.join(outputs)})",
            "",
            "def new_cache(self, batch: int) -> dict[str, tuple[torch.Tensor, ...]]:",
            '    """Zeroed keys and values of ``batch`` sequences of the longest length, for decode()."""',
            "    like = next(self.parameters())",
            "    return {name: tuple(like.new_zeros(batch, *shape) for shape in shapes)",
            "            for name, shapes in self.KV_CACHES.items()}",
        ]

    def decode_definitions(self) -> list[str]:
        """The module-level source the decode expressions use (:attr:`TorchLowering.decode_definitions`), once."""
        layers = self.network.inference_view().layers
        found = dict.fromkeys(torch_lowering(layer).decode_definitions for layer in layers)
        return [line for text in found if text for line in (text.strip("\n"), "", "")]

    def head_lines(self, role: str) -> tuple[list[str], str, list[Layer]]:
        """Unpacking of ``outputs`` and labels shared by loss() and metrics()."""
        chosen = [layer for layer in self.layers if _role(layer) == role]
        # A language model's loss reads the network's own token ids: they stand for the label.
        label_names = list(dict.fromkeys([*self.network.label_inputs, *(
            layer.inputs[1] for layer in chosen if len(layer.inputs) > 1 and not _takes_label(layer))]))
        reserved = RESERVED_LOCALS - {"label"} if len(label_names) == 1 else RESERVED_LOCALS
        names = naming.IdentifierMap(reserved)
        lines: list[str] = []
        outputs = self.network.outputs
        out_names = [names(n) for n in outputs]
        if chosen:
            lines.append(f"{out_names[0]} = outputs" if len(outputs) == 1 else f"{', '.join(out_names)} = outputs")
        if len(label_names) == 1:
            param = "label"
            local = names(label_names[0])
            if chosen and local != "label":
                lines.append(f"{local} = label")
        else:
            param = "labels"
            if chosen and label_names:
                lines.append(f"{', '.join(names(n) for n in label_names)} = labels")
        for layer in chosen:
            for source in layer.inputs[:1]:
                if source not in outputs:
                    raise AlexDSLError(f"torch backend: {layer.op} layer {layer.name!r} reads {source!r}, which is "
                                       f"not a network output; add it to the output statement")
            if len(layer.inputs) < 2 or layer.inputs[1] not in label_names:
                raise AlexDSLError(f"torch backend: {layer.op} layer {layer.name!r} must read a label input")
        self._head_names = names
        return lines, param, chosen

    def loss_method(self) -> list[str]:
        lines, param, chosen = self.head_lines("loss")
        names = self._head_names
        out = [f"def loss(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], {param}: torch.Tensor) "
               "-> torch.Tensor:",
               '    """The sum of the softmax_loss layers (softmax cross-entropy, averaged over the batch)."""']
        if not chosen:
            out.append(f"    raise NotImplementedError({self.network.name + ' declares no softmax_loss layer'!r})")
            return out
        out += ["    " + line for line in lines]
        results = []
        for layer in chosen:
            logits, label = names(layer.inputs[0]), names(layer.inputs[1])
            result = names(layer.name)
            out.append(f"    {result} = {self.expression(layer, [logits, label])}")
            results.append(result)
        out.append(f"    return {' + '.join(results)}")
        return out

    def metrics_method(self) -> list[str]:
        lines, param, chosen = self.head_lines("metric")
        names = self._head_names
        out = [f"def metrics(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], {param}: torch.Tensor) "
               "-> dict[str, torch.Tensor]:",
               '    """The accuracy layers: the fraction of samples whose label is among the top-k scores."""']
        if not chosen:
            out.append("    return {}")
            return out
        out += ["    " + line for line in lines]
        entries = []
        for layer in chosen:
            logits, label = names(layer.inputs[0]), names(layer.inputs[1])
            result = names(layer.name)
            out.append(f"    {result} = {self.expression(layer, [logits, label])}")
            entries.append(f"{layer.name!r}: {result}")
        out.append(f"    return {{{', '.join(entries)}}}")
        return out

    def reset_lines(self) -> list[str]:
        lines = []
        for layer in self.layers:
            if layer.name not in self.owns_module:
                continue
            if torch_lowering(layer).parameter:  # the layer's one tensor is the parameter itself
                ((pname, spec),) = layer.params.items()
                statement, note = filler_statement(self.ctx.access[layer.name], spec, layer.state_key(pname))
                lines += [f"# {note}"] * bool(note) + [statement]
                continue
            lines.append(f"m = {self.ctx.access[layer.name]}")
            for pname, spec in layer.params.items():
                if not all(_is_plain_identifier(part) for part in pname.split(".")):  # out_proj.weight
                    raise AlexDSLError(f"torch backend: parameter name {pname!r} of {layer.name!r}")
                statement, note = filler_statement(f"m.{pname}", spec, f"{layer.name}.{pname}")
                if note:
                    lines.append(f"# {note}")
                lines.append(statement)
            op = lookup(layer.op)
            if op is not None and set(layer.buffers) - set(op.buffer_values(layer.attrs)):  # running statistics
                lines.append("m.reset_running_stats()")
        return lines

    def definitions(self) -> list[str]:
        """The module-level classes the layers' modules use (:attr:`TorchLowering.definitions`), each once."""
        found = dict.fromkeys(torch_lowering(layer).definitions_for(layer) for layer in self.layers
                              if layer.name in self.owns_module)
        return [line for text in found if text for line in (text.strip("\n"), "", "")]

    def generate(self) -> str:
        from alexdsl import __version__

        net = self.network
        self.build_tree()
        init = self.init_lines()
        params, body, _ = self.forward()
        decoding = self.decode_method() if self.decoder else []
        source = ascii(str(self.source_file)) if self.source_file else "a network built in Python"
        input_shapes = {n: _shape(net.layer(n).shape, n) for n in net.data_inputs}
        classes = {n: _int(net.layer(n).attrs.get("classes", 0), n) for n in net.label_inputs}
        multipliers = []
        for layer in self.layers:
            for pname, spec in layer.params.items():
                if spec.tied:  # the tied layer's own entry holds the multipliers of the one stored tensor
                    continue
                key = layer.state_key(pname)
                multipliers.append(f"        {key!r}: ({_float(spec.lr_mult, key)!r}, "
                                   f"{_float(spec.decay_mult, key)!r}),")
        sig = ", ".join(["self", *(f"{p}: torch.Tensor" for p in params)])
        ret = "torch.Tensor" if len(net.outputs) == 1 else "tuple[torch.Tensor, ...]"
        out: list[str] = [
            f"# Generated by alexdsl {__version__} (torch backend); do not edit.",
            f"# Source: {source}",
            f"# Network: {ascii(net.name)}",
            "# Regenerate with `alexdsl compile FILE --backend torch`.",
            f'"""{self.cls}: a PyTorch module generated by alexdsl."""',
            "",
            *sorted({line for layer in self.layers if not layer.is_input for line in torch_lowering(layer).imports}),
            "import torch",
            "import torch.nn.functional as F",
            "from torch import nn",
            "",
            "",
            *self.definitions(),
            *(self.decode_definitions() if self.decoder else []),
            f"class {self.cls}(nn.Module):",
            f"    description = {net.description!r}",
            f"    source_file = {str(self.source_file) if self.source_file else None!r}",
            f"    input_shapes = {input_shapes!r}",
            f"    label_classes = {classes!r}",
            f"    output_names = {tuple(net.outputs)!r}",
            *(["    MULTIPLIERS = {", *multipliers, "    }"] if multipliers
              else ["    MULTIPLIERS: dict[str, tuple[float, float]] = {}"]),
            "",
            "    def __init__(self) -> None:",
            "        super().__init__()",
            *("        " + line for line in init),
            "        self.reset_parameters()",
            "",
            f"    def forward({sig}) -> {ret}:",
            *("        " + line for line in body),
            "",
            *(f"    {line}" if line else "" for line in decoding),
            *([""] if decoding else []),
            *("    " + line for line in self.loss_method()),
            "",
            *("    " + line for line in self.metrics_method()),
            "",
            "    def reset_parameters(self) -> None:",
            '        """Fill the parameters as Caffe would; reset batchnorm running statistics."""',
            *("        " + line for line in self.reset_lines() or ["pass"]),
            "",
            "    def param_groups(self, base_lr: float, weight_decay: float) -> list[dict]:",
            '        """Optimizer groups: lr = base_lr * lr_mult, weight_decay = weight_decay * decay_mult."""',
            "        groups: dict[tuple[float, float], dict] = {}",
            "        for name, param in self.named_parameters():",
            "            lr_mult, decay_mult = self.MULTIPLIERS.get(name, (1.0, 1.0))",
            "            group = groups.setdefault((lr_mult, decay_mult), {",
            '                "params": [], "lr": base_lr * lr_mult, "weight_decay": weight_decay * decay_mult})',
            '            group["params"].append(param)',
            "        return list(groups.values())",
            "",
        ]
        # Deep names (torchvision's trunk_output.block4.block4-5.f.c.0) can make a statement long:
        # such lines are marked for ruff rather than broken.
        return "\n".join(_long_ok(line) for text in out for line in text.split("\n"))


def _long_ok(line: str) -> str:
    """``line``, marked for ruff when long names make it exceed 120 characters."""
    return line + "  # noqa: E501" if len(line) > 120 and "# noqa" not in line else line


def generate_source(network: Network, *, source_file: str | None = None, decoder: bool = False) -> str:
    """The standalone PyTorch source for ``network`` (deterministic: same input, same bytes); ``decoder``: with
    ``decode`` and ``new_cache``, the network's key/value-cached decoder."""
    return _Generator(network, source_file, decoder).generate()


_BUILD_COUNT = 0


def build(network: Network, *, source_file: str | None = None, decoder: bool = False) -> Any:
    """Instantiate the module from its generated source (exec'd as torch.fx does); ``.code`` holds it."""
    global _BUILD_COUNT
    code = generate_source(network, source_file=source_file, decoder=decoder)
    _BUILD_COUNT += 1
    filename = f"<alexdsl-torch-{_BUILD_COUNT}:{class_name(network)}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": "alexdsl_generated"}
    exec(compile(code, filename, "exec"), namespace)  # noqa: S102 - our own generated, sanitised source
    module = namespace[class_name(network)]()
    module.code = code
    return module


def load_weights(module: Any, weights: Any, *, strict: bool = True) -> None:
    """Load a state dict or a weights file (.safetensors, .npz, .pt/.pth) into ``module``.

    Reads and checks through :mod:`alexdsl.weights`: one :class:`AlexDSLError` counts and lists
    the missing and unexpected keys and the shape mismatches (with ``strict=False``, only shapes).
    """
    import os

    import torch

    from alexdsl.weights import as_arrays, check_state

    source = os.fspath(weights) if isinstance(weights, str | os.PathLike) else None
    own = module.state_dict()
    integers = [k for k, v in own.items() if not v.is_floating_point()]  # relative_position_index
    weights = {k: torch.from_numpy(v) for k, v in as_arrays(weights, {k: tuple(v.shape) for k, v in own.items()},
                                                                strict=strict, integers=integers).items()}
    check_state(weights, {k: tuple(v.shape) for k, v in own.items()}, strict=strict, source=source)
    # Files from other tools (Caffe, the NumPy executor) carry no batchnorm step counter.
    counters = {k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in weights}
    module.load_state_dict({**counters, **weights}, strict=strict)
