"""Inference with either backend on arrays, image files or a labelled dataset (``alexdsl run``).

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
from typing import Any

import numpy

from alexdsl.errors import AlexDSLError
from alexdsl.extras import install_command
from alexdsl.ir.network import Network
from alexdsl.profiling import Profile, profile_executor, profile_torch_module
from alexdsl.progress import busy

Predictor = Callable[[numpy.ndarray], numpy.ndarray]


def make_predictor(network: Network, backend: str, weights: str | None = None, device: str = "auto",
                   dtype: str = "float32", seed: int = 0, profile: Profile | None = None) -> tuple[Predictor, str]:
    """A batch -> first-output function for ``backend`` ("cupy" or "torch"), and where it runs.

    With ``profile``, every call's forward is timed per layer into it (:mod:`alexdsl.profiling`).
    """
    if len(network.data_inputs) != 1:
        raise AlexDSLError(f"error: alexdsl run feeds one input; {network.name} has "
                           f"{len(network.data_inputs)} ({', '.join(network.data_inputs)})")
    if backend == "cupy":
        from alexdsl.backends.executor import compile as compile_executor

        with warnings.catch_warnings(record=True) as caught, busy(f"compiling the executor of {network.name}"):
            warnings.simplefilter("always")
            executor = compile_executor(network, weights, device=device, dtype=dtype, seed=seed)
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
        if device == "auto" and executor.device == "cpu":
            print(f"note: {_why_not_cupy()}, so the executor runs on NumPy (CPU)", file=sys.stderr)
        if profile is not None:
            profile_executor(executor, profile)

        def run_executor(batch: numpy.ndarray) -> numpy.ndarray:
            out = executor(batch.astype(executor.dtype, copy=False))
            out = out[0] if isinstance(out, tuple) else out
            return numpy.asarray(out.get() if hasattr(out, "get") else out, dtype=numpy.float32)

        library = "numpy" if executor.device == "cpu" else "cupy"
        return run_executor, f"{executor.device} ({library} executor)"
    if dtype != "float32":
        raise AlexDSLError(f"error: --dtype {dtype} is for --backend cupy; the torch backend runs its module "
                           f"in float32 (drop --dtype, or use --backend cupy --dtype {dtype} on a GPU)")
    try:
        with busy("importing torch"):
            import torch
    except ImportError:
        raise AlexDSLError(f"error: --backend torch needs PyTorch: {install_command('torch')}") from None
    from alexdsl.backends.torch.codegen import build, load_weights
    from alexdsl.backends.torch.device import torch_device

    device = torch_device(device)
    torch.manual_seed(seed)
    with busy(f"building the model of {network.name}"):
        module = build(network)
        if weights is not None:
            load_weights(module, weights)
    module = module.eval().to(device)
    if profile is not None:
        profile_torch_module(module, profile)

    def run_module(batch: numpy.ndarray) -> numpy.ndarray:
        with torch.no_grad():
            out = module(torch.from_numpy(numpy.ascontiguousarray(batch, dtype=numpy.float32)).to(device))
        out = out[0] if isinstance(out, tuple) else out
        return out.float().cpu().numpy()

    return run_module, f"{device} (torch)"


def _why_not_cupy() -> str:
    """Why ``device="auto"`` chose NumPy: CuPy is missing (with how to install it), or it sees no GPU."""
    from alexdsl.backends.executor import arrays

    if arrays.cupy_module is None:
        return f"CuPy was not found (for an NVIDIA GPU: {install_command('cupy')})"
    return "CuPy finds no usable CUDA GPU"


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
    with busy(f"evaluating {count:,} samples"):
        for start in range(0, count, batch):
            with busy(f"{start:,} done"):
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


def load_array(path: str, shape: tuple[int, ...]) -> numpy.ndarray:
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
