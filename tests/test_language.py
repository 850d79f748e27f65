"""Language-model pieces: tokens inputs, embedding, positions, rmsnorm and rope on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_weights

import alexdsl
from alexdsl.errors import AlexDSLError

TINY = """network Tiny
input ids: tokens(8, vocab=50)
wte: ids -> embedding(50, 16)
pos: ids -> positions
wpe: pos -> embedding(8, 16)
h: add(wte, wpe)
norm: h -> rmsnorm(eps=1e-5)
q: norm -> rope(2, theta=10000)
k: norm -> rope(4, theta=500000, scaling=llama3, factor=32, original_length=4)
out: add(q, k)
"""


def test_a_tokens_input_has_its_longest_length_as_shape_and_input_shapes_sets_another() -> None:
    net = alexdsl.parse(TINY, "tiny.adsl")
    assert net.shapes["ids"] == (8,) and net.shapes["wte"] == (8, 16) and net.shapes["pos"] == (8,)
    assert net.layer("ids").attrs == {"kind": "tokens", "vocab": 50} and net.layer("ids").is_tokens
    assert net.state_keys() == {"wte.weight": (50, 16), "wpe.weight": (8, 16), "norm.weight": (16,)}
    shorter = alexdsl.parse(TINY, "tiny.adsl", input_shapes={"ids": (5,)})
    assert shorter.shapes["out"] == (5, 16)


def test_a_tokens_input_round_trips_through_ir_json() -> None:
    net = alexdsl.parse(TINY, "tiny.adsl")
    again = alexdsl.from_json(net.to_json())
    assert again.layer("ids").attrs == net.layer("ids").attrs and again.shapes == net.shapes


@pytest.mark.parametrize(("text", "message"), [
    ("input ids: tokens(8, vocabb=5)", "1:22: error: unknown argument 'vocabb' for tokens"),
    ("input ids: tokens(vocab=5)", "1:12: error: tokens needs the longest sequence length"),
    ("input ids: tokens(0)", "1:19: error: tokens takes an integer length, not 0"),
    ("input ids: tokns(8)", "1:12: error: unknown input type 'tokns(8)'"),
    ("input x: 4x8\ne: x -> embedding(10, 4)", "2:9: error: e: expects token ids, a sequence (L)"),
    ("input x: 6x8\nr: x -> rope(3)", "2:14: error: r: 8 features do not split into 3 heads of an even width"),
    ("input x: 6x4\nr: x -> rope(4)", "2:14: error: r: 4 features do not split into 4 heads of an even width"),
    ("input x: 6x8x2\nr: x -> rope(2)", "2:9: error: r: expects input of rank 2 (LxD (tokens x features))"),
])
def test_mistakes_are_located_errors(text: str, message: str) -> None:
    with pytest.raises(AlexDSLError) as caught:
        alexdsl.parse(text + "\n", "bad.adsl")
    assert f"bad.adsl:{message}" in str(caught.value)


torch = pytest.importorskip("torch")
import alexdsl.torch  # noqa: E402 - needs torch


def test_every_backend_agrees_with_the_reference() -> None:
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.compare import compare

    net = alexdsl.parse(TINY, "tiny.adsl")
    rows = compare(net, ["reference", "torch", "cupy", "onnx"], weights=random_weights(net, seed=2), batch=3, seed=1)
    assert {row.layer for row in rows} >= {"wte", "wpe", "norm", "q", "k", "out"}
    for row in rows:
        for backend, diff in row.diffs.items():
            assert diff is not None and diff[1] < 1e-6, (row.layer, backend, diff)


def test_rope_is_hugging_faces_rotate_half_and_positions_are_per_token() -> None:
    """Position 0 is unrotated; at position p the pair (i, i + D/2) of each head turns by p * theta^(-2i/D)."""
    net = alexdsl.parse("network R\ninput x: 3x8\nr: x -> rope(2, theta=100)\n", "r.adsl")
    module = alexdsl.torch.build(net)
    assert list(module.state_dict()) == []  # the cos/sin table is not a state key, as in Hugging Face's models
    x = torch.randn(1, 3, 8)
    got = module(x).view(3, 2, 4)
    heads = x.view(3, 2, 4)
    torch.testing.assert_close(got[0], heads[0])
    for p in (1, 2):
        for i in range(2):
            angle = torch.tensor(p * 100.0 ** (-2 * i / 4))
            a, b = heads[p, :, i], heads[p, :, i + 2]
            torch.testing.assert_close(got[p, :, i], a * angle.cos() - b * angle.sin())
            torch.testing.assert_close(got[p, :, i + 2], b * angle.cos() + a * angle.sin())


def test_the_executor_takes_integer_ids_and_refuses_others() -> None:
    from alexdsl.backends.executor import compile as compile_executor

    net = alexdsl.parse(TINY, "tiny.adsl")
    weights = random_weights(net, seed=0)
    executor = compile_executor(net, weights, device="cpu")
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    out = executor(ids)
    module = alexdsl.torch.build(net)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    np.testing.assert_allclose(out, module(torch.from_numpy(ids)).detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(AlexDSLError, match="holds token ids, integers"):
        executor(ids.astype(np.float32))
    with pytest.raises(ValueError, match="token id out of range"):
        executor(np.full((1, 8), 50))


TIED = """network Tied
input ids: tokens(8, vocab=50)
wte: ids -> embedding(50, 16)
norm: wte -> rmsnorm
lm_head: norm -> unembed(50, tied="wte")
"""


def test_a_tied_weight_is_stored_and_counted_once() -> None:
    net = alexdsl.parse(TIED, "tied.adsl")
    assert net.state_keys() == {"wte.weight": (50, 16), "norm.weight": (16,)}
    assert net.layer("lm_head").params["weight"].tied == "wte.weight" and net.layer("lm_head").param_count == 0
    assert net.totals()["params"] == 50 * 16 + 16
    assert alexdsl.from_json(net.to_json()).layer("lm_head").params["weight"].tied == "wte.weight"
    module = alexdsl.torch.build(net)
    assert sum(p.numel() for p in module.parameters()) == 50 * 16 + 16
    assert list(module.state_dict()) == ["wte.weight", "norm.weight"]


def test_a_tied_layer_agrees_on_every_backend() -> None:
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.compare import compare

    net = alexdsl.parse(TIED, "tied.adsl")
    rows = compare(net, ["reference", "torch", "cupy", "onnx"], weights=random_weights(net, seed=4), batch=2, seed=0)
    row = next(r for r in rows if r.layer == "lm_head")
    assert all(diff is not None and diff[1] < 1e-6 for diff in row.diffs.values()), row.diffs


@pytest.mark.parametrize(("tied", "message"), [
    ('"wt"', "tied.adsl:5:30: error: lm_head: tied='wt' names no other layer"),
    ('"norm"', "tied.adsl:5:30: error: lm_head: tied='norm' names a layer without a weight of this layer's shape"),
    ('"ids"', "tied.adsl:5:30: error: lm_head: tied='ids' names no other layer"),
])
def test_a_wrong_tie_is_a_located_error(tied: str, message: str) -> None:
    with pytest.raises(AlexDSLError) as caught:
        alexdsl.parse(TIED.replace('"wte"', tied), "tied.adsl")
    assert message in str(caught.value)


def test_repeat_kv_repeats_each_key_value_head_for_its_group_of_query_heads() -> None:
    """Query heads 0..2 read key/value head 0 and 3..5 head 1, as Hugging Face's repeat_kv."""
    from alexdsl.backends.executor import compile as compile_executor

    net = alexdsl.parse("network K\ninput x: 2x4\nkv: x -> repeat_kv(2, groups=3)\n", "k.adsl")
    assert net.shapes["kv"] == (2, 12)
    x = np.arange(8, dtype=np.float32).reshape(1, 2, 4)
    heads = [x[0, :, :2], x[0, :, 2:]]
    expected = np.concatenate([heads[0]] * 3 + [heads[1]] * 3, axis=-1)
    np.testing.assert_array_equal(compile_executor(net, {}, device="cpu")(x)[0], expected)
    np.testing.assert_array_equal(alexdsl.torch.build(net)(torch.from_numpy(x))[0].numpy(), expected)


def test_the_torch_module_takes_sequences_shorter_than_the_declared_length() -> None:
    """A tokens input's length is the longest; the torch module runs any shorter sequence, the same as a network
    declared at that length (the executor and ONNX are compiled for one length: --input ids=L)."""
    from alexdsl.backends.executor import compile as compile_executor

    net = alexdsl.parse(TINY, "tiny.adsl")
    weights = random_weights(net, seed=5)
    module = alexdsl.torch.build(net).eval()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    ids = np.array([[7, 3, 49, 0, 12]])
    with torch.no_grad():
        got = module(torch.from_numpy(ids)).numpy()
    shorter = alexdsl.parse(TINY, "tiny.adsl", input_shapes={"ids": (5,)})
    np.testing.assert_allclose(got, compile_executor(shorter, weights, device="cpu")(ids), rtol=1e-5, atol=1e-6)


def test_a_linear_layer_in_gpt2s_conv1d_layout_agrees_on_every_backend() -> None:
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.compare import compare

    net = alexdsl.parse("network C\ninput x: 6x8\nc: x -> linear(24, layout=conv1d) | gelu\n"
                        "p: c -> linear(8, bias=false, layout=conv1d)\n", "c.adsl")
    assert net.state_keys() == {"c.weight": (8, 24), "c.bias": (24,), "p.weight": (24, 8)}
    assert "class Conv1D(nn.Module)" in alexdsl.torch.generate_source(net)
    rows = compare(net, ["reference", "torch", "cupy", "onnx"], weights=random_weights(net, seed=6), batch=2, seed=2)
    for row in rows:
        assert all(diff is not None and diff[1] < 1e-6 for diff in row.diffs.values()), (row.layer, row.diffs)
    plain = alexdsl.parse("network L\ninput x: 6x8\nc: x -> linear(24)\n", "l.adsl")
    assert "Conv1D" not in alexdsl.torch.generate_source(plain)
