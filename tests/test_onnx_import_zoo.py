"""`alexdsl import onnx` on the constructs timm's convolutional zoo exports (benchmarks/timm_import.py; no timm here).

Each module below is a small torch.nn model written the way a timm architecture writes the construct: SKNet's
stacked branches (``torch.stack``: Unsqueeze and Concat, a sum over the branch axis), TResNet's anti-aliasing
(a reflecting ``F.pad`` before a fixed blur), RepViT's distillation head (``(head + head_dist) / 2``),
EfficientViT's ``.float()`` (a Cast that changes nothing), and MambaOut's channels-last gated block (Split and
Concat of the last axis, a depthwise conv in between, a mean over height and width in the head). Each is exported
by torch's TorchScript exporter at opset 17, imported, and run on the NumPy executor against onnxruntime on the
same file and against torch; the readable source must build the same network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install -e .[torch]")
onnxruntime = pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install -e .[onnx]")
pytest.importorskip("onnx", reason="needs onnx: pip install -e .[onnx]")
import onnx_models  # noqa: E402 - needs torch
import torch.nn.functional as F  # noqa: E402, N812 - torch's own name
from torch import nn  # noqa: E402

import alexdsl  # noqa: E402
from alexdsl.backends.executor import compile as compile_executor  # noqa: E402
from alexdsl.errors import AlexDSLError  # noqa: E402
from alexdsl.interop.onnx_import import import_onnx_source  # noqa: E402

RELATIVE_TOLERANCE = 1e-5  # of the largest output magnitude


class SelectiveKernel(nn.Module):
    """SKNet's selective kernel: two branches stacked on a new axis, their sum pooled to attention over them."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1)
        self.paths = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1),
                                    nn.Conv2d(channels, channels, 3, padding=2, dilation=2)])
        self.fc_reduce = nn.Conv2d(channels, 4, 1)
        self.fc_select = nn.Conv2d(4, 2 * channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        branches = torch.stack([F.relu(path(x)) for path in self.paths], dim=1)  # N, 2, C, H, W
        attention = self.fc_select(F.relu(self.fc_reduce(branches.sum(1).mean((2, 3), keepdim=True))))
        attention = attention.view(x.shape[0], 2, -1, 1, 1).softmax(dim=1)
        return (branches * attention).sum(1)


class BlurPool(nn.Module):
    """TResNet's anti-aliased downsampling: a reflecting pad, then a fixed depthwise blur of stride 2; and an
    edge-repeating pad."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1)
        blur = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("filt", (blur[:, None] * blur[None, :] / 16).expand(channels, 1, 3, 3).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(self.conv1(x), (1, 1, 1, 1), mode="reflect")
        x = F.conv2d(x, self.filt, stride=2, groups=x.shape[1])
        return F.pad(x, (0, 2, 1, 0), mode="replicate")


class DistilledHead(nn.Module):
    """RepViT's head: a classifier and a distillation classifier, averaged."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)
        self.head_dist = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).mean((2, 3))
        return (self.head(x) + self.head_dist(x)) / 2


class FloatCast(nn.Module):
    """EfficientViT's attention casts to float32 (autocast off): ``.float()`` of a float32 value."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)).float())


class HalfCast(nn.Module):
    """A round trip through float16: a Cast that changes the dtype, which alexdsl refuses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).half().float()


class GatedBlock(nn.Module):
    """MambaOut's gated CNN block and head, channels-last: norm, fc1 split into gate, identity and convolved
    channels, a depthwise conv channels-first in between, gate * cat(identity, conv), fc2, a residual; then the
    mean over height and width, a layer norm and the classifier."""

    def __init__(self, channels: int = 8, hidden: int = 12, conv_channels: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.norm = nn.LayerNorm(channels)
        self.split = (hidden, hidden - conv_channels, conv_channels)
        self.fc1 = nn.Linear(channels, 2 * hidden)
        self.conv = nn.Conv2d(conv_channels, conv_channels, 7, padding=3, groups=conv_channels)
        self.fc2 = nn.Linear(hidden, channels)
        self.head_norm = nn.LayerNorm(channels)
        self.fc = nn.Linear(channels, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)
        gate, identity, convolved = torch.split(self.fc1(self.norm(x)), self.split, dim=-1)
        convolved = self.conv(convolved.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.fc2(F.gelu(gate) * torch.cat((identity, convolved), dim=-1))
        return self.fc(self.head_norm(x.mean((1, 2))))


MODULES = {"selective_kernel": SelectiveKernel, "blur_pool": BlurPool, "distilled_head": DistilledHead,
           "float_cast": FloatCast, "gated_block": GatedBlock}
SHAPE = (2, 3, 8, 8)


def _export(name: str, module: nn.Module, folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """The module exported at opset 17 with a dynamic batch, a seeded input, and torch's output for it."""
    module = module.eval()
    onnx_models.randomise(module)
    path = onnx_models.export(module, (1, *SHAPE[1:]), folder / f"{name}.onnx", 17)
    data = onnx_models.sample_input(SHAPE)
    with torch.no_grad():
        expected = module(torch.from_numpy(data)).numpy()
    return path, data, expected


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / np.abs(want).max())


def _run(network: alexdsl.Network, weights: dict[str, np.ndarray], data: np.ndarray) -> np.ndarray:
    out = compile_executor(network, weights, device="cpu")(data)
    return np.asarray(out[0] if isinstance(out, tuple) else out)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_import_agrees_with_onnxruntime_and_torch(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    path, data, expected = _export(name, MODULES[name](), tmp_path)
    ort = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = ort.run(None, {ort.get_inputs()[0].name: data})[0]
    imported = import_onnx_source(path)
    got = _run(imported.network, imported.weights, data)
    assert _relative(got, want) <= RELATIVE_TOLERANCE
    assert _relative(got, expected) <= RELATIVE_TOLERANCE
    again = alexdsl.parse(imported.source, "imported.adsl")  # the readable source builds the same network
    assert again.shapes == imported.network.shapes
    assert _relative(_run(again, imported.weights, data), want) <= RELATIVE_TOLERANCE


def test_each_construct_imports_as_a_person_writes_it(tmp_path: Path) -> None:
    """The ops the import chose: the source says what the model does, not how ONNX spelled it."""
    torch.manual_seed(0)
    sources = {name: import_onnx_source(_export(name, MODULES[name](), tmp_path)[0]).source for name in MODULES}
    assert "mode=reflect" in sources["blur_pool"] and "mode=replicate" in sources["blur_pool"]
    assert "reshape(1x8x8x8)" in sources["selective_kernel"] and "sum(0)" in sources["selective_kernel"]
    assert "scale" in sources["distilled_head"]
    assert "Cast" not in sources["float_cast"] and sources["float_cast"].count("conv(") == 2
    gated = sources["gated_block"]
    assert "channel_chunk" in gated or "channel_slice" in gated
    assert "permute" not in gated and "global_avgpool" in gated


def test_a_cast_that_changes_the_dtype_is_refused_naming_the_node_and_type(tmp_path: Path) -> None:
    path = onnx_models.export(HalfCast().eval(), (1, *SHAPE[1:]), tmp_path / "half.onnx", 17)
    with pytest.raises(AlexDSLError) as raised:
        import_onnx_source(path)
    message = str(raised.value)
    assert "(Cast): a Cast to ONNX type 10 changes the dtype" in message
    assert "Traceback" not in message
