"""Normalisation: local response normalisation and batch normalisation."""

from __future__ import annotations

from alexdsl.ops.registry import Arg, Attrs, Filler, OpDef, Shape, ShapeError, expect_rank, register


def _infer_lrn(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    if attrs["size"] % 2 == 0:
        raise ShapeError(
            f"lrn size must be odd (the window is centred on each channel), got {attrs['size']}",
            arg="size",
            expected="an odd size such as 5",
            received=f"size={attrs['size']}",
        )
    return x


register(OpDef(
    name="lrn",
    family="norm",
    summary="Local response normalisation across channels, Caffe's: x / (k + alpha/size * sum(x^2))^beta.",
    example="norm1: lrn(5, alpha=1e-4, beta=0.75)",
    args=(
        Arg("size", "int", 5, "channels in the window (odd)", min=1),
        Arg("alpha", "float", 1e-4, "scale; divided by size as in Caffe", min=0),
        Arg("beta", "float", 0.75, "exponent", min=0),
        Arg("k", "float", 1.0, "additive constant (Caffe: 1)", min=0),
    ),
    infer=_infer_lrn,
))


def _infer_same(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    if len(x) not in (1, 3):
        raise ShapeError("expects a vector (C) or CxHxW input", expected="C or CxHxW", received="x".join(map(str, x)))
    return x


def _channels(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    return {"weight": (inputs[0][0],), "bias": (inputs[0][0],)}


def _stats(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    return {"running_mean": (inputs[0][0],), "running_var": (inputs[0][0],)}


register(OpDef(
    name="batchnorm",
    family="norm",
    summary="Batch normalisation over channels with a learned scale and shift (Caffe BatchNorm + Scale).",
    example="bn1: batchnorm(eps=1e-5, momentum=0.1)",
    args=(
        Arg("eps", "float", 1e-5, "added to the variance", min=0),
        Arg("momentum", "float", 0.1, "running-statistics update rate", min=0, max=1),
    ),
    infer=_infer_same,
    params=_channels,
    buffers=_stats,
    default_fillers={"weight": Filler("constant", (("value", 1.0),)),
                     "bias": Filler("constant", (("value", 0.0),))},
))
