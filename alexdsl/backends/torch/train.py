"""The training loop behind ``alexdsl train``: Caffe solver, resumable checkpoints, torchrun.

The model is any ``nn.Module`` with ``forward(*inputs)``, ``loss(outputs, label)``,
``metrics(outputs, label) -> dict`` and ``param_groups(base_lr, weight_decay)`` (the
generated modules have all four). Written to ``OUT`` (rank 0 only, every file atomically):

* ``metrics.jsonl``: one JSON object per epoch: epoch, train_loss, train_accuracy, val_loss,
  val_accuracy, lr, seconds (plus val_<name> for each further accuracy layer);
* ``weights.safetensors``: the state_dict after the last completed epoch;
* ``tokenizer.json``: for ``text:FILE`` data, the tokenizer that encoded it (:mod:`alexdsl.text`);
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

from alexdsl.backends.torch.checkpoint import checkpoint_problems
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
    problems = checkpoint_problems(state, optimizer, scheduler)
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


@dataclass
class _Process:
    """This process's place in the run (one process, or one of ``torchrun``'s) and its device."""

    rank: int
    world: int
    dev: Any

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _start_process(device: str | None) -> _Process:
    """The process's rank and device, with the process group joined under ``torchrun``."""
    import torch
    import torch.distributed as dist

    rank, world, local_rank = _dist_env()
    dev = torch_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return _Process(rank, world, dev)


def _language_model_vocab(network: Any) -> int | None:
    """A language model's vocabulary: the width of the scores its loss compares with its own token ids
    (``next_token_loss(lm_head, ids)``); None for a network that is not one."""
    from alexdsl.ops.registry import lookup

    for layer in network.layers():
        op = lookup(layer.op)
        if op is not None and op.role == "loss" and not op.takes_label and layer.inputs[1:2] == network.data_inputs:
            return int(network.layer(layer.inputs[0]).shape[-1])
    return None


def _check_inputs(network: Any) -> None:
    """An error unless the network has one data input and one label input, or is a language model."""
    if len(network.data_inputs) == 1 and not network.label_inputs and network.layer(network.data_inputs[0]).is_tokens:
        if _language_model_vocab(network) is None:
            raise AlexDSLError(f"alexdsl train: {network.name} reads token ids but declares no loss on them; add "
                               f"'loss: next_token_loss(<scores>, {network.data_inputs[0]}) @train'")
        return
    if len(network.data_inputs) != 1 or len(network.label_inputs) != 1:
        raise AlexDSLError(f"alexdsl train needs a network with one tensor input and one label input; "
                           f"{network.name} has {network.data_inputs} and {network.label_inputs}")


@dataclass
class _Data:
    """The training and validation splits and this process's samplers over them."""

    train: Any
    val: Any
    sampler: Any
    val_sampler: Any
    tokenizer: Any = None  # text's: written beside the weights


def _shows_progress(process: _Process, progress: bool | None) -> bool | None:
    """``show`` for :func:`alexdsl.progress.busy`: never off the main process or with ``progress=False``;
    None (when stderr is a terminal) unless asked."""
    return False if not process.is_main or progress is False else progress


def _open_data(network: Any, data: str, seed: int, process: _Process, tokenizer: str | None) -> _Data:
    """The data source for the network's (one) input and label, split, with a DistributedSampler per split."""
    from torch.utils.data.distributed import DistributedSampler

    from alexdsl.data import Split

    data_name = network.data_inputs[0]
    input_shape = tuple(network.layer(data_name).shape)
    classes = int(network.layer(network.label_inputs[0]).attrs.get("classes", 0)) if network.label_inputs else 0
    source = open_source(data, input_shape, classes, preprocess=network.preprocess.get(data_name), seed=seed,
                         vocab=_language_model_vocab(network), tokenizer=tokenizer)
    train_split, val_split = Split(source, True), Split(source, False)
    sampler = DistributedSampler(train_split, num_replicas=process.world, rank=process.rank, shuffle=True, seed=seed)
    val_sampler = DistributedSampler(val_split, num_replicas=process.world, rank=process.rank, shuffle=False)
    return _Data(train_split, val_split, sampler, val_sampler, getattr(source, "tokenizer", None))


def _schedule(opts: Solver, steps_per_epoch: int) -> tuple[int, int]:
    """``(epochs, max_iter)``: from the epochs asked for, else from max_iter, else the default epochs."""
    if opts.epochs is not None:
        return opts.epochs, opts.max_iter or opts.epochs * steps_per_epoch
    if opts.max_iter is not None:
        return math.ceil(opts.max_iter / steps_per_epoch), opts.max_iter
    return DEFAULT_EPOCHS, DEFAULT_EPOCHS * steps_per_epoch


def _build_model(network: Any, module: Any, weights: str | os.PathLike[str] | None, seed: int, dev: Any) -> Any:
    """The module to train (built from the network, seeded, unless given), its weights loaded, on ``dev``."""
    import torch

    from alexdsl.backends.torch.codegen import build

    torch.manual_seed(seed)
    model = module if module is not None else build(network)
    for name in ("loss", "metrics", "param_groups"):
        if not callable(getattr(model, name, None)):
            raise AlexDSLError(f"the module to train has no {name}() method")
    if weights is not None:
        from alexdsl.backends.torch.codegen import load_weights

        load_weights(model, weights)
    model.to(dev)
    return model


def _runner(model: Any, process: _Process, compile: bool) -> Any:
    """What the steps call: the model, wrapped in DistributedDataParallel under torchrun, compiled if asked."""
    import torch

    runner = model
    if process.distributed:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(model, device_ids=[process.dev.index] if process.dev.type == "cuda" else None)
    return torch.compile(runner) if compile else runner


def _zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0}


@dataclass
class _Run:
    """One training run's state, shared by its epochs: what is trained, on what, and how far it got."""

    network: Any
    data: str
    out: Path
    process: _Process
    splits: _Data
    opts: Solver
    batch: int  # per process
    seed: int
    total_epochs: int
    max_iter: int
    model: Any
    forward: Any
    optimizer: Any
    scheduler: Any
    config: dict[str, Any]
    checkpoint_path: Path
    history: list[dict[str, Any]]
    sums: dict[str, float]
    global_step: int
    checkpoint_every: int
    progress: bool | None

    @property
    def show(self) -> bool | None:
        """Whether this process draws progress lines (see :func:`_shows_progress`)."""
        return _shows_progress(self.process, self.progress)

    def checkpoint(self, epoch: int, step: int) -> None:
        """Write ``checkpoint.pt`` (rank 0 only): everything a resumed run needs to continue exactly."""
        if not self.process.is_main:
            return
        _save_torch({
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": epoch, "step": step, "global_step": self.global_step,
            "history": self.history, "sums": dict(self.sums), "rng": _rng_state(),
            "sampler": {"seed": self.seed, "epoch": epoch}, "config": self.config, "network": self.network.name,
        }, self.checkpoint_path)

    def all_sum(self, values: list[float]) -> list[float]:
        """``values`` summed over the processes."""
        if not self.process.distributed:
            return values
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.process.dev)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def evaluate(self) -> dict[str, Any]:
        """The validation loss and accuracies (``val_loss``, ``val_accuracy``, ``val_<metric>``)."""
        import torch

        model, dev, batch = self.model, self.process.dev, self.batch
        model.eval()
        totals: dict[str, float] = {"loss": 0.0, "count": 0.0}
        names: list[str] = []
        indices = list(self.splits.val_sampler)
        with torch.no_grad():
            for i in range(0, len(indices), batch):
                x, y = map(torch.from_numpy, self.splits.val.batch(indices[i:i + batch], 0))
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                outputs = self.forward(x)
                n = float(y.shape[0])
                totals["loss"] += float(model.loss(outputs, y)) * n
                totals["count"] += n
                for name, value in model.metrics(outputs, y).items():
                    if name not in names:
                        names.append(name)
                    totals[f"m:{name}"] = totals.get(f"m:{name}", 0.0) + float(value) * n
        keys = ["loss", "count", *(f"m:{name}" for name in names)]
        summed = dict(zip(keys, self.all_sum([totals.get(k, 0.0) for k in keys]), strict=True))
        result: dict[str, Any] = {"val_loss": summed["loss"] / max(summed["count"], 1.0)}
        for i, name in enumerate(names):
            value = summed[f"m:{name}"] / max(summed["count"], 1.0)
            result["val_accuracy" if i == 0 else f"val_{name}"] = value
        result.setdefault("val_accuracy", None)
        return result

    def step(self, x: Any, y: Any, epoch: int, step: int) -> tuple[float, float]:
        """One optimizer step on the batch; its loss and (first) accuracy."""
        import torch

        outputs = self.forward(x)
        loss = self.model.loss(outputs, y)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise AlexDSLError(f"training diverged: the loss is {value} at epoch {epoch + 1}, step {step + 1}; "
                               f"lower the learning rate (--lr). Saved weights were left untouched.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        with torch.no_grad():
            metrics = self.model.metrics(outputs, y)
        return value, float(next(iter(metrics.values()))) if metrics else float("nan")

    def train_epoch(self, epoch: int, first: int) -> None:
        """The epoch's steps from ``first`` on (a resumed run skips those done), checkpointing every
        ``checkpoint_every`` steps; its sums accumulate in :attr:`sums`."""
        import torch
        from tqdm import tqdm

        process, batch = self.process, self.batch
        self.splits.sampler.set_epoch(epoch)
        indices = list(self.splits.sampler)
        batches = [indices[i:i + batch] for i in range(0, len(indices), batch)]
        if first == 0:
            self.sums = _zero_sums()
        progress = self.progress
        bar = tqdm(total=len(batches), initial=first, desc=f"epoch {epoch + 1}/{self.total_epochs}", unit="batch",
                   disable=not process.is_main or progress is False or (progress is None and not sys.stderr.isatty()),
                   leave=False, dynamic_ncols=True, file=sys.stderr)
        started = time.perf_counter()
        images = 0
        self.model.train()
        for step in range(first, len(batches)):
            if self.global_step >= self.max_iter:
                break
            torch.manual_seed(step_seed(self.seed, epoch, step, process.rank))
            x, y = map(torch.from_numpy, self.splits.train.batch(batches[step], epoch))
            x, y = x.to(process.dev, non_blocking=True), y.to(process.dev, non_blocking=True)
            value, accuracy = self.step(x, y, epoch, step)
            n = int(y.shape[0])
            self.sums["loss"] += value * n
            self.sums["correct"] += accuracy * n
            self.sums["count"] += n
            images += n
            elapsed = time.perf_counter() - started
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", acc=f"{accuracy:.3f}",
                            img_s=f"{images * process.world / max(elapsed, 1e-9):.0f}", refresh=False)
            if self.checkpoint_every and self.global_step % self.checkpoint_every == 0 and step + 1 < len(batches):
                self.sums["seconds"] += time.perf_counter() - started
                started, images = time.perf_counter(), 0
                self.checkpoint(epoch, step + 1)
        bar.close()
        self.sums["seconds"] += time.perf_counter() - started

    def record(self, epoch: int) -> dict[str, Any]:
        """The epoch's line of ``metrics.jsonl``: train sums over the processes, then validation."""
        loss_sum, correct, count = self.all_sum([self.sums["loss"], self.sums["correct"], self.sums["count"]])
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum / max(count, 1.0),
                                  "train_accuracy": correct / max(count, 1.0) if math.isfinite(correct) else None}
        with busy(f"epoch {epoch + 1}/{self.total_epochs}: evaluating", show=self.show):
            record.update(self.evaluate())
        record["lr"] = self.opts.lr_at(max(self.global_step - 1, 0))
        record["seconds"] = round(self.sums["seconds"], 3)
        if not math.isfinite(record["val_loss"]):
            raise AlexDSLError(f"training diverged: the validation loss is {record['val_loss']} after epoch "
                               f"{epoch + 1}; lower the learning rate (--lr). Saved weights were left untouched.")
        return record

    def save_epoch(self, epoch: int, plotted: float) -> float:
        """Weights, metrics and checkpoint after an epoch (rank 0), and the curves when due; when they were
        last drawn."""
        if not self.process.is_main:
            return plotted
        with busy(f"epoch {epoch + 1}/{self.total_epochs}: saving the weights, checkpoint and curves",
                  show=self.show):
            save_weights(self.model, self.out / WEIGHTS, {"network": str(self.network.name), "epoch": str(epoch + 1)})
            write_text_atomic(self.out / METRICS, "".join(json.dumps(h, sort_keys=True) + "\n" for h in self.history))
            self.checkpoint(epoch + 1, 0)
            last_epoch = epoch + 1 == self.total_epochs or self.global_step >= self.max_iter
            if last_epoch or time.monotonic() - plotted >= PLOT_INTERVAL:  # a redraw costs ~0.3 s
                plot_curves(self.history, self.out / PLOT, f"{self.network.name} on {self.data}")
                plotted = time.monotonic()
        return plotted


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
    tokenizer: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train ``network`` (an :class:`alexdsl.Network`) on ``data`` and write ``out``.

    ``module`` replaces the module built from the network (it must have the same interface);
    ``weights`` (a ``.safetensors``, ``.npz`` or ``.pt`` file) initialises it instead of the fillers.
    ``epochs``, ``batch_size`` and ``lr`` override the network's ``solver(...)`` (``solver``
    overrides any other setting). ``threads`` sets torch's CPU threads for the run (default:
    :func:`cpu_threads`). ``tokenizer`` (a ``tokenizer.json``) encodes ``text:FILE`` data instead of its
    characters; the tokenizer used is written as ``out/tokenizer.json``. Raises :class:`AlexDSLError` for user mistakes.
    """
    import torch
    import torch.distributed as dist

    out = Path(out)
    process = _start_process(device)
    say = log if (log is not None and process.is_main) else (lambda message: None)

    _check_inputs(network)
    settings = {**network.solver, **(solver or {})}
    opts = Solver.from_settings(settings, base_lr=lr, batch_size=batch_size, epochs=epochs)
    per_process_batch = opts.batch_size or DEFAULT_BATCH
    step_threads = cpu_threads(network, per_process_batch, threads) if process.dev.type == "cpu" else None
    if step_threads is not None:
        torch.set_num_threads(step_threads)
    # The progress lines (start-up, evaluation, saving) follow the bars: the main process only, never with
    # progress=False, and with None only when stderr is a terminal.
    show = _shows_progress(process, progress)
    with busy(f"loading the data ({data})", delay=0, show=show):
        splits = _open_data(network, data, seed, process, None if tokenizer is None else str(tokenizer))
    if splits.tokenizer is not None and process.is_main:
        from alexdsl.text import TOKENIZER_FILE

        splits.tokenizer.save(out / TOKENIZER_FILE)
    total_epochs, max_iter = _schedule(opts, math.ceil(len(splits.sampler) / per_process_batch))
    opts = opts.with_max_iter(max_iter)

    with busy("building the model", delay=0, show=show):
        model = _build_model(network, module, weights, seed, process.dev)
    with busy("preparing the optimizer", delay=0, show=show):  # torch imports its compiler here: seconds
        optimizer = make_optimizer(model, opts)
    scheduler = make_scheduler(optimizer, opts)

    config = {"batch_size": per_process_batch, "seed": seed, "world_size": process.world, "data": data}
    start_epoch = start_step = global_step = 0
    history: list[dict[str, Any]] = []
    sums = _zero_sums()
    checkpoint_path = out / CHECKPOINT
    if resume:
        state = restore(checkpoint_path, model, optimizer, scheduler, config)
        start_epoch, start_step, global_step = state["epoch"], state["step"], state["global_step"]
        history = list(state["history"])
        sums = dict(state["sums"])
        say(f"resuming {checkpoint_path}: epoch {start_epoch + 1}, step {start_step}")

    run = _Run(network=network, data=data, out=out, process=process, splits=splits, opts=opts, batch=per_process_batch,
               seed=seed, total_epochs=total_epochs, max_iter=max_iter, model=model,
               forward=_runner(model, process, compile), optimizer=optimizer, scheduler=scheduler, config=config,
               checkpoint_path=checkpoint_path, history=history, sums=sums, global_step=global_step,
               checkpoint_every=checkpoint_every, progress=progress)
    if start_epoch >= total_epochs or global_step >= max_iter:
        say(f"{out}: already trained for {start_epoch} epoch(s); nothing to do (raise --epochs to continue)")
    plotted = time.monotonic()
    for epoch in range(start_epoch, total_epochs):
        if run.global_step >= max_iter:
            break
        run.train_epoch(epoch, start_step if epoch == start_epoch else 0)
        record = run.record(epoch)
        history.append(record)
        plotted = run.save_epoch(epoch, plotted)
        accuracy_text = "" if record["val_accuracy"] is None else f" val_accuracy {record['val_accuracy']:.4f}"
        say(f"epoch {epoch + 1}/{total_epochs}: train_loss {record['train_loss']:.4f} "
            f"val_loss {record['val_loss']:.4f}{accuracy_text} ({record['seconds']:.1f} s)")
    if process.distributed:
        dist.barrier()
    model.eval()
    return TrainResult(module=model, history=history, out=out, steps=run.global_step)
