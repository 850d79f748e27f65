"""`alexdsl import onnx` gives the same source for one model whichever torch exporter wrote it, at any opset.

A small ResNet (a stem, two stages of three torchvision BasicBlocks whose first downsamples, torchvision's
functional average pool, a classifier) is exported by torch's TorchScript exporter at opsets 11, 13, 17, 20
and 21 (21 through onnx's version converter) with its batchnorms kept, and once at 17 with them folded,
torch's eval default. The dynamo exporter (``torch.onnx.export(dynamo=True)``) folds the batchnorms too,
so its exports at opsets 18, 20 and 21 are compared with the folded TorchScript export: the same source
after the header comment, the same weight keys and values. The dynamo exporter needs onnxscript (the ``dev``
extra); without it those cases skip, naming it.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from functools import cache

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
import onnx_models  # noqa: E402 - needs torch
from torch import nn  # noqa: E402

from alexdsl.interop.onnx_import import ImportedModel, import_onnx_source  # noqa: E402

INPUT_SHAPE = (1, 3, 16, 16)
TORCHSCRIPT_OPSETS = (11, 13, 17, 20, 21)
DYNAMO_OPSETS = (18, 20, 21)
NO_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is None


class _SmallResNet(nn.Module):
    """conv1/bn1/relu; ``layer1`` and ``layer2``: three BasicBlocks each, the first strided with a downsample;
    pooled as torchvision's ResNet pools (``adaptive_avg_pool2d`` outside any module); ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        block = onnx_models.BasicBlock
        self.layer1 = nn.Sequential(block(8, 16, stride=2), block(16, 16), block(16, 16))
        self.layer2 = nn.Sequential(block(16, 32, stride=2), block(32, 32), block(32, 32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    """``imported(exporter, opset, fold)``: the model exported so, imported once."""
    folder = tmp_path_factory.mktemp("exporters")
    model = onnx_models.randomise(_SmallResNet()).eval()

    @cache
    def get(exporter: str, opset: int, fold: bool) -> ImportedModel:
        path = folder / f"{exporter}-{opset}-{fold}.onnx"
        if exporter == "torchscript":
            onnx_models.export(model, INPUT_SHAPE, path, opset, fold_batchnorm=fold)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.zeros(INPUT_SHAPE),), str(path), dynamo=True, opset_version=opset,
                                  input_names=["data"], output_names=["output"], verbose=False)
        return import_onnx_source(path)

    yield get
    get.cache_clear()


def _body(source: str) -> list[str]:
    """The source after its header comment and network line (which name the file)."""
    return [line for line in source.splitlines() if not line.startswith(("#", "network "))]


def _same_import(got: ImportedModel, want: ImportedModel) -> None:
    assert _body(got.source) == _body(want.source)
    assert list(got.weights) == list(want.weights)
    for key, array in want.weights.items():
        np.testing.assert_allclose(got.weights[key], array, rtol=1e-6, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("opset", [o for o in TORCHSCRIPT_OPSETS if o != 17])
def test_the_torchscript_exporter_at_any_opset_gives_the_same_source(opset: int, imported) -> None:
    _same_import(imported("torchscript", opset, False), imported("torchscript", 17, False))


def test_the_source_has_the_stage_as_one_repeat_and_the_modules_names(imported) -> None:
    source = imported("torchscript", 17, False).source
    stages = re.findall(r"^(layer\d): +repeat 3 (\w+)\((\d+)\), then (\w+)\((\d+)\)$", source, re.MULTILINE)
    assert [(label, width, then) for label, _, width, _, then in stages] == [("layer1", "16", "16"),
                                                                             ("layer2", "32", "32")]
    assert len({(first, then) for _, first, _, then, _ in stages}) == 1 and "  add:   add(in) | relu" in source
    assert "global_avgpool" in source and "node_" not in source


@pytest.mark.skipif(NO_ONNXSCRIPT, reason="the dynamo exporter needs onnxscript: pip install onnxscript")
@pytest.mark.parametrize("opset", DYNAMO_OPSETS)
def test_the_dynamo_exporter_gives_the_torchscript_exporters_source(opset: int, imported) -> None:
    """Both fold the batchnorms into the convs (the dynamo exporter always does, in eval mode)."""
    _same_import(imported("dynamo", opset, True), imported("torchscript", 17, True))
