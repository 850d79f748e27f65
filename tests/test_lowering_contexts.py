"""The typed lowering contexts (alexdsl/ops/contexts.py): each backend's context class provides every
member of its Protocol with a compatible signature, and an op's lowerings run against small fake
contexts, with no network built.

mypy and pyright are not installed here, so conformance is checked with ``inspect``: each Protocol
method exists on the class with the same parameter names, kinds and defaults and the same return
annotation, and each Protocol data member is annotated on the class with the same type.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, NoReturn

import numpy as np
import pytest
from conftest import ROOT

from alexdsl.backends.executor.codegen import ExecutorCodegenContext
from alexdsl.backends.torch.codegen import TorchCodegenContext
from alexdsl.interop.caffe import CaffeImporter, Message, Scalar
from alexdsl.interop.caffe_export import CaffeLayerContext
from alexdsl.interop.onnx import OnnxGraphBuilder
from alexdsl.interop.onnx_graph import OnnxNode
from alexdsl.interop.onnx_import import OnnxMatchContext
from alexdsl.ir.network import Layer, ParamSpec
from alexdsl.ops import contexts
from alexdsl.ops.fillers import Filler
from alexdsl.ops.lowering import ExecutorKernel, OnnxImport
from alexdsl.ops.registry import lookup

# ---------------------------------------------------------------------------------- conformance


def _members(protocol: type) -> tuple[dict[str, Any], dict[str, str]]:
    """The Protocol's methods (name -> function) and data members (name -> annotation)."""
    methods = {name: value for name, value in vars(protocol).items()
               if inspect.isfunction(value) and not name.startswith("_")}
    return methods, dict(vars(protocol).get("__annotations__", {}))


def _signature(cls: type, name: str) -> inspect.Signature:
    """The signature of ``cls.name`` as a caller of an instance sees it (no ``self``)."""
    static = inspect.getattr_static(cls, name)
    if isinstance(static, staticmethod):
        return inspect.signature(static.__func__)
    parameters = list(inspect.signature(static).parameters.values())[1:]
    return inspect.signature(static).replace(parameters=parameters)


# The backends' own types that stand for a Protocol (each checked against it below).
STANDS_FOR = {"OnnxNode": "OnnxNodeView", "Message": "CaffeMessage", "Scalar": "CaffeScalar"}


def _annotation(value: Any) -> str:
    """An annotation as text, without ``builtins.`` and with a backend's type written as the Protocol it stands for."""
    text = value if isinstance(value, str) else getattr(value, "__name__", repr(value))
    text = re.sub(r"\b(?:builtins|contexts)\.", "", text)
    return re.sub(r"\b(" + "|".join(STANDS_FOR) + r")\b", lambda m: STANDS_FOR[m.group(1)], text)


def _annotated(cls: type) -> dict[str, str]:
    return {name: _annotation(value) for klass in reversed(cls.__mro__)
            for name, value in vars(klass).get("__annotations__", {}).items()}


def _mismatches(protocol: type, cls: type) -> list[str]:
    """What ``cls`` lacks or has incompatibly, against ``protocol``; empty when it conforms."""
    methods, data = _members(protocol)
    found = []
    for name, function in methods.items():
        if not hasattr(cls, name):
            found.append(f"{cls.__name__} has no method {name}")
            continue
        wanted = list(_signature(protocol, name).parameters.values())
        have = list(_signature(cls, name).parameters.values())
        shape = [(p.name, p.kind, p.default) for p in wanted]
        if shape != [(p.name, p.kind, p.default) for p in have]:
            found.append(f"{cls.__name__}.{name}{inspect.signature(getattr(cls, name))} differs from the "
                         f"protocol's {name}{inspect.signature(function)}")
        for theirs, ours in zip(wanted, have, strict=False):
            if theirs.annotation != "Any" and ours.annotation is not inspect.Parameter.empty \
                    and _annotation(ours.annotation) != _annotation(theirs.annotation):
                found.append(f"{cls.__name__}.{name}: {ours.name} is {_annotation(ours.annotation)}, "
                             f"the protocol's {_annotation(theirs.annotation)}")
        returns = _signature(protocol, name).return_annotation
        given = _signature(cls, name).return_annotation
        if given is not inspect.Signature.empty and _annotation(given) != _annotation(returns):
            found.append(f"{cls.__name__}.{name} returns {_annotation(given)}, the protocol {_annotation(returns)}")
    annotated = _annotated(cls)
    for name, annotation in data.items():
        if annotated.get(name) != _annotation(annotation):
            found.append(f"{cls.__name__} does not declare {name}: {_annotation(annotation)} "
                         f"(it declares {annotated.get(name)})")
    return found


# --------------------------------------------------------------------------------- fake contexts


class FakeTorch:
    """A TorchContext over a table of input shapes: modules are ``self.<layer>``."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], inplace: bool = False):
        self.shapes, self.inplace = shapes, inplace

    def pair(self, value: Any) -> str:
        h, w = value if isinstance(value, tuple | list) else (value, value)
        return repr(h) if h == w else repr((h, w))

    def input_shape(self, layer: Any, index: int) -> tuple[int, ...]:
        return self.shapes[layer.inputs[index]]

    def module(self, layer: Any) -> str:
        return f"self.{layer.name}"

    def batch_size(self) -> str:
        return "x.shape[0]"

    def may_run_inplace(self, layer: Any) -> bool:
        return self.inplace

    def int(self, value: Any) -> str:
        return repr(int(value))

    def float(self, value: Any) -> str:
        return repr(float(value))

    offset: str = "offset"

    def cache(self, layer: Any, shapes: tuple[tuple[int, ...], ...]) -> str:
        self.cached = shapes
        return f"cache[{layer.name!r}]"


class FakeExecutor:
    """An ExecutorContext: the inputs are the variables ``x0, x1...``; weights are ``w['<layer>.<name>']``."""

    inputs: list[str]
    ident: str
    epilogue: str | None
    residual: str | None

    def __init__(self, layer: Layer, shapes: dict[str, tuple[int, ...]], epilogue: str | None = None,
                 residual: str | None = None):
        self.inputs = [f"x{i}" for i in range(len(layer.inputs))]
        self.ident, self.epilogue, self.residual, self.shapes = layer.name, epilogue, residual, shapes

    def lit(self, value: Any) -> str:
        return repr(value)

    def weight(self, layer: Any, name: str) -> str:
        return f"w[{layer.name + '.' + name!r}]"

    def input_shape(self, layer: Any, index: int) -> tuple[int, ...]:
        return self.shapes[layer.inputs[index]]

    def has_bias(self, layer: Any) -> bool:
        return "bias" in layer.params

    def weights_setup(self, layer: Any) -> list[str]:
        return [f"self.{self.ident}_w = {self.weight(layer, 'weight')}"]

    def conv_plan(self, *geometry: Any) -> contexts.ConvPlanView:
        return FakeConvPlan(*geometry)

    offset: str = "offset"

    def cache(self, layer: Any, shapes: tuple[tuple[int, ...], ...]) -> str:
        self.cached = shapes
        return f"self.cache[{layer.name!r}]"


class FakeConvPlan:
    """A ConvPlanView: im2col columns of (C / groups) * kh * kw rows per output pixel, no wide buffer."""

    def __init__(self, c: int, h: int, w: int, out: int, kernel: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int], dilation: tuple[int, int], groups: int) -> None:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
        self.is_pointwise = kernel == (1, 1) and stride == (1, 1) and pad == (0, 0)
        oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        self.rows, self.pixels = c // groups * kh * kw, oh * ow

    def cols_size(self, batch: int = 1) -> int:
        return 0 if self.is_pointwise else batch * self.rows * self.pixels

    def wide_size(self, batch: int = 1) -> int:
        return 0


class FakeOnnx:
    """An OnnxExportContext recording ``(op_type, inputs, output, attrs)`` per node."""

    inputs: list[str]

    def __init__(self, layer: Layer, shapes: dict[str, tuple[int, ...]]):
        self.layer, self.shapes, self.inputs = layer, shapes, list(layer.inputs)
        self.nodes: list[tuple[str, list[str], str, dict[str, Any]]] = []
        self.initializers: list[str] = []
        self.aliased: str | None = None

    def node(self, op_type: str, inputs: list[str], *, output: str | None = None, **attrs: Any) -> str:
        output = output or self.layer.name
        self.nodes.append((op_type, list(inputs), output, attrs))
        return output

    def initializer(self, layer: Any, name: str) -> str:
        self.initializers.append(f"{layer.name}.{name}")
        return f"{layer.name}.{name}"

    def constant(self, values: Any, *, output: str | None = None, integer: bool = False) -> str:
        return self.node("Constant", [], output=output or f"{self.layer.name}.constant", value=values)

    def alias(self, value: str) -> None:
        self.aliased = value

    def batch_size(self) -> str:
        return "N"

    def input_shape(self, layer: Any, index: int) -> tuple[int, ...]:
        return self.shapes[layer.inputs[index]]

    def fail(self, message: str) -> NoReturn:
        raise AssertionError(message)


class FakeNode:
    """An OnnxNodeView."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]

    def __init__(self, op_type: str, inputs: list[str], outputs: list[str], **attrs: Any):
        self.op_type, self.name, self.inputs, self.outputs, self.attrs = op_type, outputs[0], inputs, outputs, attrs

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


class FakeOnnxGraph:
    """An OnnxImportContext over value shapes, with no constants and no producers."""

    opset: int
    outputs: list[str]

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        self.opset, self.outputs, self.shapes = 17, [], shapes
        self.failures: list[str] = []

    def const(self, value: str) -> np.ndarray | None:
        return None

    def shape(self, value: str) -> tuple[int, ...] | None:
        return self.shapes.get(value)

    def producer(self, value: str) -> contexts.OnnxNodeView | None:
        return None

    def readers(self, value: str) -> list[contexts.OnnxNodeView]:
        return []

    def absorb(self, value: str, *readers: contexts.OnnxNodeView | None) -> contexts.OnnxNodeView | None:
        return None

    def constants_ending(self, suffix: str) -> list[str]:
        return []

    def fail(self, node: contexts.OnnxNodeView, message: str) -> None:
        self.failures.append(message)


IMPLEMENTATIONS = [
    (contexts.TorchContext, TorchCodegenContext),
    (contexts.ExecutorContext, ExecutorCodegenContext),
    (contexts.OnnxExportContext, OnnxGraphBuilder),
    (contexts.OnnxImportContext, OnnxMatchContext),
    (contexts.OnnxNodeView, OnnxNode),
    (contexts.CaffeExportContext, CaffeLayerContext),
    (contexts.CaffeImportContext, CaffeImporter),
    (contexts.CaffeMessage, Message),
    (contexts.CaffeScalar, Scalar),
    (contexts.TorchContext, FakeTorch),
    (contexts.ExecutorContext, FakeExecutor),
    (contexts.OnnxExportContext, FakeOnnx),
    (contexts.OnnxImportContext, FakeOnnxGraph),
    (contexts.OnnxNodeView, FakeNode),
]


@pytest.mark.parametrize(("protocol", "cls"), IMPLEMENTATIONS, ids=[f"{p.__name__}-{c.__name__}" for p, c in
                                                                     IMPLEMENTATIONS])
def test_each_context_class_provides_its_protocol(protocol: type, cls: type) -> None:
    assert _mismatches(protocol, cls) == []


def test_the_conformance_check_sees_a_missing_member_a_changed_signature_and_a_wrong_return() -> None:
    class Partial:
        inputs: list[str]

        def node(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
            return ""

        def initializer(self, layer: Any, name: str) -> None:
            return None

    found = _mismatches(contexts.OnnxExportContext, Partial)
    assert "Partial has no method constant" in found
    assert any(m.startswith("Partial.node(") for m in found)  # ``output`` is not keyword-only
    assert "Partial.initializer returns None, the protocol str" in found


def test_every_protocol_member_is_documented() -> None:
    for protocol in {p for p, _ in IMPLEMENTATIONS}:
        methods, _ = _members(protocol)
        assert protocol.__doc__, protocol.__name__
        assert all(function.__doc__ for function in methods.values()), protocol.__name__


def test_docs_extending_lists_every_member_of_each_protocol() -> None:
    text = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `\w+` \| `(\w+)`[^|]* \| (.+) \|$", text, re.M)
    assert len(rows) == 6
    for name, offered in rows:
        methods, data = _members(getattr(contexts, name))
        assert set(re.findall(r"`(\w+)", offered)) == {*methods, *data}, name


# ------------------------------------------------------------------------------ lowering with fakes

SHAPES = {"x": (3, 8, 8), "a": (4, 8, 8), "b": (4, 8, 8), "v": (4,)}
FILLER = Filler("constant", ())


def _conv() -> Layer:
    attrs = {"out": 8, "kernel": (3, 3), "stride": (1, 1), "pad": (1, 1), "dilation": (1, 1), "groups": 1,
             "bias": True}
    params = {"weight": ParamSpec((8, 3, 3, 3), FILLER), "bias": ParamSpec((8,), FILLER)}
    return Layer("c", "conv", attrs, ["x"], (8, 8, 8), params)


def _relu() -> Layer:
    return Layer("r", "relu", {}, ["a"], (4, 8, 8))


def _add(*inputs: str) -> Layer:
    return Layer("s", "add", {}, list(inputs), (4, 8, 8))


def _concat() -> Layer:
    return Layer("cat", "concat", {"axis": 0}, ["a", "b"], (8, 8, 8))


def _lowerings(op: str) -> Any:
    found = lookup(op)
    assert found is not None
    return found.lower


def test_torch_lowerings_with_a_fake_context() -> None:
    conv = _lowerings("conv").torch
    assert conv.module(_conv(), FakeTorch(SHAPES)) == "nn.Conv2d(3, 8, 3, padding=1)"
    assert conv.forward(_conv(), ["x"], FakeTorch(SHAPES)) == "self.c(x)"
    relu = _lowerings("relu").torch
    assert relu.forward(_relu(), ["a"], FakeTorch(SHAPES)) == "F.relu(a)"
    assert relu.forward(_relu(), ["a"], FakeTorch(SHAPES, inplace=True)) == "F.relu(a, inplace=True)"
    assert _lowerings("add").torch.forward(_add("a", "b", "v"), ["a", "b", "v"], FakeTorch(SHAPES)) \
        == "a + b + v[:, None, None]"
    assert _lowerings("concat").torch.forward(_concat(), ["a", "b"], FakeTorch(SHAPES)) == "torch.cat([a, b], 1)"


def test_executor_lowerings_with_a_fake_context() -> None:
    conv = _conv()
    kernel = _lowerings("conv").executor.lower(conv, FakeExecutor(conv, SHAPES, epilogue="relu"))
    assert kernel.code == "rt.conv2d(x0, self.c_w, self.c_b, relu=True, plan=self.c_plan, scratch=scratch, out={out})"
    assert kernel.kernel == "conv2d+bias"
    assert kernel.setup == ("self.c_w = w['c.weight']",
                            "self.c_plan = rt.ConvPlan(3, 8, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1)")
    assert kernel.scratch[0] == 3 * 3 * 3 * 8 * 8  # one sample's im2col columns
    summed = _lowerings("conv").executor.lower(conv, FakeExecutor(conv, SHAPES, epilogue="relu", residual="r"))
    assert summed.code == ("rt.conv2d(x0, self.c_w, self.c_b, relu=True, residual=r, plan=self.c_plan, "
                           "scratch=scratch, out={out})")
    relu = _relu()
    assert _lowerings("relu").executor.lower(relu, FakeExecutor(relu, SHAPES)) == ExecutorKernel(
        "rt.relu(x0, out={out})", "relu")
    add = _add("a", "b")
    assert _lowerings("add").executor.lower(add, FakeExecutor(add, SHAPES)).code == \
        "rt.add(x0, x1, relu=False, out={out})"
    cat = _concat()
    assert _lowerings("concat").executor.lower(cat, FakeExecutor(cat, SHAPES)).code == \
        "rt.concat([x0, x1], out={out})"


def test_onnx_lowerings_with_a_fake_context() -> None:
    conv, ctx = _conv(), FakeOnnx(_conv(), SHAPES)
    _lowerings("conv").onnx(conv, ctx)
    assert ctx.initializers == ["c.weight", "c.bias"]
    assert ctx.nodes == [("Conv", ["x", "c.weight", "c.bias"], "c", {
        "kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1})]
    for layer, expected in ((_relu(), [("Relu", ["a"], "r", {})]),
                            (_add("a", "b"), [("Add", ["a", "b"], "s", {})]),
                            (_concat(), [("Concat", ["a", "b"], "cat", {"axis": 1})])):
        ctx = FakeOnnx(layer, SHAPES)
        _lowerings(layer.op).onnx(layer, ctx)
        assert ctx.nodes == expected
    add, ctx = _add("a", "b", "v"), FakeOnnx(_add("a", "b", "v"), SHAPES)
    _lowerings("add").onnx(add, ctx)  # the per-channel vector is unsqueezed to C x 1 x 1 first
    assert [(op, inputs, output) for op, inputs, output, _ in ctx.nodes] == [
        ("Constant", [], "s.constant"), ("Unsqueeze", ["v", "s.constant"], "s.input3"),
        ("Sum", ["a", "b", "s.input3"], "s")]


def test_onnx_import_converters_with_a_fake_context() -> None:
    ctx = FakeOnnxGraph({"a": (4, 8, 8), "b": (4, 8, 8), "cat": (8, 8, 8)})
    convert = _lowerings("concat").from_onnx["Concat"]
    assert convert(FakeNode("Concat", ["a", "b"], ["cat"], axis=1), ctx) == OnnxImport("concat", ["a", "b"])
    assert convert(FakeNode("Concat", ["a", "b"], ["cat"], axis=2), ctx) == OnnxImport("concat", ["a", "b"],
                                                                                       {"axis": 1})
    assert convert(FakeNode("Concat", ["a", "b"], ["cat"], axis=0), ctx) is None  # the batch axis
    assert ctx.failures == ["only a Concat of computed values over an axis after the batch is imported"]
    assert _lowerings("relu").from_onnx["Relu"](FakeNode("Relu", ["a"], ["r"]), ctx) == OnnxImport("relu", ["a"])


@pytest.mark.parametrize("causal", [True, False])
def test_sdpas_cached_lowerings_take_causal_self_attention_alone(causal: bool) -> None:
    """A decoder's sdpa writes the keys and values (their shapes the cache's) and reads from ``offset``; a
    non-causal one declines (None), and the network then generates without a cache."""
    shapes = {"q": (8, 16), "k": (8, 16), "v": (8, 12)}
    layer = Layer("att", "sdpa", {"heads": 2, "causal": causal, "scale": None}, ["q", "k", "v"], (8, 12))
    lowering = lookup("sdpa").lower
    executor, torch = FakeExecutor(layer, shapes), FakeTorch(shapes)
    kernel = lowering.executor.decode(layer, executor)
    expression = lowering.torch.decode(layer, ["q", "k", "v"], torch)
    if not causal:
        assert kernel is None and expression is None
        return
    assert kernel.code == "rt.cached_sdpa(x0, x1, x2, self.cache['att'], offset, heads=2, scale=None, out={out})"
    assert expression == "cached_sdpa(q, k, v, cache['att'], offset, 2, scale=None)"
    assert executor.cached == torch.cached == ((8, 16), (8, 12))
