"""benchmarks/zoo_accuracy.py's measure, without timm or torchvision: a small squeeze-excitation network.

The benchmark compares each side's float32 output with the torch model in float64; here the network is written
in torch.nn as timm's EfficientNet blocks are (SiLU, a sigmoid gate), so that what the benchmark reports for the
zoo is checked on a model CI can build.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install -e .[torch]")
pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install -e .[onnx]")
pytest.importorskip("onnx", reason="needs onnx: pip install -e .[onnx]")
import onnx_models  # noqa: E402 - needs torch
from torch import nn  # noqa: E402

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo_accuracy.py"


def _benchmark():  # noqa: ANN202 - the module loaded from its file
    spec = importlib.util.spec_from_file_location("zoo_accuracy", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SqueezeExcitation(nn.Module):
    """A conv with SiLU, then its channels scaled by a sigmoid gate computed from their means, then a linear head."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.reduce = nn.Conv2d(channels, 2, 1)
        self.expand = nn.Conv2d(2, channels, 1)
        self.head = nn.Linear(channels, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.silu(self.conv(x))
        gate = torch.sigmoid(self.expand(nn.functional.silu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.head((x * gate).mean((2, 3)))


def test_relative_error_is_the_largest_difference_over_the_largest_truth() -> None:
    truth = np.array([[1.0, -4.0], [2.0, 0.5]])
    got = np.array([[1.5, -4.0], [2.0, 0.25]], dtype=np.float32)
    assert _benchmark().relative_error(got, truth) == 0.125


def test_float32_errors_against_the_model_in_float64(tmp_path: Path) -> None:
    model = onnx_models.randomise(SqueezeExcitation()).eval()
    benchmark = _benchmark()
    row = benchmark.float32_errors(model, 16, tmp_path, "se", images=3)
    assert row["model"] == "se" and row["size"] == 16
    for side in ("executor", "ort", "torch"):  # float32 rounding: above 0, far below a wrong kernel's error
        assert 0 < row[f"{side}_error"] < 1e-5, (side, row)
    assert row["executor_over_ort"] == row["executor_error"] / row["ort_error"]
    assert len(row["image_ratios"]) == 3 and all(0 < ratio < float("inf") for ratio in row["image_ratios"])
    assert benchmark.geometric_mean([0.5, 2.0, 8.0]) == pytest.approx(2.0)
