"""relative_position_bias and window_mask: torchvision's index and mask values, the torch module's keys and
buffers, every backend, and weights files holding the int64 index as torchvision saves it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_weights

import alexdsl
from alexdsl.ops.attention import relative_position_index, shifted_window_mask
from alexdsl.ops.registry import lookup

torch = pytest.importorskip("torch")


def _swin_index(window: int) -> torch.Tensor:
    """torchvision's ShiftedWindowAttention.define_relative_coords, as it is written there."""
    coords_h = torch.arange(window)
    coords_w = torch.arange(window)
    coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"))
    coords_flatten = torch.flatten(coords, 1)
    relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]
    relative_coords = relative_coords.permute(1, 2, 0).contiguous()
    relative_coords[:, :, 0] += window - 1
    relative_coords[:, :, 1] += window - 1
    relative_coords[:, :, 0] *= 2 * window - 1
    return relative_coords.sum(-1).flatten()


def _maxvit_index(height: int, width: int) -> torch.Tensor:
    """torchvision's maxvit._get_relative_position_index."""
    coords = torch.stack(torch.meshgrid([torch.arange(height), torch.arange(width)], indexing="ij"))
    coords_flat = torch.flatten(coords, 1)
    relative_coords = coords_flat[:, :, None] - coords_flat[:, None, :]
    relative_coords = relative_coords.permute(1, 2, 0).contiguous()
    relative_coords[:, :, 0] += height - 1
    relative_coords[:, :, 1] += width - 1
    relative_coords[:, :, 0] *= 2 * width - 1
    return relative_coords.sum(-1)


def _swin_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """The mask shifted_window_attention builds (nW, N, N), as torchvision writes it."""
    attn_mask = torch.zeros((height, width))
    h_slices = ((0, -window), (-window, -shift), (-shift, None))
    w_slices = ((0, -window), (-window, -shift), (-shift, None))
    count = 0
    for h in h_slices:
        for w in w_slices:
            attn_mask[h[0]: h[1], w[0]: w[1]] = count
            count += 1
    attn_mask = attn_mask.view(height // window, window, width // window, window)
    attn_mask = attn_mask.permute(0, 2, 1, 3).reshape((height // window) * (width // window), window * window)
    attn_mask = attn_mask.unsqueeze(1) - attn_mask.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)


@pytest.mark.parametrize("window", [1, 2, 7, 8])
def test_the_index_is_torchvisions(window: int) -> None:
    flat = relative_position_index(window, square=False)
    assert flat.dtype == np.int64 and flat.tolist() == _swin_index(window).tolist()
    square = relative_position_index(window, square=True)
    assert square.shape == (window**2, window**2) and square.tolist() == _maxvit_index(window, window).tolist()


@pytest.mark.parametrize(("size", "window", "shift"), [(14, 7, 3), (56, 7, 3), (8, 4, 2), (6, 3, 0), (12, 4, 1)])
def test_the_mask_is_torchvisions(size: int, window: int, shift: int) -> None:
    mask = shifted_window_mask(size, size, window, shift)
    expected = _swin_mask(size, size, window, shift)
    assert mask.dtype == np.float32 and mask.shape == (expected.shape[0], 1, *expected.shape[1:])
    np.testing.assert_array_equal(mask[:, 0], expected.numpy())


def test_shape_rules_parameters_and_buffers() -> None:
    bias = lookup("relative_position_bias")
    swin = {"window": 7, "heads": 3, "index": "flat"}
    assert bias.infer(swin, []) == (3, 49, 49)
    assert bias.params(swin, []) == {"relative_position_bias_table": (169, 3)}
    assert bias.buffers(swin, []) == {"relative_position_index": (2401,)}
    assert bias.buffers({**swin, "index": "square"}, []) == {"relative_position_index": (49, 49)}
    assert bias.integer_buffers(swin) == ["relative_position_index"]
    assert bias.inputs == (0, 0) and lookup("window_mask").inputs == (0, 0)
    mask = lookup("window_mask")
    assert mask.infer({"size": (56, 56), "window": 7, "shift": 3}, []) == (64, 1, 49, 49)
    assert mask.infer({"size": (28, 14), "window": 7, "shift": 3}, []) == (8, 1, 49, 49)
    assert not mask.params({"size": (14, 14), "window": 7, "shift": 3}, [])


def _torch_definitions() -> dict:
    """The generated file's helper classes, run on their own."""
    namespace: dict = {"torch": torch, "nn": torch.nn}
    for op in ("relative_position_bias", "window_mask"):
        exec(lookup(op).lower.torch.definitions, namespace)  # noqa: S102 - the op's own source
    return namespace


def test_the_torch_modules_hold_torchvisions_keys_and_values() -> None:
    classes = _torch_definitions()
    swin = classes["RelativePositionBias"](7, 3, flat=True)
    assert [(k, tuple(v.shape), v.dtype) for k, v in swin.state_dict().items()] == [
        ("relative_position_bias_table", (169, 3), torch.float32), ("relative_position_index", (2401,), torch.int64)]
    assert torch.equal(swin.relative_position_index, _swin_index(7))
    maxvit = classes["RelativePositionBias"](4, 2, flat=False)
    assert torch.equal(maxvit.relative_position_index, _maxvit_index(4, 4))
    table = torch.randn(49, 2)
    with torch.no_grad():
        maxvit.relative_position_bias_table.copy_(table)
    expected = table[_maxvit_index(4, 4).view(-1)].view(16, 16, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
    assert torch.equal(maxvit(), expected)  # MaxViT's get_relative_positional_bias
    mask = classes["ShiftedWindowMask"](14, 14, 7, 3)
    assert not mask.state_dict() and torch.equal(mask()[0, :, 0], _swin_mask(14, 14, 7, 3))


TEXT = """network Windows
input x: 4x9x12
attn: relative_position_bias(3, 2)
attn.mask: window_mask(6, 3, 1)
attn.qkv: x -> relu
attn.out: sdpa(x, attn.qkv, x, attn, attn.mask, heads=2)
grid: relative_position_bias(3, 2, index=square)
grid_attn: sdpa(x, attn.qkv, x, grid, heads=2)
attn.proj: attn.out -> attention(2)
output attn.proj
output grid_attn
"""


def test_every_backend_adds_the_bias_and_the_mask() -> None:
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.compare import compare

    net = alexdsl.parse(TEXT, "windows.adsl")
    assert net.shapes["attn"] == (2, 9, 9) and net.shapes["attn.mask"] == (4, 1, 9, 9)
    rows = compare(net, ["reference", "torch", "cupy", "onnx"], weights=random_weights(net, seed=5), batch=2, seed=5,
                   layers=["attn.out", "grid_attn", "attn", "attn.mask"])
    for row in rows:
        assert all(diff is not None and diff[1] < 1e-5 for diff in row.diffs.values()), (row.layer, row.diffs)


def test_the_index_is_generated_without_weights_and_loaded_from_torchvisions_int64(tmp_path) -> None:
    """No weights: each backend computes the index. A file torch saved (int64 index, its state_dict) loads into the
    torch module and the executor; so does a dict holding it; another integer key is still refused."""
    from alexdsl.backends import executor
    from alexdsl.backends import torch as backend
    from alexdsl.errors import AlexDSLError
    from alexdsl.interop.onnx import initial_weights

    net = alexdsl.parse(TEXT, "windows.adsl")
    module = backend.build(net).eval()
    # torchvision's order: the attention module's own table and index, then the modules below it (attn.proj)
    assert list(module.state_dict()) == list(net.state_keys())
    assert list(net.state_keys())[:3] == ["attn.relative_position_bias_table", "attn.relative_position_index",
                                          "attn.proj.in_proj_weight"]
    assert module.state_dict()["attn.relative_position_index"].dtype == torch.int64
    assert torch.equal(module.state_dict()["grid.relative_position_index"], _maxvit_index(3, 3))
    np.testing.assert_array_equal(initial_weights(net)["attn.relative_position_index"], _swin_index(3).numpy())
    fresh = executor.compile(net, device="cpu")
    np.testing.assert_array_equal(fresh.weights["attn.relative_position_index"], _swin_index(3).numpy())

    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape))
    path = tmp_path / "windows.pt"
    torch.save(module.state_dict(), path)
    x = torch.randn(2, 4, 9, 12)
    with torch.no_grad():
        expected = [t.numpy() for t in module(x)]
    for weights in (path, {k: v.numpy() for k, v in module.state_dict().items()}):
        got = executor.compile(net, weights, device="cpu")(x.numpy())
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))
        again = backend.build(net).eval()
        backend.load_weights(again, weights)
        with torch.no_grad():
            assert all(torch.equal(a, torch.from_numpy(b)) for a, b in zip(again(x), expected, strict=True))
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    state["attn.relative_position_bias_table"] = state["attn.relative_position_bias_table"].astype(np.int32)
    with pytest.raises(AlexDSLError, match="'attn.relative_position_bias_table' \\(int32\\)"):
        executor.compile(net, state, device="cpu")


@pytest.mark.parametrize(("body", "message"), [
    ("mask: window_mask(15, 7, 3)\n", "a 15x15 map does not split into 7x7 windows"),
    ("mask: window_mask(14, 7, 7)\n", "shift=7 is not less than window=7"),
])
def test_window_mask_errors_are_located(body: str, message: str) -> None:
    from alexdsl.errors import AlexDSLError

    with pytest.raises(AlexDSLError, match=r"mask\.adsl:3:\d+: error: mask: " + message):
        alexdsl.parse("network M\ninput x: 4x9x12\n" + body, "mask.adsl")


def _swin_window_attention(x: torch.Tensor, state: dict[str, torch.Tensor], heads: int, window: int, shift: int,
                           size: int) -> torch.Tensor:
    """torchvision's shifted_window_attention from its qkv to its proj, on windows already partitioned (B, nW, N, C),
    with the module's own state (qkv, proj, table, index)."""
    batch, windows, tokens, channels = x.shape
    bias = state["attn.relative_position_bias_table"][state["attn.relative_position_index"]]
    bias = bias.view(tokens, tokens, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
    flat = x.reshape(batch * windows, tokens, channels)
    qkv = torch.nn.functional.linear(flat, state["attn.qkv.weight"], state["attn.qkv.bias"])
    qkv = qkv.reshape(flat.size(0), tokens, 3, heads, channels // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = q * (channels // heads) ** -0.5
    attn = q.matmul(k.transpose(-2, -1)) + bias
    mask = _swin_mask(size, size, window, shift)
    attn = attn.view(batch, windows, heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)
    attn = torch.nn.functional.softmax(attn.view(-1, heads, tokens, tokens), dim=-1)
    out = attn.matmul(v).transpose(1, 2).reshape(flat.size(0), tokens, channels)
    out = torch.nn.functional.linear(out, state["attn.proj.weight"], state["attn.proj.bias"])
    return out.reshape(batch, windows, tokens, channels)


SWIN = """network SwinAttention
input x: 4x9x12
attn: relative_position_bias(3, 2)
mask: window_mask(6, 3, 1)
attn.qkv: x -> linear(36)
qkv: chunk(3, axis=-1)
mixed: sdpa(qkv.0, qkv.1, qkv.2, attn, mask, heads=2)
attn.proj: linear(12)
output attn.proj
"""


def test_a_swin_window_attention_written_with_token_ops_is_torchvisions() -> None:
    """The keys and order of torchvision's ShiftedWindowAttention, and its output, on every backend."""
    from test_attention import _run_every_backend

    net = alexdsl.parse(SWIN, "swin.adsl")
    assert list(net.state_keys()) == ["attn.relative_position_bias_table", "attn.relative_position_index",
                                      "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias"]
    weights = random_weights(net, seed=7)
    x = np.random.default_rng(7).standard_normal((2, 4, 9, 12), dtype=np.float32)
    state = {k: torch.from_numpy(v) for k, v in weights.items()}
    expected = _swin_window_attention(torch.from_numpy(x), state, heads=2, window=3, shift=1, size=6)
    _run_every_backend(net, weights, [x], expected.numpy())


MAXVIT = """network MaxVitAttention
input x: 4x9x12
attn_layer.1: relative_position_bias(3, 2, index=square)
attn_layer.1.to_qkv: x -> linear(36)
qkv: chunk(3, axis=-1)
mixed: sdpa(qkv.0, qkv.1, qkv.2, attn_layer.1, heads=2)
attn_layer.1.merge: linear(12)
output attn_layer.1.merge
"""


def test_a_maxvit_attention_written_with_token_ops_is_torchvisions() -> None:
    """RelativePositionalMultiHeadAttention's keys in its order (table, square index, to_qkv, merge) and output."""
    from test_attention import _maxvit_attention, _run_every_backend

    net = alexdsl.parse(MAXVIT, "maxvit.adsl")
    prefix = "attn_layer.1."
    assert list(net.state_keys()) == [prefix + key for key in (
        "relative_position_bias_table", "relative_position_index", "to_qkv.weight", "to_qkv.bias", "merge.weight",
        "merge.bias")]
    assert net.state_keys()[prefix + "relative_position_index"] == (9, 9)
    weights = random_weights(net, seed=8)
    w = {k.removeprefix(prefix): torch.from_numpy(v) for k, v in weights.items()}
    x = torch.from_numpy(np.random.default_rng(8).standard_normal((2, 4, 9, 12), dtype=np.float32))
    bias = w["relative_position_bias_table"][w["relative_position_index"].view(-1)].view(9, 9, -1)
    bias = bias.permute(2, 0, 1).contiguous().unsqueeze(0)  # MaxViT's get_relative_positional_bias
    q, k, v = torch.chunk(torch.nn.functional.linear(x, w["to_qkv.weight"], w["to_qkv.bias"]), 3, dim=-1)
    expected = torch.nn.functional.linear(_maxvit_attention(q, k, v, bias, heads=2), w["merge.weight"],
                                          w["merge.bias"])
    _run_every_backend(net, weights, [x.numpy()], expected.numpy())
