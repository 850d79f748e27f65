"""Swin-T and MaxViT-T are exact torchvision networks: state_dict keys, shapes and parameter counts, and, where
torchvision is installed, the same outputs with torchvision's weights on the torch backend and the executor.

The expected keys are tests/data/torchvision/<model>.json, written by torchvision itself
(benchmarks/torchvision_reference.py), so the key tests need no torchvision. torchvision's
relative position index and shifted-window mask are transcribed below (swin_transformer.py,
maxvit.py) to check our buffers and masks without it.
"""

from __future__ import annotations

import numpy as np
import pytest
from torchvision_examples import (
    assert_keys_are_torchvisions,
    assert_trains_one_epoch,
    load,
    randomise_every_parameter,
    reference,
)

# example, torchvision model, published parameter count, logits layer
MODELS = [
    ("swin_t", "swin_t", 28_288_354, "head"),
    ("maxvit_t", "maxvit_t", 30_919_624, "classifier.5"),
]
NAMES = [example for example, *_ in MODELS]
LOGITS = {example: logits for example, _, _, logits in MODELS}
_NETWORKS: dict = {}


def network(example: str):  # noqa: ANN201 - an alexdsl Network, loaded once per process
    if example not in _NETWORKS:
        _NETWORKS[example] = load(example)
    return _NETWORKS[example]


_MODULES: dict = {}


def torch_module(example: str):  # noqa: ANN201 - the generated torch module, built once per process
    if example not in _MODULES:
        from alexdsl.backends.torch import build

        _MODULES[example] = build(network(example))
    return _MODULES[example]


def torchvision_relative_position_index(window: int) -> np.ndarray:
    """(w^2, w^2): torchvision's index into the (2w-1)^2 table for each pair of tokens in a w x w window."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return relative[:, :, 0] * (2 * window - 1) + relative[:, :, 1]


def torchvision_shifted_window_mask(size: int, window: int, shift: int) -> np.ndarray:
    """(windows, 1, w^2, w^2): swin_transformer.shifted_window_attention's attn_mask, 0 or -100."""
    regions = np.zeros((size, size))
    slices = ((0, -window), (-window, -shift), (-shift, None))
    count = 0
    for h in slices:
        for w in slices:
            regions[h[0]:h[1], w[0]:w[1]] = count
            count += 1
    n = size // window
    regions = regions.reshape(n, window, n, window).transpose(0, 2, 1, 3).reshape(n * n, window * window)
    differ = regions[:, None, :] != regions[:, :, None]
    return np.where(differ, -100.0, 0.0)[:, None]


@pytest.mark.parametrize(("example", "model", "params", "logits"), MODELS, ids=NAMES)
def test_keys_shapes_and_parameter_count_are_torchvisions(example: str, model: str, params: int, logits: str) -> None:
    net = network(example)
    assert_keys_are_torchvisions(net, model, params)
    assert net.shapes[logits] == (1000,)


def test_swin_t_keys_are_in_torchvisions_order() -> None:
    """PatchMerging registers reduction before norm and runs norm first: the block lists reduction first, reading
    norm, written below it, and the keys follow the order layers are written."""
    net = network("swin_t")
    assert list(net.state_keys()) == list(reference("swin_t")["state"])
    assert net.layer("features.2.reduction").inputs == ["features.2.norm"]
    assert net.layer("features.3.0.norm1").inputs == ["features.2.reduction"]  # the block's output
    names = net.layer_names()
    assert names.index("features.2.norm") < names.index("features.2.reduction")  # run in data order


@pytest.mark.parametrize("example", NAMES)
def test_torch_module_state_dict_is_in_the_same_order(example: str) -> None:
    """The generated module's state_dict: torchvision's keys and shapes, in state_keys()' order."""
    pytest.importorskip("torch")
    state = torch_module(example).state_dict()
    shapes = {key: list(value.shape) for key, value in state.items() if not key.endswith("num_batches_tracked")}
    want = reference(example)["state"]
    assert list(shapes) == list(want)
    assert shapes == want


def test_swin_t_token_shapes() -> None:
    """Channels-last grids, 7x7 windows of tokens, and the bias and mask shapes sdpa adds to the scores."""
    shapes = network("swin_t").shapes
    assert shapes["features.0.2"] == (56, 56, 96)
    assert shapes["features.1.0.windows"] == (64, 49, 96)
    assert shapes["features.1.0.attn"] == (3, 49, 49)
    assert shapes["features.1.1.attn.mask"] == (64, 1, 49, 49)
    assert shapes["features.2.merged"] == (28, 28, 384)
    assert shapes["features.2.reduction"] == (28, 28, 192)
    assert shapes["features.5.5.windows"] == (4, 49, 384)
    assert shapes["features.6.reduction"] == (7, 7, 768)
    assert shapes["features.7.1.windows"] == (1, 49, 768)


def test_maxvit_t_partition_shapes() -> None:
    shapes = network("maxvit_t").shapes
    assert shapes["stem.1.0"] == (64, 112, 112)
    prefix = "blocks.2.layers.4.layers"
    assert shapes[f"{prefix}.MBconv.out"] == (256, 14, 14)
    assert shapes[f"{prefix}.window_attention.partition"] == (4, 49, 256)
    assert shapes[f"{prefix}.grid_attention.partition"] == (4, 49, 256)
    assert shapes[f"{prefix}.grid_attention.attn_layer.1"] == (8, 49, 49)
    assert shapes[f"{prefix}.grid_attention.departition"] == (256, 14, 14)


def test_stochastic_depth_rates_are_torchvisions() -> None:
    """Swin: 0.2 * k / 11 over its 12 blocks; MaxViT: numpy.linspace(0, 0.2, 11) over its 11 layers, exactly."""
    swin = {layer.name: layer.attrs["p"] for layer in network("swin_t").layers() if layer.op == "stochastic_depth"}
    blocks = [f"features.{stage}.{i}" for stage, depth in ((1, 2), (3, 2), (5, 6), (7, 2)) for i in range(depth)]
    assert len(swin) == 2 * len(blocks)
    for k, block in enumerate(blocks):
        assert swin[f"{block}.stochastic_depth"] == swin[f"{block}.mlp_drop"] == 0.2 * float(k) / (12 - 1), block
    maxvit = {layer.name: layer.attrs["p"] for layer in network("maxvit_t").layers() if layer.op == "stochastic_depth"}
    layers = [f"blocks.{stage}.layers.{i}.layers" for stage, depth in enumerate((2, 2, 5, 2)) for i in range(depth)]
    assert len(maxvit) == 5 * len(layers)
    for p, layer in zip(np.linspace(0, 0.2, 11).tolist(), layers):
        assert {maxvit[f"{layer}.MBconv.stochastic_depth"], maxvit[f"{layer}.window_attention.attn_drop"],
                maxvit[f"{layer}.grid_attention.mlp_drop"]} == {p}, layer


@pytest.mark.parametrize(("example", "key", "square"), [
    ("swin_t", "features.5.3.attn.relative_position_index", False),
    ("maxvit_t", "blocks.1.layers.0.layers.grid_attention.attn_layer.1.relative_position_index", True),
])
def test_relative_position_index_is_torchvisions(example: str, key: str, square: bool) -> None:
    """The index buffer, as the torch module holds it: Swin's flattened (2401,), MaxViT's square (49, 49)."""
    pytest.importorskip("torch")
    want = torchvision_relative_position_index(7)
    got = torch_module(example).state_dict()[key].numpy()
    assert got.dtype == np.int64
    assert np.array_equal(got, want if square else want.reshape(-1))


def test_swin_t_shifted_window_mask_is_torchvisions() -> None:
    """The mask layer's value in the torch module: torchvision's 0 / -100 at every stage that shifts."""
    torch = pytest.importorskip("torch")
    from alexdsl.backends.torch import build
    from alexdsl.interop.compare import subnetwork

    for block, size in (("features.1.1", 56), ("features.3.1", 28), ("features.5.5", 14)):
        module = build(subnetwork(network("swin_t"), f"{block}.attn.mask")).eval()
        with torch.no_grad():
            got = module(torch.zeros(1, 3, 224, 224))
        assert np.array_equal(got[0].numpy(), torchvision_shifted_window_mask(size, 7, 3)), block


def _torchvision_model(example: str, torch, torchvision):  # noqa: ANN001, ANN202 - torch modules
    """torchvision's model in eval mode with every parameter and statistic random (no zero biases, tables of
    O(1)), its relative position index as torchvision made it."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, example)()
    randomise_every_parameter(model, torch)
    return model.eval()


@pytest.mark.slow  # 20-50 s per network (torchvision, ours, the executor at 224x224)
@pytest.mark.parametrize("example", NAMES)
def test_outputs_equal_torchvisions_with_its_weights_on_torch_and_the_executor(example: str) -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from alexdsl.backends import executor as numpy_executor
    from alexdsl.backends.torch import build

    reference = _torchvision_model(example, torch, torchvision)
    state = reference.state_dict()
    net = network(example)
    ours = build(net)
    ours.load_state_dict(state, strict=True)
    ours.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = reference(x)
        got = ours(x)
    assert got.shape == want.shape == (2, 1000)
    assert float(want.std()) > 0.1 * float(want.abs().max())  # the logits differ: the comparison has teeth
    scale = float(want.abs().max())
    relative = float((got - want).abs().max()) / scale
    weights = {key: value.numpy() for key, value in state.items() if not key.endswith("num_batches_tracked")}
    executor = numpy_executor.compile(net, weights, device="cpu")
    result = executor(x.numpy())
    executed = np.asarray(result[0] if isinstance(result, tuple) else result)
    executor_relative = float(np.abs(executed - want.numpy()).max()) / scale
    print(f"{example}: max |alexdsl - torchvision| / max |torchvision|: torch {relative:.3g}, "
          f"executor {executor_relative:.3g}")
    assert relative <= 1e-5
    assert executor_relative <= 1e-5


@pytest.mark.slow  # 15-40 s per network: both need 224x224 (their grids are made of 7x7 windows)
@pytest.mark.parametrize("example", NAMES)
def test_trains_a_step_on_synthetic_data(example: str, tmp_path) -> None:
    """``alexdsl train``'s path: one step of two synthetic samples, a finite loss, the weights written."""
    assert_trains_one_epoch(network(example), tmp_path, samples=2, batch_size=2)


@pytest.mark.slow  # 10-15 s: export, onnx.checker's full check and onnxruntime at 224x224
def test_swin_t_onnx_export_passes_the_full_check_and_agrees_with_onnxruntime() -> None:
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from conftest import random_weights

    from alexdsl.backends.torch import build
    from alexdsl.interop.onnx import export_onnx

    net = network("swin_t")
    weights = random_weights(net)  # the relative position indexes as the op computes them
    module = build(net)
    state = dict(module.state_dict())
    state.update({key: torch.from_numpy(value) for key, value in weights.items()})
    module.load_state_dict(state, strict=True)
    module.eval()
    model = export_onnx(net, weights)
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224), dtype=np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run([LOGITS["swin_t"]], {"data": x})
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    relative = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"swin_t: max |onnxruntime - torch| / max |torch| = {relative:.3g}")
    assert relative <= 1e-5
