"""Small torch modules, their ONNX exports, and a large generated ONNX model: what `alexdsl import onnx` is tested on.

Each module uses torchvision's attribute names (``features.0``, ``layer1.0.conv1``, ``bn1``, ``fc``), so an
importer that keys weights like the generated torch module's state_dict can be checked key by key. Weights
are seeded and batchnorm statistics random, so an import that drops, reorders or misreads a layer changes
the output.

    module = build("residual")                                  # seeded, eval mode
    path = export(module, INPUT_SHAPES["residual"], tmp_path / "residual.onnx")
    folded = export(module, INPUT_SHAPES["residual"], tmp_path / "folded.onnx", fold_batchnorm=True)

Export modes of torch's TorchScript exporter (``dynamo=False``; the dynamo exporter needs onnxscript):

* ``fold_batchnorm=False`` exports with ``training=TrainingMode.PRESERVE``: every BatchNormalization node
  stays, and initializers are named after the torch parameters (``layer1.0.bn1.running_mean``).
* ``fold_batchnorm=True`` is torch's default for a module in eval mode: each batchnorm is folded into the
  conv before it, whose weight and bias become ``onnx::Conv_<n>`` initializers.
* Passing ``do_constant_folding=False`` also keeps batchnorms, and keeps every parameter's name: a Linear
  on a 4-d input then exports ``Transpose(pwconv1.weight)`` where constant folding writes ``onnx::MatMul_<n>``.

Either way the exporter stores equal tensors once: a batchnorm with default statistics (mean 0, var 1,
weight 1, bias 0) exports ``running_var = Identity(weight)``. ``build`` randomises statistics so this
happens only where a test asks for it (``MODULES[name][0]().eval()`` keeps torch's initialisation).

Built with onnx.helper alone (no torch): ``residual_chain(units)``, a valid model of 4 * units nodes for the
import benchmark, and ``zoo_style_alexnet()``, shaped like the ONNX model zoo's Caffe2 conversions (LRN,
unnamed nodes, initializers listed as inputs).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

try:
    import torch
    import torch.nn.functional as F  # noqa: N812 - torch's own name
    from torch import nn
except ImportError:  # the generator below needs only onnx; the torch modules need torch
    torch = None
    nn = None

import onnx
from onnx import TensorProto, helper, numpy_helper

if nn is not None:

    def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
                activation: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
        """torchvision's Conv2dNormActivation: ``.0`` conv (no bias), ``.1`` batchnorm, ``.2`` activation."""
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels)]
        if activation is not None:
            layers.append(activation(inplace=True))
        return nn.Sequential(*layers)

    class ConvBnRelu(nn.Module):
        """A VGG-like ``features`` stack: conv/bn/relu twice, the second conv strided and with a bias."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x)

    class BasicBlock(nn.Module):
        """torchvision.models.resnet.BasicBlock: two 3x3 convs and a shortcut (identity or ``downsample``)."""

        def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.downsample = None
            if stride != 1 or in_channels != out_channels:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    class Residual(nn.Module):
        """A ResNet stem (conv1, bn1, relu) and ``layer1.0``: a BasicBlock, with identity or downsample shortcut."""

        def __init__(self, downsample: bool = False) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = nn.Sequential(BasicBlock(8, 16, stride=2) if downsample else BasicBlock(8, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer1(self.relu(self.bn1(self.conv1(x))))

    class SqueezeExcitation(nn.Module):
        """torchvision.ops.SqueezeExcitation; ``mean=True`` pools with ``x.mean((2, 3), keepdim=True)`` instead."""

        def __init__(self, channels: int, squeeze: int, scale_activation: type[nn.Module] = nn.Sigmoid,
                     mean: bool = False) -> None:
            super().__init__()
            self.mean = mean
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(channels, squeeze, 1)
            self.fc2 = nn.Conv2d(squeeze, channels, 1)
            self.activation = nn.ReLU()
            self.scale_activation = scale_activation()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scale = x.mean((2, 3), keepdim=True) if self.mean else self.avgpool(x)
            scale = self.scale_activation(self.fc2(self.activation(self.fc1(scale))))
            return scale * x

    class SqueezeNet(nn.Module):
        """A conv/bn/relu ``features.0`` and a squeeze-excitation block ``se``."""

        def __init__(self, scale_activation: type[nn.Module] = nn.Sigmoid, mean: bool = False) -> None:
            super().__init__()
            self.features = nn.Sequential(conv_bn(3, 16, 3))
            self.se = SqueezeExcitation(16, 4, scale_activation, mean)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.se(self.features(x))

    class InvertedResidual(nn.Module):
        """torchvision.models.mobilenetv2.InvertedResidual: expand 1x1, depthwise 3x3, project 1x1, with relu6."""

        def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
            super().__init__()
            hidden = in_channels * expand_ratio
            self.use_res_connect = stride == 1 and in_channels == out_channels
            self.conv = nn.Sequential(
                conv_bn(in_channels, hidden, 1, activation=nn.ReLU6),
                conv_bn(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
                nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetBlocks(nn.Module):
        """MobileNetV2's ``features``: a relu6 stem, a residual inverted block, then a strided one."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                conv_bn(3, 8, 3, activation=nn.ReLU6), InvertedResidual(8, 8, 1, 4), InvertedResidual(8, 16, 2, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x)

    class BasicConv2d(nn.Module):
        """torchvision.models.googlenet.BasicConv2d: conv (no bias), bn with eps 0.001, functional relu."""

        def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=(kernel - 1) // 2, bias=False)
            self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(self.bn(self.conv(x)), inplace=True)

    class Inception(nn.Module):
        """torchvision.models.googlenet.Inception: four branches concatenated, a ceil-mode max pool in the last."""

        def __init__(self, in_channels: int = 8) -> None:
            super().__init__()
            self.branch1 = BasicConv2d(in_channels, 4, 1)
            self.branch2 = nn.Sequential(BasicConv2d(in_channels, 4, 1), BasicConv2d(4, 6, 3))
            self.branch3 = nn.Sequential(BasicConv2d(in_channels, 2, 1), BasicConv2d(2, 3, 3))
            self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(in_channels, 3, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)

    class InceptionNet(nn.Module):
        """A GoogLeNet-like stem (``conv1``, ceil-mode ``maxpool1``) and ``inception3a``."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = BasicConv2d(3, 8, 3)
            self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.inception3a = Inception(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inception3a(self.maxpool1(self.conv1(x)))

    class Pools(nn.Module):
        """Pools whose output size or divisor differ from the plain ones: ceil mode, and count_include_pad False."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3)
            self.maxpool = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.avgpool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
            self.avgpool_ceil = nn.AvgPool2d(2, 2, ceil_mode=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.avgpool_ceil(self.avgpool(self.maxpool(F.relu(self.conv1(x)))))

    class GemmFlatten(nn.Module):
        """An AlexNet/VGG-like head: ``torch.flatten(x, 1)`` then ``classifier`` (dropout, linear, relu, linear)."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(inplace=True))
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Linear(4 * 4 * 4, 32), nn.ReLU(inplace=True), nn.Linear(32, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.features(x), 1))

    class GemmView(nn.Module):
        """An older head: ``x.view(x.size(0), -1)`` (Shape, Gather, Unsqueeze, Concat, Reshape) then ``fc``."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.fc = nn.Linear(4 * 4 * 4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu(self.conv1(x))
            return self.fc(x.view(x.size(0), -1))

    def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
        """torchvision.models.shufflenetv2.channel_shuffle, as written there."""
        batchsize, num_channels, height, width = x.size()
        channels_per_group = num_channels // groups
        x = x.view(batchsize, groups, channels_per_group, height, width)
        x = torch.transpose(x, 1, 2).contiguous()
        return x.view(batchsize, num_channels, height, width)

    class ShuffleBlock(nn.Module):
        """torchvision's ShuffleNetV2 InvertedResidual, stride 1: chunk in two, transform ``branch2``, shuffle."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            half = channels // 2
            self.branch2 = nn.Sequential(
                nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False), nn.BatchNorm2d(half),
                nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x1, x2 = x.chunk(2, dim=1)
            return channel_shuffle(torch.cat((x1, self.branch2(x2)), dim=1), 2)

    class ChannelShuffle(nn.Module):
        """A ShuffleNetV2 stem ``conv1`` (conv, bn, relu) and ``stage2.0``."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = conv_bn(3, 8, 3)
            self.stage2 = nn.Sequential(ShuffleBlock(8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.stage2(self.conv1(x))

    class Activations(nn.Module):
        """Convs each followed by one of hardswish, silu, gelu and tanh-approximated gelu."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.Hardswish(),
                nn.Conv2d(8, 8, 1), nn.SiLU(),
                nn.Conv2d(8, 8, 1), nn.GELU(),
                nn.Conv2d(8, 8, 1), nn.GELU(approximate="tanh"))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x)

    class SoftmaxHead(nn.Module):
        """A classifier that ends in softmax: dropout (gone from an eval export), linear, softmax over classes."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(8 * 2 * 2, 10), nn.Softmax(dim=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.features(x), 1))

    class SplitSoftmax(nn.Module):
        """``torch.split`` into unequal channel groups, a softmax over channels of one, concatenated back."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            attention, rest = torch.split(self.conv1(x), [3, 5], dim=1)
            return torch.cat([attention.softmax(dim=1), rest], 1)

    class LocalResponseNorm(nn.Module):
        """AlexNet's conv, relu, local response norm. Torch exports LRN decomposed (Pad, AveragePool, If, Pow)."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x)

    class LayerNorm2d(nn.Module):
        """A ConvNeXt block's channel-last tail: permute, layer norm, linear, gelu, linear, permute back."""

        def __init__(self, channels: int = 8) -> None:
            super().__init__()
            self.dwconv = nn.Conv2d(3, channels, 3, padding=1)
            self.norm = nn.LayerNorm(channels, eps=1e-6)
            self.pwconv1 = nn.Linear(channels, 4 * channels)
            self.act = nn.GELU()
            self.pwconv2 = nn.Linear(4 * channels, channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.dwconv(x).permute(0, 2, 3, 1)
            x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
            return x.permute(0, 3, 1, 2)

    MODULES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
        "conv_bn_relu": (ConvBnRelu, (1, 3, 8, 8)),
        "residual": (Residual, (1, 3, 8, 8)),
        "residual_downsample": (lambda: Residual(downsample=True), (1, 3, 8, 8)),
        "squeeze_excitation": (SqueezeNet, (1, 3, 8, 8)),
        "squeeze_excitation_hard": (lambda: SqueezeNet(nn.Hardsigmoid), (1, 3, 8, 8)),
        "squeeze_excitation_mean": (lambda: SqueezeNet(mean=True), (1, 3, 8, 8)),
        "depthwise": (MobileNetBlocks, (1, 3, 8, 8)),
        "inception": (InceptionNet, (1, 3, 10, 10)),  # ceil mode takes a partial last window
        "pools": (Pools, (1, 3, 12, 12)),  # both ceil-mode pools take a partial last window
        "gemm_flatten": (GemmFlatten, (1, 3, 8, 8)),
        "gemm_view": (GemmView, (1, 3, 8, 8)),
        "channel_shuffle": (ChannelShuffle, (1, 3, 8, 8)),
        "activations": (Activations, (1, 3, 8, 8)),
        "softmax_head": (SoftmaxHead, (1, 3, 8, 8)),
        "split_softmax": (SplitSoftmax, (1, 3, 8, 8)),
        "lrn_torch": (LocalResponseNorm, (1, 3, 8, 8)),
        "layer_norm": (LayerNorm2d, (1, 3, 8, 8)),
    }
    """Module name -> (constructor, input shape for tracing and testing)."""

    INPUT_SHAPES: dict[str, tuple[int, ...]] = {name: shape for name, (_, shape) in MODULES.items()}


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded non-trivial weights: random batchnorm statistics and affine terms, non-zero biases."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            kind = name.rsplit(".", 1)[-1]
            if not tensor.is_floating_point():  # num_batches_tracked
                continue
            if kind == "running_var":
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif kind in ("bias", "running_mean"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            elif tensor.dim() == 1:  # batchnorm and layernorm weight
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            else:
                fan_in = math.prod(tensor.shape[1:])
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * math.sqrt(2.0 / fan_in))
    return module


# torchvision models the importer is checked against: constructor arguments for inference graphs (no
# auxiliary heads). The four, then the rest benchmarks/torchvision_import.py also measures.
TORCHVISION: dict[str, dict[str, object]] = {
    "resnet18": {}, "mobilenet_v2": {}, "squeezenet1_1": {}, "googlenet": {"aux_logits": False, "init_weights": True},
}
TORCHVISION_MORE: dict[str, dict[str, object]] = {
    "convnext_tiny": {}, "efficientnet_b0": {}, "mobilenet_v3_large": {}, "shufflenet_v2_x1_0": {},
    "regnet_y_400mf": {}, "resnext50_32x4d": {}, "densenet121": {},
    "inception_v3": {"aux_logits": False, "init_weights": True}, "vgg16": {}, "alexnet": {},
}


def build(name: str, seed: int = 0) -> nn.Module:
    """``MODULES[name]`` with seeded random weights (see ``randomise``), in eval mode."""
    return randomise(MODULES[name][0](), seed).eval()


def sample_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A seeded standard-normal float32 input."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def assert_import_keeps_state(module: nn.Module, path: Path) -> None:
    """The import of ``path`` (``module``'s export) holds ``module``'s state_dict: the same keys, equal values."""
    from alexdsl.interop.onnx_import import import_onnx_source

    weights = import_onnx_source(path).weights
    state = {key: value.numpy() for key, value in module.state_dict().items()}
    assert sorted(weights) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)


def assert_import_runs_as_onnxruntime(path: Path, x: np.ndarray, relative: float) -> None:
    """The executor on the import of ``path`` computes what onnxruntime computes on ``path`` itself, within
    ``relative`` of the largest output."""
    import onnxruntime

    from alexdsl.backends.executor import compile as compile_executor
    from alexdsl.interop.onnx_import import import_onnx_source

    imported = import_onnx_source(path)
    expected = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    got = np.asarray(compile_executor(imported.network, imported.weights, device="cpu")(x))
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= relative * float(np.abs(expected).max())


def export(module: nn.Module, input_shape: tuple[int, ...], path: str | Path, opset: int = 17,
           fold_batchnorm: bool = False, **kw: object) -> Path:
    """Export ``module`` (in eval mode) with torch's TorchScript exporter to ``path``; returns the path.

    The input is named ``data`` and its batch axis is dynamic. ``fold_batchnorm=False`` keeps
    BatchNormalization nodes and torch's parameter names; True is torch's eval-mode default, which folds
    each batchnorm into the conv before it. Other keywords go to ``torch.onnx.export``. Opsets above 20
    (the TorchScript exporter's maximum) are exported at 20 and converted with onnx.version_converter.
    """
    path = Path(path)
    module.eval()
    options: dict[str, object] = {} if fold_batchnorm else {"training": torch.onnx.TrainingMode.PRESERVE}
    options.update(kw)
    exported_opset = min(opset, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(module, (torch.zeros(input_shape),), str(path), dynamo=False,
                          opset_version=exported_opset, input_names=["data"], output_names=["output"],
                          dynamic_axes={"data": {0: "batch"}, "output": {0: "batch"}}, **options)
    if opset != exported_opset:
        onnx.save(onnx.version_converter.convert_version(onnx.load(path), opset), path)
    return path


def residual_chain(units: int = 250, channels: int = 8, size: int = 8, seed: int = 0) -> onnx.ModelProto:
    """A valid ONNX model of ``units`` residual units (Conv, BatchNormalization, Relu, Add): 4 * units nodes.

    Built with onnx.helper alone. Input ``data`` is 1 x channels x size x size; weights are seeded,
    He-scaled and named like a torch state_dict (``units.<i>.conv.weight``, ``units.<i>.bn.running_mean``).
    Batchnorm scales of about 2 / units keep the sum of all residual branches O(1).

    >>> model = residual_chain(3)
    >>> len(model.graph.node), [node.op_type for node in model.graph.node[:4]]
    (12, ['Conv', 'BatchNormalization', 'Relu', 'Add'])
    >>> onnx.checker.check_model(model, full_check=True)
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []

    def weight(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    branch_scale = min(1.0, 2.0 / units)
    previous = "data"
    for index in range(units):
        prefix = f"units.{index}"
        conv_weight = rng.standard_normal((channels, channels, 3, 3)) * math.sqrt(2.0 / (channels * 9))
        bn_inputs = [
            weight(f"{prefix}.conv.weight", conv_weight),
            weight(f"{prefix}.bn.weight", rng.uniform(0.5, 1.5, channels) * branch_scale),
            weight(f"{prefix}.bn.bias", 0.1 * rng.standard_normal(channels)),
            weight(f"{prefix}.bn.running_mean", 0.1 * rng.standard_normal(channels)),
            weight(f"{prefix}.bn.running_var", rng.uniform(0.5, 1.5, channels))]
        conv, bn, relu, add = (f"/{prefix}/{op}" for op in ("conv", "bn", "relu", "add"))
        nodes += [
            helper.make_node("Conv", [previous, bn_inputs[0]], [conv], name=conv,
                             kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
            helper.make_node("BatchNormalization", [conv, *bn_inputs[1:]], [bn], name=bn, epsilon=1e-5),
            helper.make_node("Relu", [bn], [relu], name=relu),
            helper.make_node("Add", [relu, previous], [add], name=add)]
        previous = add
    nodes[-1].output[0] = "output"
    shape = [1, channels, size, size]
    graph = helper.make_graph(
        nodes, "residual_chain", [helper.make_tensor_value_info("data", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                             producer_name="tests/onnx_models.py")


def zoo_style_alexnet(opset: int = 9, seed: int = 0) -> onnx.ModelProto:
    """A small AlexNet in the style of the ONNX model zoo's Caffe2 conversions (bvlc_alexnet, opset 9).

    What torch never writes: unnamed nodes, ``<layer>_w_0`` / ``<layer>_b_0`` initializers that are also
    listed as graph inputs, an LRN node, a Reshape to a constant ``[1, -1]`` shape initializer, and a
    Dropout node left in the inference graph. Input ``data_0`` is 1x3x8x8, output ``prob_1`` is 1x10.

    >>> model = zoo_style_alexnet()
    >>> [node.op_type for node in model.graph.node]
    ['Conv', 'Relu', 'LRN', 'MaxPool', 'Reshape', 'Gemm', 'Dropout', 'Softmax']
    >>> onnx.checker.check_model(model, full_check=True)
    """
    rng = np.random.default_rng(seed)
    weights = {
        "conv1_w_0": rng.standard_normal((8, 3, 3, 3)) * math.sqrt(2.0 / 27),
        "conv1_b_0": 0.1 * rng.standard_normal(8),
        "fc6_w_0": rng.standard_normal((10, 72)) * math.sqrt(2.0 / 72),
        "fc6_b_0": 0.1 * rng.standard_normal(10)}
    initializers = [numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([1, -1], np.int64), "OC2_DUMMY_1"))
    nodes = [
        helper.make_node("Conv", ["data_0", "conv1_w_0", "conv1_b_0"], ["conv1_1"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["conv1_1"], ["conv1_2"]),
        helper.make_node("LRN", ["conv1_2"], ["norm1_1"], size=5, alpha=1e-4, beta=0.75, bias=1.0),
        helper.make_node("MaxPool", ["norm1_1"], ["pool1_1"], kernel_shape=[3, 3], pads=[0, 0, 0, 0], strides=[2, 2]),
        helper.make_node("Reshape", ["pool1_1", "OC2_DUMMY_1"], ["OC2_DUMMY_0"]),
        helper.make_node("Gemm", ["OC2_DUMMY_0", "fc6_w_0", "fc6_b_0"], ["fc6_1"], transB=1),
        helper.make_node("Dropout", ["fc6_1"], ["fc6_2", "_fc6_mask_1"], ratio=0.5),
        helper.make_node("Softmax", ["fc6_2"], ["prob_1"], axis=1)]
    inputs = [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, 8, 8])]
    inputs += [helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims) for tensor in initializers]
    graph = helper.make_graph(nodes, "alexnet", inputs,
                              [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, [1, 10])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=4,
                             producer_name="onnx-caffe2")
