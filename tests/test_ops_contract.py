"""Every registered op: documented, its example checks, and its shape rule agrees with torch.

The shape sweeps compare alexdsl's inferred shapes with what torch.nn.functional returns.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from conftest import ROOT, SCAFFOLD, random_weights

import alexdsl
from alexdsl.errors import AlexDSLError
from alexdsl.ops.lowering import Pattern
from alexdsl.ops.registry import all_ops, lookup


@pytest.mark.parametrize("op", all_ops(), ids=lambda op: op.name)
def test_op_is_documented_and_its_example_checks(op) -> None:
    assert op.summary.endswith(".") and len(op.summary) > 10
    assert op.example and f"{op.name}" in op.example
    for arg in op.args:
        assert arg.doc, f"{op.name}.{arg.name} has no doc"
    net = alexdsl.parse("network Contract\n" + SCAFFOLD + op.example + "\n", "contract.adsl")
    label = op.example.split(":", 1)[0].strip()
    layer = net.layer(label) if label in net.graph else None
    assert layer is None or layer.shape is not None
    assert lookup(op.name) is op


def test_the_registry_holds_the_first_release_ops() -> None:
    names = {op.name for op in all_ops()}
    assert names >= {"conv", "fc", "relu", "leaky_relu", "sigmoid", "tanh", "maxpool", "avgpool", "adaptive_avgpool",
                     "global_avgpool", "lrn", "dropout", "batchnorm", "flatten", "concat", "add", "softmax",
                     "softmax_loss", "accuracy"}


torch = pytest.importorskip("torch")
F = torch.nn.functional


def _shape(text: str, layer: str) -> tuple[int, ...] | None:
    try:
        return alexdsl.parse(text).shapes[layer]
    except AlexDSLError:
        return None


def _torch_shape(fn) -> tuple[int, ...] | None:
    try:
        return tuple(fn().shape[1:])
    except RuntimeError:
        return None


def test_conv_shapes_match_torch_over_a_sweep() -> None:
    checked = 0
    for size, kernel, stride, pad, dilation, groups in itertools.product(
            (5, 7, 12), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2), (1, 2, 4)):
        text = f"input x: 8x{size}x{size + 1}\nc: conv(8, ({kernel}, {kernel + 1}), stride={stride}, pad={pad}, " \
               f"dilation={dilation}, groups={groups})\n"
        x = torch.zeros(1, 8, size, size + 1)
        w = torch.zeros(8, 8 // groups, kernel, kernel + 1)
        expected = _torch_shape(lambda: F.conv2d(x, w, None, stride, pad, dilation, groups))  # noqa: B023
        assert _shape(text, "c") == expected, text
        checked += expected is not None
    assert checked > 300


@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
def test_pool_shapes_match_torch_over_a_sweep(kind: str) -> None:
    fn = F.max_pool2d if kind == "maxpool" else F.avg_pool2d
    checked = 0
    for size, kernel, stride, pad, ceil in itertools.product(
            (1, 2, 5, 6, 7, 13, 14), (1, 2, 3, 4), (1, 2, 3), (0, 1, 2), (False, True)):
        text = f"input x: 3x{size}x{size}\np: {kind}({kernel}, stride={stride}, pad={pad}, " \
               f"round={'ceil' if ceil else 'floor'})\n"
        x = torch.zeros(1, 3, size, size)
        expected = _torch_shape(lambda: fn(x, kernel, stride, pad, ceil_mode=ceil))  # noqa: B023
        assert _shape(text, "p") == expected, text
        checked += expected is not None
    assert checked > 200


def test_other_shape_rules_match_torch() -> None:
    x = torch.zeros(1, 6, 13, 11)
    base = "input x: 6x13x11\n"
    cases = {
        "adaptive_avgpool(6)": lambda: F.adaptive_avg_pool2d(x, 6),
        "adaptive_avgpool((5, 3))": lambda: F.adaptive_avg_pool2d(x, (5, 3)),
        "global_avgpool": lambda: F.adaptive_avg_pool2d(x, 1),
        "lrn(5)": lambda: F.local_response_norm(x, 5),
        "relu": lambda: F.relu(x),
        "leaky_relu(0.2)": lambda: F.leaky_relu(x, 0.2),
        "sigmoid": lambda: torch.sigmoid(x),
        "tanh": lambda: torch.tanh(x),
        "softmax": lambda: F.softmax(x, 1),
        "dropout(0.3)": lambda: F.dropout(x, 0.3),
        "batchnorm": lambda: F.batch_norm(x, torch.zeros(6), torch.ones(6)),
        "flatten": lambda: torch.flatten(x, 1),
        "fc(7)": lambda: F.linear(torch.flatten(x, 1), torch.zeros(7, 6 * 13 * 11)),
        "concat(x, x)": lambda: torch.cat([x, x], 1),
        "add(x, x)": lambda: x + x,
    }
    for call, fn in cases.items():
        assert _shape(base + f"y: {call}\n", "y") == tuple(fn().shape[1:]), call


def test_parameter_shapes_match_torch_modules() -> None:
    net = alexdsl.parse("input x: 6x13x11\nc: conv(12, 3, groups=3)\nf: fc(5)\nb: x -> batchnorm\n")
    conv, fc, bn = torch.nn.Conv2d(6, 12, 3, groups=3), torch.nn.Linear(12 * 11 * 9, 5), torch.nn.BatchNorm2d(6)
    assert net.layer("c").params["weight"].shape == tuple(conv.weight.shape)
    assert net.layer("f").params["weight"].shape == tuple(fc.weight.shape)
    assert net.layer("c").param_count == sum(p.numel() for p in conv.parameters())
    assert net.layer("b").param_count == sum(p.numel() for p in bn.parameters())
    assert set(net.layer("b").buffers) == {"running_mean", "running_var"}


@pytest.mark.parametrize("op", all_ops(), ids=lambda op: op.name)
def test_every_backend_lowers_every_op(op) -> None:
    """Adding an op to the registry without a lowering in each backend fails here."""
    from alexdsl.backends.executor.codegen import generate_source as cupy_source
    from alexdsl.backends.torch.codegen import generate_source as torch_source
    from alexdsl.errors import AlexDSLError
    from alexdsl.interop.onnx import export_onnx

    label = op.example.split(":", 1)[0].strip()
    text = "network Contract\n" + SCAFFOLD + op.example + "\n"
    if op.role == "layer":
        text += f"output {label}\n"
    net = alexdsl.parse(text, "contract.adsl", input_shapes={"data": (16, 12, 12)})  # small: fc(4096) stays cheap
    assert "class Contract" in torch_source(net)
    assert "class Contract" in cupy_source(net)
    if op.role == "layer":
        try:
            export_onnx(net, seed=0)
        except AlexDSLError as error:  # a documented limit (uneven adaptive pooling) is fine; a gap is not
            assert "has no ONNX export" not in str(error) and "no inference output" not in str(error), error


def _contract_network(op, scaffold: str = SCAFFOLD, data: tuple[int, ...] = (16, 32, 32)) -> alexdsl.Network:
    label = op.example.split(":", 1)[0].strip()
    text = "network Contract\n" + scaffold + op.example + "\n" + (f"output {label}\n" if op.role == "layer" else "")
    return alexdsl.parse(text, "contract.adsl", input_shapes={"data": data})


@pytest.mark.parametrize("op", all_ops(), ids=lambda op: op.name)
def test_every_op_declares_every_lowering(op) -> None:
    """One place per op: the registry entry carries each target's lowering and its fusion pattern."""
    from alexdsl.ops.lowering import Pattern

    assert isinstance(op.pattern, Pattern)
    lower = op.lower
    assert lower.torch is not None, op.name
    if op.role == "layer":
        assert lower.executor is not None and lower.onnx is not None and lower.reference is not None, op.name
    ex = lower.executor
    if ex is not None and ex.epilogue:
        assert op.pattern == Pattern.ELEMWISE, "an epilogue finishes a producer elementwise"
    if ex is not None and ex.epilogues:
        assert op.pattern in (Pattern.OUT_ELEMWISE_FUSABLE, Pattern.BROADCAST), op.name


@pytest.mark.parametrize("op", [op for op in all_ops() if op.role == "layer"], ids=lambda op: op.name)
def test_every_lowering_computes_what_the_reference_computes(op) -> None:
    """torch module, NumPy executor and ONNX Runtime against the op's torch.nn.functional reference, with random
    weights and statistics (a kernel that ignores a parameter left at its filler's 1 or 0 fails) and signed inputs."""
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.compare import compare

    net = _contract_network(op, data=(16, 12, 12))  # 12 = 2 * 6: adaptive pooling to 6x6 has even windows in ONNX
    rows = compare(net, ["reference", "torch", "cupy", "onnx"], weights=random_weights(net, seed=3), batch=2, seed=3)
    label = op.example.split(":", 1)[0].strip()
    row = next(r for r in rows if r.layer == label)
    for backend, diff in row.diffs.items():
        assert diff is not None and diff[1] < 1e-5, (op.name, backend, diff)


@pytest.mark.parametrize("op", all_ops(), ids=lambda op: op.name)
def test_caffe_export_then_import_gives_the_same_op(op) -> None:
    from alexdsl.interop.caffe import import_prototxt
    from alexdsl.interop.caffe_export import export_prototxt

    scaffold = SCAFFOLD.replace("input v: 10\nfc8: v -> relu\n", "fc8: data -> fc(10)\n")
    if '"table"' not in op.example:  # the tied embedding of unembed's example has no Caffe layer either
        scaffold = scaffold.replace("table: ids -> embedding(10, 8)\n", "")
    net = _contract_network(op, scaffold, data=(16, 12, 12))
    label = op.example.split(":", 1)[0].strip()
    if op.lower.caffe is None:  # Caffe has no such layer: a located error naming the op
        with pytest.raises(AlexDSLError, match=rf"contract.adsl:\d+:\d+: error: op '{op.name}' has no Caffe layer"):
            export_prototxt(net)
        return
    again = alexdsl.parse(import_prototxt(export_prototxt(net), "contract.prototxt"), "again.adsl")
    # Caffe has no adaptive pooling: it exports as the equivalent fixed average pool
    assert again.layer(label).op == ("avgpool" if op.name == "adaptive_avgpool" else op.name)
    assert again.shapes[label] == net.shapes[label]
    assert again.layer(label).params.keys() == net.layer(label).params.keys()


# Accuracy: every elementwise op's float32 executor kernel against its float64 reference ---------------------

ULP_BOUND = 4.0
"""The most float32 ulps an elementwise kernel may be from the float64 truth, anywhere."""
TINY = 2.0**-100
"""Results under this (7.9e-31) in magnitude count in ulps of TINY (9.4e-38): one under a few of those may be
flushed to 0, as exp(-x) overflowing makes sigmoid and silu below -88.7 (where silu is under 2.6e-37, as in
torch); at that size a value has no effect on a float32 network."""


def _extreme_inputs() -> np.ndarray:
    """0, and both signs of 1e-3..100 (dense) and of very small and very large magnitudes, as float32."""
    magnitudes = np.concatenate([np.logspace(-3, 2, 4001), [0.0, 1e-38, 1e-30, 1e-20, 1e-12, 1e-8, 1e-5, 1e3, 1e4,
                                                             1e6, 1e10, 1e20, 1e30, 3e38]])
    return np.concatenate([magnitudes, -magnitudes]).astype(np.float32)


def ulps(got: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|got - truth| in float32 ulps of the truth (of :data:`TINY` below it); an infinity is right where the truth
    rounds to it in float32, and a NaN or an infinity elsewhere is infinitely far."""
    got, truth = got.astype(np.float64), truth.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = truth.astype(np.float32)  # inf where the truth is past float32's largest
        scale = np.spacing(np.clip(np.abs(truth), TINY, np.finfo(np.float32).max).astype(np.float32))
        error = np.abs(got - truth) / scale.astype(np.float64)
    error[np.isinf(got) & (got == rounded)] = 0
    error[np.isnan(got) != np.isnan(truth)] = np.inf
    return error


def test_the_ulp_measure_counts_what_it_should() -> None:
    one = np.float32(1)
    assert ulps(np.array([np.nextafter(one, np.float32(2))]), np.array([1.0]))[0] == 1
    assert ulps(np.array([0.0]), np.array([2.0**-125]))[0] < 1  # far under TINY: flushing it is fine
    assert ulps(np.array([0.0]), np.array([2.06e-9]))[0] > 1e6  # the old sigmoid(-20)
    assert ulps(np.array([np.inf]), np.array([3e38]))[0] == np.inf


def _elementwise_ops() -> list:
    return [op for op in all_ops() if op.pattern == Pattern.ELEMWISE and op.inputs == (1, 1) and op.role == "layer"]


def _random_args(op, rng: np.random.Generator) -> list[str]:
    """Every argument of ``op`` given a random value (floats: the default times 0.5..2; a choice: any)."""
    args = []
    for arg in op.args:
        if arg.kind == "float":
            args.append(f"{arg.name}={float(np.float32(arg.default * rng.uniform(0.5, 2.0)))!r}")
        elif arg.kind == "choice":
            args.append(f"{arg.name}={arg.choices[rng.integers(len(arg.choices))]}")
        elif arg.kind == "bool":
            args.append(f"{arg.name}={'true' if rng.integers(2) else 'false'}")
    return args


def _accuracy_case(op, seed: int, producer: str) -> tuple[alexdsl.Network, str]:
    rng = np.random.default_rng(seed)
    args = _random_args(op, rng)
    call = f"{op.name}({', '.join(args)})" if args else op.name
    n = _extreme_inputs().size
    text = f"network Accuracy\ninput x: 1x1x{n}\n" + (f"p: x -> {producer}\ny: p -> {call}\n" if producer
                                                       else f"y: x -> {call}\n") + "output y\n"
    return alexdsl.parse(text, "accuracy.adsl"), call


def _gelu_truth(layer, x: torch.Tensor) -> torch.Tensor:
    """x * erfc(-x / sqrt 2) / 2, or x * sigmoid(2u): F.gelu's 1 + erf(x / sqrt 2) (and 1 + tanh(u)) cancel to 0 in
    the negative tail, even in float64."""
    if layer.attrs["approximate"] == "tanh":
        return x * (2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)).sigmoid()
    return x * (x * -math.sqrt(0.5)).erfc() * 0.5


TAIL_TRUTHS = {"gelu": _gelu_truth}
"""float64 truths, in torch, for the ops whose generated torch code loses a tail even in float64."""


def _truth(op, call: str, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """``call`` of ``op`` over ``x`` with its parameters ``params``, in float64 and independent of the op's xp kernel
    (which is its reference, and what is measured): the op's generated torch module run in float64, or its
    :data:`TAIL_TRUTHS` entry."""
    from alexdsl.backends import torch as backend

    net = alexdsl.parse(f"network Truth\ninput x: 1x1x{x.size}\ny: x -> {call}\noutput y\n", "truth.adsl")
    x64 = torch.from_numpy(x.astype(np.float64)).reshape(1, 1, 1, -1)
    with torch.no_grad():
        if op.name in TAIL_TRUTHS:
            return TAIL_TRUTHS[op.name](net.layer("y"), x64).reshape(-1).numpy()
        module = backend.build(net).double().eval()
        state = module.state_dict()
        for name, value in params.items():
            state[f"y.{name}"].copy_(torch.from_numpy(value.astype(np.float64)))
        return module(x64).reshape(-1).numpy()


ARITHMETIC = ("add", "sub", "mul", "div")
"""The broadcasting ops, whose executor step (``rt.add``...) is their kernel with a fused epilogue."""


@pytest.mark.parametrize("op", [op for op in all_ops() if op.lower.kernel is not None and op.name not in ARITHMETIC],
                         ids=lambda op: op.name)
def test_an_ops_xp_kernel_is_its_executor_kernel_and_its_reference(op) -> None:
    """An op's math written once (``Lowerings.kernel``): the runtime's ``rt.<kernel>``, which the op's generated
    executor code calls, and its reference."""
    from alexdsl.backends.executor import runtime as rt
    from alexdsl.backends.executor.codegen import generate_source

    kernel = op.lower.kernel
    executor_kernel = getattr(rt, kernel.name)
    # An op that declares a compiled variant: rt.<kernel> runs it on NumPy with Numba, and the xp function otherwise
    assert (executor_kernel.__wrapped__ if kernel.compiled else executor_kernel) is kernel.function
    assert op.lower.reference == kernel.reference
    call = op.example.split(":", 1)[1].strip()
    net = alexdsl.parse(f"network K\ninput x: 8x4x4\ny: x -> {call}\noutput y\n", "kernel.adsl")
    assert f"rt.{kernel.name}(x" in generate_source(net)


def _arithmetic_inputs(op_name: str) -> tuple[np.ndarray, np.ndarray]:
    """The extreme inputs, and a shuffle of them (no 0 for a divisor: 0 / 0 is NaN in every backend) as the lower
    rank second input, which the op aligns after the batch."""
    x = _extreme_inputs()
    other = np.random.default_rng(0).permutation(x)
    if op_name == "div":
        other[other == 0] = 1
    return x.reshape(1, 1, 1, -1), other.reshape(1, -1)


@pytest.mark.parametrize("name", ARITHMETIC)
def test_an_arithmetic_ops_xp_kernel_is_its_reference_and_its_executor_steps_math(name: str) -> None:
    """add/sub/mul/div's math written once (``Lowerings.kernel``): the runtime holds it under its name, it is the
    op's reference (the inputs aligned as alexdsl broadcasts them), and the step the generated executor code calls
    (``rt.add(..., relu=...)``) computes what it computes bit for bit, then its epilogue."""
    from alexdsl.backends.executor import runtime as rt
    from alexdsl.backends.executor.codegen import lower

    op = lookup(name)
    kernel = op.lower.kernel
    assert getattr(rt, kernel.name) is kernel.function
    assert op.lower.reference == kernel.reference
    net = alexdsl.parse(f"network K\ninput a: 2x3x4\ninput b: 4\ny: {name}(a, b)\nr: relu\noutput r\n", "k.adsl")
    (step,) = [step for step in lower(net).steps if "y" in step.layers]
    assert step.layers == ["y", "r"]  # the relu is the step's epilogue
    rng = np.random.default_rng(1)
    a, b = rng.uniform(-2, 2, (5, 2, 3, 4)).astype(np.float32), rng.uniform(0.5, 2, (5, 1, 1, 4)).astype(np.float32)
    epilogue = {"relu": True} if name == "add" else {"act": rt.relu}
    np.testing.assert_array_equal(getattr(rt, step.kernel.split("+")[0])(a, b, **epilogue),
                                  np.maximum(kernel.function(a, b), 0))
    reference = kernel.reference(net.layer("y"), [torch.from_numpy(a), torch.from_numpy(b[:, 0, 0])], {}, None)
    truth = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[name](
        a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_array_equal(reference.numpy(), truth.astype(np.float32))


def test_the_add_reference_folds_inputs_whose_broadcast_grows() -> None:
    """add(a, b, c) with a + b of Cx1x1 (b of lower rank, aligned after the batch) and c of CxHxW: the kernel, run
    without ``out`` as the reference runs it, broadcasts each partial sum anew."""
    text = "network A\ninput a: 3x1x1\ninput b: 1x1\ninput c: 3x4x5\ny: add(a, b, c)\noutput y\n"
    net = alexdsl.parse(text, "a.adsl")
    rng = np.random.default_rng(2)
    a, b, c = (torch.from_numpy(rng.standard_normal(shape)) for shape in ((2, 3, 1, 1), (2, 1, 1), (2, 3, 4, 5)))
    reference = lookup("add").lower.reference(net.layer("y"), [a, b, c], {}, None)
    np.testing.assert_allclose(reference.numpy(), (a + b[:, None] + c).numpy(), rtol=1e-15)


@pytest.mark.parametrize("name", ARITHMETIC)
def test_every_arithmetic_kernel_is_correctly_rounded_against_the_float64_truth(name: str) -> None:
    """The executor's float32 add/sub/mul/div over pairs of extreme inputs, the second of lower rank, against the
    op's generated torch module run in float64 (not the op's kernel, which is its reference): IEEE rounds each
    result correctly, within half an ulp (a division as a product by the reciprocal is not)."""
    from alexdsl.backends import executor
    from alexdsl.backends import torch as backend

    x, other = _arithmetic_inputs(name)
    text = f"network Accuracy\ninput a: 1x1x{x.size}\ninput b: {x.size}\ny: {name}(a, b)\noutput y\n"
    net = alexdsl.parse(text, "accuracy.adsl")
    with np.errstate(over="ignore"):  # 3e38 / 1e-5 is past float32's largest: inf, where the truth rounds to it
        got = np.asarray(executor.compile(net, {}, device="cpu")(x, other)).reshape(-1)
    with torch.no_grad():
        module = backend.build(net).double().eval()
        truth = module(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(other.astype(np.float64)))
    error = ulps(got, truth.reshape(-1).numpy())
    worst = int(np.argmax(error))
    assert error[worst] <= 0.5, (name, float(x.reshape(-1)[worst]), float(other.reshape(-1)[worst]),
                                       float(got[worst]), float(error[worst]))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_the_softmax_kernel_is_a_few_ulps_from_the_float64_truth(axis: int) -> None:
    """The executor's float32 softmax (its op's xp kernel) over each per-sample axis of wide-ranging inputs, against
    the op's generated torch module run in float64 (F.softmax, not the kernel, which is the op's reference). exp's
    argument ``t = x - max`` is rounded to float32 (half an ulp) and exp's condition number is ``|t|``; measured on
    NumPy's float32 exp the error reaches 0.9 of ULP_BOUND plus ``|t|`` ulps, and other CPUs' exp (NumPy picks one
    per instruction set) may round differently, so the bound is ULP_BOUND plus ``2 |t|`` ulps: a softmax over the
    wrong axis is 1e24 ulps off."""
    from alexdsl.backends import executor
    from alexdsl.backends import torch as backend

    net = alexdsl.parse(f"network S\ninput x: 16x8x8\ny: x -> softmax(axis={axis})\noutput y\n", "softmax.adsl")
    x = (np.random.default_rng(axis + 1).standard_normal((2, 16, 8, 8)) * 20).astype(np.float32)
    got = np.asarray(executor.compile(net, {}, device="cpu")(x))
    with torch.no_grad():
        truth = backend.build(net).double().eval()(torch.from_numpy(x.astype(np.float64))).numpy()
    error = ulps(got, truth)
    dim = axis + 1 if axis >= 0 else axis
    bound = ULP_BOUND + 2 * np.abs(x - x.max(axis=dim, keepdims=True))
    worst = int(np.argmax(error / bound))
    assert error.flat[worst] <= bound.flat[worst], (axis, float(error.flat[worst]), float(bound.flat[worst]))


def test_the_truth_is_not_the_reference() -> None:
    """The accuracy test's truth does not run the kernel it measures: a kernel broken in place is far from it."""
    op = lookup("silu")
    x = np.linspace(-5, 5, 11).astype(np.float32)
    truth = _truth(op, "silu", x, {})
    kernel = op.lower.kernel.function
    assert ulps(kernel(x), truth).max() <= ULP_BOUND
    assert ulps(kernel(x) * np.float32(1 + 1e-5), truth).max() > 10 * ULP_BOUND


@pytest.mark.parametrize("op", _elementwise_ops(), ids=lambda op: op.name)
@pytest.mark.parametrize("producer", ["", "conv(1, 1)"], ids=["alone", "after-conv"])
def test_every_elementwise_kernel_is_a_few_ulps_from_the_float64_truth(op, producer: str) -> None:
    """The executor's float32 kernel (alone, and after a conv whose 1x1 weight 1 passes its input through exactly,
    in the conv's epilogue where the op is one) over extreme inputs, with random arguments, against the float64
    truth (:func:`_truth`: torch's, not the op's kernel, which is its reference)."""
    from alexdsl.backends import executor

    x = _extreme_inputs()
    for seed in range(3):
        net, call = _accuracy_case(op, seed, producer)
        rng = np.random.default_rng(seed)
        weights = {f"y.{name}": rng.uniform(0.05, 2.0, spec.shape).astype(np.float32)
                   for name, spec in net.layer("y").params.items()}
        if producer:
            weights.update({"p.weight": np.ones((1, 1, 1, 1), np.float32), "p.bias": np.zeros(1, np.float32)})
        got = np.asarray(executor.compile(net, weights, device="cpu")(x.reshape(1, 1, 1, -1))).reshape(-1)
        own = {k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith("y.")}
        truth = _truth(op, call, x, own)
        error = ulps(got, truth)
        # A learned parameter is itself rounded to float32: where the result cancels (weight * tanh(x) + bias near
        # 0, in a plugin's op) no float32 kernel can be a few ulps of it. The bound there is 4x the change that a
        # relative 2^-24 in one parameter makes; an op without parameters keeps ULP_BOUND everywhere.
        bound = np.full_like(error, ULP_BOUND)
        for name in own:
            nudged = {**own, name: own[name].astype(np.float64) * (1 + 2.0**-24)}
            moved = ulps(_truth(op, call, x, nudged), truth)
            bound = np.maximum(bound, 4 * moved)
        worst = int(np.argmax(error / bound))
        assert error[worst] <= bound[worst], (call, producer, float(x[worst]), float(got[worst]),
                                              float(truth[worst]), float(error[worst]), float(bound[worst]))


COMPILED_OPS = [op for op in _elementwise_ops() if op.lower.kernel is not None and op.lower.kernel.compiled]


@pytest.mark.parametrize("op", COMPILED_OPS, ids=lambda op: op.name)
@pytest.mark.parametrize("numba", ["1", "0"])  # the compiled variant where Numba is installed, and the xp kernel
def test_a_compiled_kernel_is_as_accurate_and_runs_where_numba_is(op, numba: str, monkeypatch) -> None:  # noqa: ANN001
    """An op's compiled variant (the executor's Numba kernels) keeps the few-ulps bound over extreme inputs, alone
    and as an epilogue, in place and not, and it is what the executor runs on NumPy where Numba is installed."""
    from alexdsl.backends.executor import arrays, compiled
    from alexdsl.backends.executor import runtime as rt

    calls = []
    if numba == "1":
        pytest.importorskip("numba", reason="the optional numba extra: pip install -e '.[numba]'")
        assert arrays.numba_kernels("float32") is not None
    monkeypatch.setattr(compiled, "numba_kernels", lambda dtype: calls.append(dtype) or arrays.numba_kernels(dtype))
    monkeypatch.setenv("ALEXDSL_NUMBA", numba)
    for producer in ("", "conv(1, 1)"):
        test_every_elementwise_kernel_is_a_few_ulps_from_the_float64_truth(op, producer)
    kernel, x = getattr(rt, op.lower.kernel.name), _extreme_inputs()
    in_place = x.copy()
    assert kernel(in_place, out=in_place) is in_place
    assert np.array_equal(in_place, kernel(x), equal_nan=True)  # in place (out is x) as into a new array
    assert calls  # the executor asked for the compiled variant (with ALEXDSL_NUMBA=0 it got None: the xp kernel)


# A new elementwise op is its declaration: fused, exported, imported and highlighted with nothing else -------

SOFTSIGN_PLUGIN = '''
from alexdsl.backends.executor.runtime import array_module
from alexdsl.ops.from_onnx import unary
from alexdsl.ops.lowering import ExecutorLowering, Lowerings, Pattern, TorchLowering
from alexdsl.ops.registry import OpDef, register


def softsign(x, *, out=None):
    xp = array_module(x)
    magnitude = xp.abs(x)
    magnitude += 1
    return xp.divide(x, magnitude, out=out)


register(OpDef(
    name="softsign", family="activation", summary="x / (1 + |x|).", example="s: softsign", args=(),
    infer=lambda attrs, inputs: inputs[0], pattern=Pattern.ELEMWISE,
    lower=Lowerings(
        torch=TorchLowering(forward=lambda layer, args, ctx: f"F.softsign({args[0]})"),
        executor=ExecutorLowering(function=softsign, inplace=True, epilogue="softsign"),
        onnx=lambda layer, ctx: ctx.node("Softsign", ctx.inputs),
        from_onnx={"Softsign": unary("softsign")},
        onnx_elementwise=("Softsign",),
        reference=lambda layer, xs, w, F: F.softsign(xs[0]),
    ),
))
'''


def test_a_plugin_elementwise_op_is_fused_exported_imported_and_highlighted(tmp_path) -> None:
    """softsign, declared once in a plugin file, with no other change anywhere."""
    pytest.importorskip("onnxruntime")
    from pygments.token import Name

    from alexdsl.backends.executor.codegen import generate_source, lower
    from alexdsl.highlight import AlexDSLLexer, textmate_grammar
    from alexdsl.interop.compare import compare
    from alexdsl.interop.onnx import export_onnx
    from alexdsl.interop.onnx_import import import_onnx_source
    from alexdsl.ops.registry import ONNX_ELEMENTWISE
    from alexdsl.plugins import load_plugins

    plugin = tmp_path / "softsign.py"
    plugin.write_text(SOFTSIGN_PLUGIN, encoding="utf-8")
    load_plugins([str(plugin)], entry_points=False)
    text = "network Soft\ninput x: 3x8x8\nc: conv(4, 3, pad=1)\ns: softsign\nalone: x -> softsign\n" \
           "output s\noutput alone\n"
    net = alexdsl.parse(text, "soft.adsl")

    steps = {tuple(step.layers): step.kernel for step in lower(net).steps}
    assert steps[("c", "s")] == "conv2d+bias+softsign"  # in the conv's epilogue
    assert "act=rt.softsign" in generate_source(net) and ("alone",) in steps

    rows = compare(net, ["reference", "torch", "cupy", "onnx"], batch=2, seed=1)  # ONNX checked by onnxruntime
    for row in rows:
        assert all(diff is not None and diff[1] < 1e-5 for diff in row.diffs.values()), (row.layer, row.diffs)

    path = tmp_path / "soft.onnx"
    path.write_bytes(export_onnx(net).SerializeToString())
    imported = import_onnx_source(path, readable=False).network
    assert sorted(layer.op for layer in imported.layers() if layer.op != "input") == ["conv", "softsign", "softsign"]
    assert "Softsign" in ONNX_ELEMENTWISE  # a channels-last region runs through it

    tokens = [(token, value) for token, value in AlexDSLLexer().get_tokens(text) if value == "softsign"]
    assert tokens and all(token is Name.Builtin for token, _ in tokens)
    assert "|softsign|" in textmate_grammar()["repository"]["call"]["match"]


def _paragraph(doc: str, start: str) -> str:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    return text[text.index(start):].split("\n\n", 1)[0]


@pytest.mark.parametrize(("doc", "start"), [("language.md", "- **Epilogues.**"),
                                            ("cupy.md", "The epilogue activations are")])
def test_the_docs_name_the_epilogues_the_ops_declare(doc: str, start: str) -> None:
    """The ops that declare an executor epilogue and those that apply them, as the docs list them."""
    declared = {op.name for op in all_ops() if op.lower.executor is not None
                and (op.lower.executor.epilogue or op.lower.executor.epilogues)}
    named = set(re.findall(r"`([a-z_0-9]+)`", _paragraph(doc, start))) & {op.name for op in all_ops()}
    assert named == declared


def test_the_onnx_import_table_names_every_op_that_imports() -> None:
    rows = _paragraph("interop.md", "| op | ONNX patterns imported |").splitlines()[2:]
    listed = {name.strip() for row in rows for name in row.split("|")[1].split(",")}
    assert {op.name for op in all_ops() if op.lower.from_onnx} <= listed


LOST_BY_TORCHS_EXPORT = {("softplus", "threshold")}
"""Arguments torch's ONNX exporter drops: it writes softplus as Softplus, linear nowhere."""


@pytest.mark.parametrize("op", _elementwise_ops(), ids=lambda op: op.name)
def test_torchs_export_of_the_generated_module_imports_as_the_op(op, tmp_path) -> None:
    """What torch's exporter makes of an elementwise op's generated torch code (random arguments and parameters,
    opsets 11, 13 and 17, and 20 for gelu's native node) imports back as the op, with the arguments and parameters
    it was exported with: the import computes what the torch module computes. The torch cases come from the
    declarations (tests/test_onnx_import_ops.py keeps only torch patterns that no op's torch code writes)."""
    pytest.importorskip("onnx")
    from onnx_models import export as torch_export
    from onnx_models import randomise

    from alexdsl.backends import executor
    from alexdsl.backends import torch as backend
    from alexdsl.interop.onnx_import import import_onnx_source

    for seed, opset in enumerate((11, 13, 17, 20) if op.name == "gelu" else (11, 13, 17)):
        rng = np.random.default_rng(seed)
        args = _random_args(op, rng)
        call = f"{op.name}({', '.join(args)})" if args else op.name
        net = alexdsl.parse(f"network Exported\ninput x: 8x4x4\ny: x -> {call}\noutput y\n", "exported.adsl")
        module = randomise(backend.build(net), seed).eval()
        path = torch_export(module, (1, 8, 4, 4), tmp_path / f"{op.name}_{opset}.onnx", opset)
        imported = import_onnx_source(path, readable=False)
        ops = [layer for layer in imported.network.layers() if layer.op != "input"]
        assert [layer.op for layer in ops] == [op.name], (call, opset)
        for name, value in net.layer("y").attrs.items():
            if (op.name, name) not in LOST_BY_TORCHS_EXPORT:
                expected = pytest.approx(value, rel=1e-6) if isinstance(value, float) else value
                assert ops[0].attrs[name] == expected, (call, opset, name)
        x = 3 * rng.standard_normal((2, 8, 4, 4), dtype=np.float32)
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        got = np.asarray(executor.compile(imported.network, imported.weights, device="cpu")(x))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()),
                                   err_msg=f"{call} at opset {opset}")


def test_pad_upsample_and_reduction_shapes_match_torch() -> None:
    x = torch.zeros(1, 6, 13, 11)
    base = "input x: 6x13x11\n"
    cases = {
        "pad(0, 1, 2, 3)": lambda: F.pad(x, (2, 3, 0, 1)),
        "pad(right=1)": lambda: F.pad(x, (0, 1)),
        "pad(-1, 1, 2, -3)": lambda: F.pad(x, (2, -3, -1, 1)),
        "pad(12, 0, 1, 10, mode=reflect)": lambda: F.pad(x, (1, 10, 12, 0), mode="reflect"),
        "pad(0, 20, 3, 0, mode=replicate)": lambda: F.pad(x, (3, 0, 0, 20), mode="replicate"),
        "upsample(2)": lambda: F.interpolate(x, scale_factor=2),
        "upsample((3, 2), mode=bilinear)": lambda: F.interpolate(x, scale_factor=(3, 2), mode="bilinear"),
        "sum(axis=-2)": lambda: x.sum(-2),
        "mean(axis=0, keepdims=true)": lambda: x.mean(1, keepdim=True),
        "max(axis=2)": lambda: x.amax(3),
    }
    for call, fn in cases.items():
        assert _shape(base + f"y: {call}\n", "y") == tuple(fn().shape[1:]), call


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_pad_modes_compute_what_torch_computes_on_every_backend(mode: str) -> None:
    """The pad modes the op's example leaves out: torch module, NumPy executor and ONNX Runtime against F.pad."""
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.compare import compare

    net = alexdsl.parse(f"network Pads\ninput data: 3x6x5\nc: conv(4, 1)\np: pad(1, 5, 4, 0, mode={mode})\n",
                        "pads.adsl")
    rows = compare(net, ["reference", "torch", "cupy", "onnx"], weights=random_weights(net, seed=3), batch=2, seed=3)
    row = next(r for r in rows if r.layer == "p")
    for backend, diff in row.diffs.items():
        assert diff is not None and diff[1] < 1e-6, (mode, backend, diff)


@pytest.mark.parametrize(("call", "message"), [
    ("pad(0, 0)", "pads nothing: every side is 0"),
    ("pad(-7, -6)", "removes every row or column of a 6x13x11 input"),
    ("pad(13, 0, mode=reflect)", r"mode=reflect pads each side by less than its axis \(6x13x11\)"),
    ("pad(1, -1, mode=reflect)", "mode=reflect pads each side by less than its axis"),
    ("pad(1, -1, mode=replicate)", "mode=replicate removes nothing"),
    ("pad(1, value=2, mode=replicate)", "a fill value is given with mode=replicate"),
    ("upsample(2, align_corners=true)", "align_corners applies to bilinear upsampling only"),
    ("sum(axis=3)", "axis 3 is not an axis of a 3-axis input"),
    ("x -> flatten | mean(0)", "reducing the only axis leaves a scalar per sample"),
])
def test_pad_upsample_and_reduction_mistakes_are_located_errors(call: str, message: str) -> None:
    with pytest.raises(AlexDSLError, match=rf"t.adsl:2:\d+: error: .*{message}"):
        alexdsl.parse(f"input x: 6x13x11\ny: {call}\n", "t.adsl")
