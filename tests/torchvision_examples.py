"""What the torchvision example tests share: the reference data torchvision wrote, loading an example,
random weights with non-trivial statistics, and the checks that do not depend on the network.

tests/data/torchvision/<model>.json holds a torchvision model's state_dict keys, shapes and
parameter count, written by torchvision itself (benchmarks/torchvision_reference.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT

import alexdsl
from alexdsl.ir.network import Network

REFERENCE = ROOT / "tests" / "data" / "torchvision"


def reference(model: str) -> dict:
    return json.loads((REFERENCE / f"{model}.json").read_text(encoding="utf-8"))


def load(example: str, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Network:
    return alexdsl.load(EXAMPLES / f"{example}.adsl", input_shapes=input_shapes)


def randomise_statistics(model, torch) -> None:  # noqa: ANN001 - a torchvision module, torch
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


def assert_same_settings(torchvision_model, ours, network: Network, torch, torchvision) -> None:  # noqa: ANN001
    """Every conv, batchnorm and linear module prints the same (stride, padding, groups, eps, momentum),
    and every dropout and used stochastic depth has torchvision's probability."""
    modules = dict(ours.named_modules())
    layers = {layer.name: layer for layer in network.layers()}
    for name, module in torchvision_model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear)):
            assert repr(modules[name]) == repr(module), name
        elif isinstance(module, (torch.nn.Dropout, torchvision.ops.StochasticDepth)):
            if name not in layers:  # torchvision keeps a stochastic depth in blocks without a shortcut, unused
                assert not torchvision_model.get_submodule(name.rsplit(".", 1)[0]).use_res_connect, name
                continue
            assert layers[name].attrs["p"] == pytest.approx(module.p, abs=1e-12), name
            assert layers[name].attrs.get("mode", "row") == getattr(module, "mode", "row"), name


def assert_keys_are_torchvisions(network: Network, model: str, params: int) -> None:
    """State keys, their order and shapes are the torchvision model's, and so is the parameter count."""
    expected = reference(model)
    assert expected["params"] == params  # the data file is the published model
    keys = {key: list(shape) for key, shape in network.state_keys().items()}
    assert list(keys) == list(expected["state"])  # the same order, as state_dict() gives them
    assert keys == expected["state"]
    assert network.totals()["params"] == params


def assert_trains_one_epoch(network: Network, tmp_path: Path, samples: int = 16, batch_size: int = 8) -> None:
    """One epoch on synthetic:16 at batch 8 (or ``samples`` at ``batch_size``) gives a finite, positive loss and
    writes the weights."""
    for module in ("torch", "safetensors", "tqdm", "matplotlib"):  # the torch extra, which train() uses
        pytest.importorskip(module)
    from alexdsl.backends.torch.train import train

    result = train(network, f"synthetic:{samples}", tmp_path / "run", epochs=1, batch_size=batch_size,
                   progress=False, log=None)
    (record,) = result.history
    assert math.isfinite(record["train_loss"]) and record["train_loss"] > 0
    assert (tmp_path / "run" / "weights.safetensors").exists()


def outputs_with_torchvisions_weights(reference_model, ours, torch) -> tuple:  # noqa: ANN001 - torch modules
    """``(got, want)`` on a 2x3x224x224 input after loading the torchvision model's state_dict by key (strict)."""
    ours.load_state_dict(reference_model.state_dict(), strict=True)  # by key, num_batches_tracked included
    ours.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = reference_model(x)
        got = ours(x)
    return (got[0] if isinstance(got, (tuple, list)) else got), want


def randomise_every_parameter(model, torch) -> None:  # noqa: ANN001 - a torchvision module, torch
    """Every parameter random, those torchvision initialises to zero or one included, so that no part of the
    network goes untested: weights of std 1 / sqrt(fan-in), norm scales in [0.5, 1.5], biases and relative
    position bias tables of std 0.1 and 1, and random batchnorm statistics. Buffers that are not statistics
    (a relative position index) stay as torchvision made them."""
    randomise_statistics(model, torch)
    generator = torch.Generator().manual_seed(2)
    norms = (torch.nn.LayerNorm, torch.nn.BatchNorm2d)
    scales = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, norms)}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in scales:
                parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
            elif name.endswith("relative_position_bias_table"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
            elif parameter.dim() > 1:
                fan_in = parameter[0].numel()
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))
            else:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
