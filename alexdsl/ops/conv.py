"""Convolution."""

from __future__ import annotations

from alexdsl.ops.registry import Arg, Attrs, Filler, OpDef, Shape, ShapeError, expect_rank, register
from alexdsl.shape_math import conv_output_size, uncovered_pixels


def _infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    channels, height, width = x
    groups = attrs["groups"]
    if channels % groups:
        raise ShapeError(
            f"input channels ({channels}) are not divisible by groups ({groups})",
            arg="groups",
            expected=f"a divisor of {channels}",
            received=f"groups={groups}",
        )
    if attrs["out"] % groups:
        raise ShapeError(
            f"the filter count ({attrs['out']}) is not divisible by groups ({groups})",
            arg="out",
            expected=f"a multiple of {groups}",
            received=f"out={attrs['out']}",
        )
    sizes = []
    for axis, size in (("height", height), ("width", width)):
        i = 0 if axis == "height" else 1
        out = conv_output_size(size, attrs["kernel"][i], attrs["stride"][i], attrs["pad"][i], attrs["dilation"][i])
        if out < 1:
            extent = attrs["dilation"][i] * (attrs["kernel"][i] - 1) + 1
            raise ShapeError(
                f"output {axis} would be {out}: a window of {extent} does not fit in "
                f"{size} + 2*{attrs['pad'][i]} padding",
                arg="kernel",
                expected=f"a kernel of at most {size + 2 * attrs['pad'][i]}, or more padding",
                received=f"kernel={attrs['kernel'][i]} on an input {axis} of {size}",
            )
        sizes.append(out)
    return (attrs["out"], sizes[0], sizes[1])


def _params(attrs: Attrs, inputs: list[Shape]) -> dict[str, Shape]:
    channels = inputs[0][0]
    kh, kw = attrs["kernel"]
    params: dict[str, Shape] = {"weight": (attrs["out"], channels // attrs["groups"], kh, kw)}
    if attrs["bias"]:
        params["bias"] = (attrs["out"],)
    return params


def _macs(attrs: Attrs, inputs: list[Shape], output: Shape) -> int:
    kh, kw = attrs["kernel"]
    return output[0] * output[1] * output[2] * (inputs[0][0] // attrs["groups"]) * kh * kw


def window_lint(attrs: Attrs, inputs: list[Shape]) -> list[tuple[str, str | None]]:
    """Warn when a floor-rounded window sweep leaves input rows or columns unread."""
    if attrs.get("round", "floor") != "floor" or len(inputs[0]) != 3:
        return []
    dilation = attrs.get("dilation", (1, 1))
    warnings = []
    for i, (axis, lines) in enumerate((("height", "rows"), ("width", "columns"))):
        size = inputs[0][1 + i]
        lost = uncovered_pixels(size, attrs["kernel"][i], attrs["stride"][i], attrs["pad"][i], dilation[i])
        if lost:
            fit = size + attrs["stride"][i] - lost
            warnings.append((
                f"kernel {attrs['kernel'][i]} with stride {attrs['stride'][i]} on an input {axis} of "
                f"{size} never reads the last {lost} {lines}; an input {axis} of {fit} "
                f"(or {size - lost}) is covered exactly",
                "kernel",
            ))
    if len(warnings) == 2 and inputs[0][1] == inputs[0][2] and attrs["kernel"][0] == attrs["kernel"][1]:
        size = inputs[0][1]
        lost = uncovered_pixels(size, attrs["kernel"][0], attrs["stride"][0], attrs["pad"][0], dilation[0])
        fit = size + attrs["stride"][0] - lost
        return [(
            f"kernel {attrs['kernel'][0]} with stride {attrs['stride'][0]} on a {size}x{size} input never "
            f"reads the last {lost} rows and columns; a {fit}x{fit} (or {size - lost}x{size - lost}) "
            "input is covered exactly",
            "kernel",
        )]
    return warnings


CONV = register(OpDef(
    name="conv",
    family="conv",
    summary="2-D convolution (Caffe Convolution), grouped when groups > 1.",
    example="conv1: conv(96, 11, stride=4, pad=0, groups=1, bias=constant(0))",
    args=(
        Arg("out", "int", doc="number of filters (output channels)", min=1),
        Arg("kernel", "pair", doc="window size, an int or (h, w)", min=1),
        Arg("stride", "pair", 1, "step between windows", min=1),
        Arg("pad", "pair", 0, "zero padding on each side", min=0),
        Arg("dilation", "pair", 1, "spacing between kernel taps", min=1),
        Arg("groups", "int", 1, "split channels into groups (AlexNet's two towers: 2)", min=1),
        Arg("bias", "bias", True, "false for no bias, or the bias filler"),
    ),
    infer=_infer,
    params=_params,
    macs=_macs,
    lint=window_lint,
    default_fillers={"weight": Filler("xavier", (("variance_norm", "fan_in"),)),
                     "bias": Filler("constant", (("value", 0.0),))},
))
