"""Parameter fillers with Caffe's meaning, in one place.

:func:`distribution` turns a filler and a parameter shape into the distribution Caffe draws
from. The NumPy executor and ONNX export draw from it with :func:`draw`, and the torch code
generator writes the matching ``nn.init`` call, so the three agree by construction.

>>> distribution(Filler("xavier"), (96, 3, 11, 11))
('uniform', -0.09090909090909091, 0.09090909090909091, 'xavier: +-sqrt(3 / 363), fan_in')
>>> distribution(Filler("gaussian", (("std", 0.01), ("mean", 0.0))), (10,))[:3]
('normal', 0.0, 0.01)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The fillers: name -> ordered (argument, default) pairs.
FILLERS: dict[str, tuple[tuple[str, Any], ...]] = {
    "constant": (("value", 0.0),),
    "gaussian": (("std", 1.0), ("mean", 0.0)),
    "uniform": (("min", 0.0), ("max", 1.0)),
    "xavier": (("variance_norm", "fan_in"),),
    "msra": (("variance_norm", "fan_in"),),
}
VARIANCE_NORMS = ("fan_in", "fan_out", "average")


@dataclass(frozen=True)
class Filler:
    """How a parameter is initialised, with Caffe's meaning.

    ``type`` is one of constant(value), gaussian(std, mean), uniform(min, max),
    xavier(variance_norm) or msra(variance_norm).
    """

    type: str
    args: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str) -> Any:
        return dict(self.args)[key]

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **dict(self.args)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Filler:
        return cls(data["type"], tuple((k, v) for k, v in data.items() if k != "type"))

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in self.args)
        return f"{self.type}({inner})"


# The default fillers of the two common kinds of parameterised layer.
WEIGHT_AND_BIAS: dict[str, Filler] = {  # conv, fc: xavier weights, a zero bias
    "weight": Filler("xavier", (("variance_norm", "fan_in"),)),
    "bias": Filler("constant", (("value", 0.0),)),
}
UNIT_AFFINE: dict[str, Filler] = {  # a normalisation's scale and shift: the identity
    "weight": Filler("constant", (("value", 1.0),)),
    "bias": Filler("constant", (("value", 0.0),)),
}


def caffe_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Caffe's fan_in = count / shape[0] and fan_out = count / shape[1] (grouped conv included).

    >>> caffe_fans((256, 48, 5, 5))
    (1200, 6400)
    >>> caffe_fans((10,))
    (10, 10)
    """
    count = math.prod(shape)
    if len(shape) < 2:
        return count, count
    return count // shape[0], count // shape[1]


def distribution(filler: Filler, shape: tuple[int, ...]) -> tuple[str, float, float, str]:
    """``(kind, a, b, note)``: ``("constant", value, 0)``, ``("normal", mean, std)`` or
    ``("uniform", low, high)``, and a note saying how xavier/msra scales were derived ("" otherwise).

    Raises ``ValueError`` for a filler or variance norm it does not know.
    """
    args = dict(filler.args)
    if filler.type == "constant":
        return "constant", float(args.get("value", 0.0)), 0.0, ""
    if filler.type == "gaussian":
        return "normal", float(args.get("mean", 0.0)), float(args.get("std", 1.0)), ""
    if filler.type == "uniform":
        return "uniform", float(args.get("min", 0.0)), float(args.get("max", 1.0)), ""
    if filler.type in ("xavier", "msra"):
        norm = args.get("variance_norm", "fan_in")
        fan_in, fan_out = caffe_fans(shape)
        fans: dict[str, float] = {"fan_in": fan_in, "fan_out": fan_out, "average": (fan_in + fan_out) / 2}
        if norm not in fans:
            raise ValueError(f"unknown variance_norm {norm!r}")
        n = fans[norm]
        if filler.type == "xavier":
            bound = math.sqrt(3.0 / n)
            return "uniform", -bound, bound, f"xavier: +-sqrt(3 / {n!r}), {norm}"
        return "normal", 0.0, math.sqrt(2.0 / n), f"msra: std sqrt(2 / {n!r}), {norm}"
    raise ValueError(f"unknown filler {filler.type!r}")


def draw(filler: Filler, shape: tuple[int, ...], rng: Any) -> Any:
    """A float64 NumPy array drawn as Caffe would, from ``rng`` (a ``numpy.random.Generator``)."""
    import numpy

    kind, a, b, _ = distribution(filler, shape)
    if kind == "constant":
        return numpy.full(shape, a)
    if kind == "normal":
        return rng.normal(a, b, shape)
    return rng.uniform(a, b, shape)
