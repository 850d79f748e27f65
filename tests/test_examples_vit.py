"""ViT-B/16 is torchvision's vit_b_16, exactly; a small ViT trains on the digits.

The expected state_dict keys and shapes are tests/data/torchvision/vit_b_16.json, written by
torchvision itself (benchmarks/torchvision_reference.py), so the key test needs no torchvision.
Where torchvision is installed, every tensor of its vit_b_16 is randomised (the head and the
class token too, which torchvision starts at zero), loaded by key into the generated torch
module and into the NumPy executor, and all three give the same logits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from torchvision_examples import assert_keys_are_torchvisions, load, reference

import alexdsl

VIT_PARAMS = 86_567_656
RELATIVE = 1e-5  # max |ours - torchvision| / max |torchvision| the issue allows
BATCH = 2


def random_state(network: alexdsl.Network, seed: int = 0) -> dict[str, np.ndarray]:
    """Every tensor of ``network`` random, none zero or constant: conv and linear weights normal at
    1/sqrt(fan_in), the class token and position embedding at 0.5, LayerNorm scales in [0.5, 1.5],
    biases at 0.1."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in network.state_keys().items():
        if len(shape) > 1 and key.endswith("weight"):
            value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
        elif len(shape) > 1:
            value = 0.5 * rng.standard_normal(shape)
        elif key.endswith("ln_1.weight") or key.endswith("ln_2.weight") or key.endswith("ln.weight"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = 0.1 * rng.standard_normal(shape)
        state[key] = value.astype(np.float32)
    return state


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(np.asarray(got, dtype=np.float64) - want).max() / np.abs(want).max())


def test_keys_shapes_and_parameter_count_are_torchvisions() -> None:
    network = load("vit_b_16")
    assert_keys_are_torchvisions(network, "vit_b_16", VIT_PARAMS)
    assert network.shapes["patches"] == (196, 768)
    assert network.shapes["embedded"] == (197, 768)
    assert network.shapes["cls"] == (768,)
    assert network.shapes["heads.head"] == (1000,)


def test_random_state_leaves_no_tensor_at_its_initial_value() -> None:
    """The comparison below only has teeth if no parameter stays zero (torchvision's head) or constant."""
    state = random_state(load("vit_b_16"))
    assert list(state) == list(reference("vit_b_16")["state"])
    assert all(float(value.std()) > 0.01 for value in state.values())


@pytest.fixture(scope="module")
def torchvision_and_ours():
    """torchvision's vit_b_16 with a random state, in eval mode, and the example's network and state."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision", reason="pip install torchvision to compare with its vit_b_16")
    network = load("vit_b_16")
    state = random_state(network)
    model = torchvision.models.vit_b_16()
    model.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()}, strict=True)
    model.eval()
    x = np.random.default_rng(1).standard_normal((BATCH, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy().astype(np.float64)
    assert want.shape == (BATCH, 1000)
    assert float(want.std()) > 0.1 * float(np.abs(want).max())  # the logits differ: the comparison has teeth
    return model, network, state, x, want


@pytest.mark.slow  # building torchvision's and our 86M-parameter models, two images: 80 s at a load of 8
def test_torch_backend_equals_torchvision(torchvision_and_ours) -> None:  # noqa: ANN001 - a fixture
    import torch

    from alexdsl.backends.torch import build

    model, network, state, x, want = torchvision_and_ours
    ours = build(network)
    ours.load_state_dict(model.state_dict(), strict=True)  # by key
    ours.eval()
    modules = dict(ours.named_modules())
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.LayerNorm, torch.nn.MultiheadAttention)):
            assert repr(modules[name]) == repr(module), name
        elif isinstance(module, torch.nn.Dropout):  # the example leaves them out
            assert module.p == 0.0, name
    with torch.no_grad():
        got = ours(torch.from_numpy(x))
    relative = relative_error(got.numpy(), want)
    print(f"vit_b_16, torch backend: max |alexdsl - torchvision| / max |torchvision| = {relative:.3g}")
    assert relative <= RELATIVE


@pytest.mark.slow  # the executor's 86M-parameter network on two images: 12 s at a load of 8
def test_numpy_executor_equals_torchvision(torchvision_and_ours) -> None:  # noqa: ANN001 - a fixture
    from alexdsl.backends import executor as backend

    _, network, state, x, want = torchvision_and_ours
    executor = backend.compile(network, state, device="cpu")
    got = executor(x)
    relative = relative_error(got[0] if isinstance(got, tuple) else got, want)
    print(f"vit_b_16, NumPy executor: max |alexdsl - torchvision| / max |torchvision| = {relative:.3g}")
    assert relative <= RELATIVE


@pytest.mark.slow  # exporting 346 MB of weights, the full check and onnxruntime: 48 s at a load of 8
def test_onnx_export_passes_the_full_check_and_agrees_with_onnxruntime() -> None:
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from alexdsl.backends.torch import build
    from alexdsl.interop.onnx import export_onnx

    network = load("vit_b_16")
    state = random_state(network)
    model = export_onnx(network, state)
    onnx.checker.check_model(model, full_check=True)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((BATCH, 3, 224, 224)).astype(np.float32)
    (got,) = session.run(None, {"data": x})
    ours = build(network)
    ours.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()}, strict=True)
    ours.eval()
    with torch.no_grad():
        want = ours(torch.from_numpy(x)).numpy().astype(np.float64)
    relative = relative_error(got, want)
    print(f"vit_b_16, onnxruntime on the export: max |onnxruntime - torch| / max |torch| = {relative:.3g}")
    assert relative <= RELATIVE


@pytest.mark.slow  # two training steps of the 86M-parameter network at 224x224: 108 s at a load of 8
def test_trains_on_synthetic_data(tmp_path) -> None:
    """Two steps through `alexdsl train`'s loop: a finite loss, and the class token (zero at the start)
    and the position embedding learn, so gradients reach the learned tensors through concat and add."""
    for module in ("torch", "safetensors", "tqdm", "matplotlib"):  # the torch extra, which train() uses
        pytest.importorskip(module)
    import torch

    from alexdsl.backends.torch import build
    from alexdsl.backends.torch.train import train

    network = load("vit_b_16")
    torch.manual_seed(0)
    start = {key: value.clone() for key, value in build(network).state_dict().items()
             if key in ("class_token", "encoder.pos_embedding")}
    result = train(network, "synthetic:4", tmp_path / "run", epochs=1, batch_size=2, progress=False, log=None)
    (record,) = result.history
    assert math.isfinite(record["train_loss"]) and record["train_loss"] > 0
    assert (tmp_path / "run" / "weights.safetensors").exists()
    trained = result.module.state_dict()
    assert float(start["class_token"].abs().max()) == 0.0
    for key, value in start.items():
        assert not torch.equal(trained[key].cpu(), value), key


def test_small_vit_has_sixteen_tokens_and_a_class_token() -> None:
    network = load("vit_digits")
    assert network.shapes["patches"] == (16, 32)
    assert network.shapes["embedded"] == (17, 32)
    assert network.shapes["head"] == (10,)
    assert network.totals()["params"] == 18_218


@pytest.mark.slow  # 40 epochs on 1,433 images: 29 s of CPU, 81 s wall at a load of 6
def test_small_vit_reaches_ninety_percent_on_the_digits(tmp_path) -> None:
    """`alexdsl train`'s loop on the digits, then the NumPy executor with the trained weights: the same
    logits on the validation images, so the same accuracy."""
    for module in ("torch", "safetensors", "tqdm", "matplotlib", "sklearn"):
        pytest.importorskip(module)
    import torch

    from alexdsl.backends import executor as backend
    from alexdsl.backends.torch.train import train
    from alexdsl.data import digits

    network = load("vit_digits")
    result = train(network, "digits", tmp_path / "run", progress=False, log=None)
    final = result.history[-1]
    assert final["val_accuracy"] >= 0.9, final
    data = digits((1, 8, 8), 10)
    images, labels = data.x[False], data.y[False]
    module = result.module.cpu().eval()
    with torch.no_grad():
        want = module(torch.from_numpy(images)).numpy().astype(np.float64)
    weights = {key: value.detach().cpu().numpy() for key, value in module.state_dict().items()}
    got = backend.compile(network, weights, device="cpu")(images)
    assert relative_error(got, want) <= RELATIVE
    assert float((np.argmax(got, axis=1) == labels).mean()) == pytest.approx(final["val_accuracy"], abs=1e-6)
