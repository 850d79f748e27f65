"""Every registered op: documented, its example checks, and its shape rule agrees with torch.

The shape sweeps compare alexdsl's inferred shapes with what torch.nn.functional returns.
"""

from __future__ import annotations

import itertools

import pytest
from conftest import SCAFFOLD

import alexdsl
from alexdsl.errors import AlexDSLError
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
    from alexdsl.backends.cupy.codegen import generate_source as cupy_source
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
    """torch module, NumPy executor and ONNX Runtime against the op's torch.nn.functional reference."""
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.compare import compare

    net = _contract_network(op, data=(16, 12, 12))  # 12 = 2 * 6: adaptive pooling to 6x6 has even windows in ONNX
    rows = compare(net, ["reference", "torch", "cupy", "onnx"], batch=2, seed=3)
    label = op.example.split(":", 1)[0].strip()
    row = next(r for r in rows if r.layer == label)
    for backend, diff in row.diffs.items():
        assert diff is not None and diff[1] < 1e-5, (op.name, backend, diff)


@pytest.mark.parametrize("op", all_ops(), ids=lambda op: op.name)
def test_caffe_export_then_import_gives_the_same_op(op) -> None:
    from alexdsl.interop.caffe import import_prototxt
    from alexdsl.interop.caffe_export import export_prototxt

    net = _contract_network(op, SCAFFOLD.replace("input v: 10\nfc8: v -> relu\n", "fc8: data -> fc(10)\n"),
                            data=(16, 12, 12))
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
