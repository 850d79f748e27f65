"""The settings a network declares outside its layers: ``solver(...)`` and ``preprocess INPUT(...)``.

One table each, key -> (kind, choices). The front end checks a file's settings against them,
the IR reader checks an IR file's, the torch solver and data pipeline read them, and the
language server completes them.

>>> SOLVER_KEYS["lr_policy"]
('choice', ('fixed', 'step', 'multistep', 'poly', 'cosine'))
>>> sorted(PREPROCESS_KEYS)
['crop', 'mean', 'mirror', 'resize', 'scale', 'std']
"""

from __future__ import annotations

LR_POLICIES = ("fixed", "step", "multistep", "poly", "cosine")

SOLVER_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "base_lr": ("float", ()),
    "lr_policy": ("choice", LR_POLICIES),
    "gamma": ("float", ()),
    "stepsize": ("int", ()),
    "stepvalues": ("ints", ()),
    "power": ("float", ()),
    "momentum": ("float", ()),
    "weight_decay": ("float", ()),
    "max_iter": ("int", ()),
    "epochs": ("int", ()),
    "batch_size": ("int", ()),
}
PREPROCESS_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "resize": ("pair", ()),
    "crop": ("pair", ()),
    "mirror": ("bool", ()),
    "mean": ("floats", ()),
    "std": ("floats", ()),
    "scale": ("float", ()),
}
