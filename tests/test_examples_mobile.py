"""MobileNetV2, MobileNetV3-Large and EfficientNet-B0 are exact torchvision networks.

The expected state_dict keys and shapes are tests/data/torchvision/<model>.json, written by
torchvision itself (benchmarks/torchvision_reference.py), so these tests need no torchvision;
where torchvision is installed, its model's weights load by key into the generated torch
module and both give the same outputs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import EXAMPLES, ROOT

import alexdsl
from alexdsl.ir.network import Network

REFERENCE = ROOT / "tests" / "data" / "torchvision"

# example, torchvision model, torchvision's published parameter count
MODELS = [
    ("mobilenet_v2", "mobilenet_v2", 3_504_872),
    ("mobilenet_v3_large", "mobilenet_v3_large", 5_483_032),
    ("efficientnet_b0", "efficientnet_b0", 5_288_548),
]
EXAMPLE_NAMES = [example for example, _, _ in MODELS]
SMALL = {"data": (3, 64, 64)}  # five stride-2 stages: 2x2 before the global pool


def _reference(model: str) -> dict:
    return json.loads((REFERENCE / f"{model}.json").read_text(encoding="utf-8"))


def _load(example: str, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Network:
    return alexdsl.load(EXAMPLES / f"{example}.adsl", input_shapes=input_shapes)


def _random_weights(network: Network, seed: int = 0) -> dict[str, np.ndarray]:
    """He-scaled weights, non-zero biases and non-trivial batchnorm statistics (activations stay O(1))."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in network.state_keys().items():
        kind = key.rsplit(".", 1)[1]
        if kind == "weight" and len(shape) > 1:
            value = rng.standard_normal(shape) * math.sqrt(2.0 / math.prod(shape[1:]))
        elif kind in ("weight", "running_var"):  # batchnorm scale and variance
            value = rng.uniform(0.5, 1.5, shape)
        else:  # biases and running means
            value = rng.standard_normal(shape) * 0.1
        out[key] = value.astype(np.float32)
    return out


@pytest.mark.parametrize(("example", "model", "params"), MODELS, ids=EXAMPLE_NAMES)
def test_keys_shapes_and_parameter_count_are_torchvisions(example: str, model: str, params: int) -> None:
    reference = _reference(model)
    assert reference["params"] == params  # the data file is the published model
    network = _load(example)
    keys = {key: list(shape) for key, shape in network.state_keys().items()}
    assert list(keys) == list(reference["state"])  # the same order, as state_dict() gives them
    assert keys == reference["state"]
    assert network.totals()["params"] == params
    assert network.shapes["classifier.1" if model != "mobilenet_v3_large" else "classifier.3"] == (1000,)


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_torch_module_has_torchvisions_state_dict(example: str) -> None:
    pytest.importorskip("torch")
    from alexdsl.backends.torch import build

    reference = _reference(dict((e, m) for e, m, _ in MODELS)[example])
    state = build(_load(example)).state_dict()
    shapes = {key: list(value.shape) for key, value in state.items() if not key.endswith("num_batches_tracked")}
    assert shapes == reference["state"]


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_numpy_executor_agrees_with_the_torch_module(example: str) -> None:
    pytest.importorskip("torch")
    from alexdsl.backends import cupy as executor_backend

    network = _load(example, SMALL)
    weights = _random_weights(network)
    executor = executor_backend.compile(network, weights, device="cpu")
    x = np.random.default_rng(1).standard_normal((2, *SMALL["data"])).astype(np.float32)
    want = _torch_logits(network, weights, x)
    got = executor(x)
    got = got[0] if isinstance(got, tuple) else got
    assert got.shape == want.shape == (2, 1000)
    scale = float(np.abs(want).max())
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


def _torch_logits(network: Network, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The generated torch module's output for ``x``, in eval mode with exactly ``weights``."""
    import torch

    from alexdsl.backends.torch import build

    module = build(network)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    module.eval()
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return (out[0] if isinstance(out, (tuple, list)) else out).numpy()


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_onnx_export_agrees_with_the_torch_module(example: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from alexdsl.interop.onnx import export_onnx

    network = _load(example, SMALL)
    weights = _random_weights(network)
    session = ort.InferenceSession(export_onnx(network, weights).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).standard_normal((2, *SMALL["data"])).astype(np.float32)
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    want = _torch_logits(network, weights, x)
    assert got.shape == want.shape == (2, 1000)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_trains_on_synthetic_data_at_a_small_input(example: str, tmp_path) -> None:
    for module in ("torch", "safetensors", "tqdm", "matplotlib"):  # the torch extra, which train() uses
        pytest.importorskip(module)
    from alexdsl.backends.torch.train import train

    network = _load(example, SMALL)
    result = train(network, "synthetic:16", tmp_path / "run", epochs=1, batch_size=8, progress=False, log=None)
    (record,) = result.history
    assert math.isfinite(record["train_loss"]) and record["train_loss"] > 0
    assert (tmp_path / "run" / "weights.safetensors").exists()


def _randomise_statistics(model, torch) -> None:  # noqa: ANN001 - a torchvision module, torch
    """Non-trivial batchnorm statistics and affine parameters, and non-zero conv biases."""
    generator = torch.Generator().manual_seed(0)

    def uniform(like, low: float, high: float):  # noqa: ANN001, ANN202
        return low + (high - low) * torch.rand(like.shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(uniform(module.running_var, 0.5, 1.5))
                module.weight.copy_(uniform(module.weight, 0.5, 1.5))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))


def _assert_same_settings(reference, ours, network: Network, torch, torchvision) -> None:  # noqa: ANN001
    """Every conv, batchnorm and linear module prints the same (stride, padding, groups, eps, momentum),
    and every dropout and used stochastic depth has torchvision's probability."""
    modules = dict(ours.named_modules())
    layers = {layer.name: layer for layer in network.layers()}
    for name, module in reference.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear)):
            assert repr(modules[name]) == repr(module), name
        elif isinstance(module, (torch.nn.Dropout, torchvision.ops.StochasticDepth)):
            if name not in layers:  # torchvision keeps a stochastic depth in blocks without a shortcut, unused
                assert not reference.get_submodule(name.rsplit(".", 1)[0]).use_res_connect, name
                continue
            assert layers[name].attrs["p"] == pytest.approx(module.p, abs=1e-12), name
            assert layers[name].attrs.get("mode", "row") == getattr(module, "mode", "row"), name


@pytest.mark.parametrize(("example", "model"), [(e, m) for e, m, _ in MODELS], ids=EXAMPLE_NAMES)
def test_outputs_equal_torchvisions_with_its_weights(example: str, model: str) -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from alexdsl.backends.torch import build

    torch.manual_seed(0)
    reference = getattr(torchvision.models, model)()
    _randomise_statistics(reference, torch)
    reference.eval()
    network = _load(example)
    ours = build(network)
    _assert_same_settings(reference, ours, network, torch, torchvision)
    ours.load_state_dict(reference.state_dict(), strict=True)  # by key, num_batches_tracked included
    ours.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = reference(x)
        got = ours(x)
    got = got[0] if isinstance(got, (tuple, list)) else got
    assert got.shape == want.shape == (2, 1000)
    relative = float((got - want).abs().max() / want.abs().max())
    print(f"{model}: max |alexdsl - torchvision| / max |torchvision| = {relative:.3g}")
    assert relative <= 1e-6
