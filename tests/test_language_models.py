"""GPT-2 and Llama written in alexdsl against Hugging Face transformers.

The keys, shapes and parameter counts are compared with tests/data/transformers/<model>.json (written by
benchmarks/transformers_reference.py), so no transformers is needed for them. Where transformers is
installed, the reference model is built with random weights (nothing is downloaded), its state_dict is
loaded by key, and the logits of the torch backend and of the NumPy executor are compared with its own.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT

import alexdsl

DATA = ROOT / "tests" / "data" / "transformers"
LENGTH = 12  # tokens per sequence in the logits comparisons
RELATIVE = 1e-5


def _reference(model: str) -> dict:
    return json.loads((DATA / f"{model}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("model", ["gpt2", "llama_tiny", "llama"])
def test_state_keys_shapes_and_parameters_are_hugging_faces(model: str) -> None:
    """Every state_dict key with its shape; a tied key (lm_head.weight) is stored once, under its owner's."""
    ref = _reference(model)
    net = alexdsl.load(str(ROOT / "examples" / f"{model}.adsl"))
    state = {key: tuple(shape) for key, shape in ref["state"].items()}
    assert net.state_keys() == {key: shape for key, shape in state.items() if key not in ref["tied"]}
    for key, owner in ref["tied"].items():
        layer = net.layer(key.rsplit(".", 1)[0])
        assert layer.state_key("weight") == owner and layer.params["weight"].shape == state[key]
    assert net.totals()["params"] == ref["params"]


def _randomised(model: str) -> tuple[object, dict[str, np.ndarray]]:
    """The Hugging Face model with every parameter random (norm scales around 1), and its weights by alexdsl key."""
    transformers = pytest.importorskip("transformers", reason="pip install transformers to compare logits")
    import torch

    ref = _reference(model)
    torch.manual_seed(0)
    config_class = getattr(transformers, ref["model"].split("(")[1].split(".")[1])
    model_class = getattr(transformers, ref["model"].split("(")[0].split(".")[1])
    hf = model_class(config_class(**ref["config"])).eval()
    with torch.no_grad():
        for name, parameter in hf.named_parameters():
            if "norm" in name or "ln_" in name:
                parameter.copy_(1 + 0.1 * torch.randn_like(parameter))
            else:
                parameter.copy_(0.05 * torch.randn_like(parameter))
    weights = {key: value.detach().numpy().copy() for key, value in hf.state_dict().items() if key not in ref["tied"]}
    return hf, weights


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("model", ["llama_tiny", pytest.param("gpt2", marks=pytest.mark.slow)])  # gpt2: 124M
def test_logits_equal_hugging_faces_on_the_torch_backend_and_the_executor(model: str) -> None:
    import torch

    import alexdsl.torch
    from alexdsl.backends.executor import compile as compile_executor

    hf, weights = _randomised(model)
    net = alexdsl.load(str(ROOT / "examples" / f"{model}.adsl"), input_shapes={"ids": (LENGTH,)})
    ids = np.random.default_rng(0).integers(0, _reference(model)["config"].get("vocab_size", 50257), (2, LENGTH))
    with torch.no_grad():
        want = hf(torch.from_numpy(ids)).logits.numpy()
    module = alexdsl.torch.build(net).eval()
    module.load_state_dict({key: torch.from_numpy(value) for key, value in weights.items()})
    with torch.no_grad():
        torch_logits = module(torch.from_numpy(ids)).numpy()
    executor_logits = compile_executor(net, weights, device="cpu")(ids)
    errors = {"torch": _relative(torch_logits, want), "executor": _relative(executor_logits, want)}
    print(f"{model}: logits relative to Hugging Face's: {errors}")
    assert all(error < RELATIVE for error in errors.values()), errors


@pytest.mark.parametrize(("model", "backend"), [("llama_tiny", "cupy"), ("llama_tiny", "torch"),
                                                pytest.param("gpt2", "cupy", marks=pytest.mark.slow),
                                                pytest.param("gpt2", "torch", marks=pytest.mark.slow)])
def test_greedy_generation_equals_hugging_faces_generate(model: str, backend: str) -> None:
    """Both with alexdsl's key/value cache and without it (Hugging Face's generate uses its own)."""
    import torch

    from alexdsl.generation import generate

    hf, weights = _randomised(model)
    hf.generation_config.eos_token_id = None  # random weights: generate every token asked for
    hf.generation_config.pad_token_id = 0
    prompt = [15, 11, 99, 3]
    with torch.no_grad():
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False)[0].tolist()
    path = str(ROOT / "examples" / f"{model}.adsl")
    net = alexdsl.load(path)
    for cache in (True, False):
        got = generate(net, weights, prompt, 10, backend=backend, cache=cache,
                       rebuild=lambda length: alexdsl.load(path, input_shapes={"ids": (length,)}))
        assert got == want, cache


@pytest.mark.parametrize("model", ["llama_tiny", pytest.param("gpt2", marks=pytest.mark.slow)])
def test_onnx_export_agrees_with_the_torch_backend(model: str) -> None:
    """The whole network (no key/value cache) through ONNX Runtime, at a short sequence."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from conftest import random_weights

    from alexdsl.interop.compare import compare

    net = alexdsl.load(str(ROOT / "examples" / f"{model}.adsl"), input_shapes={"ids": (LENGTH,)})
    rows = compare(net, ["torch", "onnx"], weights=random_weights(net, seed=1), batch=1, seed=0, layers=["lm_head"])
    (row,) = rows
    assert row.diffs["onnx"] is not None and row.diffs["onnx"][1] < RELATIVE, row.diffs


def test_a_model_past_onnxs_two_gib_is_refused_before_any_weight_is_drawn() -> None:
    pytest.importorskip("onnx")
    from alexdsl.errors import AlexDSLError
    from alexdsl.interop.onnx import export_onnx

    with pytest.raises(AlexDSLError, match=r"weights take 4\.6 GiB as float32, more than the 2 GiB an ONNX model"):
        export_onnx(alexdsl.load(str(ROOT / "examples" / "llama.adsl"), input_shapes={"ids": (LENGTH,)}))
