"""Import torchvision's models through ONNX: time, agreement with onnxruntime, keys, readable lines.

    /tmp/tvenv/bin/python benchmarks/torchvision_import.py [resnet18 convnext_tiny ...]

Needs torch, torchvision, onnx and onnxruntime next to alexdsl (torchvision is not a test
dependency). Each model is built with ``weights=None`` and seeded random weights and batchnorm
statistics (tests/onnx_models.randomise), exported in eval mode at opset 17 with batchnorms kept
(tests/onnx_models.export), imported with ``import_onnx_source``, and run on the NumPy executor.
Prints one line per model: import seconds, max |executor - onnxruntime| / max |onnxruntime|,
whether the weights' keys are the state_dict's (minus ``num_batches_tracked``, which ONNX does not
carry), and the readable source's lines (not blank, not comments) beside its hand-written example's.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from onnx_models import TORCHVISION, TORCHVISION_MORE, export, randomise  # noqa: E402

from alexdsl.backends.executor import compile as compile_executor  # noqa: E402
from alexdsl.interop.onnx_import import import_onnx_source  # noqa: E402

MODELS = {**TORCHVISION, **TORCHVISION_MORE}
# the hand-written example of each model, where its name is not the model's (issue 24: at most 20% more lines);
# examples/inception.adsl is only GoogLeNet's stem and first three modules
EXAMPLES = {"resnext50_32x4d": "resnext50", "shufflenet_v2_x1_0": "shufflenet_v2", "googlenet": "inception",
            "alexnet": "alexnet_torchvision"}


def main() -> None:
    warnings.simplefilter("ignore")
    names = sys.argv[1:] or list(MODELS)
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            module = randomise(getattr(torchvision.models, name)(weights=None, **MODELS.get(name, {})).eval())
            size = 299 if name == "inception_v3" else 224
            path = export(module, (1, 3, size, size), Path(folder) / f"{name}.onnx", opset=17)
            start = time.perf_counter()
            imported = import_onnx_source(path)
            seconds = time.perf_counter() - start
            x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            want = session.run(None, {"data": x})[0]
            got = compile_executor(imported.network, imported.weights, device="cpu")(x)
            relative = float(np.abs(got - want).max() / np.abs(want).max())
            keys = [k for k in module.state_dict() if not k.endswith("num_batches_tracked")]
            lines = _lines(imported.source)
            example = ROOT / "examples" / f"{EXAMPLES.get(name, name)}.adsl"
            bound = f" (examples/{example.name}: {_lines(example.read_text())})" if example.exists() else ""
            print(f"{name:<20} {seconds:5.2f} s  rel {relative:.1e}  keys equal: {list(imported.weights) == keys} "
                  f"({len(keys)})  {lines} lines{bound}", flush=True)


def _lines(source: str) -> int:
    """Lines that are neither blank nor comments."""
    return sum(1 for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#"))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
