"""The training loop behind ``alexdsl train``: Caffe solver, resumable checkpoints, torchrun.

The model is any ``nn.Module`` with ``forward(*inputs)``, ``loss(outputs, label)``,
``metrics(outputs, label) -> dict`` and ``param_groups(base_lr, weight_decay)`` (the
generated modules have all four). Written to ``OUT`` (rank 0 only, every file atomically):

* ``metrics.jsonl``: one JSON object per epoch: epoch, train_loss, train_accuracy, val_loss,
  val_accuracy, lr, seconds (plus val_<name> for each further accuracy layer);
* ``weights.safetensors``: the state_dict after the last completed epoch;
* ``checkpoint.pt``: model, optimizer, scheduler, epoch, step within the epoch, RNG states
  (torch, cuda, numpy, python, sampler), the epoch's running sums and the history; written
  at the end of every epoch and every ``checkpoint_every`` steps; readable with
  ``torch.load(path, weights_only=True)``;
* ``curves.png``: loss and accuracy per epoch, drawn at the end of the run (and after any epoch
  that ends a minute or more after the last drawing).

Exact resumption: the order of samples is a permutation drawn from ``(seed, epoch)``
(DistributedSampler), augmentation is drawn from ``(seed, epoch, index)``, and the torch RNG
(dropout) is reseeded before every step from ``(seed, epoch, step, rank)``; a resumed run
skips the batches already done. On one CPU process, a run killed mid-epoch and resumed ends
with the same weights as an uninterrupted run.

Under ``torchrun --nproc-per-node N`` the model is wrapped in DistributedDataParallel (gloo on
CPU, nccl on CUDA), each process reads its DistributedSampler shard, ``batch_size`` is per
process, and only rank 0 logs and writes.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexdsl.backends.torch.device import torch_device
from alexdsl.backends.torch.solver import Solver, make_optimizer, make_scheduler
from alexdsl.data import open_source
from alexdsl.errors import AlexDSLError
from alexdsl.fileio import atomic_path, write_bytes_atomic, write_text_atomic
from alexdsl.progress import busy

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "weights.safetensors"
METRICS = "metrics.jsonl"
PLOT = "curves.png"
DEFAULT_EPOCHS = 10
DEFAULT_BATCH = 64
SMALL_STEP_MACS = 2_000_000_000  # forward multiply-accumulates per CPU step below which one thread is used
PLOT_INTERVAL = 60.0  # seconds: curves.png is redrawn at most this often, and at the end of the run


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained module (on CPU or its device) and the history."""

    module: Any
    history: list[dict[str, Any]]
    out: Path
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The torch seed set before each step (dropout masks), a pure function of its arguments."""
    return (seed * 1_000_003 + epoch * 100_003 + step * 1_009 + rank * 7) % (2**62)


def _dist_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": None if gauss is None else float(gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_weights(module: Any, path: Path, metadata: dict[str, str] | None = None) -> None:
    """state_dict -> safetensors, written to a temporary file and renamed."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata or {})


def _save_torch(obj: Any, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The raw contents of a checkpoint (``torch.load(weights_only=True)``: no code runs); see :func:`restore`."""
    import pickle

    import torch

    if not path.exists():
        raise AlexDSLError(f"{path}: no checkpoint to resume from (run without --resume first)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as error:
        raise AlexDSLError(f"{path}: error: cannot read the checkpoint ({error})") from None


def restore(path: Path, model: Any, optimizer: Any, scheduler: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Load ``path``, check its whole structure, then restore model, optimizer, scheduler and RNGs.

    Returns the checkpoint (epoch, step, global_step, history, sums are checked). A damaged or
    tampered file, or one written by a run with another ``config``, is one :class:`AlexDSLError`.
    """
    from alexdsl.weights import check_state

    state = load_checkpoint(path)
    problems = _checkpoint_problems(state, optimizer.state_dict(), scheduler.state_dict())
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise AlexDSLError(f"{path}: error: cannot resume: the checkpoint is damaged or not written by alexdsl train "
                           f"({len(problems)} problem{'s' * (len(problems) > 1)})\n  " + "\n  ".join(shown))
    for key in ("batch_size", "seed", "world_size"):
        if state["config"].get(key) != config[key]:
            raise AlexDSLError(f"{path}: error: cannot resume: it was written with {key}="
                               f"{state['config'].get(key)}, this run has {key}={config[key]}")
    check_state(state["model"], {k: tuple(v.shape) for k, v in model.state_dict().items()}, source=str(path))
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state


def _checkpoint_problems(state: Any, optimizer: dict[str, Any], scheduler: dict[str, Any]) -> list[str]:
    """Everything wrong with a loaded checkpoint's structure, compared with a fresh run's optimizer/scheduler."""
    import torch

    if not isinstance(state, dict):
        return [f"expected a dict, found {type(state).__name__}"]
    problems: list[str] = []

    def need(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> bool:
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, (int, float)))
        if not ok:
            problems.append(f"{where}: expected {what}, found {type(value).__name__}")
        return ok

    def tensor(where: str, value: Any, shape: tuple[int, ...] | None, dtype: Any = None) -> None:
        if need(where, value, torch.Tensor, "a tensor") and (
                (shape is not None and tuple(value.shape) != shape) or (dtype is not None and value.dtype != dtype)):
            problems.append(f"{where}: expected a {dtype or ''} tensor of shape {shape}, "
                            f"found {value.dtype} {tuple(value.shape)}")

    required = ("model", "optimizer", "scheduler", "epoch", "step", "global_step", "history", "sums", "rng", "config")
    missing = [key for key in required if key not in state]
    if missing:
        return [f"missing entries: {', '.join(missing)}"]
    for key in ("epoch", "step", "global_step"):
        if need(key, state[key], int, "an integer") and state[key] < 0:
            problems.append(f"{key}: expected an integer >= 0, found {state[key]}")
    if need("model", state["model"], dict, "a state_dict"):
        for key, value in state["model"].items():
            need(f"model[{key!r}]", value, torch.Tensor, "a tensor")
    if need("history", state["history"], list, "a list"):
        if isinstance(state["epoch"], int) and state["epoch"] >= 0 and len(state["history"]) != state["epoch"]:
            problems.append(f"history: expected {state['epoch']} entries (one per epoch), "
                            f"found {len(state['history'])}")
        for i, record in enumerate(state["history"]):
            if need(f"history[{i}]", record, dict, "a dict"):
                for key in ("epoch", "train_loss", "val_loss"):
                    need(f"history[{i}][{key!r}]", record.get(key), (int, float), "a number")
    if need("sums", state["sums"], dict, "a dict"):
        for key in ("loss", "correct", "count", "seconds"):
            need(f"sums[{key!r}]", state["sums"].get(key), (int, float), "a number")
    if need("config", state["config"], dict, "a dict"):
        for key in ("batch_size", "seed", "world_size"):
            need(f"config[{key!r}]", state["config"].get(key), int, "an integer")
    if need("rng", state["rng"], dict, "a dict"):
        rng = state["rng"]
        tensor("rng['torch']", rng.get("torch"), tuple(torch.get_rng_state().shape), torch.uint8)
        if need("rng['numpy']", rng.get("numpy"), dict, "a dict"):
            numpy_state = rng["numpy"]
            tensor("rng['numpy']['keys']", numpy_state.get("keys"), (624,), torch.int64)
            if need("rng['numpy']['pos']", numpy_state.get("pos"), int, "an integer") and \
                    not 0 <= numpy_state["pos"] <= 624:
                problems.append(f"rng['numpy']['pos']: expected 0 to 624, found {numpy_state['pos']}")
            need("rng['numpy']['has_gauss']", numpy_state.get("has_gauss"), int, "an integer")
            need("rng['numpy']['cached_gaussian']", numpy_state.get("cached_gaussian"), (int, float), "a number")
        if need("rng['python']", rng.get("python"), dict, "a dict"):
            python_state = rng["python"]
            need("rng['python']['version']", python_state.get("version"), int, "an integer")
            tensor("rng['python']['state']", python_state.get("state"), (625,), torch.int64)
            if python_state.get("gauss") is not None:
                need("rng['python']['gauss']", python_state["gauss"], (int, float), "a number or None")
        if "cuda" in rng and need("rng['cuda']", rng["cuda"], list, "a list"):
            for i, value in enumerate(rng["cuda"]):
                tensor(f"rng['cuda'][{i}]", value, None, torch.uint8)
    _same_structure("scheduler", state["scheduler"], scheduler, problems)
    if need("optimizer", state["optimizer"], dict, "a dict"):
        _same_structure("optimizer['param_groups']", state["optimizer"].get("param_groups"),
                        optimizer["param_groups"], problems)
        if need("optimizer['state']", state["optimizer"].get("state"), dict, "a dict"):
            ids = {i for group in optimizer["param_groups"] for i in group["params"]}
            for key, value in state["optimizer"]["state"].items():
                if key not in ids:
                    problems.append(f"optimizer['state']: {key!r} is not one of this network's {len(ids)} parameters")
                elif need(f"optimizer['state'][{key}]", value, dict, "a dict"):
                    for name, entry in value.items():
                        need(f"optimizer['state'][{key}][{name!r}]", entry, (torch.Tensor, int, float), "a tensor")
    return problems


def _same_structure(where: str, value: Any, like: Any, problems: list[str]) -> None:
    """Append a problem wherever ``value`` differs from ``like`` in type, keys or list length."""
    if isinstance(like, dict):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a dict, found {type(value).__name__}")
        elif set(value) != set(like):
            missing, extra = sorted(map(str, set(like) - set(value))), sorted(map(str, set(value) - set(like)))
            problems.append(f"{where}: " + "; ".join(f"{kind} entries {', '.join(names)}" for kind, names in
                                                     (("missing", missing), ("unexpected", extra)) if names))
        else:
            for key in like:
                _same_structure(f"{where}[{key!r}]", value[key], like[key], problems)
    elif isinstance(like, list):
        if not isinstance(value, list) or len(value) != len(like):
            problems.append(f"{where}: expected a list of {len(like)}, found {_describe(value)}")
        else:
            for i, (item, item_like) in enumerate(zip(value, like, strict=True)):
                _same_structure(f"{where}[{i}]", item, item_like, problems)
    elif isinstance(like, bool) or like is None:
        if not isinstance(value, type(like)) and value is not None and like is not None:
            problems.append(f"{where}: expected {type(like).__name__}, found {type(value).__name__}")
    elif isinstance(like, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: expected a number, found {type(value).__name__}")
    elif type(value) is not type(like):
        problems.append(f"{where}: expected {type(like).__name__}, found {type(value).__name__}")


def _describe(value: Any) -> str:
    return f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss (train and val) and validation accuracy per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    if any(h.get("val_accuracy") is not None for h in history):
        ax_acc.plot(epochs, [h.get("train_accuracy") for h in history], marker="o", label="train")
        ax_acc.plot(epochs, [h.get("val_accuracy") for h in history], marker="o", label="val")
        ax_acc.legend()
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    write_bytes_atomic(path, buffer.getvalue())


def cpu_threads(network: Any, batch_size: int, requested: int | None = None) -> int | None:
    """Intra-op threads for a CPU training step; None leaves torch's setting (OMP_NUM_THREADS) alone.

    ``requested`` (``--threads``) wins, then OMP_NUM_THREADS. Otherwise a step of fewer than
    :data:`SMALL_STEP_MACS` forward multiply-accumulates (LeNet's, for instance) runs on one
    thread: its ops are too small to split, and on a busy machine every op's threads wait for
    the slowest of them, which made LeNet's steps 5-10x slower on two threads than on one.
    """
    if requested is not None:
        if requested < 1:
            raise AlexDSLError(f"--threads {requested}: expected a number of threads >= 1")
        return requested
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return 1 if network.totals(batch=batch_size)["macs"] < SMALL_STEP_MACS else None


def _restores_torch_threads(func: Callable[..., TrainResult]) -> Callable[..., TrainResult]:
    """:func:`train` may change torch's intra-op thread count: hand the caller back its own."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> TrainResult:
        import torch

        threads = torch.get_num_threads()
        try:
            return func(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@_restores_torch_threads
def train(
    network: Any,
    data: str = "synthetic",
    out: str | os.PathLike[str] = "runs/train",
    *,
    module: Any = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    device: str | None = None,
    resume: bool = False,
    seed: int = 0,
    compile: bool = False,
    checkpoint_every: int = 200,
    progress: bool | None = None,
    log: Callable[[str], None] | None = _stderr,
    solver: dict[str, Any] | None = None,
    weights: str | os.PathLike[str] | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Train ``network`` (an :class:`alexdsl.Network`) on ``data`` and write ``out``.

    ``module`` replaces the module built from the network (it must have the same interface);
    ``weights`` (a ``.safetensors``, ``.npz`` or ``.pt`` file) initialises it instead of the fillers.
    ``epochs``, ``batch_size`` and ``lr`` override the network's ``solver(...)`` (``solver``
    overrides any other setting). ``threads`` sets torch's CPU threads for the run (default:
    :func:`cpu_threads`). Raises :class:`AlexDSLError` for user mistakes.
    """
    import torch
    import torch.distributed as dist
    from torch.utils.data.distributed import DistributedSampler

    from alexdsl.backends.torch.codegen import build

    out = Path(out)
    rank, world, local_rank = _dist_env()
    distributed = world > 1
    dev = torch_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    is_main = rank == 0
    say = log if (log is not None and is_main) else (lambda message: None)

    if len(network.data_inputs) != 1 or len(network.label_inputs) != 1:
        raise AlexDSLError(f"alexdsl train needs a network with one tensor input and one label input; "
                           f"{network.name} has {network.data_inputs} and {network.label_inputs}")
    data_name, label_name = network.data_inputs[0], network.label_inputs[0]
    input_shape = tuple(network.layer(data_name).shape)
    classes = int(network.layer(label_name).attrs.get("classes", 0))
    settings = {**network.solver, **(solver or {})}
    opts = Solver.from_settings(settings, base_lr=lr, batch_size=batch_size, epochs=epochs)
    per_process_batch = opts.batch_size or DEFAULT_BATCH
    step_threads = cpu_threads(network, per_process_batch, threads) if dev.type == "cpu" else None
    if step_threads is not None:
        torch.set_num_threads(step_threads)

    # The progress lines (start-up, evaluation, saving) follow the bars: the main process only, never with
    # progress=False, and with None only when stderr is a terminal.
    show = False if not is_main or progress is False else progress
    with busy(f"loading the data ({data})", delay=0, show=show):
        source = open_source(data, input_shape, classes, preprocess=network.preprocess.get(data_name), seed=seed)

    from alexdsl.data import Split

    train_split, val_split = Split(source, True), Split(source, False)
    sampler = DistributedSampler(train_split, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    val_sampler = DistributedSampler(val_split, num_replicas=world, rank=rank, shuffle=False)
    steps_per_epoch = math.ceil(len(sampler) / per_process_batch)
    if opts.epochs is not None:
        total_epochs = opts.epochs
        max_iter = opts.max_iter or total_epochs * steps_per_epoch
    elif opts.max_iter is not None:
        max_iter = opts.max_iter
        total_epochs = math.ceil(max_iter / steps_per_epoch)
    else:
        total_epochs = DEFAULT_EPOCHS
        max_iter = total_epochs * steps_per_epoch
    opts = opts.with_max_iter(max_iter)

    torch.manual_seed(seed)
    with busy("building the model", delay=0, show=show):
        model = module if module is not None else build(network)
    for name in ("loss", "metrics", "param_groups"):
        if not callable(getattr(model, name, None)):
            raise AlexDSLError(f"the module to train has no {name}() method")
    if weights is not None:
        from alexdsl.backends.torch.codegen import load_weights

        load_weights(model, weights)
    model.to(dev)
    with busy("preparing the optimizer", delay=0, show=show):  # torch imports its compiler here: seconds
        optimizer = make_optimizer(model, opts)
    scheduler = make_scheduler(optimizer, opts)

    config = {"batch_size": per_process_batch, "seed": seed, "world_size": world, "data": data}
    start_epoch = start_step = global_step = 0
    history: list[dict[str, Any]] = []
    sums = {"loss": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0}
    checkpoint_path = out / CHECKPOINT
    if resume:
        state = restore(checkpoint_path, model, optimizer, scheduler, config)
        start_epoch, start_step, global_step = state["epoch"], state["step"], state["global_step"]
        history = list(state["history"])
        sums = dict(state["sums"])
        say(f"resuming {checkpoint_path}: epoch {start_epoch + 1}, step {start_step}")

    runner = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    forward = torch.compile(runner) if compile else runner

    def checkpoint(epoch: int, step: int) -> None:
        if not is_main:
            return
        _save_torch({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "step": step, "global_step": global_step, "history": history, "sums": dict(sums),
            "rng": _rng_state(), "sampler": {"seed": seed, "epoch": epoch}, "config": config,
            "network": network.name,
        }, checkpoint_path)

    def all_sum(values: list[float]) -> list[float]:
        if not distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=dev)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def evaluate() -> dict[str, Any]:
        model.eval()
        totals: dict[str, float] = {"loss": 0.0, "count": 0.0}
        names: list[str] = []
        indices = list(val_sampler)
        with torch.no_grad():
            for i in range(0, len(indices), per_process_batch):
                x, y = map(torch.from_numpy, val_split.batch(indices[i:i + per_process_batch], 0))
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                outputs = forward(x)
                n = float(y.shape[0])
                totals["loss"] += float(model.loss(outputs, y)) * n
                totals["count"] += n
                for name, value in model.metrics(outputs, y).items():
                    if name not in names:
                        names.append(name)
                    totals[f"m:{name}"] = totals.get(f"m:{name}", 0.0) + float(value) * n
        keys = ["loss", "count", *(f"m:{name}" for name in names)]
        summed = dict(zip(keys, all_sum([totals.get(k, 0.0) for k in keys]), strict=True))
        result: dict[str, Any] = {"val_loss": summed["loss"] / max(summed["count"], 1.0)}
        for i, name in enumerate(names):
            value = summed[f"m:{name}"] / max(summed["count"], 1.0)
            result["val_accuracy" if i == 0 else f"val_{name}"] = value
        result.setdefault("val_accuracy", None)
        return result

    if start_epoch >= total_epochs or global_step >= max_iter:
        say(f"{out}: already trained for {start_epoch} epoch(s); nothing to do (raise --epochs to continue)")
    from tqdm import tqdm

    plotted = time.monotonic()
    for epoch in range(start_epoch, total_epochs):
        if global_step >= max_iter:
            break
        sampler.set_epoch(epoch)
        indices = list(sampler)
        batches = [indices[i:i + per_process_batch] for i in range(0, len(indices), per_process_batch)]
        first = start_step if epoch == start_epoch else 0
        if first == 0:
            sums = {"loss": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0}
        bar = tqdm(total=len(batches), initial=first, desc=f"epoch {epoch + 1}/{total_epochs}", unit="batch",
                   disable=not is_main or progress is False or (progress is None and not sys.stderr.isatty()),
                   leave=False, dynamic_ncols=True, file=sys.stderr)
        started = time.perf_counter()
        images = 0
        model.train()
        for step in range(first, len(batches)):
            if global_step >= max_iter:
                break
            torch.manual_seed(step_seed(seed, epoch, step, rank))
            x, y = map(torch.from_numpy, train_split.batch(batches[step], epoch))
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            outputs = forward(x)
            loss = model.loss(outputs, y)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise AlexDSLError(f"training diverged: the loss is {value} at epoch {epoch + 1}, step {step + 1}; "
                                   f"lower the learning rate (--lr). Saved weights were left untouched.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            global_step += 1
            n = int(y.shape[0])
            with torch.no_grad():
                metrics = model.metrics(outputs, y)
            accuracy = float(next(iter(metrics.values()))) if metrics else float("nan")
            sums["loss"] += value * n
            sums["correct"] += accuracy * n
            sums["count"] += n
            images += n
            elapsed = time.perf_counter() - started
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", acc=f"{accuracy:.3f}",
                            img_s=f"{images * world / max(elapsed, 1e-9):.0f}", refresh=False)
            if checkpoint_every and global_step % checkpoint_every == 0 and step + 1 < len(batches):
                sums["seconds"] += time.perf_counter() - started
                started, images = time.perf_counter(), 0
                checkpoint(epoch, step + 1)
        bar.close()
        sums["seconds"] += time.perf_counter() - started
        loss_sum, correct, count = all_sum([sums["loss"], sums["correct"], sums["count"]])
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum / max(count, 1.0),
                                  "train_accuracy": correct / max(count, 1.0) if math.isfinite(correct) else None}
        with busy(f"epoch {epoch + 1}/{total_epochs}: evaluating", show=show):
            record.update(evaluate())
        record["lr"] = opts.lr_at(max(global_step - 1, 0))
        record["seconds"] = round(sums["seconds"], 3)
        if not math.isfinite(record["val_loss"]):
            raise AlexDSLError(f"training diverged: the validation loss is {record['val_loss']} after epoch "
                               f"{epoch + 1}; lower the learning rate (--lr). Saved weights were left untouched.")
        history.append(record)
        if is_main:
            with busy(f"epoch {epoch + 1}/{total_epochs}: saving the weights, checkpoint and curves", show=show):
                save_weights(model, out / WEIGHTS, {"network": str(network.name), "epoch": str(epoch + 1)})
                write_text_atomic(out / METRICS, "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))
                checkpoint(epoch + 1, 0)
                last_epoch = epoch + 1 == total_epochs or global_step >= max_iter
                if last_epoch or time.monotonic() - plotted >= PLOT_INTERVAL:  # a redraw costs ~0.3 s
                    plot_curves(history, out / PLOT, f"{network.name} on {data}")
                    plotted = time.monotonic()
        accuracy_text = "" if record["val_accuracy"] is None else f" val_accuracy {record['val_accuracy']:.4f}"
        say(f"epoch {epoch + 1}/{total_epochs}: train_loss {record['train_loss']:.4f} "
            f"val_loss {record['val_loss']:.4f}{accuracy_text} ({record['seconds']:.1f} s)")
        start_step = 0
    if distributed:
        dist.barrier()
    model.eval()
    return TrainResult(module=model, history=history, out=out, steps=global_step)
