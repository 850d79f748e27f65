"""Import timm's convolutional architectures through ONNX: how many import, agree with onnxruntime, or are refused.

    python benchmarks/timm_import.py [--size 64] [--sample 30] [--seed 0] [--budget 600] [NAME ...]

Needs torch, timm, onnx and onnxruntime next to alexdsl (timm is not a test dependency; make a side
environment: ``python -m venv side && side/bin/pip install torch torchvision timm -e .[onnx]``).

One model per architecture: for each of timm's model modules (``timm.list_modules()``) but the
vision transformers, attention hybrids and MLP mixers (``NOT_CONVOLUTIONAL``; issue 19's), its
default model (:func:`architectures`), built with ``pretrained=False``; it counts as convolutional
when it has a ``Conv2d`` and no module whose class name ends in ``Attention``. Without names, a
seeded sample of ``--sample`` architectures is measured (all of them with ``--sample 0``).

Each model gets seeded random weights and batchnorm statistics (tests/onnx_models.randomise), is
exported by torch's TorchScript exporter at opset 17 in eval mode with batchnorms kept, at
``--size`` pixels square (larger, 2x then 4x, where the model refuses that size), and imported with
``import_onnx_source``; the NumPy executor then runs the import on one seeded input and is compared
with onnxruntime on the exported file: ``max |executor - ort| / max |ort|`` must be at most 1e-4 (``ok``).

Some models' random weights make float32 itself diverge: rounding grows layer by layer past 1e-4, so that
torch and onnxruntime, both right, differ as much as the import does. For a model over the bound the truth
is the exported graph evaluated in float64 (:func:`as_float64`: what depends on constants alone folded in
float32, as onnxruntime and the import fold it, then every float tensor and type made double, run by ONNX's
reference evaluator, as onnxruntime has no float64 convolution; not torch in float64, which recomputes
NFNet's standardised weights in float64, and weights other by float32 rounding are another function to a
network that amplifies rounding). The model counts as ``ok in float64`` when onnxruntime's own float32 result is more
than 1e-4 from that truth (float32 cannot follow these weights) and the executor run in float64 on the
import is within 1e-4 of it (the import computes the model's function); otherwise it is a ``mismatch``.
Both kinds of ``ok`` count as agreeing.

Prints one line per model (torch's exporter writes its graph to stderr when it fails: ``2>/dev/null``),
then the counts and the refusals grouped by cause (the error's message
with node names, counts and sizes replaced by ``*``). Models are measured one after another until
``--budget`` seconds have passed.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime
import timm
import torch
from onnx.reference import ReferenceEvaluator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from onnx_models import export, randomise  # noqa: E402

from alexdsl.backends.executor import compile as compile_executor  # noqa: E402
from alexdsl.errors import AlexDSLError  # noqa: E402
from alexdsl.interop.onnx_import import import_onnx_source  # noqa: E402

TOLERANCE = 1e-4
# timm's modules of vision transformers, hybrids built around attention, and MLP mixers: issue 19's, not built here
NOT_CONVOLUTIONAL = frozenset("""beit byoanet cait coat convit crossvit davit deepseek_vit deit edgenext
efficientformer efficientformer_v2 eva fastvit focalnet gcvit gemma4_vit hiera hieradet_sam2 iformer levit lowformer
maxxvit metaformer mlp_mixer mobilevit mvitv2 naflexvit nest nextvit pit pvt_v2 qwen3_vit sequencer shvit swiftformer
swin_transformer swin_transformer_v2 swin_transformer_v2_cr tiny_vit tnt twins visformer vision_transformer
vision_transformer_hybrid vision_transformer_relpos vision_transformer_sam vitamin volo xcit""".split())


def architectures() -> dict[str, str]:
    """timm module -> its default model: the first (timm lists them by name) of those named after the module
    (``resnet`` -> resnet10t), else its first, for every module with models that is not in NOT_CONVOLUTIONAL."""
    found = {}
    for module in timm.list_modules():
        models = timm.list_models(module=module)
        if models and module not in NOT_CONVOLUTIONAL:
            found[module] = next((m for m in models if m.startswith(module)), models[0])
    return found


def is_convolutional(model: torch.nn.Module) -> bool:
    kinds = {type(m).__name__ for m in model.modules()}
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules()) \
        and not any(kind.endswith("Attention") for kind in kinds)


def cause(message: str) -> str:
    """An error message as a cause shared by models: names, counts and sizes made ``*``."""
    first = message.strip().splitlines()[0]
    first = re.sub(r"^\S+\.onnx(:\d+:\d+)?: error: ", "", first)
    first = re.sub(r"'[^']*'", "'*'", first)
    first = re.sub(r"\(first: [^)]*\)", "", first)
    first = re.sub(r"\d+(x\d+)*", "*", first)
    return first[:200]


def measure(name: str, size: int, folder: Path) -> tuple[str, str]:
    """(status, detail) of one model: ok, ok in float64, mismatch, refused, not convolutional, or export failed."""
    model = timm.create_model(name, pretrained=False).eval()
    if not is_convolutional(model):
        return "not convolutional", ""
    randomise(model)
    path, used, failure = None, size, ""
    for used in (size, 2 * size, 4 * size):
        try:
            path = export(model, (1, 3, used, used), folder / f"{name}.onnx", opset=17)
            break
        except Exception as error:  # noqa: BLE001 - torch refuses a size or a construct: try larger, then report
            failure = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
    if path is None:
        return "export failed", failure
    x = np.random.default_rng(0).standard_normal((1, 3, used, used)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {"data": x})[0]
    try:
        imported = import_onnx_source(path)
    except AlexDSLError as error:
        return "refused", str(error)
    got = compile_executor(imported.network, imported.weights, device="cpu")(x)
    got = got[0] if isinstance(got, tuple) else got
    relative = _relative(np.asarray(got), want)
    lines = sum(1 for line in imported.source.splitlines() if line.strip() and not line.startswith("#"))
    detail = f"rel {relative:.1e}, {lines} lines, {used}x{used}"
    if relative <= TOLERANCE:
        return "ok", detail
    truth = ReferenceEvaluator(as_float64(path, x)).run(None, {"data": x.astype(np.float64)})[0]
    exact = compile_executor(imported.network, imported.weights, device="cpu", dtype="float64")(x.astype(np.float64))
    exact = exact[0] if isinstance(exact, tuple) else exact
    ort_error, exact_error = _relative(want, truth), _relative(np.asarray(exact), truth)
    detail += (f"; from the graph in float64: onnxruntime {ort_error:.1e}, "
               f"executor {_relative(np.asarray(got), truth):.1e} (in float64 {exact_error:.1e})")
    if ort_error > TOLERANCE and exact_error <= TOLERANCE:  # weights float32 cannot follow; the import is right
        return "ok in float64", detail
    return "mismatch", detail


def as_float64(path: Path, x: np.ndarray) -> onnx.ModelProto:
    """The ONNX model at ``path`` computing in float64: what depends on constants only (NFNet's standardised
    weights) computed first in float32 on input ``x``, as onnxruntime and the import fold it, and kept; then
    float initializers, constants, attributes, value types and ``Cast`` targets made double."""
    model = onnx.load(str(path))
    float32, float64 = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE
    known = {tensor.name for tensor in model.graph.initializer}
    constant_nodes = []
    for node in model.graph.node:
        if all(not value or value in known for value in node.input):
            constant_nodes.append(node)
            known.update(node.output)
    read = {value for node in model.graph.node if node not in constant_nodes for value in node.input}
    folded = [value for node in constant_nodes if node.op_type != "Constant" for value in node.output if value in read]
    values = ReferenceEvaluator(model).run(folded, {"data": x}) if folded else []
    for node in [n for n in constant_nodes if n.op_type != "Constant"]:
        model.graph.node.remove(node)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(np.asarray(v), name) for name, v in zip(folded, values))

    def widen(tensor: onnx.TensorProto) -> None:
        if tensor.data_type == float32:
            tensor.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor).astype(np.float64),
                                                         tensor.name))

    for tensor in model.graph.initializer:
        widen(tensor)
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                widen(attribute.t)
            elif attribute.name == "to" and attribute.i == float32:
                attribute.i = float64
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.type.tensor_type.elem_type == float32:
            value.type.tensor_type.elem_type = float64
    return model


def _relative(got: np.ndarray, truth: np.ndarray) -> float:
    """``max |got - truth| / max |truth|``."""
    return float(np.abs(got - truth).max() / (np.abs(truth).max() or 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="timm model names (default: one per architecture)")
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--sample", type=int, default=30, help="architectures measured, drawn with --seed (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds after which no model is started")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    names = args.names
    if not names:
        names = sorted(architectures().values())
        if args.sample:
            names = sorted(random.Random(args.seed).sample(names, min(args.sample, len(names))))
    results: dict[str, tuple[str, str]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            if time.perf_counter() - start > args.budget:
                print(f"budget of {args.budget:.0f} s spent; {len(names) - len(results)} models not measured")
                break
            began = time.perf_counter()
            try:
                status, detail = measure(name, args.size, Path(folder))
            except Exception as error:  # noqa: BLE001 - a crash in alexdsl is a finding, not the end of the run
                status, detail = "crashed", f"{type(error).__name__}: {str(error)[:200]}"
            results[name] = (status, detail)
            shown = cause(detail) if status == "refused" else detail
            print(f"{name:<32} {time.perf_counter() - began:6.1f} s  {status:<17} {shown}", flush=True)
    counts = Counter(status for status, _ in results.values())
    print("\n" + ", ".join(f"{n} {status}" for status, n in counts.most_common()))
    measured = sum(n for status, n in counts.items() if status not in ("not convolutional", "export failed"))
    if measured:
        imported = counts["ok"] + counts["ok in float64"] + counts["mismatch"]
        agreeing = counts["ok"] + counts["ok in float64"]
        print(f"convolutional and exported: {measured}; imported and running: {imported} "
              f"({100 * imported / measured:.0f}%); agreeing: {agreeing} ({100 * agreeing / measured:.0f}%), "
              f"of which within {TOLERANCE:g} of onnxruntime in float32: {counts['ok']}")
    causes: dict[str, list[str]] = defaultdict(list)
    for name, (status, detail) in results.items():
        if status in ("refused", "crashed", "mismatch", "ok in float64"):
            causes[cause(detail) if status == "refused" else status].append(name)
    for text, models in sorted(causes.items(), key=lambda item: -len(item[1])):
        print(f"{len(models):3d}  {text}: {', '.join(models)}")


if __name__ == "__main__":
    main()
