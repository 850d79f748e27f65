"""What ``alexdsl train --resume`` checks in a checkpoint before it restores anything from it.

A checkpoint comes from disk, so it may be damaged or tampered with: every value is checked
for type, range and shape against a fresh run's model, optimizer and scheduler, and the RNG
states are tried on throwaway generators first. :func:`checkpoint_problems` lists everything
wrong, each naming its field (``rng['numpy']['pos']``, ``optimizer['state'][3]['momentum_buffer']``,
...); :func:`alexdsl.backends.torch.train.restore` refuses the file if the list is not empty.
"""

from __future__ import annotations

import math
import random
from typing import Any

INT64 = 2**63  # every integer is an int64 somewhere (a tensor, a seed, a JSON reader)
MT_WORDS = 624  # 32-bit words of an MT19937 state (NumPy's and Python's generators)


def checkpoint_problems(state: Any, optimizer: Any, scheduler: Any) -> list[str]:
    """Everything wrong with a loaded checkpoint, compared with this run's ``optimizer`` and ``scheduler``."""
    if not isinstance(state, dict):
        return [f"expected a dict, found {type(state).__name__}"]
    required = ("model", "optimizer", "scheduler", "epoch", "step", "global_step", "history", "sums", "rng", "config")
    missing = [key for key in required if key not in state]
    if missing:
        return [f"missing entries: {', '.join(missing)}"]
    check = _Checker()
    for key in ("epoch", "step", "global_step"):
        check.integer(key, state[key], 0)
    if check.need("model", state["model"], dict, "a state_dict"):
        for key, value in state["model"].items():
            if check.need(f"model[{key!r}]", value, _torch().Tensor, "a tensor") and \
                    not key.endswith("num_batches_tracked"):
                check.finite(f"model[{key!r}]", value, _torch().float32)
    if check.need("history", state["history"], list, "a list"):
        if isinstance(state["epoch"], int) and len(state["history"]) != state["epoch"]:
            check.problems.append(f"history: expected {state['epoch']} entries (one per epoch), "
                                  f"found {len(state['history'])}")
        for i, record in enumerate(state["history"]):
            if check.need(f"history[{i}]", record, dict, "a dict"):
                for key in ("epoch", "train_loss", "val_loss"):
                    check.number(f"history[{i}][{key!r}]", record.get(key))
                for key, value in record.items():  # accuracies (None without an accuracy layer), lr, seconds
                    if key not in ("epoch", "train_loss", "val_loss") and value is not None:
                        check.number(f"history[{i}][{key!r}]", value)
    if check.need("sums", state["sums"], dict, "a dict"):
        for key in ("loss", "correct", "count", "seconds"):
            check.number(f"sums[{key!r}]", state["sums"].get(key))
    if check.need("config", state["config"], dict, "a dict"):
        for key in ("batch_size", "seed", "world_size"):
            check.integer(f"config[{key!r}]", state["config"].get(key), 0)
    if check.need("rng", state["rng"], dict, "a dict"):
        _check_rng(check, state["rng"])
    check.same("scheduler", state["scheduler"], scheduler.state_dict())
    if not check.problems:
        _check_multipliers(check, scheduler, state["scheduler"])
    _check_optimizer(check, state["optimizer"], optimizer)
    return check.problems


def _torch() -> Any:
    import torch

    return torch


class _Checker:
    """Collects problems; each check returns whether the value passed."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, where: str, expected: str, found: Any) -> bool:
        self.problems.append(f"{where}: expected {expected}, found {found}")
        return False

    def need(self, where: str, value: Any, kind: type | tuple[type, ...], what: str) -> bool:
        if isinstance(value, kind) and not isinstance(value, bool):
            return True
        return self.fail(where, what, type(value).__name__)

    def integer(self, where: str, value: Any, low: int = -INT64, high: int = INT64 - 1) -> bool:
        if not self.need(where, value, int, "an integer"):
            return False
        if not low <= value <= high:
            span = f">= {low}" if high == INT64 - 1 else f"from {low} to {high}"
            return self.fail(where, f"an integer {span}", _short(value))
        return True

    def number(self, where: str, value: Any) -> bool:
        """A finite real number (an int too large for a float is not one)."""
        if not self.need(where, value, (int, float), "a number"):
            return False
        if isinstance(value, int) and abs(value) >= INT64 or isinstance(value, float) and not math.isfinite(value):
            return self.fail(where, "a finite number", _short(value))
        return True

    def tensor(self, where: str, value: Any, shape: tuple[int, ...] | None, dtype: Any = None) -> bool:
        if not self.need(where, value, _torch().Tensor, "a tensor"):
            return False
        if (shape is not None and tuple(value.shape) != shape) or (dtype is not None and value.dtype != dtype):
            kind = f"a {str(dtype).removeprefix('torch.')} tensor" if dtype is not None else "a tensor"
            return self.fail(where, f"{kind} of shape {shape}",
                             f"{str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}")
        return True

    def finite(self, where: str, value: Any, dtype: Any) -> bool:
        """A floating-point tensor whose values stay finite in ``dtype`` (what restoring casts it to)."""
        if not value.is_floating_point():
            return self.fail(where, "a floating-point tensor", str(value.dtype).removeprefix("torch."))
        bad = int((~_torch().isfinite(value.to(dtype))).sum())
        return bad == 0 or self.fail(where, f"finite {str(dtype).removeprefix('torch.')} values",
                                     f"{bad} that are not")

    def same(self, where: str, value: Any, like: Any) -> None:
        """Problems wherever ``value`` differs from ``like`` in type, keys, list length or range."""
        if isinstance(like, dict):
            if not isinstance(value, dict):
                self.fail(where, "a dict", type(value).__name__)
            elif set(value) != set(like):
                missing, extra = sorted(map(str, set(like) - set(value))), sorted(map(str, set(value) - set(like)))
                self.problems.append(f"{where}: " + "; ".join(f"{kind} entries {', '.join(names)}" for kind, names in
                                                              (("missing", missing), ("unexpected", extra)) if names))
            else:
                for key in like:
                    self.same(f"{where}[{key!r}]", value[key], like[key])
        elif isinstance(like, list):
            if not isinstance(value, list) or len(value) != len(like):
                self.fail(where, f"a list of {len(like)}", _describe(value))
            else:
                for i, (item, item_like) in enumerate(zip(value, like, strict=True)):
                    self.same(f"{where}[{i}]", item, item_like)
        elif isinstance(like, bool) or like is None:
            if value is not None and not isinstance(value, bool):
                self.fail(where, "True, False or None", type(value).__name__)
        elif isinstance(like, int):
            self.integer(where, value)
        elif isinstance(like, float):
            self.number(where, value)
        elif type(value) is not type(like):
            self.fail(where, type(like).__name__, type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _describe(value: Any) -> str:
    return f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__


def _check_rng(check: _Checker, rng: dict[str, Any]) -> None:
    """Types, shapes and ranges of the RNG states, then each tried on a throwaway generator."""
    import numpy as np

    torch = _torch()
    if check.tensor("rng['torch']", rng.get("torch"), tuple(torch.get_rng_state().shape), torch.uint8):
        _try(check, "rng['torch']", lambda: torch.Generator().set_state(rng["torch"]))
    if check.need("rng['numpy']", rng.get("numpy"), dict, "a dict"):
        n = rng["numpy"]
        fields = [check.tensor("rng['numpy']['keys']", n.get("keys"), (MT_WORDS,), torch.int64),
                  check.integer("rng['numpy']['pos']", n.get("pos"), 0, MT_WORDS),
                  check.integer("rng['numpy']['has_gauss']", n.get("has_gauss"), 0, 1),
                  check.number("rng['numpy']['cached_gaussian']", n.get("cached_gaussian"))]
        if fields[0] and not bool(((n["keys"] >= 0) & (n["keys"] < 2**32)).all()):
            fields[0] = check.fail("rng['numpy']['keys']", "32-bit unsigned words", "values outside 0 to 2**32 - 1")
        if all(fields):
            keys = n["keys"].numpy().astype(np.uint32)
            _try(check, "rng['numpy']", lambda: np.random.RandomState().set_state(
                ("MT19937", keys, n["pos"], n["has_gauss"], float(n["cached_gaussian"]))))
    if check.need("rng['python']", rng.get("python"), dict, "a dict"):
        p = rng["python"]
        fields = [check.integer("rng['python']['version']", p.get("version"), 3, 3),
                  check.tensor("rng['python']['state']", p.get("state"), (MT_WORDS + 1,), torch.int64),
                  p.get("gauss") is None or check.number("rng['python']['gauss']", p["gauss"])]
        if fields[1] and not (bool(((p["state"][:-1] >= 0) & (p["state"][:-1] < 2**32)).all())
                              and 0 <= int(p["state"][-1]) <= MT_WORDS):
            fields[1] = check.fail("rng['python']['state']", f"{MT_WORDS} 32-bit words and a position from 0 to "
                                   f"{MT_WORDS}", "values out of range")
        if all(fields):
            _try(check, "rng['python']", lambda: random.Random().setstate(
                (p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"])))
    if "cuda" in rng and check.need("rng['cuda']", rng["cuda"], list, "a list"):
        for i, value in enumerate(rng["cuda"]):
            check.tensor(f"rng['cuda'][{i}]", value, None, torch.uint8)


def _try(check: _Checker, where: str, restore: Any) -> None:
    try:
        restore()
    except (ValueError, OverflowError, TypeError, RuntimeError) as error:
        check.fail(where, "a state its generator accepts", f"one it refuses ({str(error).splitlines()[0][:120]})")


def _check_multipliers(check: _Checker, scheduler: Any, saved: dict[str, Any]) -> None:
    """The learning-rate multiplier at the saved step must be a finite real number (LambdaLR)."""
    step = saved.get("last_epoch")
    if not isinstance(step, int) or not 0 <= step < 2**53:
        check.fail("scheduler['last_epoch']", f"an integer from 0 to {2**53 - 1}", _short(step))
        return
    for i, multiplier in enumerate(getattr(scheduler, "lr_lambdas", ())):
        try:
            value = multiplier(step)
        except (ArithmeticError, ValueError, TypeError) as error:
            check.fail("scheduler['last_epoch']", "a step the learning-rate policy can compute",
                       f"{step} ({type(error).__name__}: {error})")
            return
        if isinstance(value, complex) or not math.isfinite(value):
            check.fail("scheduler['last_epoch']", "a step with a finite learning rate",
                       f"{step} (multiplier of group {i}: {value})")
            return


def _check_optimizer(check: _Checker, saved: Any, optimizer: Any) -> None:
    """param_groups as this run's (same parameter ids, in order, finite settings); per-parameter state
    entries are tensors of the parameter's shape (or a finite step count)."""
    if not check.need("optimizer", saved, dict, "a dict"):
        return
    fresh = optimizer.state_dict()
    check.same("optimizer['param_groups']", saved.get("param_groups"), fresh["param_groups"])
    params: dict[int, Any] = {}
    for i, (group, like) in enumerate(zip(saved.get("param_groups") or [], fresh["param_groups"], strict=False)):
        if isinstance(group, dict) and group.get("params") != like["params"]:
            check.fail(f"optimizer['param_groups'][{i}]['params']", f"this network's parameter ids {like['params']}",
                       _short(group.get("params")))
    for group, like in zip(optimizer.param_groups, fresh["param_groups"], strict=True):
        params.update(zip(like["params"], group["params"], strict=True))
    if not check.need("optimizer['state']", saved.get("state"), dict, "a dict"):
        return
    for key, value in saved["state"].items():
        where = f"optimizer['state'][{key!r}]"
        if key not in params:
            check.problems.append(f"optimizer['state']: {key!r} is not one of this network's {len(params)} parameters")
        elif check.need(where, value, dict, "a dict"):
            for name, entry in value.items():
                if name == "step":
                    if not isinstance(entry, _torch().Tensor):
                        check.number(f"{where}['step']", entry)
                    elif check.tensor(f"{where}['step']", entry, ()) and not math.isfinite(float(entry)):
                        check.fail(f"{where}['step']", "a finite number", float(entry))
                elif entry is not None and check.tensor(f"{where}[{name!r}]", entry, tuple(params[key].shape)):
                    check.finite(f"{where}[{name!r}]", entry, params[key].dtype)
