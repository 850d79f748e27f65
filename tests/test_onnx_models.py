"""The ONNX test models (tests/onnx_models.py) export, and onnxruntime computes what torch computes."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import onnx_models  # noqa: E402
import torch.nn.functional as F  # noqa: E402, N812
from onnx import numpy_helper  # noqa: E402
from onnx_models import (  # noqa: E402
    INPUT_SHAPES,
    MODULES,
    build,
    export,
    residual_chain,
    sample_input,
    zoo_style_alexnet,
)

BATCH = 2  # not the traced batch of 1: the batch axis must be dynamic
# Modules whose export changes with the opset (Clip, Unsqueeze, ReduceMean, Split, Softmax, HardSwish, Gelu,
# LayerNormalization); the others export the same nodes at 11 to 21.
OPSET_DEPENDENT = ["squeeze_excitation_mean", "depthwise", "gemm_view", "channel_shuffle", "activations",
                   "split_softmax", "layer_norm", "lrn_torch"]


def run_onnx(model: str | onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    source = model if isinstance(model, str) else model.SerializeToString()
    return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def torch_initializers(model: onnx.ModelProto) -> dict[str, torch.Tensor]:
    return {tensor.name: torch.from_numpy(numpy_helper.to_array(tensor).copy()) for tensor in model.graph.initializer}


def batch_input(name: str) -> np.ndarray:
    return sample_input((BATCH, *INPUT_SHAPES[name][1:]), seed=1)


@pytest.mark.parametrize(("name", "opset"), [(name, 17) for name in MODULES]
                         + [(name, opset) for name in OPSET_DEPENDENT for opset in (11, 21)])
def test_kept_batchnorm_export_computes_torch_output_with_state_dict_names(name: str, opset: int, tmp_path) -> None:
    module = build(name)
    path = export(module, INPUT_SHAPES[name], tmp_path / f"{name}.onnx", opset)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    data = batch_input(name)
    with torch.no_grad():
        expected = module(torch.from_numpy(data)).numpy()
    np.testing.assert_allclose(run_onnx(str(path), {"data": data}), expected, rtol=1e-5, atol=1e-5)
    state = module.state_dict()
    named = [tensor.name for tensor in model.graph.initializer if not tensor.name.startswith("onnx::")]
    assert named and set(named) <= set(state), name
    has_batchnorm = any(key.endswith("running_mean") for key in state)
    assert has_batchnorm == any(node.op_type == "BatchNormalization" for node in model.graph.node)


@pytest.mark.parametrize("name", list(MODULES))
def test_folded_export_has_no_batchnorm_and_computes_torch_output(name: str, tmp_path) -> None:
    module = build(name)
    path = export(module, INPUT_SHAPES[name], tmp_path / f"{name}.onnx", fold_batchnorm=True)
    model = onnx.load(path)
    assert not any(node.op_type == "BatchNormalization" for node in model.graph.node)
    data = batch_input(name)
    with torch.no_grad():
        expected = module(torch.from_numpy(data)).numpy()
    np.testing.assert_allclose(run_onnx(str(path), {"data": data}), expected, rtol=1e-5, atol=1e-5)


def test_default_batchnorm_statistics_export_as_identity_of_equal_initializers(tmp_path) -> None:
    """Untrained batchnorms (weight = var = 1, bias = mean = 0): the exporter stores each value once."""
    module = MODULES["conv_bn_relu"][0]().eval()
    model = onnx.load(export(module, INPUT_SHAPES["conv_bn_relu"], tmp_path / "default.onnx"))
    aliases = {node.output[0]: node.input[0] for node in model.graph.node if node.op_type == "Identity"}
    assert aliases["features.1.running_var"] == "features.1.weight"
    assert aliases["features.1.running_mean"] == "features.1.bias"


def test_residual_chain_computes_the_same_as_torch_functional() -> None:
    model = residual_chain(20)
    onnx.checker.check_model(model, full_check=True)
    assert [node.op_type for node in model.graph.node] == ["Conv", "BatchNormalization", "Relu", "Add"] * 20
    weights = torch_initializers(model)
    data = sample_input((1, 8, 8, 8))
    x = torch.from_numpy(data)
    for index in range(20):
        w = {key.split(".", 2)[2]: value for key, value in weights.items() if key.startswith(f"units.{index}.")}
        branch = F.batch_norm(F.conv2d(x, w["conv.weight"], padding=1), w["bn.running_mean"], w["bn.running_var"],
                              w["bn.weight"], w["bn.bias"], eps=1e-5)
        x = x + F.relu(branch)
    np.testing.assert_allclose(run_onnx(model, {"data": data}), x.numpy(), rtol=1e-5, atol=1e-5)


def test_benchmark_chain_has_a_thousand_nodes() -> None:
    model = residual_chain()
    assert len(model.graph.node) == 1000
    onnx.checker.check_model(model)


def test_zoo_style_alexnet_computes_the_same_as_torch_functional() -> None:
    model = zoo_style_alexnet()
    w = torch_initializers(model)
    data = sample_input((1, 3, 8, 8))
    x = F.relu(F.conv2d(torch.from_numpy(data), w["conv1_w_0"], w["conv1_b_0"], padding=1))
    x = F.max_pool2d(F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0), 3, 2)
    expected = F.softmax(F.linear(x.flatten(1), w["fc6_w_0"], w["fc6_b_0"]), dim=1)
    np.testing.assert_allclose(run_onnx(model, {"data_0": data}), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(onnx_models)
    assert result.attempted and not result.failed
