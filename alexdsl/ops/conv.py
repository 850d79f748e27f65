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


def _count(n: int, plural: str) -> str:
    return f"{n} {plural}" if n != 1 else plural[:-1]


def window_lint(attrs: Attrs, inputs: list[Shape]) -> list[tuple[str, str | None]]:
    """Warn when a floor-rounded window sweep leaves input rows or columns unread.

    The seed's 224-vs-227 confusion is the case in point: conv(96, 11, stride=4) reads all of
    a 227x227 image but not the last row and column of a 224x224 one.
    """
    if attrs.get("round", "floor") != "floor" or len(inputs[0]) != 3:
        return []
    dilation = attrs.get("dilation", (1, 1))
    _, height, width = inputs[0]
    lost = [uncovered_pixels(size, attrs["kernel"][i], attrs["stride"][i], attrs["pad"][i], dilation[i])
            if attrs["kernel"][i] >= attrs["stride"][i] else 0  # a stride past the kernel skips on purpose
            for i, size in enumerate((height, width))]
    if not any(lost):
        return []
    where = f"kernel {'x'.join(map(str, attrs['kernel']))} with stride {'x'.join(map(str, attrs['stride']))} " \
            f"on a {height}x{width} input never reads"
    parts = [p for p, n in ((_count(lost[0], "rows"), lost[0]), (_count(lost[1], "columns"), lost[1])) if n]
    message = f"{where} the last {' and '.join(parts)}"
    if not any(attrs["pad"]):
        fit_h, fit_w = height + (attrs["stride"][0] - lost[0]) % attrs["stride"][0], \
            width + (attrs["stride"][1] - lost[1]) % attrs["stride"][1]
        message += f"; a {fit_h}x{fit_w} (or {height - lost[0]}x{width - lost[1]}) input is covered exactly"
    return [(message, "kernel")]


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
