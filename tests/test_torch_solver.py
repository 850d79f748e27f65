"""Caffe solver settings: defaults, each lr_policy's formula, the optimizer's groups."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import alexdsl  # noqa: E402
import alexdsl.torch  # noqa: E402
from alexdsl.backends.torch.solver import Solver, make_optimizer, make_scheduler  # noqa: E402
from alexdsl.errors import AlexDSLError  # noqa: E402


def test_defaults_are_bvlc_alexnet():
    s = Solver.from_settings({})
    assert (s.base_lr, s.momentum, s.weight_decay, s.lr_policy, s.gamma, s.stepsize) == \
        (0.01, 0.9, 5e-4, "step", 0.1, 100000)


@pytest.mark.parametrize("it", [0, 1, 9, 10, 11, 25, 99])
def test_fixed_and_step(it):
    assert Solver.from_settings({"lr_policy": "fixed", "base_lr": 0.1}).lr_at(it) == 0.1
    s = Solver.from_settings({"lr_policy": "step", "base_lr": 0.1, "gamma": 0.5, "stepsize": 10})
    assert s.lr_at(it) == pytest.approx(0.1 * 0.5 ** math.floor(it / 10))


@pytest.mark.parametrize(("it", "expected"), [(0, 1.0), (9, 1.0), (10, 0.1), (29, 0.1), (30, 0.01), (1000, 0.01)])
def test_multistep(it, expected):
    s = Solver.from_settings({"lr_policy": "multistep", "stepvalues": [10, 30], "base_lr": 1.0})
    assert s.lr_at(it) == pytest.approx(expected)


@pytest.mark.parametrize("it", [0, 1, 50, 99, 100, 150])
def test_poly_and_cosine(it):
    poly = Solver.from_settings({"lr_policy": "poly", "power": 2.0, "max_iter": 100, "base_lr": 0.5})
    assert poly.lr_at(it) == pytest.approx(0.5 * (1 - min(it, 100) / 100) ** 2)
    cosine = Solver.from_settings({"lr_policy": "cosine", "max_iter": 100, "base_lr": 0.5})
    assert cosine.lr_at(it) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * min(it, 100) / 100)))


def test_overrides_win_and_bad_settings_are_errors():
    s = Solver.from_settings({"base_lr": 0.1, "batch_size": 8}, base_lr=0.5, batch_size=None)
    assert (s.base_lr, s.batch_size) == (0.5, 8)
    for bad in ({"lr_policy": "inverse"}, {"stepsize": 0, "lr_policy": "step"}, {"momentun": 0.9},
                {"lr_policy": "multistep", "stepvalues": [5, 2]}, {"epochs": 0}):
        with pytest.raises(AlexDSLError):
            Solver.from_settings(bad)
    with pytest.raises(AlexDSLError, match="max_iter"):
        Solver.from_settings({"lr_policy": "poly"}).lr_at(3)


def test_scheduler_steps_every_group_with_its_multiplier():
    network = alexdsl.load("examples/alexnet.adsl")
    module = alexdsl.torch.build(network)
    solver = Solver.from_settings({"lr_policy": "step", "stepsize": 2, "gamma": 0.1, "base_lr": 0.01})
    optimizer = make_optimizer(module, solver)
    scheduler = make_scheduler(optimizer, solver)
    assert optimizer.defaults["momentum"] == 0.9
    seen = []
    for _ in range(5):
        seen.append(sorted(round(g["lr"], 12) for g in optimizer.param_groups))
        optimizer.step()
        scheduler.step()
    assert seen == [[0.01, 0.02], [0.01, 0.02], [0.001, 0.002], [0.001, 0.002], [0.0001, 0.0002]]
    decays = sorted(g["weight_decay"] for g in optimizer.param_groups)
    assert decays == [0.0, 5e-4]
