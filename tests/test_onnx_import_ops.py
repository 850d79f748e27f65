"""Each op's ONNX import (``Lowerings.from_onnx``) against its export, and against torch's exporter.

Every op with an ONNX lowering is exported in its contract network (tests/test_ops_contract.py) with
random weights and imported back: the same layers come back (or the documented equivalent below), with
the same attributes, shapes, state keys and weights, computing what onnxruntime computes on the export.
An op registered with an ONNX lowering and no inverse fails here.

Then torch's own TorchScript exporter (``dynamo=False``) at opsets 11, 13 and 17 (and more where torch
writes other nodes) on small modules whose export is a pattern one op imports: the op comes back and the
import computes what torch computes. The elementwise ops' generated torch code is exported and imported
by tests/test_ops_contract.py, derived from the declarations; the modules here are the other patterns
(torch code that no op generates: clamp, squeeze-excitation, timm's padding, reductions, resizes...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import random_weights

import alexdsl
from alexdsl.backends.executor import compile as compile_executor
from alexdsl.errors import AlexDSLError
from alexdsl.interop.compare import random_feed
from alexdsl.interop.onnx import export_onnx
from alexdsl.interop.onnx_import import ImportedModel, import_onnx_source
from alexdsl.ir.network import Layer, Network
from alexdsl.ops.activation import FLOAT32_MAX
from alexdsl.ops.registry import all_ops, lookup
from alexdsl.ops.split import chunk_bounds

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnx_models import export as torch_export  # noqa: E402 - needs torch
from onnx_models import randomise  # noqa: E402
from test_ops_contract import _contract_network  # noqa: E402
from torch import nn  # noqa: E402

NO_ONNX = {"accuracy", "softmax_loss", "next_token_loss"}  # a metric and losses: not part of an inference graph
RELATIVE = 1e-5  # of the largest output magnitude
DATA = (16, 12, 12)  # the contract networks' input: 12 = 2 * 6, so adaptive_avgpool(6) has even windows


# what comes back -----------------------------------------------------------------------------------
def expected_layer(layer: Layer, network: Network) -> tuple[str, dict] | None:
    """The op and attributes ``layer`` imports back as, where ONNX does not tell the ops apart.

    * dropout, stochastic_depth: the identity at inference, no node: no layer.
    * adaptive_avgpool: an AveragePool with kernel = stride = input / output, which reads as the fixed
      avgpool it is (global_avgpool for an output of 1x1, a GlobalAveragePool).
    * channel_chunk: a Slice; channel_chunk again when all the chunk's parts are read, else channel_slice.
    * channel_slice: ``channels`` (the split statement's check) is not in the Slice: 0.
    * pointwise_fc of a vector: a Gemm, which is fc (the same weight and key).
    * flatten read only by fc: ``Flatten -> Gemm`` is one fc, which flattens its input itself.
    * sum, mean, max: ONNX counts axes from the batch, so a negative axis comes back counted from 0.
    """
    attrs = dict(layer.attrs)
    source = network.layer(layer.inputs[0]) if layer.inputs else None
    if layer.op in ("dropout", "stochastic_depth"):
        return None
    readers = [other.op for other in network.inference_view().layers if layer.name in other.inputs]
    if layer.op == "flatten" and readers == ["fc"]:
        return None
    if layer.op == "adaptive_avgpool":
        if tuple(attrs["size"]) == (1, 1):
            return "global_avgpool", {}
        window = tuple(i // o for i, o in zip(source.shape[1:], attrs["size"]))
        return "avgpool", {"kernel": window, "stride": window, "pad": (0, 0), "round": "floor", "count_pad": True}
    if layer.op == "channel_chunk":
        parts = {(other.attrs["chunks"], other.attrs["index"]) for other in network.layers()
                 if other.op == "channel_chunk" and other.inputs == layer.inputs}
        if len(parts) == attrs["chunks"]:
            return layer.op, attrs
        start, stop = chunk_bounds(attrs["chunks"], attrs["index"], source.shape[0])
        return "channel_slice", {"start": start, "stop": stop, "channels": 0, "axis": 0}
    if layer.op == "channel_slice":
        return layer.op, {**attrs, "stop": attrs["stop"] or source.shape[0], "channels": 0}
    if layer.op in ("sum", "mean", "max"):
        return layer.op, {**attrs, "axis": attrs["axis"] % len(source.shape)}
    if layer.op == "pointwise_fc" and len(layer.shape) == 1:
        return "fc", attrs
    return layer.op, attrs


def _save(model: object, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())  # type: ignore[attr-defined]
    return path


def _run(network: Network, weights: dict[str, np.ndarray], inputs: list[np.ndarray]) -> np.ndarray:
    out = compile_executor(network, weights, device="cpu")(*inputs)
    return np.asarray(out[0] if isinstance(out, tuple) else out)


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    scale = float(np.abs(expected).max()) or 1.0
    assert float(np.abs(got - expected).max()) <= RELATIVE * scale


def _round_trip(network: Network, tmp_path: Path) -> None:
    """Export with random weights, import, and compare layer by layer, key by key and output to onnxruntime."""
    weights = random_weights(network)
    path = _save(export_onnx(network, weights), tmp_path / f"{network.name}.onnx")
    imported = import_onnx_source(path, readable=False)
    again = imported.network
    expected = [(layer.name, *found, layer.shape) for layer in network.inference_view().layers
                if (found := expected_layer(layer, network)) is not None]
    got = [(layer.name, layer.op, dict(layer.attrs), layer.shape) for layer in again.layers() if layer.op != "input"]
    assert got == expected
    assert list(imported.weights) == list(network.state_keys())
    for key, value in imported.weights.items():
        np.testing.assert_array_equal(value, weights[key], err_msg=key)
    rng = np.random.default_rng(1)
    feeds = {name: random_feed(network.layer(name), 2, rng) for name in network.inference_view().inputs}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [feeds[value.name] for value in session.get_inputs()]
    _close(_run(again, imported.weights, inputs), session.run(None, feeds)[0])


# every op, in its contract network -------------------------------------------------------------------
def test_the_ops_without_an_onnx_lowering_are_the_loss_and_the_metric() -> None:
    assert {op.name for op in all_ops() if op.lower.onnx is None} == NO_ONNX


NOT_IMPORTED_YET = {
    "param": "imported where an Add or Concat reads it (test_onnx_import_transformers.py); a model's output "
             "that is a constant is refused",
    "rearrange": "Reshape -> Transpose -> Reshape: imports as one rearrange, its axes named by the importer",
    **{name: "a layer of no input: alone, its export is a constant output, which is refused; read back where "
             "sdpa adds it (test_sdpa_reads_back_its_bias_and_mask)"
       for name in ("relative_position_bias", "window_mask")},
    **{name: "a language-model op whose export (plain nodes; a tied table) no op imports yet: refused"
       for name in ("positions", "repeat_kv", "rmsnorm", "rope", "unembed")},
}
"""Ops whose export does not import back as the op: the import then computes what onnxruntime computes on the
export, or stops with an error in the model's file."""


def _imports_equivalently_or_refuses(network: Network, tmp_path: Path) -> None:
    from alexdsl.errors import AlexDSLError

    weights = random_weights(network)
    path = _save(export_onnx(network, weights), tmp_path / f"{network.name}.onnx")
    try:
        imported = import_onnx_source(path, readable=False)
    except AlexDSLError as error:
        assert f"{path}: error: " in str(error), error
        return
    rng = np.random.default_rng(1)
    feeds = {name: random_feed(network.layer(name), 2, rng) for name in network.inference_view().inputs}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [feeds[value.name] for value in session.get_inputs()]
    _close(_run(imported.network, imported.weights, inputs), session.run(None, feeds)[0])


@pytest.mark.parametrize("op", [op for op in all_ops() if op.lower.onnx is not None], ids=lambda op: op.name)
def test_every_op_imports_back_from_its_export(op, tmp_path: Path) -> None:
    if op.name in NOT_IMPORTED_YET:
        _imports_equivalently_or_refuses(_contract_network(op, data=DATA), tmp_path)
    else:
        _round_trip(_contract_network(op, data=DATA), tmp_path)


def test_rearrange_imports_back_as_one_rearrange(tmp_path: Path) -> None:
    network = _contract_network(lookup("rearrange"), data=DATA)
    path = _save(export_onnx(network, random_weights(network)), tmp_path / "contract.onnx")
    layer = import_onnx_source(path, readable=False).network.layer("patches")
    assert (layer.op, layer.attrs["pattern"], layer.attrs["sizes"]) == (
        "rearrange", "c (h1 h2) (w1 w2) -> (h1 w1) (h2 w2 c)", (("h2", 4), ("w2", 4)))


@pytest.mark.parametrize("name", ["relative_position_bias", "window_mask"])
def test_a_constant_layer_alone_is_refused_with_a_value_named(name: str, tmp_path: Path) -> None:
    network = _contract_network(lookup(name), data=DATA)
    path = _save(export_onnx(network, random_weights(network)), tmp_path / "contract.onnx")
    with pytest.raises(AlexDSLError, match=r"contract\.onnx: error: (node|value) '"):
        import_onnx_source(path, readable=False)


SWIN_ATTENTION = """input x: 8x8x16
shifted: roll((-2, -2), (0, 1)) | windows: rearrange("(h p) (w q) c -> (h w) (p q) c", p=4, q=4)
attn: relative_position_bias(4, 2)
mask: window_mask(8, 4, 2)
qkv: windows -> linear(48) | chunk(3, axis=-1)
sdpa: sdpa(qkv.0, qkv.1, qkv.2, attn, mask, heads=2, scale=0.3)
causal: sdpa(qkv.0, qkv.1, qkv.2, heads=2, causal=true)
both: add(sdpa, causal)
"""


def test_sdpa_reads_back_its_bias_and_mask(tmp_path: Path) -> None:
    """A relative position bias and a shifted-window mask, folded to constants on reading, are their layers again,
    with the table's and the index's keys; the scale and causal arguments come back."""
    network = alexdsl.parse(f"network W\n{SWIN_ATTENTION}")
    weights = random_weights(network)
    path = _save(export_onnx(network, weights), tmp_path / "swin.onnx")
    imported = import_onnx_source(path, readable=False)
    layers = {layer.name: (layer.op, dict(layer.attrs)) for layer in imported.network.layers()}
    for name in ("shifted", "attn", "mask", "sdpa", "causal"):
        assert layers[name] == (network.layer(name).op, dict(network.layer(name).attrs)), name
    assert imported.network.layer("sdpa").inputs[3:] == ["attn", "mask"]
    assert sorted(imported.weights) == sorted(network.state_keys())  # the table and the index among them
    for key, value in imported.weights.items():
        np.testing.assert_array_equal(value, weights[key], err_msg=key)
    x = np.random.default_rng(1).standard_normal((2, 8, 8, 16)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _close(_run(imported.network, imported.weights, [x]), session.run(None, {"x": x})[0])


VARIANTS = {
    "broadcast": """input x: 8x6x6
row: x -> global_avgpool | flatten | fc(6)
gate: x -> global_avgpool | sigmoid
scaled: mul(x, gate)
added: add(scaled, row)
out: sub(added, row)
""",
    "scales": """input x: 8x6x6
a: x -> scale(bias=true)
b: a -> scale(param=layer_scale)
c: b -> scale(bias=true, param=layer_scale) | global_avgpool | flatten
d: c -> scale(bias=true) | scale
""",
    "activations": """input x: 8x6x6
a: x -> softplus(beta=2, threshold=10) | gelu(approximate=tanh) | hardtanh(-2, 3) | prelu(shared=true)
b: a -> elu(0.5) | softplus | leaky_relu(0.2) | relu6 | hardswish | hardsigmoid | mish | silu | gelu
""",
    "vector": """input x: 8x6x6
v: x -> flatten | layernorm(eps=1e-6) | pointwise_fc(5) | prelu | pointwise_fc(4, bias=false) | scale
""",
    "pools": """input x: 8x6x6
a: x -> adaptive_avgpool(1)
b: x -> adaptive_avgpool(3)
c: add(a, b)
""",
    "parts": """input x: 8x6x6
half: chunk(2)
parts: x -> split((3, 5))
third: x -> chunk(3)
out: concat(half.1, half.0, parts.0, parts.1, third.2)
""",
    "channels": """input x: 8x6x6
n: x -> layernorm | groupnorm(2, eps=1e-6) | pointwise_fc(8, bias=false) | channel_shuffle(4)
""",
    "padding": """input x: 8x6x6
p: x -> pad(1, 0, 2, 1, value=-1.5) | conv(4, 3) | pad(bottom=1, right=1) | maxpool(2)
shifted: x -> pad(-1, 1, -1, 1) | conv(4, 3, pad=1)
mirrored: x -> pad(1, 2, 0, 5, mode=reflect) | pad(3, 0, 1, 1, mode=replicate) | conv(4, 3)
""",
    "reductions": """input x: 8x5x6
s: x -> sum(axis=0, keepdims=true)
m: x -> mean(-1)
t: x -> max(1)
""",
    "upsampling": """input x: 8x5x6
near: x -> upsample((3, 2))
corners: x -> upsample(2, mode=bilinear, align_corners=true)
out: corners -> upsample((1, 2), mode=bilinear)
""",
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_op_variants_import_back_from_their_export(name: str, tmp_path: Path) -> None:
    """Arguments and shapes the contract examples leave out: broadcasting, every scale form, vectors..."""
    _round_trip(alexdsl.parse(f"network {name.title()}\n" + VARIANTS[name], f"{name}.adsl"), tmp_path)


def test_a_product_of_three_imports_as_two_products(tmp_path: Path) -> None:
    """mul(a, b, c) exports as Mul(Mul(a, b), c); a Mul of a Mul stays two layers, since the inner one may
    be an activation's (x * sigmoid(x) * y is silu, then mul)."""
    network = alexdsl.parse("network Three\ninput x: 4x3x3\na: x -> relu\nb: x -> sigmoid\nm: mul(a, b, x)\n")
    weights: dict[str, np.ndarray] = {}
    path = _save(export_onnx(network, weights), tmp_path / "three.onnx")
    imported = import_onnx_source(path, readable=False)
    assert [(layer.name, layer.op, layer.inputs) for layer in imported.network.layers() if layer.op == "mul"] == [
        ("m.partial2", "mul", ["a", "b"]), ("m", "mul", ["m.partial2", "x"])]
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3), dtype=np.float32)
    _close(_run(imported.network, imported.weights, [x]), _run(network, weights, [x]))


# torch's exporter -------------------------------------------------------------------------------------
class Lambda(nn.Module):
    """A module computing ``function(self, x)``; parameters given as keywords are registered on it."""

    def __init__(self, function, **parameters: torch.Tensor) -> None:
        super().__init__()
        self.function = function
        for name, value in parameters.items():
            self.register_parameter(name, nn.Parameter(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(self, x)


def _with(inner: nn.Module, function) -> Lambda:
    """``function(self, x)`` with ``self.inner`` the module ``inner`` (its parameters named ``inner.*``)."""
    wrapper = Lambda(function)
    wrapper.inner = inner
    return wrapper


def _channels_last(self: Lambda, x: torch.Tensor) -> torch.Tensor:
    """torchvision's LayerNorm2d: the module applied channels last."""
    return self.inner(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.adaptive_avg_pool2d(x, 1)


# name -> (module factory, the ops imported besides inputs, opsets beyond 11, 13 and 17); every parameter is
# drawn by onnx_models.randomise. An elementwise op's own torch code is not listed: the derived
# test_ops_contract.test_torchs_export_of_the_generated_module_imports_as_the_op exports it.
TORCH_CASES: dict[str, tuple] = {
    "clamp_min_0": (lambda: Lambda(lambda self, x: x.clamp(min=0)), ["relu"]),
    "clamp_min": (lambda: Lambda(lambda self, x: x.clamp(min=0.5)), ["hardtanh"]),
    "clamp_max": (lambda: Lambda(lambda self, x: x.clamp(max=0.5)), ["hardtanh"]),
    "softmax": (lambda: nn.Softmax(dim=1), ["softmax"]),
    "squeeze_excitation": (lambda: _with(nn.Conv2d(8, 8, 1), lambda self, x: x * torch.sigmoid(self.inner(_pool(x)))),
                           ["global_avgpool", "conv", "sigmoid", "mul"]),
    "add_broadcast": (lambda: Lambda(lambda self, x: x + _pool(x)), ["global_avgpool", "add"]),
    "sub": (lambda: Lambda(lambda self, x: x[:, 4:7] - x[:, 1:4]), ["channel_slice", "channel_slice", "sub"]),
    "div": (lambda: Lambda(lambda self, x: x[:, 4:7] / x[:, 1:4]), ["channel_slice", "channel_slice", "div"]),
    "scale": (lambda: Lambda(lambda self, x: x * self.weight.view(-1, 1, 1) + self.bias.view(-1, 1, 1),
                             weight=torch.empty(8), bias=torch.empty(8)), ["scale"]),
    "layer_scale": (lambda: Lambda(lambda self, x: self.layer_scale * x, layer_scale=torch.empty(8, 1, 1)),
                    ["scale"]),
    "layernorm_2d": (lambda: _with(nn.LayerNorm(8, eps=1e-6), _channels_last), ["layernorm"]),
    "layernorm_vector": (lambda: _with(nn.LayerNorm(8 * 4 * 4), lambda self, x: self.inner(x.flatten(1))),
                         ["flatten", "layernorm"]),
    "groupnorm": (lambda: nn.GroupNorm(2, 8), ["groupnorm"]),
    "channel_shuffle": (lambda: Lambda(lambda self, x: x.view(-1, 2, 4, 4, 4).transpose(1, 2).reshape(-1, 8, 4, 4)),
                        ["channel_shuffle"]),
    "chunk": (lambda: Lambda(lambda self, x: torch.cat([*x.chunk(2, dim=1)[::-1], x], 1)),
              ["channel_chunk", "channel_chunk", "concat"]),
    # the two halves swapped: a roll by half the channels, as torch exports torch.roll
    "roll": (lambda: Lambda(lambda self, x: torch.cat(x.chunk(2, dim=1)[::-1], 1)), ["roll"]),
    "split": (lambda: Lambda(lambda self, x: torch.cat([*torch.split(x, [3, 5], dim=1)[::-1], x], 1)),
              ["channel_slice", "channel_slice", "concat"]),
    "split_even": (lambda: Lambda(lambda self, x: torch.cat(torch.split(x, 4, dim=1)[::-1], 1)),
                   ["channel_chunk", "channel_chunk", "concat"]),
    "adaptive_avgpool": (lambda: nn.AdaptiveAvgPool2d(2), ["avgpool"]),
    "pad": (lambda: Lambda(lambda self, x: nn.functional.pad(x, (0, 1, 2, 0), value=0.5)), ["pad"]),
    # timm's Conv2dSame: F.pad to TensorFlow's 'SAME', then a conv without padding
    "conv2d_same": (lambda: _with(nn.Conv2d(8, 8, 3, stride=2), lambda self, x: self.inner(
        nn.functional.pad(x, (0, 1, 0, 1)))), ["pad", "conv"]),
    "conv2d_same_even": (lambda: _with(nn.Conv2d(8, 8, 3), lambda self, x: self.inner(
        nn.functional.pad(x, (1, 1, 1, 1)))), ["conv"]),
    "conv_padding_same": (lambda: nn.Conv2d(8, 8, 3, padding="same"), ["conv"]),
    "upsample_nearest": (lambda: nn.Upsample(scale_factor=2), ["upsample"], (18, 20, 21)),
    "upsample_nearest_3": (lambda: Lambda(lambda self, x: nn.functional.interpolate(x, scale_factor=(3, 2))),
                           ["upsample"], (18, 20, 21)),
    "upsample_bilinear": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), ["upsample"], (18, 20, 21)),
    "upsample_bilinear_corners": (lambda: nn.Upsample(scale_factor=3, mode="bilinear", align_corners=True),
                                  ["upsample"], (18, 20, 21)),
    "sum_keepdim": (lambda: Lambda(lambda self, x: x.sum(1, keepdim=True)), ["sum"], (18,)),
    "mean_last": (lambda: Lambda(lambda self, x: x.mean(-1)), ["mean"], (18,)),
    "unsqueeze_squeeze": (lambda: Lambda(lambda self, x: torch.relu(x.unsqueeze(2)).squeeze(2)),
                          ["reshape", "relu", "reshape"]),
    "amax": (lambda: Lambda(lambda self, x: x.amax(2, keepdim=True)), ["max"], (18,)),
    "sum_two_axes": (lambda: Lambda(lambda self, x: x.sum((1, 3))), ["sum", "sum"], (18,)),
    "mean_spatial": (lambda: Lambda(lambda self, x: x.mean((2, 3), keepdim=True)), ["global_avgpool"], (18,)),
    "slice_every_channel": (lambda: Lambda(lambda self, x: torch.relu(x[:, :8])), ["relu"]),
    "pad_shift": (lambda: nn.ZeroPad2d((-1, 1, -1, 1)), ["pad"]),  # timm's nasnet: a shift by one pixel
    "pad_reflect": (lambda: nn.ReflectionPad2d((0, 1, 2, 1)), ["pad"]),  # timm's BlurPool2d (tresnet)
    "pad_replicate": (lambda: nn.ReplicationPad2d((1, 0, 0, 2)), ["pad"]),
    # timm's MaxPool2dSame: a -inf F.pad, then a pool without padding: a ceil-rounded maxpool
    "maxpool_same": (lambda: Lambda(lambda self, x: nn.functional.max_pool2d(
        nn.functional.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)), ["maxpool"]),
    "conv_padding_same_uneven": (lambda: nn.Conv2d(8, 8, 4, padding="same", dilation=1), ["pad", "conv"]),
}
TORCH_INPUT = (1, 8, 4, 4)


def _torch_params() -> list:
    params = []
    for name, (_, _, *more) in TORCH_CASES.items():
        opsets = (11, 13, 17, *(more[0] if more else ()))
        params += [pytest.param(name, opset, id=f"{name}-{opset}") for opset in opsets]
    return params


def _torch_import(name: str, opset: int, tmp_path: Path) -> tuple[nn.Module, ImportedModel]:
    module = randomise(TORCH_CASES[name][0]()).eval()
    path = torch_export(module, TORCH_INPUT, tmp_path / f"{name}_{opset}.onnx", opset)
    return module, import_onnx_source(path, readable=False)


@pytest.mark.parametrize(("name", "opset"), _torch_params())
def test_torch_exports_import_as_the_op_and_compute_what_torch_computes(name: str, opset: int, tmp_path: Path) -> None:
    module, imported = _torch_import(name, opset, tmp_path)
    assert [layer.op for layer in imported.network.layers() if layer.op != "input"] == TORCH_CASES[name][1]
    x = np.random.default_rng(1).standard_normal((2, *TORCH_INPUT[1:]), dtype=np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    _close(_run(imported.network, imported.weights, [x]), expected)


def test_torch_attributes_come_through(tmp_path: Path) -> None:
    """The constants of torch's patterns become the ops' arguments and parameters."""
    def layer(name: str, opset: int = 11) -> Layer:
        _, imported = _torch_import(name, opset, tmp_path)
        return next(layer for layer in imported.network.layers() if layer.op != "input")

    assert layer("clamp_min").attrs == {"min": 0.5, "max": FLOAT32_MAX}
    assert layer("clamp_max").attrs == {"min": -FLOAT32_MAX, "max": 0.5}
    assert layer("layernorm_2d", 11).attrs == layer("layernorm_2d", 17).attrs == {"eps": 1e-6, "axis": 0}
    assert layer("groupnorm").attrs == {"groups": 2, "eps": 1e-5}
    assert layer("channel_shuffle").attrs == {"groups": 2}
    assert layer("adaptive_avgpool").attrs["kernel"] == (2, 2)
    assert layer("layer_scale").attrs == {"bias": False, "param": "layer_scale"}
    assert layer("scale").attrs == {"bias": True, "param": "weight"}
    assert layer("upsample_nearest").attrs == layer("upsample_nearest", 20).attrs == {
        "scale": (2, 2), "mode": "nearest", "align_corners": False}
    assert layer("upsample_nearest_3").attrs["scale"] == (3, 2)
    assert layer("upsample_bilinear").attrs == layer("upsample_bilinear", 18).attrs == {
        "scale": (2, 2), "mode": "bilinear", "align_corners": False}
    assert layer("upsample_bilinear_corners").attrs == {"scale": (3, 3), "mode": "bilinear", "align_corners": True}
    assert layer("sum_keepdim").attrs == layer("sum_keepdim", 18).attrs == {"axis": 0, "keepdims": True}
    assert layer("mean_last").attrs == {"axis": 2, "keepdims": False}
    assert layer("amax", 18).attrs == {"axis": 1, "keepdims": True}
    assert layer("sum_two_axes").attrs == {"axis": 2, "keepdims": False}  # the highest axis first
    assert layer("pad_shift").attrs == {"top": -1, "bottom": 1, "left": -1, "right": 1, "value": 0.0,
                                        "mode": "constant"}
    assert layer("pad_reflect").attrs == {"top": 2, "bottom": 1, "left": 0, "right": 1, "value": 0.0,
                                          "mode": "reflect"}
    assert layer("pad_replicate").attrs == {"top": 0, "bottom": 2, "left": 1, "right": 0, "value": 0.0,
                                            "mode": "replicate"}
    assert layer("maxpool_same").attrs == {"kernel": (3, 3), "stride": (2, 2), "pad": (0, 0), "round": "ceil"}
    assert layer("pad").attrs == {"top": 2, "bottom": 0, "left": 0, "right": 1, "value": 0.5, "mode": "constant"}
    assert layer("conv2d_same").attrs == {"top": 0, "bottom": 1, "left": 0, "right": 1, "value": 0.0,
                                          "mode": "constant"}
    assert layer("conv2d_same_even").attrs["pad"] == (1, 1)
    assert layer("conv_padding_same").attrs["pad"] == (1, 1)
    assert layer("conv_padding_same_uneven").attrs == {"top": 1, "bottom": 2, "left": 1, "right": 2, "value": 0.0,
                                                       "mode": "constant"}


def test_torch_parameters_keep_their_values(tmp_path: Path) -> None:
    """Weights that torch reshapes on export ((C, 1, 1) slopes and factors) come back as the op's (C,)."""
    cases = (("scale", "weight", "weight"), ("scale", "bias", "bias"),
             ("layer_scale", "layer_scale", "layer_scale"), ("layernorm_2d", "inner.bias", "bias"),
             ("groupnorm", "weight", "weight"), ("groupnorm", "bias", "bias"))
    for name, torch_key, param in cases:
        module, imported = _torch_import(name, 13, tmp_path)
        (found,) = [value for key, value in imported.weights.items() if key.endswith("." + param)]
        expected = module.state_dict()[torch_key].numpy()
        assert found.shape == ((8, 1, 1) if param == "layer_scale" else (8,))
        np.testing.assert_array_equal(found, expected.reshape(found.shape), err_msg=f"{name} {torch_key}")


def test_a_clip_with_a_bound_per_element_is_a_clear_error(tmp_path: Path) -> None:
    """Clip's bounds are scalars; a model with a vector bound is refused, not read as unbounded."""
    from onnx import TensorProto, helper, numpy_helper


    graph = helper.make_graph(
        [helper.make_node("Clip", ["x", "low"], ["y"])], "clip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])],
        initializer=[numpy_helper.from_array(np.zeros(4, np.float32), "low")])
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "clip.onnx")
    with pytest.raises(AlexDSLError, match=r"Clip\): only a Clip with constant scalar bounds"):
        import_onnx_source(path, readable=False)


def test_a_pad_alexdsl_cannot_express_is_an_error_naming_the_node(tmp_path: Path) -> None:
    from alexdsl.errors import AlexDSLError

    module = Lambda(lambda self, x: nn.functional.pad(x, (0, 0, 0, 0, 1, 0)))
    path = torch_export(module, TORCH_INPUT, tmp_path / "channels.onnx", 17)
    with pytest.raises(AlexDSLError, match=r"node '[^']+' \(Pad\): pads \[0, 1, 0, 0, 0, 0, 0, 0\] pad the batch or "
                                           r"the channels"):
        import_onnx_source(path)


def test_a_resize_to_a_size_that_is_no_integer_factor_is_an_error_naming_the_node(tmp_path: Path) -> None:
    from alexdsl.errors import AlexDSLError

    module = Lambda(lambda self, x: nn.functional.interpolate(x, size=(6, 5), mode="bilinear"))
    path = torch_export(module, TORCH_INPUT, tmp_path / "resize.onnx", 17)
    with pytest.raises(AlexDSLError, match=r"node '[^']+' \(Resize\): it resizes 8x4x4 to 8x6x5"):
        import_onnx_source(path)


@pytest.mark.parametrize(("op_type", "auto_pad", "ops"), [
    ("MaxPool", "SAME_UPPER", ["maxpool"]), ("AveragePool", "SAME_UPPER", ["avgpool"]),
    ("Conv", "SAME_LOWER", ["pad", "conv"]), ("Conv", "SAME_UPPER", ["pad", "conv"])])
def test_auto_pad_is_made_explicit(op_type: str, auto_pad: str, ops: list[str], tmp_path: Path) -> None:
    """ONNX's auto_pad=SAME_*: the pads it means, from the input's shape, and what onnxruntime computes."""
    from onnx import TensorProto, helper, numpy_helper

    inputs, initializers, attrs = ["x"], [], {"kernel_shape": [4, 4] if op_type == "Conv" else [3, 3]}
    if op_type == "Conv":
        weight = np.random.default_rng(0).standard_normal((4, 4, 4, 4)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, "w"))
        inputs.append("w")
    else:
        attrs["strides"] = [2, 2]
    graph = helper.make_graph(
        [helper.make_node(op_type, inputs, ["y"], auto_pad=auto_pad, **attrs)], "same",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=initializers)
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "same.onnx")
    imported = import_onnx_source(path, readable=False)
    assert [layer.op for layer in imported.network.layers() if layer.op != "input"] == ops
    x = np.random.default_rng(1).standard_normal((1, 4, 6, 6), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _close(_run(imported.network, imported.weights, [x]), session.run(None, {"x": x})[0])
