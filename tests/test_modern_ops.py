"""The ops of modern CNNs (issue 11) against torch.nn.functional and torch's modules.

Per op family: the shape alexdsl infers, then the dtype (float32 and float64 executors), then
the values of the generated torch module and of the NumPy executor against torch. Then what
the registry's generic contract tests cannot see: broadcasting and its errors, activations
fused into the conv/fc epilogue, PReLU shared vs per channel, norms with non-trivial weights,
stochastic depth in training, and a ConvNeXt block loaded by torchvision's keys.
"""

from __future__ import annotations

import numpy as np
import pytest

import alexdsl
from alexdsl.backends import executor as executor_backend
from alexdsl.backends.executor import codegen
from alexdsl.errors import AlexDSLError

torch = pytest.importorskip("torch")
F = torch.nn.functional
from alexdsl.backends import torch as torch_backend  # noqa: E402 - needs torch

RNG = np.random.default_rng(11)


def _weights(net: alexdsl.Network, seed: int = 0) -> dict[str, np.ndarray]:
    """Non-trivial values for every parameter and buffer (variances positive)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in net.state_keys().items():
        values = rng.normal(0.0, 0.5, size=shape)
        out[key] = np.abs(values) + 0.5 if key.endswith("running_var") else values
    return {k: v.astype(np.float32) for k, v in out.items()}


def _torch_module(net: alexdsl.Network, weights: dict[str, np.ndarray]) -> torch.nn.Module:
    module = torch_backend.build(net)
    torch_backend.load_weights(module, {k: torch.from_numpy(v) for k, v in weights.items()})
    return module.eval()


def _input(shape: tuple[int, ...], batch: int = 3) -> np.ndarray:
    """Random values plus the points where activations change form (0, +-3, +-6, +-20)."""
    x = RNG.normal(0.0, 4.0, size=(batch, *shape))
    flat = x.reshape(-1)
    special = np.array([0.0, 3.0, -3.0, 6.0, -6.0, 20.0, 21.0, -20.0, 1e-3, -1e-3, 35.0, -35.0])
    flat[: special.size] = special[: flat.size]
    return x.astype(np.float32)


ACTIVATIONS = {
    "relu6": F.relu6,
    "hardtanh(-2, 0.5)": lambda x: F.hardtanh(x, -2.0, 0.5),
    "hardtanh": F.hardtanh,
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu(approximate=tanh)": lambda x: F.gelu(x, approximate="tanh"),
    "elu": F.elu,
    "elu(0.3)": lambda x: F.elu(x, 0.3),
    "softplus": F.softplus,
    "softplus(beta=2, threshold=5)": lambda x: F.softplus(x, 2.0, 5.0),
    "mish": F.mish,
}


@pytest.mark.parametrize("call", list(ACTIVATIONS))
def test_activation_shape_dtype_and_values_match_torch(call: str) -> None:
    fn = ACTIVATIONS[call]
    net = alexdsl.parse(f"input x: 6x5x7\ny: {call}\n")
    assert net.shapes["y"] == (6, 5, 7)
    x = _input((6, 5, 7))
    expected = fn(torch.from_numpy(x).double()).numpy()
    module = _torch_module(net, {})
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), expected, rtol=1e-6, atol=1e-6)
    for dtype, tol in (("float32", 1e-5), ("float64", 1e-6 if call.startswith("gelu") else 1e-12)):
        out = executor_backend.compile(net, {}, device="cpu", dtype=dtype)(x.astype(dtype))
        assert out.dtype == np.dtype(dtype) and out.shape == expected.shape
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol, err_msg=f"{call} {dtype}")


def test_hardtanh_bounds_are_checked_where_written() -> None:
    with pytest.raises(AlexDSLError) as error:
        alexdsl.parse("input x: 6x5x7\ny: hardtanh(1, max=-1)\n", "h.adsl")
    assert "h.adsl:2:" in str(error.value) and "min < max" in str(error.value)


@pytest.mark.parametrize("shared", [False, True])
def test_prelu_shared_and_per_channel_match_nn_prelu(shared: bool) -> None:
    net = alexdsl.parse(f"input x: 6x4x4\np: prelu(shared={'true' if shared else 'false'})\n")
    reference = torch.nn.PReLU(1 if shared else 6)
    assert net.layer("p").params["weight"].shape == tuple(reference.weight.shape)
    assert net.layer("p").params["weight"].filler.get("value") == 0.25  # torch's init
    with torch.no_grad():
        reference.weight.copy_(torch.linspace(-0.5, 1.5, reference.weight.numel()))
    weights = {"p.weight": reference.weight.detach().numpy().copy()}
    module = _torch_module(net, weights)
    assert list(module.state_dict()) == [f"p.{k}" for k in reference.state_dict()]
    x = _input((6, 4, 4))
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
        np.testing.assert_array_equal(module(torch.from_numpy(x)).numpy(), expected)
    for dtype in ("float32", "float64"):
        out = executor_backend.compile(net, weights, device="cpu", dtype=dtype)(x.astype(dtype))
        assert out.dtype == np.dtype(dtype)
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


# arithmetic and broadcasting --------------------------------------------------------------------

BROADCASTS = [("8x5x6", "8x5x6"), ("8x5x6", "8x1x1"), ("8x1x1", "8x5x6"), ("8x5x6", "1x5x6"), ("8x5x6", "6"),
              ("8x1x6", "1x5x1"), ("8", "8")]
ARITH = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split("x"))


def _with_batch(x: np.ndarray, rank: int) -> torch.Tensor:
    """A batched array with the dimensions it lacks inserted after the batch (NumPy's rule without the batch)."""
    return torch.from_numpy(x).reshape(x.shape[0], *[1] * (rank - x.ndim + 1), *x.shape[1:]).double()


@pytest.mark.parametrize("op", list(ARITH))
@pytest.mark.parametrize(("a", "b"), BROADCASTS)
def test_arithmetic_broadcasts_like_numpy(op: str, a: str, b: str) -> None:
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.compare import compare

    net = alexdsl.parse(f"input a: {a}\ninput b: {b}\ny: {op}(a, b)\noutput y\n")
    shape = np.broadcast_shapes(_dims(a), _dims(b))
    assert net.shapes["y"] == shape
    xa, xb = _input(_dims(a)), _input(_dims(b))
    expected = ARITH[op](_with_batch(xa, len(shape)), _with_batch(xb, len(shape))).numpy()
    with torch.no_grad():
        np.testing.assert_allclose(_torch_module(net, {})(torch.from_numpy(xa), torch.from_numpy(xb)).numpy(),
                                   expected, rtol=1e-6)
    for dtype in ("float32", "float64"):
        out = executor_backend.compile(net, {}, device="cpu", dtype=dtype)(xa.astype(dtype), xb.astype(dtype))
        assert out.dtype == np.dtype(dtype) and out.shape == expected.shape
        np.testing.assert_allclose(out, expected, rtol=1e-6)
    rows = compare(net, ["torch", "cupy", "onnx"], batch=2, seed=1)
    assert all(d is not None and d[1] < 1e-6 for row in rows for d in row.diffs.values())


@pytest.mark.parametrize("op", list(ARITH))
def test_shapes_that_do_not_broadcast_are_a_located_error_showing_both(op: str) -> None:
    with pytest.raises(AlexDSLError) as error:
        alexdsl.parse(f"input a: 8x5x6\ninput b: 3x5x6\ny: {op}(a, b)\n", "bad.adsl")
    text = str(error.value)
    assert f"bad.adsl:3:4: error: y: {op} input 2 has shape 3x5x6, which does not broadcast with 8x5x6" in text
    assert "received: 8x5x6, 3x5x6" in text


def test_add_of_equal_shapes_keeps_its_generated_code() -> None:
    # b is no conv: the add is a step of its own (an add after a conv fuses into it: test_executor.py)
    net = alexdsl.parse("input x: 4x6x6\na: conv(4, 3, pad=1)\nb: x -> avgpool(3, stride=1, pad=1)\n"
                        "s: a, b -> add | relu\n")
    source = codegen.generate_source(net)
    assert "s_relu = rt.add(a, b, relu=True, out=v['s_relu'])  # s + s_relu" in source
    assert "act=" not in source and "relu=False" in source
    assert "torch" not in source


def test_squeeze_excitation_multiplies_in_place_without_a_broadcast_copy() -> None:
    text = """input x: 16x9x9
gap: global_avgpool
se1: conv(4, 1) | silu
gate: conv(16, 1) | sigmoid
y: x, gate -> mul
"""
    net = alexdsl.parse(text)
    low = codegen.lower(net)
    step = next(s for s in low.steps if s.name == "y")
    assert step.kernel == "multiply" and step.code == "rt.multiply(x, gate_sigmoid, out=v['y'])"
    assert low.memory.assignment["y"] != low.memory.assignment["gate_sigmoid"]
    weights = _weights(net)
    x = _input((16, 9, 9))
    with torch.no_grad():
        expected = _torch_module(net, weights)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(executor_backend.compile(net, weights, device="cpu")(x), expected, rtol=1e-5,
                               atol=1e-6)


def test_a_smaller_first_operand_does_not_share_its_buffer_with_the_output() -> None:
    net = alexdsl.parse("input x: 8x6x6\ng: global_avgpool\ny: g, x -> mul\n")
    steps = {s.name: s for s in codegen.lower(net).steps}
    assert not steps["y"].inplace
    x = _input((8, 6, 6))
    expected = x.mean(axis=(2, 3), keepdims=True) * x
    np.testing.assert_allclose(executor_backend.compile(net, {}, device="cpu")(x), expected, rtol=1e-5)


def test_broadcasting_arithmetic_has_no_caffe_eltwise() -> None:
    from alexdsl.interop.caffe_export import export_prototxt

    net = alexdsl.parse("input x: 8x6x6\ng: global_avgpool\ny: x, g -> mul\n", "se.adsl")
    with pytest.raises(AlexDSLError, match=r"se.adsl:3:\d+: error: layer 'y': Caffe's Eltwise needs inputs of one"):
        export_prototxt(net)


# epilogue fusion ----------------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["relu6", "hardswish", "silu", "hardsigmoid", "mish", "sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("producer", ["conv(8, 3, pad=1) | batchnorm", "fc(10)", "pointwise_fc(8)"])
def test_activation_fuses_into_the_producer_epilogue(producer: str, act: str) -> None:
    net = alexdsl.parse(f"input x: 4x6x6\nc: {producer} | {act}\n")
    low = codegen.lower(net)
    assert len(low.steps) == 1
    (step,) = low.steps
    assert step.layers[-1] == f"c_{act}" and step.kernel.endswith(f"+{act}")
    assert ("relu=True" in step.code) == (act == "relu") and (f"act=rt.{act}" in step.code) == (act != "relu")
    if "batchnorm" in producer:
        assert step.layers == ["c", "c_batchnorm", f"c_{act}"]
    weights = _weights(net)
    x = _input((4, 6, 6))
    with torch.no_grad():
        expected = _torch_module(net, weights)(torch.from_numpy(x)).numpy()
    for dtype in ("float32", "float64"):
        out = executor_backend.compile(net, weights, device="cpu", dtype=dtype)(x.astype(dtype))
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    assert f"+{act}" in executor_backend.summary(net)


@pytest.mark.parametrize("act", ["hardswish", "silu"])
def test_activation_fuses_into_arithmetic(act: str) -> None:
    net = alexdsl.parse(f"input x: 4x6x6\na: conv(4, 1)\nb: x -> avgpool(3, stride=1, pad=1)\n"
                        f"s: a, b -> add | {act}\nm: a, s -> mul | {act}\n")
    steps = {s.name: s for s in codegen.lower(net).steps}
    assert steps[f"s_{act}"].code == f"rt.add(a, b, relu=False, act=rt.{act}, out=v['s_{act}'])"
    assert steps[f"m_{act}"].code == f"rt.multiply(a, s_{act}, act=rt.{act}, out=v['m_{act}'])"
    weights = _weights(net)
    x = _input((4, 6, 6))
    with torch.no_grad():
        expected = _torch_module(net, weights)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(executor_backend.compile(net, weights, device="cpu")(x), expected, rtol=1e-4,
                               atol=1e-5)


# normalisation ------------------------------------------------------------------------------------

def _layernorm2d(channels: int, eps: float) -> torch.nn.Module:
    """torchvision's LayerNorm2d: nn.LayerNorm over the channels, applied channels last."""
    class LayerNorm2d(torch.nn.LayerNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                                self.eps).permute(0, 3, 1, 2)

    return LayerNorm2d(channels, eps=eps)


@pytest.mark.parametrize(("call", "reference"), [
    ("layernorm", lambda: _layernorm2d(12, 1e-5)),
    ("layernorm(eps=1e-6)", lambda: _layernorm2d(12, 1e-6)),
    ("groupnorm(3)", lambda: torch.nn.GroupNorm(3, 12)),
    ("groupnorm(12, eps=1e-3)", lambda: torch.nn.GroupNorm(12, 12, eps=1e-3)),
    ("groupnorm(1)", lambda: torch.nn.GroupNorm(1, 12)),
])
def test_norms_match_torch_modules_with_nontrivial_weights(call: str, reference) -> None:
    module_ref = reference().double()
    with torch.no_grad():
        module_ref.weight.copy_(torch.linspace(-2, 2, 12))
        module_ref.bias.copy_(torch.linspace(1, -1, 12))
    net = alexdsl.parse(f"input x: 12x5x4\nn: {call}\n")
    assert net.shapes["n"] == (12, 5, 4)
    weights = {f"n.{k}": v.float().numpy() for k, v in module_ref.state_dict().items()}
    module = _torch_module(net, weights)
    assert module.state_dict().keys() == {f"n.{k}" for k in module_ref.state_dict()}
    x = _input((12, 5, 4)) + 3.0  # a mean far from 0
    with torch.no_grad():
        expected = module_ref(torch.from_numpy(x).double()).numpy()
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), expected, rtol=1e-4, atol=1e-5)
    for dtype, tol in (("float32", 1e-4), ("float64", 1e-10)):
        out = executor_backend.compile(net, weights, device="cpu", dtype=dtype)(x.astype(dtype))
        assert out.dtype == np.dtype(dtype)
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


def test_groupnorm_groups_must_divide_the_channels_where_written() -> None:
    with pytest.raises(AlexDSLError) as error:
        alexdsl.parse("input x: 12x5x4\nn: groupnorm(5)\n", "g.adsl")
    assert "g.adsl:2:14: error: n: input channels (12) are not divisible by groups (5)" in str(error.value)


def test_layernorm_of_a_vector_is_nn_layernorm() -> None:
    net = alexdsl.parse("input v: 10\nn: layernorm(eps=1e-6)\n")
    reference = torch.nn.LayerNorm(10, eps=1e-6)
    with torch.no_grad():
        reference.weight.uniform_(-1, 1)
        reference.bias.uniform_(-1, 1)
    weights = {f"n.{k}": v.numpy() for k, v in reference.state_dict().items()}
    x = _input((10,))
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_torch_module(net, weights)(torch.from_numpy(x)).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(executor_backend.compile(net, weights, device="cpu")(x), expected, atol=1e-5)


# stochastic depth, channel shuffle, scale, pointwise_fc ---------------------------------------------

def _stochastic_depth(x: torch.Tensor, p: float, mode: str, training: bool) -> torch.Tensor:
    """torchvision.ops.stochastic_depth, written out (torchvision is not a test dependency)."""
    if not training or p == 0.0:
        return x
    survival = 1.0 - p
    size = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
    noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
    if survival > 0.0:
        noise.div_(survival)
    return x * noise


@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_stochastic_depth_drops_in_training_and_is_the_identity_at_test(p: float, mode: str) -> None:
    net = alexdsl.parse(f"input x: 6x3x3\nsd: stochastic_depth({p}, mode={mode})\n")
    module = torch_backend.build(net)
    x = torch.from_numpy(_input((6, 3, 3), batch=64))
    module.eval()
    assert torch.equal(module(x), x)
    module.train()
    for seed in range(3):
        torch.manual_seed(seed)
        got = module(x)
        torch.manual_seed(seed)
        assert torch.equal(got, _stochastic_depth(x, p, mode, True))
    kept = (got != 0).flatten(1).any(1)
    if mode == "batch":
        assert kept.all() or not kept.any()
    if 0 < p < 1 and mode == "row":
        assert 0 < kept.sum() < 64
        torch.testing.assert_close(got[kept], x[kept] / (1 - p))
    low = codegen.lower(net)
    assert not low.steps  # no kernel: the identity at inference
    np.testing.assert_array_equal(executor_backend.compile(net, {}, device="cpu")(x.numpy()), x.numpy())


@pytest.mark.parametrize(("channels", "groups"), [(12, 2), (12, 3), (12, 12), (8, 1)])
def test_channel_shuffle_matches_nn_channel_shuffle(channels: int, groups: int) -> None:
    net = alexdsl.parse(f"input x: {channels}x3x5\ns: channel_shuffle({groups})\n")
    x = _input((channels, 3, 5))
    expected = torch.nn.ChannelShuffle(groups)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(_torch_module(net, {})(torch.from_numpy(x)).numpy(), expected)
    for dtype in ("float32", "float64"):
        np.testing.assert_array_equal(executor_backend.compile(net, {}, device="cpu", dtype=dtype)(x.astype(dtype)),
                                      expected.astype(dtype))
    with pytest.raises(AlexDSLError, match="channels a multiple of 5"):
        alexdsl.parse(f"input x: {channels}x3x5\ns: channel_shuffle(5)\n")


def test_scale_folds_into_the_conv_before_it_and_matches_torch() -> None:
    net = alexdsl.parse("input x: 4x6x6\nc: conv(8, 3) | s: scale(bias=true) | relu6\n")
    assert net.layer("s").params["weight"].shape == (8,) and net.layer("s").params["bias"].shape == (8,)
    (step,) = codegen.lower(net).steps
    assert step.layers == ["c", "s", "s_relu6"] and "s folded" in step.note
    weights = _weights(net)
    x = _input((4, 6, 6))
    expected = F.relu6(F.conv2d(torch.from_numpy(x), torch.from_numpy(weights["c.weight"]),
                                torch.from_numpy(weights["c.bias"]))
                       * torch.from_numpy(weights["s.weight"]).view(-1, 1, 1)
                       + torch.from_numpy(weights["s.bias"]).view(-1, 1, 1)).numpy()
    with torch.no_grad():
        np.testing.assert_allclose(_torch_module(net, weights)(torch.from_numpy(x)).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(executor_backend.compile(net, weights, device="cpu")(x), expected, atol=1e-4)


def test_pointwise_fc_is_nn_linear_over_channels() -> None:
    net = alexdsl.parse("input x: 6x4x5\np: pointwise_fc(10)\n")
    linear = torch.nn.Linear(6, 10)
    assert net.layer("p").params["weight"].shape == tuple(linear.weight.shape)
    assert net.layer("p").macs == 6 * 10 * 4 * 5
    weights = {f"p.{k}": v.detach().numpy() for k, v in linear.state_dict().items()}
    x = _input((6, 4, 5))
    with torch.no_grad():
        expected = linear(torch.from_numpy(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2).numpy()
        np.testing.assert_allclose(_torch_module(net, weights)(torch.from_numpy(x)).numpy(), expected, atol=1e-6)
    for dtype in ("float32", "float64"):
        out = executor_backend.compile(net, weights, device="cpu", dtype=dtype)(x.astype(dtype))
        np.testing.assert_allclose(out, expected, atol=1e-5)


class _CNBlock(torch.nn.Module):
    """torchvision.models.convnext.CNBlock (LayerNorm eps 1e-6, layer scale, stochastic depth), written out."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = torch.nn.Sequential(
            torch.nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            _Permute(0, 2, 3, 1), torch.nn.LayerNorm(dim, eps=1e-6), torch.nn.Linear(dim, 4 * dim),
            torch.nn.GELU(), torch.nn.Linear(4 * dim, dim), _Permute(0, 3, 1, 2))
        self.layer_scale = torch.nn.Parameter(torch.ones(dim, 1, 1) * 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_scale * self.block(x) + x


class _Permute(torch.nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


def test_a_convnext_block_loads_torchvision_keys_and_matches() -> None:
    """``features.1.0.layer_scale`` (96x1x1) next to ``features.1.0.block.0.weight``, as torchvision names them."""
    text = """input x: 96x14x14
features.1.0.block.0: conv(96, 7, pad=3, groups=96)
features.1.0.block.2: layernorm(eps=1e-6)
features.1.0.block.3: pointwise_fc(384) | gelu
features.1.0.block.5: pointwise_fc(96)
features.1.0: scale(param=layer_scale)
features.1.0.stochastic_depth: stochastic_depth(0.1, mode=row)
out: x, features.1.0.stochastic_depth -> add
"""
    net = alexdsl.parse(text)
    block = torch.nn.ModuleDict({"features": torch.nn.ModuleDict({"1": torch.nn.ModuleDict({"0": _CNBlock(96)})})})
    with torch.no_grad():
        for p in block.parameters():
            p.uniform_(-0.2, 0.2)
    state = block.state_dict()
    assert net.state_keys() == {k: tuple(v.shape) for k, v in state.items()}
    module = torch_backend.build(net)
    module.load_state_dict(state)
    module.eval()
    x = torch.from_numpy(_input((96, 14, 14), batch=2)) * 0.1
    with torch.no_grad():
        expected = block["features"]["1"]["0"](x).numpy()
        np.testing.assert_allclose(module(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    weights = {k: v.numpy() for k, v in state.items()}
    np.testing.assert_allclose(executor_backend.compile(net, weights, device="cpu")(x.numpy()), expected, atol=1e-5)
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.compare import compare

    rows = compare(net, ["torch", "cupy", "onnx"], weights=weights, batch=2, seed=2)
    assert all(d is not None and d[1] < 1e-5 for row in rows for d in row.diffs.values())


# Caffe and training ---------------------------------------------------------------------------------

def test_caffe_scale_after_batchnorm_is_absorbed_and_a_second_one_is_a_scale_layer() -> None:
    from alexdsl.interop.caffe import import_prototxt
    from alexdsl.interop.caffe_export import export_prototxt

    net = alexdsl.parse("network S\ninput x: 4x6x6\nc: conv(8, 3) | bn: batchnorm | s: scale(bias=true) | prelu\n")
    prototxt = export_prototxt(net)
    assert [line.strip() for line in prototxt.splitlines() if line.startswith("  type:")] == [
        'type: "Convolution"', 'type: "BatchNorm"', 'type: "Scale"', 'type: "Scale"', 'type: "PReLU"']
    again = alexdsl.parse(import_prototxt(prototxt, "s.prototxt"))
    assert [layer.op for layer in again.layers() if not layer.is_input] == ["conv", "batchnorm", "scale", "prelu"]
    assert again.state_keys() == net.state_keys()


@pytest.mark.parametrize(("layer", "message"), [
    ('type: "Swish" swish_param { beta: 2 }', "Swish with beta other than 1 is not supported"),
    ('type: "Eltwise" eltwise_param { operation: MAX }', "Eltwise MAX is not supported"),
])
def test_caffe_layers_alexdsl_cannot_express_are_located_errors(layer: str, message: str) -> None:
    from alexdsl.interop.caffe import import_prototxt

    text = ('input: "x"\ninput_shape { dim: 1 dim: 4 dim: 6 dim: 6 }\n'
            f'layer {{ name: "y" {layer} bottom: "x" bottom: "x" top: "y" }}\n')
    if "Swish" in layer:
        text = text.replace(' bottom: "x" bottom: "x"', ' bottom: "x"')
    with pytest.raises(AlexDSLError, match=rf"bad.prototxt:3:\d+: error: {message}"):
        import_prototxt(text, "bad.prototxt")


def test_every_new_parameter_gets_a_gradient_in_training() -> None:
    text = """input x: 8x6x6
c: conv(8, 3, pad=1) | p: prelu | g: groupnorm(2) | hardswish
l: layernorm | f: pointwise_fc(8) | gelu(approximate=tanh) | s: scale(param=layer_scale, layer_scale=constant(0.5))
d: stochastic_depth(0.2, mode=batch)
o: x, d -> add | silu
"""
    module = torch_backend.build(alexdsl.parse(text)).train()
    x = torch.from_numpy(_input((8, 6, 6), batch=4))
    module(x).square().mean().backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    assert {"p.weight", "g.weight", "l.bias", "f.weight", "s.layer_scale"} <= grads.keys()
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())


def test_in_place_activations_after_new_ops_keep_exact_gradients() -> None:
    """The torch module runs relu6/silu/hardswish/mish in place after ops whose backward does not read their output."""
    text = """input x: 4x3x3
c: pointwise_fc(4) | silu
d: scale(bias=true) | relu6
e: x, d -> mul | hardswish
f: groupnorm(2) | mish | layernorm | hardsigmoid
"""
    module = torch_backend.build(alexdsl.parse(text)).eval().double()
    assert "F.silu(c, inplace=True)" in module.code and "F.hardswish(e, inplace=True)" in module.code
    x = torch.from_numpy(_input((4, 3, 3), batch=2)).double().requires_grad_()
    assert torch.autograd.gradcheck(module, (x,))
