"""ShuffleNetV2 1.0x, RegNetY-400MF and ConvNeXt-T are exact torchvision networks.

The expected state_dict keys and shapes are tests/data/torchvision/<model>.json, written by
torchvision itself (benchmarks/torchvision_reference.py), so these tests need no torchvision;
where torchvision is installed, its model's weights load by key into the generated torch
module and both give the same outputs.
"""

from __future__ import annotations

import pytest
from conftest import random_weights
from torchvision_examples import (
    assert_keys_are_torchvisions,
    assert_same_settings,
    assert_trains_one_epoch,
    load,
    outputs_with_torchvisions_weights,
    randomise_statistics,
    reference,
)

from alexdsl.interop.compare import compare

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


@pytest.mark.parametrize(("example", "model", "params", "logits"), MODELS, ids=EXAMPLE_NAMES)
def test_keys_shapes_and_parameter_count_are_torchvisions(example: str, model: str, params: int,
                                                          logits: str) -> None:
    network = load(example)
    assert_keys_are_torchvisions(network, model, params)
    assert network.shapes[logits] == (1000,)


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_torch_module_has_torchvisions_state_dict_in_its_order(example: str) -> None:
    """ConvNeXt's layer_scale comes before its block's modules, as nn.Module.state_dict() saves them."""
    pytest.importorskip("torch")
    from alexdsl.backends.torch import build

    state = build(load(example)).state_dict()
    shapes = {key: list(value.shape) for key, value in state.items() if not key.endswith("num_batches_tracked")}
    assert list(shapes.items()) == list(reference(MODEL[example])["state"].items())


@pytest.mark.slow  # 2-4 s of CPU per example
@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_numpy_executor_and_onnxruntime_agree_with_the_torch_module(example: str) -> None:
    """The logits at a small input; the ONNX model passes onnx.checker's full check on export."""
    for module in ("torch", "onnx", "onnxruntime"):
        pytest.importorskip(module)
    network = load(example, SMALL)
    logits = LOGITS[example]
    (row,) = compare(network, ["torch", "cupy", "onnx"], weights=random_weights(network), layers=[logits])
    assert row.layer == logits and row.shape == (1000,)
    for backend in ("cupy", "onnx"):
        _, relative = row.diffs[backend]
        assert relative <= 1e-4, backend


@pytest.mark.slow  # 1-3 s of CPU per example
@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_trains_on_synthetic_data_at_a_small_input(example: str, tmp_path) -> None:
    assert_trains_one_epoch(load(example, TINY), tmp_path)


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
    torchvision_model = getattr(torchvision.models, MODEL[example])()
    randomise_statistics(torchvision_model, torch)
    _randomise_norms_and_layer_scales(torchvision_model, torch)
    torchvision_model.eval()
    network = load(example)
    ours = build(network)
    assert_same_settings(torchvision_model, ours, network, torch, torchvision)
    layers = {layer.name: layer for layer in network.layers()}
    for name, module in torchvision_model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):  # torchvision's LayerNorm2d, and the one inside CNBlock
            assert layers[name].op == "layernorm" and layers[name].attrs["eps"] == module.eps, name
    got, want = outputs_with_torchvisions_weights(torchvision_model, ours, torch)
    assert got.shape == want.shape == (2, 1000)
    assert float(want.std()) > 0.1 * float(want.abs().max())  # the logits differ: the comparison has teeth
    relative = float((got - want).abs().max() / want.abs().max())
    print(f"{MODEL[example]}: max |alexdsl - torchvision| / max |torchvision| = {relative:.3g}")
    assert relative <= 1e-6
