"""The held-out zoo's float32 accuracy: the executor and onnxruntime against the torch model in float64.

    PYTHONPATH=. side/bin/python benchmarks/zoo_accuracy.py                  # timm's zoo, then torchvision's
    PYTHONPATH=. side/bin/python benchmarks/zoo_accuracy.py --zoo torchvision
    PYTHONPATH=. side/bin/python benchmarks/zoo_accuracy.py resnet18 nfnet_f0    # some models of either zoo
    PYTHONPATH=. side/bin/python benchmarks/zoo_accuracy.py regnetv_040 --images 8  # and 8 single images

Needs torch, onnx and onnxruntime next to alexdsl, and timm or torchvision for their zoos (neither is a
test dependency: make a side environment as benchmarks/timm_import.py says). The zoos are issue 24's:
timm's default convolutional model per architecture (benchmarks/timm_import.py's ``architectures``) and
torchvision's classification models (benchmarks/torchvision_import.py's ``MODELS``, and the smallest
model of each other line of variants: ``TORCHVISION_EXTRA``).

Each model gets seeded random weights and batchnorm statistics (tests/onnx_models.randomise) and is
exported by torch's TorchScript exporter at opset 17 (batchnorms kept) at 224x224, or 2x then 4x that where
the model refuses it (torchvision's inception_v3: 299x299, its default). On one batch of two
standard-normal images, each side's float32 output is compared with the truth, the same torch model in
float64 (the same weights, widened): the largest absolute difference over the truth's largest magnitude,
as ``benchmarks/executor_vs_ort.py --accuracy`` does for the examples. The sides are the NumPy executor on
alexdsl's import of the ONNX file, onnxruntime on that file, and torch eager in float32; the last column is
the executor's error over onnxruntime's (issue 21 asks for at most 4). A model that cannot be exported,
imported or run is printed with the reason. Models run one at a time; the load average is printed with each.
On a network that amplifies rounding one batch's ratio is a draw from a wide distribution: ``--images N``
measures N more single images and prints the geometric mean of their ratios.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from onnx_models import export, randomise  # noqa: E402

from alexdsl.backends.executor import compile as compile_executor  # noqa: E402
from alexdsl.errors import AlexDSLError  # noqa: E402
from alexdsl.interop.onnx_import import import_onnx_source  # noqa: E402

BATCH = 2
SIZE = 224
LIMIT = 4.0  # issue 21: the executor's error at most this many times onnxruntime's
# torchvision's classification families beyond issue 24's models (benchmarks/torchvision_import.py): the
# smallest of each line of variants, and efficientnet_v2_s, where issue 21 found the float32 sigmoid's tail
TORCHVISION_EXTRA = ("efficientnet_v2_s", "mnasnet0_5", "mobilenet_v3_small", "regnet_x_400mf", "resnet50",
                     "wide_resnet50_2", "squeezenet1_0", "vgg11_bn", "vit_b_16", "swin_t", "swin_v2_t", "maxvit_t")


def relative_error(got: np.ndarray, truth: np.ndarray) -> float:
    """``max |got - truth| / max |truth|``, in float64."""
    got, truth = np.asarray(got, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    return float(np.abs(got - truth).max() / (np.abs(truth).max() or 1.0))


def float32_errors(model: torch.nn.Module, size: int, folder: Path, name: str = "model",
                   images: int = 0) -> dict[str, Any]:
    """Each side's float32 error against ``model`` in float64, on a batch of standard-normal ``size`` images.

    ``model`` is exported at opset 17 (at ``size``, else 2x or 4x it where torch refuses), imported by alexdsl
    and run by the executor; onnxruntime runs the exported file and torch the model itself in float32.
    ``images`` more single images (seeds 1 to ``images``) give ``image_ratios``: the executor's error over
    onnxruntime's on each. Raises AlexDSLError where the import refuses the model.
    """
    model = model.eval()
    failure: Exception | None = None
    for used in (size, 2 * size, 4 * size):
        try:
            path = export(model, (1, 3, used, used), folder / f"{name}.onnx", opset=17)
            break
        except Exception as error:  # noqa: BLE001 - torch refuses a size: try a larger one, then report it
            failure = error
    else:
        message = str(failure).strip().splitlines()
        raise RuntimeError(f"torch's exporter: {type(failure).__name__}: {message[0][:160] if message else ''}")
    imported = import_onnx_source(path)
    executor = compile_executor(imported.network, imported.weights, device="cpu")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wide = copy.deepcopy(model).double()

    def errors(x: np.ndarray) -> dict[str, float]:
        ours = executor(x)
        ours = ours[0] if isinstance(ours, tuple) else ours
        with torch.inference_mode():
            eager = model(torch.from_numpy(x)).numpy()
            truth = wide(torch.from_numpy(x.astype(np.float64))).numpy()
        outputs = (("executor", ours), ("ort", session.run(None, {"data": x})[0]), ("torch", eager))
        return {side: relative_error(y, truth) for side, y in outputs}

    batch = errors(np.random.default_rng(0).standard_normal((BATCH, 3, used, used)).astype(np.float32))
    row = {"model": name, "size": used, **{f"{side}_error": e for side, e in batch.items()},
           "executor_over_ort": _ratio(batch)}
    if images:
        row["image_ratios"] = [_ratio(errors(np.random.default_rng(seed).standard_normal((1, 3, used, used))
                                             .astype(np.float32))) for seed in range(1, images + 1)]
    return row


def _ratio(errors: dict[str, float]) -> float:
    return errors["executor"] / errors["ort"] if errors["ort"] else float("inf")


def geometric_mean(values: list[float]) -> float:
    """The geometric mean: the typical ratio of errors, which a lucky or unlucky image does not dominate."""
    return float(np.exp(np.mean(np.log(values))))


def timm_models() -> dict[str, Any]:
    """timm's zoo: architecture default -> a constructor with ``pretrained=False``."""
    import timm
    from timm_import import architectures

    return {name: lambda name=name: timm.create_model(name, pretrained=False)
            for name in sorted(architectures().values())}


def torchvision_models() -> dict[str, Any]:
    """torchvision's classification models: issue 24's and ``TORCHVISION_EXTRA``, name -> a constructor with
    ``weights=None``."""
    import torchvision
    from torchvision_import import MODELS

    models = {**MODELS, **dict.fromkeys(TORCHVISION_EXTRA, {})}
    return {name: lambda name=name: getattr(torchvision.models, name)(weights=None, **models[name]) for name in models}


def markdown(rows: list[dict[str, Any]]) -> str:
    """One row per model, largest ratio first; with ``--images``, the per-image ratios' geometric mean and range."""
    per_image = all("image_ratios" in row for row in rows)
    lines = ["| model | executor | onnxruntime | torch eager | executor / ORT |" + " per image |" * per_image,
             "|---|---:|---:|---:|---:|" + "---|" * per_image]
    for row in sorted(rows, key=lambda r: -r["executor_over_ort"]):
        size = "" if row["size"] == SIZE else f" ({row['size']}x{row['size']})"
        line = (f"| {row['zoo']}: {row['model']}{size} | {row['executor_error']:.1e} | {row['ort_error']:.1e} | "
                f"{row['torch_error']:.1e} | {row['executor_over_ort']:.2f} |")
        if per_image:
            ratios = row["image_ratios"]
            line += f" {geometric_mean(ratios):.2f} ({min(ratios):.2f} to {max(ratios):.2f}) |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="models of either zoo (default: every model of --zoo)")
    parser.add_argument("--zoo", choices=["timm", "torchvision", "both"], default="both")
    parser.add_argument("--size", type=int, default=SIZE, help="input height and width (inception_v3: 299)")
    parser.add_argument("--images", type=int, default=0,
                        help="also this many single images: the executor / ORT ratio on each, and their geometric mean")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    warnings.simplefilter("ignore")
    from timm_import import is_convolutional

    zoos = {"timm": timm_models, "torchvision": torchvision_models}
    chosen = list(zoos) if args.zoo == "both" else [args.zoo]
    models = {(zoo, name): build for zoo in chosen for name, build in zoos[zoo]().items()}
    if args.names:
        models = {key: build for key, build in models.items() if key[1] in args.names}
        missing = sorted(set(args.names) - {name for _, name in models})
        if missing:
            parser.error(f"not in the {' or '.join(chosen)} zoo: {', '.join(missing)}")
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, "
          f"Numba: {'off' if os.environ.get('ALEXDSL_NUMBA') == '0' else _numba_version()}", flush=True)
    rows, left_out = [], []
    with tempfile.TemporaryDirectory() as folder:
        for (zoo, name), build in models.items():
            began = time.process_time()
            torch.manual_seed(0)
            size = 299 if name == "inception_v3" and zoo == "torchvision" else args.size
            try:
                model = build()
                if zoo == "timm" and not is_convolutional(model):
                    raise RuntimeError("not convolutional (a module class named ...Attention, or no Conv2d)")
                row = float32_errors(randomise(model), size, Path(folder), name, args.images)
            except Exception as error:  # noqa: BLE001 - a refusal, or a crash in alexdsl: a finding, not the end
                kind = "" if isinstance(error, (AlexDSLError, RuntimeError)) else f"crashed: {type(error).__name__}: "
                left_out.append((zoo, name, kind + (str(error).strip().splitlines() or [""])[0][:200]))
                print(f"{zoo:11s} {name:28s} left out: {left_out[-1][2]}", flush=True)
                continue
            finally:
                for file in Path(folder).iterdir():
                    file.unlink()
            rows.append({"zoo": zoo, **row})
            flag = "" if row["executor_over_ort"] <= LIMIT else f"  OVER {LIMIT:g}x"
            print(f"{zoo:11s} {name:28s} {row['size']}px executor {row['executor_error']:.1e}  "
                  f"ORT {row['ort_error']:.1e}  torch {row['torch_error']:.1e}  executor / ORT "
                  f"{row['executor_over_ort']:.2f}{flag}  ({time.process_time() - began:.0f} s CPU, "
                  f"load {os.getloadavg()[0]:.1f})", flush=True)
            if args.images:
                ratios = row["image_ratios"]
                print(f"{'':40s} per image: {' '.join(f'{r:.2f}' for r in ratios)}; geometric mean "
                      f"{geometric_mean(ratios):.2f}", flush=True)
    print(markdown(rows))
    for zoo, name, why in left_out:
        print(f"left out: {zoo} {name}: {why}")


def _numba_version() -> str:
    try:
        import numba
    except ImportError:
        return "not installed"
    return numba.__version__


if __name__ == "__main__":
    main()
