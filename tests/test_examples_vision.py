"""ShuffleNetV2 1.0x, RegNetY-400MF and ConvNeXt-T are exact torchvision networks.

The expected state_dict keys and shapes are tests/data/torchvision/<model>.json, written by
torchvision itself (benchmarks/torchvision_reference.py), so these tests need no torchvision;
where torchvision is installed, its model's weights load by key into the generated torch
module and both give the same outputs.
"""

from __future__ import annotations

import math

import pytest
from conftest import EXAMPLES
from test_examples_mobile import _assert_same_settings, _random_weights, _randomise_statistics, _reference

import alexdsl
from alexdsl.interop.compare import compare
from alexdsl.ir.network import Network

# example, torchvision model, torchvision's published parameter count, the logits layer
MODELS = [
    ("shufflenet_v2", "shufflenet_v2_x1_0", 2_278_604, "fc"),
    ("regnet_y_400mf", "regnet_y_400mf", 4_344_144, "fc"),
    ("convnext_tiny", "convnext_tiny", 28_589_128, "classifier.2"),
]
EXAMPLE_NAMES = [example for example, *_ in MODELS]
SMALL = {"data": (3, 64, 64)}  # 2x2 before the global pool in all three
TINY = {"data": (3, 32, 32)}  # the smallest input all three take: 1x1 before the global pool
LOGITS = {example: logits for example, _, _, logits in MODELS}
MODEL = {example: model for example, model, _, _ in MODELS}


def _load(example: str, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Network:
    return alexdsl.load(EXAMPLES / f"{example}.adsl", input_shapes=input_shapes)


@pytest.mark.parametrize(("example", "model", "params", "logits"), MODELS, ids=EXAMPLE_NAMES)
def test_keys_shapes_and_parameter_count_are_torchvisions(example: str, model: str, params: int,
                                                          logits: str) -> None:
    reference = _reference(model)
    assert reference["params"] == params  # the data file is the published model
    network = _load(example)
    keys = {key: list(shape) for key, shape in network.state_keys().items()}
    assert list(keys) == list(reference["state"])  # the same order, as state_dict() gives them
    assert keys == reference["state"]
    assert network.totals()["params"] == params
    assert network.shapes[logits] == (1000,)


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_torch_module_has_torchvisions_state_dict_in_its_order(example: str) -> None:
    """ConvNeXt's layer_scale comes before its block's modules, as nn.Module.state_dict() saves them."""
    pytest.importorskip("torch")
    from alexdsl.backends.torch import build

    state = build(_load(example)).state_dict()
    shapes = {key: list(value.shape) for key, value in state.items() if not key.endswith("num_batches_tracked")}
    assert list(shapes.items()) == list(_reference(MODEL[example])["state"].items())


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_numpy_executor_and_onnxruntime_agree_with_the_torch_module(example: str) -> None:
    """The logits at a small input; the ONNX model passes onnx.checker's full check on export."""
    for module in ("torch", "onnx", "onnxruntime"):
        pytest.importorskip(module)
    network = _load(example, SMALL)
    logits = LOGITS[example]
    (row,) = compare(network, ["torch", "cupy", "onnx"], weights=_random_weights(network), layers=[logits])
    assert row.layer == logits and row.shape == (1000,)
    for backend in ("cupy", "onnx"):
        _, relative = row.diffs[backend]
        assert relative <= 1e-4, backend


@pytest.mark.parametrize("example", [pytest.param(name, marks=pytest.mark.slow) if name == "convnext_tiny" else name
                                     for name in EXAMPLE_NAMES])  # ConvNeXt-T: 28.6M parameters, 5-20 s
def test_trains_on_synthetic_data_at_a_small_input(example: str, tmp_path) -> None:
    for module in ("torch", "safetensors", "tqdm", "matplotlib"):  # the torch extra, which train() uses
        pytest.importorskip(module)
    from alexdsl.backends.torch.train import train

    network = _load(example, TINY)
    result = train(network, "synthetic:16", tmp_path / "run", epochs=1, batch_size=8, progress=False, log=None)
    (record,) = result.history
    assert math.isfinite(record["train_loss"]) and record["train_loss"] > 0
    assert (tmp_path / "run" / "weights.safetensors").exists()


def _randomise_norms_and_layer_scales(model, torch) -> None:  # noqa: ANN001 - a torchvision module, torch
    """ConvNeXt has no batchnorm: random LayerNorm affine parameters, and layer scales of O(1) instead
    of 1e-6, so that every block changes the output."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("layer_scale"):
                parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_outputs_equal_torchvisions_with_its_weights(example: str) -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from alexdsl.backends.torch import build

    torch.manual_seed(0)
    reference = getattr(torchvision.models, MODEL[example])()
    _randomise_statistics(reference, torch)
    _randomise_norms_and_layer_scales(reference, torch)
    reference.eval()
    network = _load(example)
    ours = build(network)
    _assert_same_settings(reference, ours, network, torch, torchvision)
    layers = {layer.name: layer for layer in network.layers()}
    for name, module in reference.named_modules():
        if isinstance(module, torch.nn.LayerNorm):  # torchvision's LayerNorm2d, and the one inside CNBlock
            assert layers[name].op == "layernorm" and layers[name].attrs["eps"] == module.eps, name
    ours.load_state_dict(reference.state_dict(), strict=True)  # by key, num_batches_tracked included
    ours.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = reference(x)
        got = ours(x)
    got = got[0] if isinstance(got, (tuple, list)) else got
    assert got.shape == want.shape == (2, 1000)
    assert float(want.std()) > 0.1 * float(want.abs().max())  # the logits differ: the comparison has teeth
    relative = float((got - want).abs().max() / want.abs().max())
    print(f"{MODEL[example]}: max |alexdsl - torchvision| / max |torchvision| = {relative:.3g}")
    assert relative <= 1e-6
