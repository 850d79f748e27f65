"""torchvision models exported to ONNX with onnxruntime's outputs: references for ``alexdsl import onnx``.

    /tmp/tvenv/bin/python benchmarks/torchvision_onnx.py --out /tmp/tv_onnx [resnet18 ...]

Needs torch, torchvision, onnx, onnxruntime and safetensors (not alexdsl). For each model, built with
``weights=None``, seeded random weights and batchnorm statistics (tests/onnx_models.randomise), in eval mode:

    <name>.onnx           BatchNormalization kept, initializers named like the state_dict
    <name>_folded.onnx    torch's default eval export: batchnorm folded into convs (onnx::Conv_<n>)
    <name>.safetensors    the model's state_dict
    <name>_input.npy      a seeded 1x3x224x224 float32 input
    <name>_ort.npy        onnxruntime's output for <name>.onnx on that input

and prints each export's op-type histogram and its largest difference from torch's output.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import torchvision
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from onnx_models import TORCHVISION, export, randomise, sample_input  # noqa: E402 - shared with the tests

MODELS = TORCHVISION
INPUT_SHAPE = (1, 3, 224, 224)


def op_histogram(path: Path) -> dict[str, int]:
    """How many nodes of each op type the model's graph has, most frequent first."""
    counts = collections.Counter(node.op_type for node in onnx.load(path).graph.node)
    return dict(counts.most_common())


def run_onnx(path: Path, data: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"data": data})[0]


def write_references(name: str, out: Path, opset: int) -> None:
    """Export ``torchvision.models.<name>`` both ways and write its state_dict, input and ORT output."""
    torch.manual_seed(0)
    model = randomise(getattr(torchvision.models, name)(weights=None, **MODELS[name])).eval()
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, out / f"{name}.safetensors")
    data = sample_input(INPUT_SHAPE)
    np.save(out / f"{name}_input.npy", data)
    with torch.no_grad():
        expected = model(torch.from_numpy(data)).numpy()
    for suffix, fold in (("", False), ("_folded", True)):
        path = export(model, INPUT_SHAPE, out / f"{name}{suffix}.onnx", opset, fold_batchnorm=fold)
        output = run_onnx(path, data)
        if not fold:
            np.save(out / f"{name}_ort.npy", output)
        error = float(np.abs(output - expected).max())
        print(f"{path.name}: max |ort - torch| = {error:.2e} (output scale {np.abs(expected).max():.2f})")
        print("  " + ", ".join(f"{op} {count}" for op, count in op_histogram(path).items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS), help=f"some of {', '.join(MODELS)} (default all)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tv_onnx"))
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args()
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model {', '.join(unknown)}; expected some of {', '.join(MODELS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, onnx {onnx.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, opset {args.opset}")
    for name in args.models:
        write_references(name, args.out, args.opset)


if __name__ == "__main__":
    main()
