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

from typing import Any

from alexdsl.limits import MAX_DIM

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


def convert_setting(kind: str, choices: tuple[str, ...], value: Any) -> Any:
    """``value`` as a setting of ``kind`` holds it (a pair of 3 is ``(3, 3)``), or None when it is not one.

    >>> convert_setting("pair", (), 3), convert_setting("choice", LR_POLICIES, "poly"), convert_setting("int", (), -1)
    ((3, 3), 'poly', None)
    """
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if kind == "float" and is_num(value):
        return float(value)
    if kind == "int" and is_int(value) and 0 <= value <= MAX_DIM:
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "choice":
        return value if isinstance(value, str) and value in choices else None
    if kind == "pair":
        if is_int(value) and 0 < value <= MAX_DIM:
            return (value, value)
        if isinstance(value, tuple) and len(value) == 2 and all(is_int(v) and 0 < v <= MAX_DIM for v in value):
            return value
    if kind == "ints":
        items = value if isinstance(value, tuple) else (value,)
        return list(items) if all(is_int(v) and abs(v) <= MAX_DIM for v in items) else None
    if kind == "floats":
        items = value if isinstance(value, tuple) else (value,)
        return [float(v) for v in items] if all(is_num(v) for v in items) else None
    return None
