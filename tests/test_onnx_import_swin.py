"""torch's export of a Swin transformer comes back as the layers examples/swin_t.adsl writes, with torch's keys.

A small Swin assembled from torch.nn as torchvision's ``swin_t`` is (its module names, its
``shifted_window_attention`` written out: zero padding, cyclic roll, window partition merging batch and windows,
a qkv linear, the relative position bias gathered from its table by ``relative_position_index``, the
shifted-window mask, softmax, the projection, window reverse, roll back, crop; patch merging by strided
slices), exported with torch's TorchScript exporter at opset 17: the import has ``roll``, ``rearrange``,
``relative_position_bias``, ``window_mask``, ``sdpa`` and ``linear`` layers, the module's ``state_dict``
keys and values (the index buffers included), and the executor on it computes what onnxruntime computes on
the export (1e-5 relative to the largest output).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import alexdsl
from alexdsl.errors import AlexDSLError
from alexdsl.interop.onnx_import import import_onnx_source

ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime to check the import against it")
torch = pytest.importorskip("torch", reason="pip install torch to export the models")
import torch.nn.functional as F  # noqa: E402, N812 - torch's own name
from onnx_models import (  # noqa: E402 - needs torch
    assert_import_keeps_state,
    assert_import_runs_as_onnxruntime,
    export,
    randomise,
    sample_input,
)
from torch import nn  # noqa: E402

RELATIVE = 1e-5


class ShiftedWindowAttention(nn.Module):
    """torchvision's ShiftedWindowAttention and its shifted_window_attention function, square windows."""

    def __init__(self, dim: int, window: int, shift: int, heads: int):
        super().__init__()
        self.window, self.shift, self.heads = window, shift, heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous() + window - 1
        relative[:, :, 0] *= 2 * window - 1
        self.register_buffer("relative_position_index", relative.sum(-1).flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, tokens = self.window, self.window ** 2
        bias = self.relative_position_bias_table[self.relative_position_index].view(tokens, tokens, -1)
        bias = bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        b, h, wd, c = x.shape
        x = F.pad(x, (0, 0, 0, (w - wd % w) % w, 0, (w - h % w) % w))
        _, ph, pw, _ = x.shape
        shift = self.shift if w < ph else 0
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = (ph // w) * (pw // w)
        x = x.view(b, ph // w, w, pw // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b * windows, tokens, c)
        qkv = self.qkv(x).reshape(x.size(0), x.size(1), 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * (c // self.heads) ** -0.5).matmul(k.transpose(-2, -1)) + bias
        if shift:
            mask = x.new_zeros((ph, pw))
            slices = ((0, -w), (-w, -shift), (-shift, None))
            for count, (rows, cols) in enumerate((r, s) for r in slices for s in slices):
                mask[rows[0]:rows[1], cols[0]:cols[1]] = count
            mask = mask.view(ph // w, w, pw // w, w).permute(0, 2, 1, 3).reshape(windows, tokens)
            mask = mask.unsqueeze(1) - mask.unsqueeze(2)
            mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
            attn = attn.view(x.size(0) // windows, windows, self.heads, tokens, tokens)
            attn = (attn + mask.unsqueeze(1).unsqueeze(0)).view(-1, self.heads, tokens, tokens)
        x = F.softmax(attn, dim=-1).matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), c)
        x = self.proj(x).view(b, ph // w, pw // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x[:, :h, :wd, :].contiguous()


class SwinBlock(nn.Module):
    """torchvision's SwinTransformerBlock (no dropout, no stochastic depth: inference)."""

    def __init__(self, dim: int, heads: int, window: int, shift: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftedWindowAttention(dim, window, shift, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """torchvision's PatchMerging: each 2x2 neighbourhood side by side, normalised, reduced to 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]],
                      -1)
        return self.reduction(self.norm(x))


class SmallSwin(nn.Module):
    """torchvision's SwinTransformer, its module names and forward, small: an 8x8 grid of 2x2 patches, 4x4
    windows shifted by 2, a patch merging to 4x4 (one window, which torchvision does not shift), a head."""

    def __init__(self, dim: int = 16, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, dim, 2, 2), nn.Identity(), nn.LayerNorm(dim)),
            nn.Sequential(SwinBlock(dim, 2, 4, 0), SwinBlock(dim, 2, 4, 2)),
            PatchMerging(dim),
            nn.Sequential(SwinBlock(2 * dim, 4, 4, 0), SwinBlock(2 * dim, 4, 4, 2)))
        self.norm = nn.LayerNorm(2 * dim)
        self.head = nn.Linear(2 * dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features[0][0](x).permute(0, 2, 3, 1)
        x = self.features[3](self.features[2](self.features[1](self.features[0][2](x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.norm(x).permute(0, 3, 1, 2), 1), 1))


@pytest.fixture(scope="module")
def swin(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    module = randomise(SmallSwin(), seed=5).eval()  # the bias tables random too
    return module, export(module, (1, 3, 16, 16), tmp_path_factory.mktemp("swin") / "swin.onnx", fold_batchnorm=True)


def test_swin_imports_as_the_layers_of_the_example(swin: tuple[nn.Module, Path]) -> None:
    _, path = swin
    imported = import_onnx_source(path)
    layers = {layer.name: layer for layer in imported.network.layers() if not layer.is_input}
    ops = [layer.op for layer in layers.values()]
    assert ops.count("sdpa") == ops.count("relative_position_bias") == 4
    assert ops.count("window_mask") == 1  # the second stage is one window: not shifted
    assert layers["features.1.1.attn.mask"].attrs == {"size": (8, 8), "window": 4, "shift": 2}
    assert [layers[f"features.1.1.attn.{name}"].op for name in ("qkv", "proj")] == ["linear", "linear"]
    assert {layer.attrs["shifts"] for layer in layers.values() if layer.op == "roll"} == {(-2, -2), (2, 2)}
    assert layers["features.1.1.attn.sdpa"].attrs["heads"] == 2
    assert layers["features.1.1.attn.sdpa"].inputs[3:] == ["features.1.1.attn", "features.1.1.attn.mask"]
    assert 'rearrange("(h p) (w q) c -> h w (q p c)", p=2, q=2)' in imported.source  # patch merging
    assert 'rearrange("(h p) (w q) c -> (h w) (p q) c", p=4, q=4)' in imported.source  # window partition
    assert "relative_position_bias(4, 2)" in imported.source and "window_mask(8, 4, 2)" in imported.source
    again = alexdsl.parse(imported.source)
    assert again.state_keys() == imported.network.state_keys() and again.shapes == imported.network.shapes


def test_swin_import_keeps_torch_keys_and_values(swin: tuple[nn.Module, Path]) -> None:
    """The bias tables, folded into the scores' bias by the exporter, come back from it exactly."""
    module, path = swin
    assert_import_keeps_state(module, path)


@pytest.mark.parametrize("batch", [1, 3])
def test_swin_import_computes_what_onnxruntime_computes(swin: tuple[nn.Module, Path], batch: int) -> None:
    _, path = swin
    assert_import_runs_as_onnxruntime(path, sample_input((batch, 3, 16, 16), seed=batch), RELATIVE)


@pytest.mark.parametrize("change", ["bias", "softmax"])
def test_a_window_attention_that_computes_otherwise_stops_naming_its_node(
        swin: tuple[nn.Module, Path], tmp_path: Path, change: str) -> None:
    """Its nodes are left to the ops that take them one by one, which refuse those that merge batch and windows."""
    import onnx
    from onnx import numpy_helper

    _, path = swin
    model = onnx.load(str(path))
    if change == "softmax":  # over the queries, not the keys
        softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
        next(a for a in softmax.attribute if a.name == "axis").i = 2
    else:  # the exporter folds table[index] into a constant: one value changed, no table gathers to it
        bias = next(t for t in model.graph.initializer if list(t.dims) == [1, 2, 16, 16])
        values = numpy_helper.to_array(bias).copy()
        values[0, 0, 0, 0] += 1
        bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(tmp_path / "odd.onnx"))
    with pytest.raises(AlexDSLError, match=r"odd\.onnx: error: node '/features\.1/features\.1\.\d/attn/"):
        import_onnx_source(tmp_path / "odd.onnx")


def test_slices_that_overlap_are_not_a_roll(tmp_path: Path) -> None:
    """Concat(x[:, 1:], x[:, :2]) keeps 5 of 4 columns: two slices and a concat, not a roll."""
    from onnx import TensorProto, helper

    def ints(name: str, value: int) -> object:
        return helper.make_tensor(name, TensorProto.INT64, [1], [value])

    nodes = [helper.make_node("Slice", ["x", "s1", "big", "ax"], ["a"], name="/tail/Slice"),
             helper.make_node("Slice", ["x", "zero", "s2", "ax"], ["b"], name="/head/Slice"),
             helper.make_node("Concat", ["a", "b"], ["y"], name="/roll/Concat", axis=2)]
    graph = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [ints("s1", 1), ints("s2", 2), ints("zero", 0), ints("big", 4), ints("ax", 2)])
    path = tmp_path / "odd.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    network = import_onnx_source(path).network
    assert [layer.op for layer in network.layers()] == ["input", "channel_slice", "channel_slice", "concat"]
    assert network.shapes["roll"] == (4, 5, 3)
