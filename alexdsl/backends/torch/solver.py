"""Caffe solver settings -> a torch SGD optimizer and a per-iteration learning-rate schedule.

The learning rate at iteration ``it`` (0-based, counted in optimizer steps) follows Caffe's
``SGDSolver::GetLearningRate``:

=========  ==========================================================
fixed      base_lr
step       base_lr * gamma ** floor(it / stepsize)
multistep  base_lr * gamma ** (number of stepvalues <= it)
poly       base_lr * (1 - it / max_iter) ** power
cosine     base_lr * (1 + cos(pi * it / max_iter)) / 2
=========  ==========================================================

Each parameter group's rate is the schedule times its ``lr_mult`` (the group's initial lr),
and its weight decay is ``weight_decay * decay_mult``.

>>> s = Solver.from_settings({"lr_policy": "step", "stepsize": 10})
>>> s.base_lr, s.momentum, s.weight_decay, s.gamma
(0.01, 0.9, 0.0005, 0.1)
>>> round(s.lr_at(25), 6)
0.0001
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from alexdsl.errors import AlexDSLError
from alexdsl.settings import LR_POLICIES as POLICIES
from alexdsl.settings import SOLVER_KEYS

KNOWN_KEYS = set(SOLVER_KEYS)


@dataclass(frozen=True)
class Solver:
    """Solver settings with Caffe's bvlc_alexnet defaults."""

    base_lr: float = 0.01
    lr_policy: str = "step"
    gamma: float = 0.1
    stepsize: int = 100000
    stepvalues: tuple[int, ...] = field(default_factory=tuple)
    power: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_iter: int | None = None
    epochs: int | None = None
    batch_size: int | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None = None, **overrides: Any) -> Solver:
        """Build from a network's ``solver(...)`` dict; ``overrides`` that are not None win."""
        values: dict[str, Any] = {}
        for key, value in {**dict(settings or {}), **{k: v for k, v in overrides.items() if v is not None}}.items():
            if key not in KNOWN_KEYS:
                raise AlexDSLError(f"unknown solver setting '{key}' (known: {', '.join(sorted(KNOWN_KEYS))})")
            values[key] = value
        if "stepvalues" in values:
            values["stepvalues"] = tuple(int(v) for v in values["stepvalues"])
        solver = cls(**values)
        solver.check()
        return solver

    def check(self) -> None:
        if self.lr_policy not in POLICIES:
            raise AlexDSLError(f"unknown lr_policy '{self.lr_policy}' (expected one of {', '.join(POLICIES)})")
        if self.base_lr < 0:
            raise AlexDSLError(f"base_lr must be >= 0, got {self.base_lr}")
        if self.lr_policy == "step" and self.stepsize < 1:
            raise AlexDSLError(f"lr_policy step needs stepsize >= 1, got {self.stepsize}")
        if self.lr_policy == "multistep" and list(self.stepvalues) != sorted(self.stepvalues):
            raise AlexDSLError(f"stepvalues must increase, got {list(self.stepvalues)}")
        for key in ("max_iter", "epochs", "batch_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise AlexDSLError(f"solver {key} must be >= 1, got {value}")

    def with_max_iter(self, max_iter: int) -> Solver:
        return replace(self, max_iter=max_iter)

    def multiplier(self, it: int) -> float:
        """The schedule factor at iteration ``it``: lr(it) / base_lr."""
        policy = self.lr_policy
        if policy == "fixed":
            return 1.0
        if policy == "step":
            return self.gamma ** (it // self.stepsize)
        if policy == "multistep":
            return self.gamma ** sum(1 for v in self.stepvalues if it >= v)
        if self.max_iter is None:
            raise AlexDSLError(f"lr_policy {policy} needs max_iter (or epochs)")
        progress = min(it, self.max_iter) / self.max_iter
        if policy == "poly":
            return (1.0 - progress) ** self.power
        return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine

    def lr_at(self, it: int) -> float:
        return self.base_lr * self.multiplier(it)


def make_optimizer(module: Any, solver: Solver) -> Any:
    """torch SGD over ``module.param_groups(base_lr, weight_decay)`` (lr_mult / decay_mult applied)."""
    import torch

    groups = module.param_groups(solver.base_lr, solver.weight_decay)
    return torch.optim.SGD(groups, lr=solver.base_lr, momentum=solver.momentum, weight_decay=solver.weight_decay)


def make_scheduler(optimizer: Any, solver: Solver) -> Any:
    """A LambdaLR stepped once per iteration, scaling every group by :meth:`Solver.multiplier`."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: solver.multiplier(it))
