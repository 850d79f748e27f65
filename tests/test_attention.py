"""attention and sdpa: shape rules, MACs, and every backend against torch's own attention and against the
attention of torchvision's ViT, Swin and MaxViT, written here as torchvision writes it."""

from __future__ import annotations

import numpy as np
import pytest

import alexdsl
from alexdsl.errors import AlexDSLError

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _net(body: str) -> alexdsl.Network:
    return alexdsl.parse("network Attn\n" + body, "attn.adsl")


def _error(body: str) -> str:
    with pytest.raises(AlexDSLError) as caught:
        _net(body)
    return str(caught.value)


# shape rules -------------------------------------------------------------------------------------------

def test_attention_keeps_the_shape_and_has_multihead_attentions_parameters() -> None:
    net = _net("input x: 197x768\na: attention(12)\n")
    layer = net.layer("a")
    assert layer.shape == (197, 768)
    mha = torch.nn.MultiheadAttention(768, 12, batch_first=True)
    assert {k: tuple(v.shape) for k, v in mha.state_dict().items()} == {
        name: spec.shape for name, spec in layer.params.items()}
    no_bias = _net("input x: 16x64\na: attention(4, bias=false)\n").layer("a")
    mha = torch.nn.MultiheadAttention(64, 4, bias=False, batch_first=True)
    assert {k: tuple(v.shape) for k, v in mha.state_dict().items()} == {
        name: spec.shape for name, spec in no_bias.params.items()}


def test_attention_macs_count_the_projections_and_both_products() -> None:
    layer = _net("input x: 197x768\na: attention(12)\n").layer("a")
    assert layer.macs == 197 * 768 * 3 * 768 + 2 * 197 * 197 * 768 + 197 * 768 * 768
    windows = _net("input x: 64x49x96\na: attention(3)\n").layer("a")
    assert windows.macs == 64 * (49 * 96 * 4 * 96 + 2 * 49 * 49 * 96)


def test_sdpa_shapes_macs_and_broadcast_terms() -> None:
    net = _net("input q: 64x49x96\ninput k: 64x49x96\ninput v: 64x49x32\ninput bias: 4x49x49\ninput mask: 64x1x49x49\n"
               "a: sdpa(q, k, v, bias, mask, heads=4)\n")
    layer = net.layer("a")
    assert layer.shape == (64, 49, 32)
    assert layer.macs == 64 * 4 * 49 * 49 * (24 + 8)
    assert not layer.params


@pytest.mark.parametrize(("body", "message", "column"), [
    ("input x: 16x30\na: attention(4)\n", "the input has 30 features, which 4 heads do not divide evenly", 14),
    ("input x: 30\na: attention(3)\n", "expects an input of tokens x features (..., L, E)", 4),
    ("input x: 16x30\ninput y: 15x30\ns: sdpa(x, x, y, heads=3)\n", "k has 16 tokens but v has 15", 4),
    ("input x: 16x30\ninput y: 16x20\ns: sdpa(x, y, x, heads=2)\n", "q has 30 features but k has 20", 4),
    ("input x: 2x16x30\ninput y: 3x16x30\ns: sdpa(x, y, y, heads=2)\n", "q, k and v must have the same leading", 4),
    ("input x: 16x30\ninput m: 3x16x16\ns: sdpa(x, x, x, m, heads=2)\n",
     "input 4 (3x16x16) does not broadcast to the attention scores 2x16x16", 4),
])
def test_shape_errors_are_located_and_say_what_is_wrong(body: str, message: str, column: int) -> None:
    text = _error(body)
    line = body.count("\n") + 1  # after the network line
    assert f"attn.adsl:{line}:{column}: error: " in text and message in text, text


def test_sdpa_heads_is_keyword_only_and_scale_defaults_to_none_through_ir_json() -> None:
    assert "too many positional arguments" in _error("input x: 16x30\ns: sdpa(x, x, x, 3)\n")
    net = _net("input x: 16x30\ns: sdpa(x, x, x, heads=3)\nt: sdpa(x, x, x, heads=3, scale=0.5, causal=true)\n")
    again = alexdsl.from_json(net.to_json())
    assert again.layer("s").attrs == {"heads": 3, "causal": False, "scale": None}
    assert again.layer("t").attrs == {"heads": 3, "causal": True, "scale": 0.5}


# every backend -----------------------------------------------------------------------------------------

def _run_every_backend(net: alexdsl.Network, weights: dict[str, np.ndarray], feeds: list[np.ndarray],
                       expected: np.ndarray) -> None:
    """The torch module, the NumPy executor and ONNX Runtime (when installed) each compute ``expected``."""
    from alexdsl.backends import executor
    from alexdsl.backends import torch as backend

    module = backend.build(net).eval()
    backend.load_weights(module, weights)
    with torch.no_grad():
        got = module(*(torch.from_numpy(x) for x in feeds)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))
    got = np.asarray(executor.compile(net, weights, device="cpu")(*feeds))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))
    try:
        import onnxruntime as ort
    except ImportError:
        return
    from alexdsl.interop.onnx import export_onnx

    model = export_onnx(net, weights)  # checked with onnx.checker.check_model(full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), feeds, strict=True)})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize(("shape", "bias"), [((16, 64), True), ((16, 64), False), ((3, 10, 32), True)])
def test_attention_is_nn_multihead_attention(shape: tuple[int, ...], bias: bool) -> None:
    """The state_dict of a random nn.MultiheadAttention loads by key, and every backend computes its output."""
    torch.manual_seed(0)
    heads, features = 4, shape[-1]
    mha = torch.nn.MultiheadAttention(features, heads, bias=bias, batch_first=True).eval()
    with torch.no_grad():
        for p in mha.parameters():
            p.uniform_(-0.5, 0.5)  # non-zero biases too
    net = _net(f"input x: {'x'.join(map(str, shape))}\na: attention({heads}, bias={str(bias).lower()})\n")
    weights = {f"a.{k}": v.numpy() for k, v in mha.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((2, *shape), dtype=np.float32)
    with torch.no_grad():
        flat = torch.from_numpy(x).reshape(-1, *shape[-2:])
        expected = mha(flat, flat, flat, need_weights=False)[0].reshape(x.shape).numpy()
    _run_every_backend(net, weights, [x], expected)


def test_attention_is_torchvisions_vit_encoder_attention() -> None:
    """torchvision's EncoderBlock keeps its attention as ``self_attention`` (nn.MultiheadAttention): its keys and
    its output."""
    vit = pytest.importorskip("torchvision.models.vision_transformer",
                              reason="torchvision is not installed (pip install torchvision)")
    torch.manual_seed(1)
    block = vit.EncoderBlock(12, 48, 96, 0.0, 0.0).eval()
    with torch.no_grad():
        for p in block.self_attention.parameters():
            p.uniform_(-0.5, 0.5)
    net = _net("input x: 10x48\nencoder_layer_0.self_attention: attention(12)\n")
    state = {f"encoder_layer_0.self_attention.{k}": v.numpy() for k, v in block.self_attention.state_dict().items()}
    assert set(state) == set(net.state_keys())
    x = np.random.default_rng(1).standard_normal((2, 10, 48), dtype=np.float32)
    with torch.no_grad():
        t = torch.from_numpy(x)
        expected = block.self_attention(t, t, t, need_weights=False)[0].numpy()
    _run_every_backend(net, state, [x], expected)


def _swin_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor,
                    heads: int) -> torch.Tensor:
    """torchvision's shifted_window_attention between its qkv and proj Linears, as torchvision writes it: q, k, v
    (B*nW, N, C); bias (1, heads, N, N); mask (nW, N, N)."""
    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.size(0), x.size(1), heads, -1).permute(0, 2, 1, 3)

    q, k, v = split(q), split(k), split(v)
    count, tokens, channels = q.size(0), q.size(2), q.size(3) * heads
    q = q * (channels // heads) ** -0.5
    attn = q.matmul(k.transpose(-2, -1))
    attn = attn + bias
    windows = mask.size(0)
    attn = attn.view(count // windows, windows, heads, tokens, tokens)
    attn = attn + mask.unsqueeze(1).unsqueeze(0)
    attn = attn.view(-1, heads, tokens, tokens)
    attn = F.softmax(attn, dim=-1)
    return attn.matmul(v).transpose(1, 2).reshape(count, tokens, channels)


def _maxvit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                      heads: int) -> torch.Tensor:
    """torchvision's RelativePositionalMultiHeadAttention between to_qkv and merge: q, k, v (B, G, P, D), bias
    (1, heads, P, P)."""
    batch, groups, points, features = q.shape
    head_dim = features // heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(batch, groups, points, heads, head_dim).permute(0, 1, 3, 2, 4)

    q, k, v = split(q), split(k), split(v)
    q = q * head_dim**-0.5
    dot_prod = torch.einsum("B G H I D, B G H J D -> B G H I J", q, k)
    dot_prod = F.softmax(dot_prod + bias, dim=-1)
    out = torch.einsum("B G H I J, B G H J D -> B G H I D", dot_prod, v)
    return out.permute(0, 1, 3, 2, 4).reshape(batch, groups, points, features)


def test_sdpa_computes_swins_shifted_window_attention() -> None:
    """Windows x tokens x channels, a relative position bias (heads, N, N) and the shift mask (nW, 1, N, N)."""
    windows, tokens, channels, heads = 4, 9, 12, 3
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, windows, tokens, channels), dtype=np.float32) for _ in range(3))
    bias = rng.standard_normal((1, heads, tokens, tokens), dtype=np.float32)
    mask = np.where(rng.uniform(size=(1, windows, 1, tokens, tokens)) < 0.3, -100.0, 0.0).astype(np.float32)
    net = _net(f"input q: {windows}x{tokens}x{channels}\ninput k: {windows}x{tokens}x{channels}\n"
               f"input v: {windows}x{tokens}x{channels}\ninput bias: {heads}x{tokens}x{tokens}\n"
               f"input mask: {windows}x1x{tokens}x{tokens}\nattn: sdpa(q, k, v, bias, mask, heads={heads})\n")
    t = [torch.from_numpy(x.reshape(-1, tokens, channels)) for x in (q, k, v)]
    expected = _swin_attention(*t, torch.from_numpy(bias), torch.from_numpy(mask[0, :, 0]), heads)
    feeds = [q, k, v, np.repeat(bias, 2, axis=0), np.repeat(mask, 2, axis=0)]
    _run_every_backend(net, {}, feeds, expected.reshape(q.shape).numpy())


def test_sdpa_computes_maxvits_relative_positional_attention() -> None:
    groups, points, features, heads = 3, 16, 32, 2
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, groups, points, features), dtype=np.float32) for _ in range(3))
    bias = rng.standard_normal((1, heads, points, points), dtype=np.float32)
    shape = f"{groups}x{points}x{features}"
    net = _net(f"input q: {shape}\ninput k: {shape}\ninput v: {shape}\ninput bias: {heads}x{points}x{points}\n"
               f"attn: sdpa(q, k, v, bias, heads={heads})\n")
    expected = _maxvit_attention(*(torch.from_numpy(x) for x in (q, k, v)), torch.from_numpy(bias), heads)
    _run_every_backend(net, {}, [q, k, v, np.repeat(bias, 2, axis=0)], expected.numpy())


@pytest.mark.parametrize(("lq", "lk", "scale", "extra"), [(8, 8, None, False), (5, 9, 0.3, False), (8, 8, None, True)])
def test_causal_sdpa_is_torchs(lq: int, lk: int, scale: float | None, extra: bool) -> None:
    """``causal=true`` masks above the diagonal (top-left aligned, as torch's is_causal), alone or with a term."""
    rng = np.random.default_rng(4)
    q = rng.standard_normal((2, lq, 16), dtype=np.float32)
    k, v = (rng.standard_normal((2, lk, 16), dtype=np.float32) for _ in range(2))
    term = rng.standard_normal((2, lk), dtype=np.float32)  # one bias per key, broadcast over heads and queries
    body = (f"input q: {lq}x16\ninput k: {lk}x16\ninput v: {lk}x16\n" + ("input t: 1x1x" + str(lk) + "\n") * extra
            + f"attn: sdpa(q, k, v{', t' * extra}, heads=2, causal=true{f', scale={scale}' if scale else ''})\n")
    net = _net(body)
    split = [torch.from_numpy(x).unflatten(-1, (2, 8)).transpose(1, 2) for x in (q, k, v)]
    mask = torch.ones(lq, lk, dtype=torch.bool).tril()
    additive = torch.zeros(lq, lk).masked_fill(~mask, float("-inf"))
    if extra:
        additive = additive + torch.from_numpy(term)[:, None, None, :]
    expected = F.scaled_dot_product_attention(*split, attn_mask=additive, scale=scale)
    feeds = [q, k, v] + [term.reshape(2, 1, 1, lk)] * extra
    _run_every_backend(net, {}, feeds, expected.transpose(1, 2).flatten(2).numpy())


def test_the_executor_keeps_attention_in_the_memory_plan() -> None:
    """Token tensors go to planned buffers like image tensors; the scores are the kernel's own temporary."""
    from alexdsl.backends.executor.codegen import lower

    net = _net("input x: 16x64\na: attention(4)\nb: attention(4)\nc: sdpa(a, b, b, heads=2)\n")
    low = lower(net)
    assert [step.kernel for step in low.steps] == ["attention", "attention", "sdpa"]
    assert set(low.memory.assignment) == {"a", "b", "c"}


def test_the_language_server_hovers_the_ops_and_their_arguments() -> None:
    pytest.importorskip("pygls", reason="the language server needs pygls (pip install alexdsl[lsp])")
    from alexdsl.lsp import features
    from alexdsl.lsp.server import check, run_front_end

    text = "network T\ninput x: 16x64\na: attention(4)\ns: sdpa(a, a, a, heads=2, causal=true)\n"
    checked = check(text, "/tmp/attn.adsl", None, run_front_end(text, "/tmp/attn.adsl"))

    def hover(line: int, column: int) -> str:
        found = features.hover(checked.analysis, checked.index, checked.positions, line, column)
        assert found is not None
        return found.contents.value

    assert "nn.MultiheadAttention's parameters" in hover(3, 4) and "`a.in_proj_weight`: 192x64" in hover(3, 4)
    assert "Scaled dot-product attention" in hover(4, 4) and "MACs: 32,768" in hover(4, 4)
    assert "`causal=false`" in hover(4, 27) and "mask the scores above the diagonal" in hover(4, 27)


def test_attention_and_sdpa_train_in_torch() -> None:
    """One optimizer step: every parameter gets a gradient and changes."""
    from alexdsl.backends import torch as backend

    net = _net("input x: 6x16\na: attention(4, dropout=0.1)\nb: sdpa(a, a, a, heads=2, causal=true)\n")
    module = backend.build(net).train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module(torch.randn(3, 6, 16)).square().mean().backward()
    optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(not torch.equal(before[k], v) for k, v in module.state_dict().items() if k.endswith("weight"))
