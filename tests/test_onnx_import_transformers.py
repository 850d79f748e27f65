"""torch's exports of vision transformers come back as alexdsl layers with torch's keys.

A small ViT assembled from torch.nn as torchvision's ``vit_b_16`` is (a patch convolution, a class token and a
position embedding as ``nn.Parameter``, ``nn.MultiheadAttention(batch_first=True)``, ``nn.LayerNorm``, an MLP,
the class token's output through a head), exported with torch's TorchScript exporter at opset 17: the import
has ``param``, ``attention`` and ``select`` layers, the module's ``state_dict`` keys and values, and the
executor on it computes what onnxruntime computes on the export (1e-5 relative to the largest output).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import alexdsl
from alexdsl.interop.onnx_import import import_onnx_source

ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime to check the import against it")
torch = pytest.importorskip("torch", reason="pip install torch to export the models")
from onnx_models import (  # noqa: E402 - needs torch
    assert_import_keeps_state,
    assert_import_runs_as_onnxruntime,
    export,
    randomise,
    sample_input,
)
from torch import nn  # noqa: E402

RELATIVE = 1e-5


class MLP(nn.Sequential):
    """torchvision's MLPBlock: Linear, GELU, Dropout, Linear, Dropout."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim), nn.Dropout(0.0))


class EncoderBlock(nn.Module):
    """torchvision's EncoderBlock: pre-norm self-attention and MLP, each added to its input."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + self.dropout(y)
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, layers: int, dim: int, heads: int, hidden: int, tokens: int):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, dim))
        self.dropout = nn.Dropout(0.0)
        self.layers = nn.Sequential()
        for i in range(layers):
            self.layers.add_module(f"encoder_layer_{i}", EncoderBlock(dim, heads, hidden))
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class SmallViT(nn.Module):
    """torchvision's VisionTransformer, its module names and forward, small."""

    def __init__(self, image: int = 16, patch: int = 4, dim: int = 32, heads: int = 4, hidden: int = 64,
                 layers: int = 2, classes: int = 10):
        super().__init__()
        self.patch, self.dim = patch, dim
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = Encoder(layers, dim, heads, hidden, (image // patch) ** 2 + 1)
        self.heads = nn.Sequential()
        self.heads.add_module("head", nn.Linear(dim, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        x = self.conv_proj(x).reshape(n, self.dim, (h // self.patch) * (w // self.patch)).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    module = randomise(SmallViT(), seed=3).eval()  # every tensor random, the class token and head included
    return module, export(module, (1, 3, 16, 16), tmp_path_factory.mktemp("vit") / "vit.onnx", fold_batchnorm=True)


def test_vit_imports_as_param_attention_and_select_layers(vit: tuple[nn.Module, Path]) -> None:
    _, path = vit
    imported = import_onnx_source(path)
    ops = {layer.name: layer.op for layer in imported.network.layers() if not layer.is_input}
    assert ops["class_token"] == ops["encoder.pos_embedding"] == "param"
    assert [name for name, op in ops.items() if op == "attention"] == [
        "encoder.layers.encoder_layer_0.self_attention", "encoder.layers.encoder_layer_1.self_attention"]
    assert imported.network.layer("encoder.layers.encoder_layer_0.self_attention").attrs["heads"] == 4
    assert "select" in ops.values() and "concat" in ops.values()
    assert "param(1x17x32)" in imported.source and "self_attention: attention(4)" in imported.source
    assert "conv(32, 4, stride=4) | rearrange(\"c h w -> (h w) c\")" in imported.source  # the patches
    assert "block encoder_layer() {" in imported.source  # the encoder layers, written once
    again = alexdsl.parse(imported.source)
    assert again.state_keys() == imported.network.state_keys() and again.shapes == imported.network.shapes


def test_vit_import_keeps_torch_keys_and_values(vit: tuple[nn.Module, Path]) -> None:
    module, path = vit
    assert_import_keeps_state(module, path)


@pytest.mark.parametrize("batch", [1, 3])
def test_vit_import_computes_what_onnxruntime_computes(vit: tuple[nn.Module, Path], batch: int) -> None:
    _, path = vit
    assert_import_runs_as_onnxruntime(path, sample_input((batch, 3, 16, 16), seed=batch), RELATIVE)


def test_an_attention_like_subgraph_that_computes_otherwise_stops_naming_its_node(
        vit: tuple[nn.Module, Path], tmp_path: Path) -> None:
    import onnx

    from alexdsl.errors import AlexDSLError

    _, path = vit
    model = onnx.load(str(path))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    next(a for a in softmax.attribute if a.name == "axis").i = 2  # over the queries, not the keys
    onnx.save(model, str(tmp_path / "odd.onnx"))
    with pytest.raises(AlexDSLError, match=r"odd\.onnx: error: .*'/encoder/layers/encoder_layer_0/self_attention/"):
        import_onnx_source(tmp_path / "odd.onnx")  # its nodes are left to the ops that take them one by one
