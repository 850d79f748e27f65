"""The generated NumPy/CuPy executor against a torch reference, plus codegen, memory plan and errors."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import random_weights

import alexdsl
from alexdsl.backends import executor as backend
from alexdsl.backends.executor import arrays, codegen, executor
from alexdsl.backends.executor.memory import Value, plan_memory
from alexdsl.errors import AlexDSLError
from alexdsl.extras import install_command
from alexdsl.ir.network import Layer, Network, ParamSpec, graph_of
from alexdsl.ops.registry import Filler, lookup

torch = pytest.importorskip("torch")
F = torch.nn.functional

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.adsl"))
# big networks run on smaller inputs (VGG16 and ConvNeXt-T keep 138M and 28.6M parameters whatever the input)
SMALL_INPUT = {"vgg16": {"data": (3, 64, 64)}, "convnext_tiny": {"data": (3, 64, 64)}}
# LeNet runs with README's test command; every other example is marked slow: 3-11 s of CPU each
# (measured: alexnet 3.4, convnext_tiny 4.2, efficientnet_b0 11) and its compiled executor stays cached
FAST = {"lenet"}
# language models take token ids and are compared with Hugging Face's in tests/test_language_models.py
LANGUAGE_MODELS = {"gpt2", "llama", "llama_tiny"}
# compared with torchvision itself instead, executor and torch module both (tests/test_examples_swin.py): this
# file's interpreter knows the image ops only
OWN_TESTS = {"swin_t", "maxvit_t"}


def _example_params(batches: tuple[int, ...]) -> list:
    return [
        pytest.param(path, batch, id=f"{path.stem}-{batch}", marks=[] if path.stem in FAST else [pytest.mark.slow])
        for path in EXAMPLE_FILES if path.stem not in LANGUAGE_MODELS | OWN_TESTS
        for batch in batches
    ]


# ------------------------------------------------------------------------------------ reference


def torch_reference(network: Network, weights: dict[str, np.ndarray], *inputs: np.ndarray) -> list[np.ndarray]:
    """Interpret the IR layer by layer with torch.nn.functional (float64: an exact-ish oracle).

    Ops without a line here compute through their own ``reference`` lowering, in float64 too.
    """
    w = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in weights.items()}
    env: dict[str, torch.Tensor] = {}
    data = iter(inputs)
    low = codegen.lower(network)
    with torch.no_grad():
        for layer in network.layers():
            if layer.name in low.dropped:
                continue
            a, name = layer.attrs, layer.name
            xs = [env[i] for i in layer.inputs]
            x = xs[0] if xs else None
            op = layer.op
            if op == "input":
                y = torch.from_numpy(np.asarray(next(data), dtype=np.float64))
            elif op == "conv":
                y = F.conv2d(
                    x, w[f"{name}.weight"], w.get(f"{name}.bias"), a["stride"], a["pad"], a["dilation"], a["groups"]
                )
            elif op == "fc":
                y = F.linear(x.flatten(1), w[f"{name}.weight"], w.get(f"{name}.bias"))
            elif op in ("maxpool", "avgpool"):
                ceil = a["round"] == "ceil"
                if op == "maxpool":
                    y = F.max_pool2d(x, a["kernel"], a["stride"], a["pad"], ceil_mode=ceil)
                else:
                    y = F.avg_pool2d(x, a["kernel"], a["stride"], a["pad"], ceil, a["count_pad"])
            elif op == "adaptive_avgpool":
                y = F.adaptive_avg_pool2d(x, a["size"])
            elif op == "global_avgpool":
                y = F.adaptive_avg_pool2d(x, 1)
            elif op == "lrn":
                y = F.local_response_norm(x, a["size"], a["alpha"], a["beta"], a["k"])
            elif op == "batchnorm":
                y = F.batch_norm(
                    x,
                    w[f"{name}.running_mean"],
                    w[f"{name}.running_var"],
                    w.get(f"{name}.weight"),
                    w.get(f"{name}.bias"),
                    False,
                    0.0,
                    a["eps"],
                )
            elif op == "relu":
                y = F.relu(x)
            elif op == "leaky_relu":
                y = F.leaky_relu(x, a["slope"])
            elif op == "sigmoid":
                y = torch.sigmoid(x)
            elif op == "tanh":
                y = torch.tanh(x)
            elif op == "softmax":
                y = F.softmax(x, dim=_torch_dim(a, x))
            elif op in ("relu6", "hardswish", "hardsigmoid", "silu"):
                y = getattr(F, op)(x)
            elif op == "mul":
                y = xs[0] * xs[1]
            elif op in ("dropout", "stochastic_depth"):
                y = x
            elif op == "flatten":
                y = x.flatten(1)
            elif op == "concat":
                y = torch.cat(xs, _torch_dim(a, xs[0]))
            elif op == "add":
                y = sum(xs[1:], xs[0])
            elif op == "channel_chunk":
                y = torch.chunk(x, a["chunks"], 1)[a["index"]]
            elif op == "channel_shuffle":
                y = x.unflatten(1, (a["groups"], -1)).transpose(1, 2).flatten(1, 2)
            elif op == "layernorm":  # over the channels of every pixel, or the last axis
                d = _torch_dim(a, x)
                y = F.layer_norm(x.movedim(d, -1), x.shape[d:d + 1], w[f"{name}.weight"], w[f"{name}.bias"], a["eps"])
                y = y.movedim(-1, d)
            elif op == "pointwise_fc":
                y = F.linear(x.movedim(1, -1), w[f"{name}.weight"], w.get(f"{name}.bias")).movedim(-1, 1)
            elif op == "gelu":
                y = F.gelu(x, approximate=a["approximate"])
            elif op == "scale" and a["param"] == "layer_scale" and not a["bias"]:
                y = x * w[f"{name}.layer_scale"]
            else:
                own = {p: w[layer.state_key(p)] for p in (*layer.params, *layer.buffers)}
                y = lookup(op).lower.reference(layer, xs, own, F)
                if not layer.inputs:  # a learned tensor (param), broadcast over the batch
                    y = y.expand(len(inputs[0]), *y.shape[1:])
            env[name] = y
    return [env[o].numpy() for o in low.outputs]


def _torch_dim(attrs: dict, x: torch.Tensor) -> int:
    """The torch dim of a layer's per-sample ``axis`` (0 when it has none)."""
    return attrs.get("axis", 0) % (x.dim() - 1) + 1


def torch_module(network: Network, weights: dict[str, np.ndarray]) -> torch.nn.Module:
    """The torch backend's module for ``network`` in eval mode, with exactly ``weights`` loaded."""
    from alexdsl.backends.torch import build

    model = build(network)
    result = model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    return model.eval()


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-4) -> None:
    """Agreement to ``rtol`` relative to the output's scale."""
    assert got.shape == want.shape
    scale = float(np.abs(want).max()) or 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def load_example(path: Path, small: bool = True) -> Network:
    return alexdsl.load(path, input_shapes=SMALL_INPUT.get(path.stem) if small else None)


_CACHE: dict[tuple[str, bool], tuple[Network, dict[str, np.ndarray], backend.Executor]] = {}


def compiled(path: Path, small: bool = True) -> tuple[Network, dict[str, np.ndarray], backend.Executor]:
    key = (path.stem, small)
    if key not in _CACHE:
        net = load_example(path, small)
        weights = random_weights(net)
        _CACHE[key] = (net, weights, backend.compile(net, weights, device="cpu"))
    return _CACHE[key]


def batch_inputs(ex: backend.Executor, batch: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, *shape)).astype(np.float32) for shape in ex.inputs.values()]


# ------------------------------------------------------------------------------------ equivalence


def test_examples_exist() -> None:
    assert {p.stem for p in EXAMPLE_FILES} >= {"alexnet", "lenet"}


@pytest.mark.parametrize(("path", "batch"), _example_params((1, 3)))
def test_numpy_executor_matches_torch(path: Path, batch: int) -> None:
    net, weights, ex = compiled(path)
    xs = batch_inputs(ex, batch)
    got = ex(*xs)
    got = got if isinstance(got, tuple) else (got,)
    want = torch_reference(net, weights, *xs)
    assert len(got) == len(want)
    for g, t in zip(got, want, strict=True):
        assert isinstance(g, np.ndarray) and g.dtype == np.float32
        assert_close(g, t)


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in EXAMPLE_FILES if p.stem in SMALL_INPUT], ids=lambda p: p.stem)
def test_full_size_examples_match_torch(path: Path) -> None:
    net, weights, ex = compiled(path, small=False)
    xs = batch_inputs(ex, 1)
    assert_close(ex(*xs), torch_reference(net, weights, *xs)[0])


@pytest.mark.parametrize(("path", "batch"), _example_params((2,)))
def test_executor_matches_torch_backend(path: Path, batch: int) -> None:
    """The other backend, given the same state_dict, computes the same outputs: both within 1e-4 of the output's
    scale from torch in float64, or, where the network amplifies rounding so much that torch's own float32 result
    strays further (mobilenet_v3_large's random weights: 9e-5), the executor no further than twice torch's error."""
    import copy

    net, weights, ex = compiled(path)
    model = torch_module(net, weights)
    xs = batch_inputs(ex, batch)
    with torch.no_grad():
        want = model(*[torch.from_numpy(x) for x in xs])
        truth = copy.deepcopy(model).double()(*[torch.from_numpy(x).double() for x in xs])
    want = tuple(want) if isinstance(want, (tuple, list)) else (want,)
    truth = tuple(truth) if isinstance(truth, (tuple, list)) else (truth,)
    got = ex(*xs)
    got = got if isinstance(got, tuple) else (got,)
    for g, t, exact in zip(got, want, truth, strict=True):
        exact = exact.numpy().reshape(g.shape)
        scale = float(np.abs(exact).max()) or 1.0
        torch_error = float(np.abs(t.numpy().reshape(g.shape) - exact).max()) / scale
        executor_error = float(np.abs(g - exact).max()) / scale
        assert executor_error <= max(1e-4, 2 * torch_error), (executor_error, torch_error)


@pytest.mark.parametrize("name", [pytest.param("alexnet", marks=pytest.mark.slow),  # 3.6 s of CPU, +0.7 GB of memory
                                  "resnet18", "inception"])
def test_wide_gemm_layout_matches_torch(name: str, monkeypatch) -> None:  # noqa: ANN001
    """ALEXDSL_GEMM=wide: CuPy's channel-major conv layout, run on NumPy, with a chunked scratch."""

    monkeypatch.setenv("ALEXDSL_GEMM", "wide")
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "2")
    monkeypatch.setitem(arrays.SCRATCH_CAP_BYTES, "numpy", 1)  # scratch for 2 images (one per thread)
    net, weights, ex = compiled(EXAMPLES / f"{name}.adsl")
    ex._arena = None  # re-plan the shared scratch for the wide layout
    for batch in (1, 3):  # 3: convs run in chunks of 2 images, then 1
        xs = batch_inputs(ex, batch, seed=batch)
        assert_close(ex(*xs), torch_reference(net, weights, *xs)[0])
    assert ex.memory(3)["scratch_bytes"] == 2 * ex.scratch_wide * 4
    ex._arena = None


@pytest.mark.parametrize("name", ["resnet18", "inception"])
def test_single_thread_batched_path_matches_torch(name: str, monkeypatch) -> None:  # noqa: ANN001
    """ALEXDSL_NUM_THREADS=1: one batched GEMM per conv instead of per-image threads."""
    monkeypatch.setenv("ALEXDSL_NUM_THREADS", "1")
    net, weights, ex = compiled(EXAMPLES / f"{name}.adsl")
    ex._arena = None  # re-plan the shared scratch for one thread
    xs = batch_inputs(ex, 3, seed=7)
    assert_close(ex(*xs), torch_reference(net, weights, *xs)[0])
    ex._arena = None


def test_batch_size_can_change_between_calls() -> None:
    net, weights, ex = compiled(EXAMPLES / "lenet.adsl")
    for batch in (2, 5, 2):
        xs = batch_inputs(ex, batch, seed=batch)
        assert_close(ex(*xs), torch_reference(net, weights, *xs)[0])


def test_outputs_are_fresh_arrays() -> None:
    _, _, ex = compiled(EXAMPLES / "lenet.adsl")
    (x,) = batch_inputs(ex, 2)
    first = ex(x)
    kept = first.copy()
    second = ex(x * 2)
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)


def test_steady_state_reuses_buffers() -> None:
    _, _, ex = compiled(EXAMPLES / "alexnet.adsl")
    (x,) = batch_inputs(ex, 2)
    ex(x)
    views, scratch = ex.arena(2)
    ex(x)
    views2, scratch2 = ex.arena(2)
    assert views2 is views and scratch2 is scratch
    # planned: a handful of buffers, fewer bytes than keeping every activation alive
    mem = ex.memory(16)
    assert len(ex.buffers) <= 3
    assert mem["buffer_bytes"] < mem["keep_all_bytes"] / 2


def test_default_weights_follow_the_fillers() -> None:
    net = alexdsl.parse(
        "network F\ninput x: 4x6x6\n"
        "c: conv(8, 3, groups=2, weight=xavier(), bias=constant(0.5))\n"
        "d: conv(6, 3, weight=msra(), bias=false)\n"
        "f: fc(5, weight=gaussian(0.02), bias=uniform(-1, 2))\n"
    )
    ex = backend.compile(net, device="cpu", seed=3)
    w = ex.weights
    bound = math.sqrt(3.0 / (4 // 2 * 9))  # Caffe fan_in = in/groups * kh * kw
    assert float(np.abs(w["c.weight"]).max()) <= bound
    assert float(np.abs(w["c.weight"]).max()) > 0.8 * bound
    np.testing.assert_array_equal(w["c.bias"], np.full(8, 0.5, np.float32))
    assert "d.bias" not in w
    assert float(w["d.weight"].std()) == pytest.approx(math.sqrt(2.0 / (8 * 9)), rel=0.25)
    assert float(w["f.weight"].std()) == pytest.approx(0.02, rel=0.3)
    assert -1 <= float(w["f.bias"].min()) and float(w["f.bias"].max()) <= 2
    again = backend.compile(net, device="cpu", seed=3)
    np.testing.assert_array_equal(again.weights["d.weight"], w["d.weight"])


def test_fill_fan_out_and_average() -> None:
    rng = np.random.default_rng(0)
    w = executor.fill((10, 4, 3, 3), "xavier", {"variance_norm": "fan_out"}, rng)
    assert np.abs(w).max() <= math.sqrt(3.0 / (10 * 9))
    w = executor.fill((10, 4, 3, 3), "xavier", {"variance_norm": "average"}, rng)
    assert np.abs(w).max() <= math.sqrt(3.0 / ((36 + 90) / 2))
    with pytest.raises(AlexDSLError, match="unknown filler"):
        executor.fill((2,), "bogus", {}, rng)


# ------------------------------------------------------------------------------------ weights


def test_weights_from_safetensors_and_torch_state_dict(tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    net, weights, ex = compiled(EXAMPLES / "resnet18.adsl")
    (x,) = batch_inputs(ex, 1)
    want = ex(x)
    path = tmp_path / "w.safetensors"
    safetensors_numpy.save_file(weights, str(path))
    np.testing.assert_array_equal(backend.compile(net, path, device="cpu")(x), want)
    state = {k: torch.from_numpy(v) for k, v in weights.items()}
    state["bn1.num_batches_tracked"] = torch.tensor(0)  # torch bookkeeping is ignored
    np.testing.assert_array_equal(backend.compile(net, state, device="cpu")(x), want)


def _lenet() -> tuple[Network, dict[str, np.ndarray]]:
    net, weights, _ = compiled(EXAMPLES / "lenet.adsl")
    return net, dict(weights)


def test_missing_extra_and_misshapen_weights_are_all_reported() -> None:
    net, weights = _lenet()
    keys = list(weights)
    missing = weights.pop(keys[0])
    weights[keys[1]] = np.zeros((3, 3), np.float32)
    weights["nonsense.weight"] = np.zeros(1, np.float32)
    with pytest.raises(AlexDSLError) as info:
        backend.compile(net, weights, device="cpu")
    text = str(info.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in text  # one error that counts and lists them
    assert f"missing (1): '{keys[0]}' (shape {tuple(missing.shape)})" in text
    assert f"'{keys[1]}' has the wrong shape: expected {tuple(net.state_keys()[keys[1]])}, received (3, 3)" in text
    assert "unexpected (1): 'nonsense.weight'" in text
    assert len(info.value.errors) == 1


def test_bad_weights_argument() -> None:
    net, _ = _lenet()
    with pytest.raises(AlexDSLError, match="no such weights file"):
        backend.compile(net, "/nonexistent/w.safetensors", device="cpu")
    with pytest.raises(AlexDSLError, match="dict of arrays"):
        backend.compile(net, 42, device="cpu")  # type: ignore[arg-type]


def test_wrong_input_shape_dtype_and_count() -> None:
    _, _, ex = compiled(EXAMPLES / "lenet.adsl")
    (shape,) = ex.inputs.values()
    with pytest.raises(AlexDSLError, match="wrong shape") as info:
        ex(np.zeros((2, shape[0], shape[1] + 1, shape[2]), np.float32))
    assert "(N, " in str(info.value)
    with pytest.raises(AlexDSLError, match="wrong shape"):
        ex(np.zeros(shape, np.float32))  # batch dimension forgotten
    with pytest.raises(AlexDSLError, match="float64.*float32"):
        ex(np.zeros((1, *shape), np.float64))
    with pytest.raises(AlexDSLError, match="takes 1 input"):
        ex()


def test_device_selection_errors() -> None:
    net, weights = _lenet()
    if not executor.cuda_available():
        with pytest.raises(AlexDSLError, match=re.escape(install_command("cupy"))):
            backend.compile(net, weights, device="cuda")
        assert backend.compile(net, weights, device="auto").device == "cpu"
    with pytest.raises(AlexDSLError, match="unknown device"):
        backend.compile(net, weights, device="tpu")
    with pytest.raises(AlexDSLError, match="unsupported dtype"):
        backend.compile(net, weights, device="cpu", dtype="int8")


def test_float64_executor() -> None:
    net, weights, ex32 = compiled(EXAMPLES / "lenet.adsl")
    ex = backend.compile(net, weights, device="cpu", dtype="float64")
    (x,) = batch_inputs(ex, 2)
    got = ex(x.astype(np.float64))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, torch_reference(net, weights, x)[0], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------ codegen


def test_source_is_deterministic_readable_and_names_its_file() -> None:
    net = load_example(EXAMPLES / "alexnet.adsl")
    src = backend.generate_source(net)
    assert src == backend.generate_source(alexdsl.load(EXAMPLES / "alexnet.adsl"))
    assert src.startswith("# Generated by alexdsl")
    assert "alexnet.adsl" in src.splitlines()[0]
    assert "class AlexNet(Executor):" in src
    assert "relu=True" in src  # bias + ReLU fused into the conv epilogue
    assert "dropout" not in src.split("def forward")[1].replace("# ", "#").split("#")[0]
    forward = src.split("def forward")[1]
    assert "rt.relu(" not in forward and "loss" not in forward and "accuracy" not in forward
    compile(src, "<generated>", "exec")


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed: pip install -e '.[dev]'")
def test_generated_source_is_ruff_clean(tmp_path: Path) -> None:
    for path in EXAMPLE_FILES:
        (tmp_path / f"{path.stem}_executor.py").write_text(backend.generate_source(load_example(path)))
    result = subprocess.run(
        ["ruff", "check", "--isolated", "--line-length", "120", "--select", "E,F,W,B,I,UP", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_batchnorm_is_folded_and_relu_fused_in_resnet() -> None:
    net = load_example(EXAMPLES / "resnet18.adsl")
    low = codegen.lower(net)
    kernels = [s.kernel for s in low.steps]
    assert "channel_affine" not in kernels  # every batchnorm follows a conv: folded
    assert not any(k in ("relu",) for k in kernels)
    # every residual add (and the ReLU after it) runs in the epilogue of the conv computed last of its two operands
    assert not any(k.startswith("add") for k in kernels)
    assert kernels.count("conv2d+bias+add+relu") == 5
    assert kernels.count("conv2d+1x1+bias+add+relu") == 3  # the downsample shortcut takes the 1x1 fast path
    text = backend.summary(net, batch=2)
    assert "folded into the weights" in text and "keeping every tensor alive" in text
    assert "parameters:" in text


RESIDUAL_CASES = {
    # the add's other operand is computed before the conv: the add and the ReLU after it run in the conv's step
    "fused": ("a: conv(4, 3, pad=1) | relu\nb: conv(4, 3, pad=1)\ns: b, a -> add | relu\n",
              ["conv2d+bias+relu", "conv2d+bias+add+relu"]),
    # any epilogue activation after the add
    "silu": ("a: conv(4, 3, pad=1) | relu\nb: conv(4, 3, pad=1)\ns: b, a -> add | silu\n",
             ["conv2d+bias+relu", "conv2d+bias+add+silu"]),
    # through what is the identity at inference (stochastic depth before EfficientNet's and ConvNeXt's adds)
    "identity": ("a: conv(4, 3, pad=1)\nb: conv(4, 3, pad=1) | d: dropout(0.5)\ns: d, a -> add | relu\n",
                 ["conv2d+bias", "conv2d+bias+add+relu"]),
    # a reshape is a view, not the identity, even to the same shape: not fused
    "view": ("a: conv(4, 3, pad=1)\nb: conv(4, 3, pad=1) | r: reshape(4x9x9)\ns: r, a -> add\n",
             ["conv2d+bias", "conv2d+bias", "add"]),
    # the conv's output is read twice (by the add and by the network's second output): not fused
    "shared": ("a: conv(4, 3, pad=1)\nb: x -> conv(4, 3, pad=1)\ns: a, b -> add\nt: b -> relu\n",
               ["conv2d+bias", "conv2d+bias", "add", "relu"]),
    # a broadcast add (a per-channel vector): not a residual
    "broadcast": ("a: conv(4, 3, pad=1)\nv: global_avgpool\nb: x -> conv(4, 3, pad=1)\ns: b, v -> add\n",
                  ["conv2d+bias", "global_avg_pool2d", "conv2d+bias", "add"]),
    # three operands: not fused
    "three": ("a: conv(4, 3, pad=1)\nb: x -> conv(4, 3, pad=1)\ns: b, a, x -> add\n",
              ["conv2d+bias", "conv2d+bias", "add"]),
    # a linear over channels (ConvNeXt's pwconv2; on a map and on a vector)
    "pointwise": ("a: pointwise_fc(6)\nb: pointwise_fc(4)\ns: b, x -> add | relu\n",
                  ["conv2d+1x1+bias", "conv2d+1x1+bias+add+relu"]),
    "pointwise_vector": ("g: global_avgpool | flatten\na: pointwise_fc(6)\nb: pointwise_fc(4)\ns: b, g -> add\n",
                         ["global_avg_pool2d", "conv2d+1x1+bias", "conv2d+1x1+bias+add"]),
}


@pytest.mark.parametrize("case", sorted(RESIDUAL_CASES))
def test_residual_add_fuses_into_a_conv_only_where_it_can(case: str) -> None:
    """An add of a conv's output and a value computed before it, of the same shape, with nothing else reading
    the conv's output, runs in the conv's step (its epilogue adds the other operand): the executor still
    computes what torch computes."""
    body, kernels = RESIDUAL_CASES[case]
    outputs = "\noutput s, t\n" if case == "shared" else ""
    net = alexdsl.parse(f"network R\ninput x: 4x9x9\n{body}{outputs}")
    assert [step.kernel for step in codegen.lower(net).steps] == kernels
    weights = random_weights(net)
    ex = backend.compile(net, weights, device="cpu")
    xs = batch_inputs(ex, 2)
    got = ex(*xs)
    for g, t in zip(got if isinstance(got, tuple) else (got,), torch_reference(net, weights, *xs), strict=True):
        assert_close(g, t)


def test_standalone_ops_lower_to_kernels() -> None:
    net = alexdsl.parse(
        "network Mixed\ninput x: 4x9x9\n"
        "a: conv(6, 3, pad=1)\n"
        "a2: maxpool(2, stride=2, round=ceil) | batchnorm | leaky_relu(0.2)\n"
        "b: avgpool(3, stride=2, pad=1, count_pad=false, round=ceil) | sigmoid\n"
        "c: adaptive_avgpool(3) | tanh | flatten | fc(7, bias=false) | softmax\n"
    )
    weights = random_weights(net)
    ex = backend.compile(net, weights, device="cpu")
    kinds = {s.kernel for s in codegen.lower(net).steps}
    assert {"channel_affine", "leaky_relu", "avg_pool2d", "sigmoid", "adaptive_avg_pool2d", "softmax"} <= kinds
    (x,) = batch_inputs(ex, 2)
    assert_close(ex(x), torch_reference(net, weights, x)[0])


def test_hostile_names_cannot_inject_code() -> None:
    evil = 'x"]); import os; os.system("echo pwned") #'
    conv_spec = ParamSpec((2, 1, 1, 1), Filler("constant", (("value", 1.0),)))
    conv = {"out": 2, "kernel": (1, 1), "stride": (1, 1), "pad": (0, 0), "dilation": (1, 1), "groups": 1,
            "bias": False}
    graph = graph_of([Layer("in put", "input", {"kind": "tensor"}, [], (1, 3, 3)),
                      Layer(evil, "conv", conv, ["in put"], (2, 3, 3), params={"weight": conv_spec}),
                      Layer("class", "relu", {}, [evil], (2, 3, 3))])
    net = Network(
        'Evil"\nimport os', graph, inputs=["in put"], outputs=["class"], source_file='bad\n"""; import os #.adsl'
    )
    src = backend.generate_source(net)
    assert "import os" not in "".join(line.split("#")[0] for line in src.splitlines() if "'" not in line)
    assert "os.system" not in src.replace(repr(evil)[1:-1], "").replace(repr(evil), "")
    ex = backend.compile(net, device="cpu")
    np.testing.assert_array_equal(ex(np.ones((1, 1, 3, 3), np.float32)), np.ones((1, 2, 3, 3), np.float32))
    assert f"{evil}.weight" in ex.weights


def test_identifier_sanitising() -> None:
    from alexdsl.backends.naming import IdentifierMap

    names = IdentifierMap(codegen.RESERVED)
    assert names("layer2.0.conv1") == "layer2_0_conv1"
    assert names("layer2_0.conv1") == "layer2_0_conv1_2"  # collision
    assert names("class") == "class_"
    assert names("3x") == "v_3x"
    assert names("self").startswith("self_")
    assert codegen.class_name("my-net") == "my_net"
    assert codegen.lit(float("inf")) == "float('inf')"
    assert codegen.comment("a\nb") == "a\\nb"


def test_load_source_registers_for_tracebacks() -> None:
    import linecache

    net = load_example(EXAMPLES / "lenet.adsl")
    low = codegen.lower(net)
    cls = backend.load_source(codegen.emit(low), low.class_name, "<lenet-test>")
    assert linecache.getline("<lenet-test>", 1).startswith("# Generated")
    assert cls.__source__.startswith("# Generated")


def test_written_module_imports_and_runs(tmp_path: Path) -> None:
    import importlib.util

    from alexdsl.backends.executor.module_file import write_executor_module

    net, weights, ex = compiled(EXAMPLES / "lenet.adsl")
    path = write_executor_module(net, tmp_path / "lenet_cupy.py")
    spec = importlib.util.spec_from_file_location("lenet_cupy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    standalone = getattr(module, codegen.class_name(net.name))(weights, device="cpu")
    (x,) = batch_inputs(ex, 2)
    np.testing.assert_array_equal(standalone(x), ex(x))


# ------------------------------------------------------------------------------------ memory plan


def test_memory_plan_liveness_branches() -> None:
    # a -> (b, c) -> d(concat b, c); a must stay alive until c is computed
    values = [
        Value("a", 10, ()),
        Value("b", 10, ("a",)),
        Value("c", 10, ("a",)),
        Value("d", 20, ("b", "c")),
        Value("e", 20, ("d",), inplace=True),
    ]
    plan = plan_memory(values, outputs=["e"])
    a = plan.assignment
    assert len({a["a"], a["b"], a["c"]}) == 3
    assert a["d"] not in (a["b"], a["c"])
    assert a["e"] == a["d"]  # in place: d dies at e
    assert plan.keep_all_bytes == 70
    assert plan.planned_bytes <= 40
    assert "MiB" in plan.describe(2)


def test_memory_plan_never_overwrites_a_live_value() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = []
        for i in range(12):
            k = int(rng.integers(0, min(i, 3) + 1))
            srcs = tuple(f"v{j}" for j in rng.choice(i, size=k, replace=False)) if i else ()
            values.append(Value(f"v{i}", int(rng.integers(1, 50)), srcs, inplace=bool(rng.integers(0, 2))))
        plan = plan_memory(values, outputs=["v11"])
        for i, v in enumerate(values):  # every value alive at step i must not share v's buffer
            buf = plan.assignment[v.name]
            assert plan.buffers[buf] >= v.nbytes
            for u in values[:i]:
                alive = plan.last_use[u.name] > i or (plan.last_use[u.name] == i and not v.inplace)
                if alive and plan.assignment[u.name] == buf:
                    assert v.inplace and v.inputs and v.inputs[0] == u.name and plan.last_use[u.name] == i


# ------------------------------------------------------------------------------------ GPU


def _cupy():
    cp = pytest.importorskip("cupy")
    if not executor.cuda_available():
        pytest.skip("no CUDA device")
    return cp


@pytest.mark.gpu
@pytest.mark.parametrize(("path", "batch"), _example_params((1, 2)))
def test_cupy_executor_matches_numpy_and_torch_cuda(path: Path, batch: int) -> None:
    """Batch 1 (the GEMM writes NCHW) and 2 (the transposing epilogue); torch with TF32 off."""
    cp = _cupy()
    net, weights, ex_cpu = compiled(path)
    ex = backend.compile(net, weights, device="cuda")
    xs = batch_inputs(ex, batch)
    got = ex(*[cp.asarray(x) for x in xs])
    assert isinstance(got, cp.ndarray)
    assert_close(cp.asnumpy(got), ex_cpu(*xs), rtol=1e-3)
    assert isinstance(ex(*xs), np.ndarray)  # NumPy in, NumPy out
    model = torch_module(net, weights).to("cuda")
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.inference_mode():
            want = model(*[torch.as_tensor(x, device="cuda") for x in xs])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    want = want[0] if isinstance(want, tuple) else want
    assert_close(cp.asnumpy(got), want.cpu().numpy(), rtol=1e-3)


@pytest.mark.gpu
def test_cupy_steady_state_allocates_nothing() -> None:
    cp = _cupy()
    net, weights, _ = compiled(EXAMPLES / "alexnet.adsl")
    ex = backend.compile(net, weights, device="cuda")
    x = cp.asarray(batch_inputs(ex, 4)[0])
    pool = cp.get_default_memory_pool()
    for _ in range(2):
        ex(x)
    cp.cuda.Device().synchronize()
    total = pool.total_bytes()
    for _ in range(3):
        ex(x)
    cp.cuda.Device().synchronize()
    assert pool.total_bytes() == total


@pytest.mark.gpu
def test_cupy_forward_with_fused_kernels_requests_only_its_output(monkeypatch) -> None:  # noqa: ANN001
    """With ALEXDSL_CUDA_KERNELS=1 no AlexNet kernel takes a temporary: one pool request, the returned copy."""
    cp = _cupy()
    monkeypatch.setenv("ALEXDSL_CUDA_KERNELS", "1")
    net, weights, _ = compiled(EXAMPLES / "alexnet.adsl")
    ex = backend.compile(net, weights, device="cuda")
    x = cp.asarray(batch_inputs(ex, 4)[0])
    ex(x)  # the first call plans the arena and workspaces and compiles the kernels

    class Requests(cp.cuda.MemoryHook):
        name = "alexdsl_requests"

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def malloc_postprocess(self, **kwargs) -> None:  # noqa: ANN003
            self.sizes.append(kwargs["size"])

    with Requests() as hook:
        out = ex(x)
    assert hook.sizes == [out.nbytes], f"pool requests during a forward pass (bytes): {hook.sizes}"


def test_inference_layer_reading_a_train_only_layer_is_an_error() -> None:
    try:
        net = alexdsl.parse("network T\ninput x: 3x8x8\na: conv(4, 3) @train\nb: relu(a)\n")
    except AlexDSLError:
        pytest.skip("the front end already rejects this graph")
    with pytest.raises(AlexDSLError, match="runs at inference but reads 'a'"):
        codegen.lower(net)


def test_weights_of_train_only_layers_are_accepted_and_ignored() -> None:
    net = alexdsl.parse("network T\ninput x: 3x8x8\na: conv(4, 3)\nb: fc(3) @train\n")
    weights = random_weights(net)
    assert "b.weight" in weights
    ex = backend.compile(net, weights, device="cpu")
    assert "b.weight" not in ex.weights and "b.weight" in ex.unused
    (x,) = batch_inputs(ex, 2)
    assert ex(x).shape == (2, 4, 6, 6)


def test_float16_module_default_dtype(tmp_path: Path) -> None:
    import importlib.util

    from alexdsl.backends.executor.module_file import write_executor_module

    net, weights, ex32 = compiled(EXAMPLES / "lenet.adsl")
    path = write_executor_module(net, tmp_path / "lenet16.py", dtype="float16")
    assert "default_dtype = 'float16'" in path.read_text()
    spec = importlib.util.spec_from_file_location("lenet16", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ex = getattr(module, codegen.class_name(net.name))(weights, device="cpu")
    assert ex.dtype == np.float16
    (x,) = batch_inputs(ex32, 2)
    got = ex(x.astype(np.float16))
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), ex32(x), rtol=3e-2)
    with pytest.raises(AlexDSLError, match="unsupported dtype"):
        backend.generate_source(net, dtype="int8")


def test_generated_header_sizes_follow_the_dtype() -> None:
    import re

    net = alexdsl.load(EXAMPLES / "alexnet.adsl")
    sizes = {}
    for dtype in ("float32", "float16"):
        head = codegen.generate_source(net, dtype).splitlines()[2]
        assert f"Activations per sample ({dtype})" in head
        sizes[dtype] = [float(x) for x in re.findall(r"([0-9.]+) MiB", head)]
    assert sizes["float16"] == pytest.approx([s / 2 for s in sizes["float32"]], abs=0.01)


def test_a_module_generated_before_the_rename_still_runs(tmp_path: Path) -> None:
    """Generated modules once imported ``alexdsl.backends.cupy.runtime``: in a fresh process, that name is the
    executor's runtime module itself, and such a module runs."""
    import sys

    net = alexdsl.parse("network Old\ninput x: 3x8x8\nc: conv(4, 3) | relu\n")
    low = codegen.lower(net)
    source = backend._emit(low, "float32")
    assert "from alexdsl.backends.executor import runtime as rt" in source
    path = tmp_path / "old_module.py"
    path.write_text(source.replace("alexdsl.backends.executor", "alexdsl.backends.cupy"), encoding="utf-8")
    script = (
        "import importlib.util, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('old_module', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "import alexdsl.backends.executor.runtime as runtime\n"
        "assert module.rt is runtime\n"
        f"out = module.{low.class_name}(None, device='cpu')(np.ones((2, 3, 8, 8), np.float32))\n"
        "print(np.asarray(out[0] if isinstance(out, tuple) else out).shape)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 4, 6, 6)"
