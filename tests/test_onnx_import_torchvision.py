"""`alexdsl import onnx` on torchvision models exported by torch: onnxruntime's outputs and the state_dict's keys.

Needs torchvision (skipped without it), e.g. in a side environment:

    pip install torch torchvision onnx onnxruntime && pip install -e . --no-deps
    python -m pytest -q tests/test_onnx_import_torchvision.py -s

Each model is built with ``weights=None``, seeded, given random batchnorm statistics
(tests/onnx_models.randomise), and exported with batchnorms kept, so its initializers carry torch's names.
With ``-s`` each model prints its import time, its difference from onnxruntime and the size of its source.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")
from onnx_models import TORCHVISION, export, randomise, sample_input  # noqa: E402 - needs torch

import alexdsl  # noqa: E402
from alexdsl.backends.executor import compile as compile_executor  # noqa: E402
from alexdsl.interop.onnx_import import import_onnx_source  # noqa: E402

MODELS = TORCHVISION
INPUT_SHAPE = (1, 3, 224, 224)
RELATIVE_TOLERANCE = 1e-5  # of the largest output magnitude


def _onnxruntime(path: Path, data: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"data": data})[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_torchvision_model_imports_to_onnxruntime_outputs_and_state_dict(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = randomise(getattr(torchvision.models, name)(weights=None, **MODELS[name])).eval()
    path = export(model, INPUT_SHAPE, tmp_path / f"{name}.onnx")
    data = sample_input(INPUT_SHAPE)

    start = time.perf_counter()
    imported = import_onnx_source(path)
    seconds = time.perf_counter() - start

    expected = _onnxruntime(path, data)
    out = np.asarray(compile_executor(imported.network, imported.weights, device="cpu")(data))
    assert out.shape == expected.shape
    difference = float(np.abs(out - expected).max() / np.abs(expected).max())
    assert difference <= RELATIVE_TOLERANCE

    # ONNX carries no num_batches_tracked (a training step counter, not used by an eval-mode batchnorm).
    state = {key: value.numpy() for key, value in model.state_dict().items()
             if not key.endswith("num_batches_tracked")}
    assert sorted(imported.weights) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(imported.weights[key], value, err_msg=key)

    again = alexdsl.parse(imported.source, f"{name}.adsl")
    assert again.shapes == imported.network.shapes
    lines = len(imported.source.splitlines())
    blocks = len(re.findall(r"^block ", imported.source, re.MULTILINE))
    print(f"\n{name}: imported in {seconds:.2f} s, max relative difference from onnxruntime {difference:.1e}, "
          f"{len(state)} keys equal, readable source: {lines} lines, blocks: {blocks}")
