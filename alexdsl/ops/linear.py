"""Fully connected (Caffe InnerProduct)."""

from __future__ import annotations

from alexdsl.ops.registry import Arg, Attrs, Filler, OpDef, Shape, numel, register


def _infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    return (attrs["out"],)


def _params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    params: dict[str, Shape] = {"weight": (attrs["out"], numel(inputs[0]))}
    if attrs["bias"]:
        params["bias"] = (attrs["out"],)
    return params


def _macs(attrs: Attrs, inputs: list[Shape], output: Shape) -> int:
    return attrs["out"] * numel(inputs[0])


register(OpDef(
    name="fc",
    family="linear",
    summary="Fully connected layer; flattens its input first (Caffe InnerProduct).",
    example="fc6: fc(4096, weight=gaussian(0.005), bias=constant(1))",
    args=(
        Arg("out", "int", doc="number of outputs", min=1),
        Arg("bias", "bias", True, "false for no bias, or the bias filler"),
    ),
    infer=_infer,
    params=_params,
    macs=_macs,
    default_fillers={"weight": Filler("xavier", (("variance_norm", "fan_in"),)),
                     "bias": Filler("constant", (("value", 0.0),))},
))
