"""MobileNetV2, MobileNetV3-Large and EfficientNet-B0 are exact torchvision networks.

The expected state_dict keys and shapes are tests/data/torchvision/<model>.json, written by
torchvision itself (benchmarks/torchvision_reference.py), so these tests need no torchvision;
where torchvision is installed, its model's weights load by key into the generated torch
module and both give the same outputs.
"""

from __future__ import annotations

import numpy as np
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

from alexdsl.ir.network import Network

# example, torchvision model, torchvision's published parameter count
MODELS = [
    ("mobilenet_v2", "mobilenet_v2", 3_504_872),
    ("mobilenet_v3_large", "mobilenet_v3_large", 5_483_032),
    ("efficientnet_b0", "efficientnet_b0", 5_288_548),
]
EXAMPLE_NAMES = [example for example, _, _ in MODELS]
SMALL = {"data": (3, 64, 64)}  # five stride-2 stages: 2x2 before the global pool


@pytest.mark.parametrize(("example", "model", "params"), MODELS, ids=EXAMPLE_NAMES)
def test_keys_shapes_and_parameter_count_are_torchvisions(example: str, model: str, params: int) -> None:
    network = load(example)
    assert_keys_are_torchvisions(network, model, params)
    assert network.shapes["classifier.1" if model != "mobilenet_v3_large" else "classifier.3"] == (1000,)


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_torch_module_has_torchvisions_state_dict(example: str) -> None:
    pytest.importorskip("torch")
    from alexdsl.backends.torch import build

    expected = reference(dict((e, m) for e, m, _ in MODELS)[example])
    state = build(load(example)).state_dict()
    shapes = {key: list(value.shape) for key, value in state.items() if not key.endswith("num_batches_tracked")}
    assert shapes == expected["state"]


@pytest.mark.slow  # 2-3 s of CPU per example
@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_numpy_executor_agrees_with_the_torch_module(example: str) -> None:
    pytest.importorskip("torch")
    from alexdsl.backends import executor as executor_backend

    network = load(example, SMALL)
    weights = random_weights(network)
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


@pytest.mark.slow  # 2 s of CPU per example
@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_onnx_export_agrees_with_the_torch_module(example: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from alexdsl.interop.onnx import export_onnx

    network = load(example, SMALL)
    weights = random_weights(network)
    session = ort.InferenceSession(export_onnx(network, weights).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).standard_normal((2, *SMALL["data"])).astype(np.float32)
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    want = _torch_logits(network, weights, x)
    assert got.shape == want.shape == (2, 1000)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.slow  # 1-3 s of CPU per example
@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_trains_on_synthetic_data_at_a_small_input(example: str, tmp_path) -> None:
    assert_trains_one_epoch(load(example, SMALL), tmp_path)


@pytest.mark.parametrize(("example", "model"), [(e, m) for e, m, _ in MODELS], ids=EXAMPLE_NAMES)
def test_outputs_equal_torchvisions_with_its_weights(example: str, model: str) -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from alexdsl.backends.torch import build

    torch.manual_seed(0)
    torchvision_model = getattr(torchvision.models, model)()
    randomise_statistics(torchvision_model, torch)
    torchvision_model.eval()
    network = load(example)
    ours = build(network)
    assert_same_settings(torchvision_model, ours, network, torch, torchvision)
    got, want = outputs_with_torchvisions_weights(torchvision_model, ours, torch)
    assert got.shape == want.shape == (2, 1000)
    relative = float((got - want).abs().max() / want.abs().max())
    print(f"{model}: max |alexdsl - torchvision| / max |torchvision| = {relative:.3g}")
    assert relative <= 1e-6
