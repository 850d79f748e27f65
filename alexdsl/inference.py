"""``alexdsl run``: inference with either backend on arrays, image files or a labelled dataset.

One predictor interface for both backends: a function from an NCHW float32 NumPy batch to
the network's first output as a NumPy array.

>>> import alexdsl, numpy
>>> net = alexdsl.parse("network T\\ninput x: 3x8x8\\nc: conv(4, 3) | global_avgpool | fc(5)\\n")
>>> predict, where = make_predictor(net, "cupy", device="cpu")
>>> predict(numpy.zeros((2, 3, 8, 8), numpy.float32)).shape
(2, 5)
"""

from __future__ import annotations

import io
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy

from alexdsl.cli_support import check_memory, load_network, report_errors
from alexdsl.errors import AlexDSLError
from alexdsl.ir.network import Network

Predictor = Callable[[numpy.ndarray], numpy.ndarray]


def make_predictor(network: Network, backend: str, weights: str | None = None, device: str = "auto",
                   dtype: str = "float32", seed: int = 0) -> tuple[Predictor, str]:
    """A batch -> first-output function for ``backend`` ("cupy" or "torch"), and where it runs."""
    if len(network.data_inputs) != 1:
        raise AlexDSLError(f"error: alexdsl run feeds one input; {network.name} has "
                           f"{len(network.data_inputs)} ({', '.join(network.data_inputs)})")
    if backend == "cupy":
        from alexdsl.backends.cupy import compile as compile_executor

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            executor = compile_executor(network, weights, device=device, dtype=dtype, seed=seed)
        for warning in caught:
            click.echo(f"warning: {warning.message}", err=True)

        def run_executor(batch: numpy.ndarray) -> numpy.ndarray:
            out = executor(batch.astype(executor.dtype, copy=False))
            out = out[0] if isinstance(out, tuple) else out
            return numpy.asarray(out.get() if hasattr(out, "get") else out, dtype=numpy.float32)

        return run_executor, f"{executor.device} (cupy executor)"
    if dtype != "float32":
        raise AlexDSLError(f"error: --dtype {dtype} is for --backend cupy; the torch backend runs its module "
                           f"in float32 (drop --dtype, or use --backend cupy --dtype {dtype} on a GPU)")
    try:
        import torch
    except ImportError:
        raise AlexDSLError("error: --backend torch needs PyTorch: pip install 'alexdsl[torch]'") from None
    from alexdsl.backends.torch.codegen import build, load_weights

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise AlexDSLError(f"error: unknown device '{device}'; use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AlexDSLError("error: --device cuda but PyTorch sees no GPU; use --device cpu")
    torch.manual_seed(seed)
    module = build(network)
    if weights is not None:
        load_weights(module, weights)
    module = module.eval().to(device)

    def run_module(batch: numpy.ndarray) -> numpy.ndarray:
        with torch.no_grad():
            out = module(torch.from_numpy(numpy.ascontiguousarray(batch, dtype=numpy.float32)).to(device))
        out = out[0] if isinstance(out, tuple) else out
        return out.float().cpu().numpy()

    return run_module, f"{device} (torch)"


def top_k(scores: numpy.ndarray, k: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Indices and softmax probabilities of the k best classes of each row."""
    flat = scores.reshape(scores.shape[0], -1).astype(numpy.float64)
    k = min(k, flat.shape[1])
    order = numpy.argsort(-flat, axis=1, kind="stable")[:, :k]
    exp = numpy.exp(flat - flat.max(axis=1, keepdims=True))
    probs = exp / exp.sum(axis=1, keepdims=True)
    return order, numpy.take_along_axis(probs, order, axis=1)


def evaluate(predict: Predictor, source: Any, batch: int, k: int) -> dict[str, float]:
    """Top-1 and top-k accuracy over the validation split of a data source, with images/s."""
    count = source.length(False)
    hits1 = hitsk = 0
    seconds = 0.0
    for start in range(0, count, batch):
        images, labels = source.batch(range(start, min(count, start + batch)), 0, False)
        x, y = numpy.asarray(images), numpy.asarray(labels)
        began = time.perf_counter()
        scores = predict(x)
        seconds += time.perf_counter() - began
        order, _ = top_k(scores, k)
        hits1 += int((order[:, 0] == y).sum())
        hitsk += int((order == y[:, None]).any(axis=1).sum())
    return {"samples": count, "top1": hits1 / count, f"top{k}": hitsk / count,
            "images_per_second": count / seconds if seconds else float("inf")}


def _load_array(path: str, shape: tuple[int, ...]) -> numpy.ndarray:
    """A .npy file (``-``: standard input) as a float32 NxCxHxW batch."""
    try:
        array = numpy.load(io.BytesIO(sys.stdin.buffer.read()) if path == "-" else path, allow_pickle=False)
    except FileNotFoundError:
        raise AlexDSLError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:
        raise AlexDSLError(f"{path}: cannot read a .npy array ({error})") from None
    if array.shape == shape:
        array = array[None]
    if array.shape[1:] != shape:
        raise AlexDSLError(f"{path}: the network takes NxCxHxW = Nx{'x'.join(map(str, shape))}; "
                           f"received {'x'.join(map(str, array.shape))}")
    return array.astype(numpy.float32)


@click.command("run", epilog="""\b
Examples:
  alexdsl run examples/lenet.adsl --weights runs/lenet/weights.safetensors --data digits
  alexdsl run examples/alexnet.adsl --backend cupy --batch 16
  alexdsl run examples/alexnet.adsl --weights w.safetensors cat.jpg dog.jpg --top 5
  alexdsl run examples/alexnet.adsl --input batch.npy --backend torch""")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(["cupy", "torch"]), default="cupy", show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Weights (.safetensors, .npz or a torch .pt) keyed like the state_dict [default: the fillers].")
@click.option("--input", "arrays", multiple=True, type=click.Path(dir_okay=False), metavar="X.npy",
              help="An NxCxHxW (or CxHxW) float array to run (- reads standard input).")
@click.option("--data", metavar="SOURCE", help="A labelled dataset (digits, synthetic, or a folder): print accuracy.")
@click.option("--batch", default=16, show_default=True, type=click.IntRange(min=1), help="Batch size.")
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1), help="k for top-k.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="cupy executor dtype (float16 is for GPUs: NumPy emulates it, 40-140x slower).")
@click.option("--seed", default=0, show_default=True, help="Seed for filler weights and random input.")
@report_errors
def run_command(file: str, images: tuple[str, ...], backend: str, weights: str | None, arrays: tuple[str, ...],
                data: str | None, batch: int, top: int, device: str, dtype: str, seed: int) -> None:
    """Run FILE's network on IMAGES, on --input arrays, on a --data set, or on random input.

    Image files get the network's preprocessing (resize, centre crop, mean) and print their
    top-k classes; a dataset prints top-1 and top-k accuracy; every run reports images/s.
    """
    network = load_network(file)
    if sum(map(bool, (images, arrays, data))) > 1:
        raise AlexDSLError("error: give image files, --input arrays or --data, not several")
    check_memory(network, batch, "run")
    classes = next((network.layer(n).attrs.get("classes", 0) for n in network.label_inputs), 0)
    predict, where = make_predictor(network, backend, weights, device, dtype, seed)
    if weights is None:
        chance = f"; expect chance accuracy, about 1/{classes}" if data and classes else ""
        click.echo(f"note: no --weights given: {network.name} runs with random weights drawn from its fillers "
                   f"(--seed {seed}), not trained ones{chance}", err=True)
    (input_name,) = network.data_inputs
    shape = network.shapes[input_name]
    if data:
        from alexdsl.data import open_source

        source = open_source(data, shape, classes, preprocess=network.preprocess.get(input_name), seed=seed)
        result = evaluate(predict, source, batch, top)
        click.echo(f"{data}: top-1 {result['top1']:.4f}  top-{top} {result[f'top{top}']:.4f} "
                   f"on {result['samples']} validation samples")
        click.echo(f"  ({source.validation})")
        click.echo(f"{result['images_per_second']:.1f} images/s on {where}")
        return
    labels: list[str]
    if images:
        from alexdsl.data import Preprocess, load_image

        pre = Preprocess.from_settings(network.preprocess.get(input_name))
        x = numpy.stack([load_image(path, shape, pre) for path in images])  # type: ignore[arg-type]
        labels = list(images)
    elif arrays:
        x = numpy.concatenate([_load_array(path, shape) for path in arrays])
        labels = [f"{Path(arrays[0]).name}[{i}]" for i in range(len(x))] if len(arrays) == 1 else \
            [f"sample {i}" for i in range(len(x))]
    else:
        x = numpy.random.default_rng(seed).standard_normal((batch, *shape)).astype(numpy.float32)
        labels = []
    predict(x[:1])  # warm-up: first-call allocations are not the steady state
    began = time.perf_counter()
    scores = numpy.concatenate([predict(x[i:i + batch]) for i in range(0, len(x), batch)])
    seconds = time.perf_counter() - began
    if labels:
        order, probs = top_k(scores, top)
        for label, best, p in zip(labels, order, probs):
            click.echo(f"{label}: " + ", ".join(f"{c} ({q:.3f})" for c, q in zip(best, p)))
    else:
        click.echo(f"random {'x'.join(map(str, x.shape))} input -> output {'x'.join(map(str, scores.shape))}")
    click.echo(f"{len(x) / seconds:.1f} images/s on {where}")
