"""Token tensors (alexdsl/ops/tokens.py and the axis arguments of layernorm, softmax, concat, flatten, chunk and
split): shape rules with located errors, state keys, and every backend against the torch.nn.functional reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_weights

import alexdsl
from alexdsl.errors import AlexDSLError
from alexdsl.ir.network import Network
from alexdsl.ops.registry import ShapeError, lookup
from alexdsl.ops.tokens import plan_rearrange


def _vit(patch: int = 2) -> Network:
    """A tiny ViT: patches, a class token, a position embedding, a layer norm, the class token's head."""
    tokens = (8 // patch) ** 2
    return alexdsl.parse(f"""network Tokens
input img: 3x8x8
patches: img -> rearrange("c (h p) (w q) -> (h w) (p q c)", p={patch}, q={patch})
conv_proj: patches -> linear(6)
class_token: param(1x1x6)
tokens: concat(class_token, conv_proj, axis=0)
encoder.pos_embedding: param(1x{tokens + 1}x6, init=gaussian(0.02))
encoder.add: add(tokens, encoder.pos_embedding)
encoder.mlp: encoder.add -> linear(6)
encoder.gelu: gelu
encoder.ln: layernorm(eps=1e-6, axis=-1)
attn: softmax(axis=-1)
cls: select(0)
head: linear(3)
output head
""", "tokens.adsl")


def test_param_is_kept_under_the_layer_name_in_torchvision_order() -> None:
    net = _vit()
    assert net.shapes["class_token"] == (1, 6) and net.shapes["tokens"] == (17, 6)
    keys = list(net.state_keys().items())
    # a module's own parameters come before its children's, as in state_dict()
    assert keys[0] == ("class_token", (1, 1, 6))
    assert keys.index(("encoder.pos_embedding", (1, 17, 6))) < [k for k, _ in keys].index("encoder.mlp.weight")


def test_param_shape_must_start_with_the_batch_axis_of_one() -> None:
    with pytest.raises(ShapeError, match="must be 1") as error:
        lookup("param").infer({"shape": (2, 3)}, [])
    assert error.value.arg == "shape"


torch = pytest.importorskip("torch")


def test_torch_module_registers_parameters_at_their_dotted_paths() -> None:
    from alexdsl.backends import torch as backend

    net = _vit()
    module = backend.build(net)
    assert list(dict(module.state_dict()).keys()) == list(net.state_keys())
    assert "import einops" in module.code
    assert "self.class_token.expand(img.shape[0], -1, -1)" in module.code
    assert "einops.rearrange(img, 'b c (h p) (w q) -> b (h w) (p q c)', p=2, q=2)" in module.code
    out = module(torch.randn(2, 3, 8, 8))
    out.sum().backward()  # trains: the learned tensors get gradients
    assert module.class_token.grad is not None and module.encoder.pos_embedding.grad is not None


@pytest.mark.parametrize("patch", [2, 4])
def test_every_backend_agrees_with_the_reference_on_a_small_vit(patch: int) -> None:
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.compare import compare

    net = _vit(patch)
    rows = compare(net, ["reference", "torch", "cupy", "onnx"], weights=random_weights(net, seed=1), batch=3, seed=1)
    assert {row.layer for row in rows} >= {"class_token", "patches", "tokens", "cls", "head"}
    for row in rows:
        for backend, diff in row.diffs.items():
            assert diff is not None and diff[1] < 1e-5, (row.layer, backend, diff)


def test_token_ops_in_source_agree_across_backends() -> None:
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.compare import compare

    net = alexdsl.parse(
        "network T\ninput x: 16x8\n"
        "a: x -> linear(12) | gelu\n"
        "b: a -> layernorm(axis=-1)\n"
        "c: b -> softmax(axis=-1)\n"
        "d: concat(b, c, axis=0)\n"
        "e: d -> select(-1)\n"
        "f: concat(b, c, axis=-1)\n"
        "g: f -> linear(8, bias=false) | relu\n"
        "h: add(g, x) | dropout(0.1)\n"
        "s: h -> softmax\n"
        "output e, s\n", "t.adsl")
    assert net.shapes["d"] == (32, 12) and net.shapes["e"] == (12,) and net.shapes["f"] == (16, 24)
    assert net.layer("a").macs == 16 * 12 * 8
    rows = compare(net, ["reference", "torch", "cupy", "onnx"], weights=random_weights(net, seed=2), batch=2, seed=2)
    for row in rows:
        for backend, diff in row.diffs.items():
            assert diff is not None and diff[1] < 1e-5, (row.layer, backend, diff)


def test_rearrange_plans_and_its_errors_name_the_axis() -> None:
    plan = plan_rearrange("c (h p) (w q) -> (h w) (p q c)", (("p", 16), ("q", 16)), (3, 224, 224))
    assert plan.output == (196, 768) and plan.elementary == (3, 14, 16, 14, 16) and plan.perm == (1, 3, 2, 4, 0)
    with pytest.raises(ShapeError, match=r"axis 1 \(\(h p\)\) has size 225, which is not a multiple of 16"):
        plan_rearrange("c (h p) (w q) -> (h w) (p q c)", (("p", 16), ("q", 16)), (3, 225, 224))
    with pytest.raises(ShapeError, match="names 3 axes but the input has rank 2"):
        plan_rearrange("c h w -> h w c", (), (3, 4))
    with pytest.raises(ShapeError, match="axis 'w' is only on the left side"):
        plan_rearrange("c h w -> h c", (), (3, 4, 5))
    with pytest.raises(ShapeError, match="2 unknown sizes"):
        plan_rearrange("(h p) -> h p", (), (8,))
    with pytest.raises(ShapeError, match="size r=2 names no axis"):
        plan_rearrange("h -> h", (("r", 2),), (8,))


@pytest.mark.parametrize(("text", "message"), [
    ("y: x -> layernorm\n", "layernorm normalises the last axis, or the channels"),
    ("y: x -> softmax(axis=2)\n", "axis=2 is out of range for an input of rank 2"),
    ("y: x -> select(16)\n", "index 16 is out of range for axis 0 of size 16"),
    ("y: x -> select(0, axis=-3)\n", "axis=-3 is out of range"),
    ("z: x -> relu\ny: concat(x, z, axis=1)\nw: x -> linear(3)\nv: concat(x, w, axis=0)\n", "outside axis 0"),
    ('y: x -> rearrange("(h p) d -> h p d", p=5)\n',
     r'rearrange\("\(h p\) d -> h p d", p=5\)\n +\^~+\n  expected: sizes whose product divides 16'),
    ('y: x -> rearrange("h d -> d")\n', "axis 'h' is only on the left side of the pattern"),
    ("p: param(2x8)\n", r"p: param\(2x8\)\n +\^~~\n  expected: 1xD1x..."),
    ("y: x -> roll((1, 2), axes=0)\n", "roll has 2 shifts for 1 axes"),
])
def test_wrong_axes_are_located_errors(text: str, message: str) -> None:
    with pytest.raises(AlexDSLError, match=message) as error:
        alexdsl.parse("network T\ninput x: 16x8\n" + text, "t.adsl")
    assert "t.adsl:" in str(error.value)


def test_caffe_export_refuses_token_axes_naming_the_op() -> None:
    from alexdsl.interop.caffe_export import export_prototxt

    net = alexdsl.parse("network T\ninput x: 16x8\ns: x -> softmax(axis=-1)\n", "t.adsl")
    with pytest.raises(AlexDSLError, match=r"t.adsl:3:\d+: error: .*softmax over axis -1 has no Caffe layer"):
        export_prototxt(net)
    net = alexdsl.parse("network T\ninput x: 16x8\ns: x -> linear(4)\n", "t.adsl")
    with pytest.raises(AlexDSLError, match=r"t.adsl:3:\d+: error: op 'linear' has no Caffe layer"):
        export_prototxt(net)


def _windows(shifts: tuple[int, int] = (-2, 1)) -> Network:
    """Swin's pieces: a cyclic shift, a window partition, attention scores as matmuls, axes moved and merged."""
    return alexdsl.parse(f"""network Windows
input x: 8x8x6
shifted: x -> roll({shifts}, axes=(0, -1))
windows: rearrange("(h p) (w q) c -> (h w) (p q) c", p=4, q=4)
q: windows -> linear(5, bias=false)
k: windows -> linear(5)
kt: k -> permute((0, 2, 1))
scores: matmul(q, kt)
attn: softmax(axis=-1)
v: windows -> select(1)
out: matmul(attn, v)
merged: out -> flatten(1)
grid: out -> reshape(4x4x4x6)
channels: permute((3, 0, 1, 2))
output merged, channels
""", "windows.adsl")


def test_swin_pieces_shapes_macs_and_torch_code() -> None:
    from alexdsl.backends.torch.codegen import generate_source

    net = _windows()
    assert net.shapes["windows"] == (4, 16, 6) and net.shapes["scores"] == (4, 16, 16)
    assert net.shapes["out"] == (4, 16, 6) and net.shapes["merged"] == (4, 96)
    assert net.layer("scores").macs == 4 * 16 * 16 * 5 and net.layer("out").macs == 4 * 16 * 6 * 16
    code = generate_source(net)
    for line in ("shifted = torch.roll(x, (-2, 1), (1, 3))", "kt = k.permute(0, 1, 3, 2)",
                 "scores = torch.matmul(q, kt)", "out = torch.matmul(attn, v[:, None])",
                 "merged = torch.flatten(out, 2, 3)", "grid = out.reshape(-1, 4, 4, 4, 6)"):
        assert line in code


def test_swin_pieces_agree_across_backends() -> None:
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.compare import compare

    net = _windows()
    rows = compare(net, ["reference", "torch", "cupy", "onnx"], weights=random_weights(net, seed=4), batch=2, seed=4)
    assert len(rows) == 12
    for row in rows:
        for backend, diff in row.diffs.items():
            assert diff is not None and diff[1] < 1e-5, (row.layer, backend, diff)


def test_chunk_and_split_along_the_last_axis() -> None:
    pytest.importorskip("onnxruntime")
    from alexdsl.backends.torch.codegen import generate_source
    from alexdsl.interop.compare import compare

    net = alexdsl.parse("network T\ninput x: 16x8\nqkv: x -> linear(24)\nparts: qkv -> chunk(3, axis=-1)\n"
                        "rows: x -> split((3, 5), axis=1)\ns: add(parts.0, parts.1, parts.2)\n"
                        "c: concat(rows.0, rows.1, axis=-1)\noutput s, c\n", "t.adsl")
    assert [net.shapes[f"parts.{i}"] for i in range(3)] == [(16, 8)] * 3
    assert net.shapes["rows.1"] == (16, 5)
    code = generate_source(net)
    assert "parts_2 = qkv[..., 16:24]" in code and "rows_1 = x[:, :, 3:8]" in code
    rows = compare(net, ["reference", "torch", "cupy", "onnx"], weights=random_weights(net, seed=5), batch=2, seed=5)
    for row in rows:
        for backend, diff in row.diffs.items():
            assert diff is not None and diff[1] < 1e-5, (row.layer, backend, diff)
    with pytest.raises(AlexDSLError, match="axis=2 is out of range"):
        alexdsl.parse("network T\ninput x: 16x8\nparts: x -> chunk(2, axis=2)\n", "t.adsl")


@pytest.mark.parametrize(("op", "attrs", "message"), [
    ("permute", {"dims": (0, 0, 1)}, "not a permutation"),
    ("reshape", {"shape": (5, 5)}, "cannot reshape 8x8x6 .384 elements. to 5x5"),
    ("roll", {"shifts": (1,), "axes": (0, 1)}, "1 shifts for 2 axes"),
    ("flatten", {"start": 2, "end": 0}, "start .2. comes after its end"),
    ("select", {"index": 0, "axis": 3}, "axis=3 is out of range"),
])
def test_shape_rules_name_the_argument_at_fault(op: str, attrs: dict, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        lookup(op).infer(attrs, [(8, 8, 6)])


def test_matmul_checks_the_inner_sizes_and_broadcasts_the_leading_axes() -> None:
    matmul = lookup("matmul")
    assert matmul.infer({}, [(4, 16, 5), (5, 7)]) == (4, 16, 7)
    assert matmul.infer({}, [(1, 16, 5), (3, 5, 7)]) == (3, 16, 7)
    with pytest.raises(ShapeError, match="a's last axis .5. is not b's second to last .6."):
        matmul.infer({}, [(4, 16, 5), (6, 7)])
    with pytest.raises(ShapeError, match="rank 1"):
        matmul.infer({}, [(5,), (5, 7)])


def test_token_ops_import_back_from_onnx(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from alexdsl.interop.onnx import export_onnx
    from alexdsl.interop.onnx_import import import_onnx_source

    net = _windows(shifts=(0, 0))  # a roll by nothing is an Identity (a roll's Slices and Concat are not imported)
    weights = random_weights(net, seed=6)
    path = tmp_path / "windows.onnx"
    path.write_bytes(export_onnx(net, weights).SerializeToString())
    imported = import_onnx_source(path, readable=False)
    ops = {layer.name: layer.op for layer in imported.network.layers()}
    assert {ops[name] for name in ("q", "k", "kt", "scores", "attn", "v", "out")} == {
        "linear", "permute", "matmul", "softmax", "select"}
    assert imported.network.layer("attn").attrs["axis"] == -1
    assert list(imported.weights) == list(net.state_keys())


@pytest.mark.parametrize("opset", [13, 17])
def test_torchs_export_of_a_token_block_imports_as_linear_layernorm_and_softmax(opset: int, tmp_path) -> None:
    """torch's exporter on nn.Linear, nn.LayerNorm and softmax over the last axis of (N, L, E): the ops come back
    with torch's keys and compute what torch computes."""
    pytest.importorskip("onnx")
    from onnx_models import export as torch_export

    from alexdsl.interop.onnx_import import import_onnx_source

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(8, eps=1e-6)
            self.proj = torch.nn.Linear(8, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.proj(self.norm(x)), -1)

    module = Block().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    path = torch_export(module, (1, 5, 8), tmp_path / f"block{opset}.onnx", opset)
    imported = import_onnx_source(path, readable=False)
    layers = [layer for layer in imported.network.layers() if not layer.is_input]
    assert [(layer.op, layer.attrs.get("axis")) for layer in layers] == [
        ("layernorm", -1), ("linear", None), ("softmax", -1)]
    assert sorted(imported.weights) == sorted(module.state_dict())
    x = torch.randn(2, 5, 8)
    from alexdsl.backends.executor import compile as compile_executor

    got = compile_executor(imported.network, imported.weights, device="cpu")(x.numpy())
    np.testing.assert_allclose(np.asarray(got), module(x).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("shape", [(2, 197, 768), (1, 7, 7, 5), (3, 1)])
def test_layer_norm_last_matches_torch_in_place_and_on_a_view(shape: tuple[int, ...], dtype: str) -> None:
    """The executor's last-axis layer norm against torch's in float64, within twice torch's own error in ``dtype``
    (float16: in float32, plus the rounding to float16): into a new array, in place, into a strided ``out`` and
    from a strided input; rows of very different offsets and scales."""
    torch = pytest.importorskip("torch", reason="pip install torch (the torch extra) to compare with F.layer_norm")
    from alexdsl.backends.executor.tokens import layer_norm_last

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 100, shape[:-1] + (1,)) + rng.uniform(-50, 50)).astype(dtype)
    weight, bias = (rng.standard_normal(shape[-1]).astype(dtype) for _ in range(2))

    def torch_norm(kind: object) -> np.ndarray:
        tx, tw, tb = (torch.from_numpy(a).to(kind) for a in (x, weight, bias))
        return torch.nn.functional.layer_norm(tx, shape[-1:], tw, tb, 1e-6).double().numpy()

    want = torch_norm(torch.float64)
    scale = np.abs(want).max()
    own = np.abs(torch_norm(torch.float32 if dtype == "float16" else getattr(torch, dtype)) - want).max()
    # float16: plus the rounding to float16; float64 (torch's own error is 0, it is the reference): plus float64
    # rounding amplified by the rows' offset over their spread (up to 5000 here)
    allowed = 2 * own + {"float16": 1e-3, "float64": 1e-12}.get(dtype, 0.0) * scale

    def error(got: np.ndarray) -> float:
        return float(np.abs(got.astype(np.float64) - want).max())

    assert error(layer_norm_last(x, weight, bias, 1e-6)) <= allowed
    inplace = x.copy()
    assert layer_norm_last(inplace, weight, bias, 1e-6, out=inplace) is inplace
    assert error(inplace) <= allowed
    strided = np.ascontiguousarray(np.swapaxes(x, 0, -2)).swapaxes(0, -2)  # the same values, not C-contiguous
    assert error(layer_norm_last(strided, weight, bias, 1e-6)) <= allowed
    into = np.empty_like(strided)  # strided too
    assert layer_norm_last(x, weight, bias, 1e-6, out=into) is into and error(into) <= allowed
