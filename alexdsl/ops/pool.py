"""Pooling: max, average, adaptive average and global average."""

from __future__ import annotations

from typing import Any

from alexdsl.ops.conv import window_lint
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, expect_rank, register
from alexdsl.shape_math import pool_output_size


def _stride_defaults_to_kernel(attrs: dict[str, Any]) -> dict[str, Any]:
    if attrs["stride"] is None:
        attrs["stride"] = attrs["kernel"]
    return attrs


def _infer_pool(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    out = [x[0]]
    for i, axis in enumerate(("height", "width")):
        kernel, pad = attrs["kernel"][i], attrs["pad"][i]
        if pad * 2 > kernel:
            raise ShapeError(
                f"padding {pad} is more than half the kernel {kernel}",
                arg="pad",
                expected=f"pad <= {kernel // 2}",
                received=f"pad={pad}",
            )
        size = pool_output_size(x[1 + i], kernel, attrs["stride"][i], pad, attrs["round"] == "ceil")
        if size < 1:
            raise ShapeError(
                f"output {axis} would be {size}: a window of {kernel} does not fit in {x[1 + i]}",
                arg="kernel",
                expected=f"a kernel of at most {x[1 + i] + 2 * pad}",
                received=f"kernel={kernel}",
            )
        out.append(size)
    return tuple(out)


_POOL_ARGS = (
    Arg("kernel", "pair", doc="window size, an int or (h, w)", min=1),
    Arg("stride", "pair", None, "step between windows (default: the kernel size)", min=1),
    Arg("pad", "pair", 0, "implicit padding on each side", min=0),
    Arg("round", "choice", "floor", "output size rounding: floor, or ceil as Caffe", choices=("floor", "ceil")),
)

register(OpDef(
    name="maxpool",
    family="pool",
    summary="Max pooling; round=ceil gives Caffe's default sizes (the last window starts inside the input).",
    example="pool1: maxpool(3, stride=2)",
    args=_POOL_ARGS,
    infer=_infer_pool,
    lint=window_lint,
    normalize=_stride_defaults_to_kernel,
))

register(OpDef(
    name="avgpool",
    family="pool",
    summary="Average pooling; count_pad=true divides by the window including padding (Caffe, PyTorch default).",
    example="pool: avgpool(3, stride=2, pad=1, round=ceil)",
    args=(*_POOL_ARGS, Arg("count_pad", "bool", True, "include padding in the divisor", positional=False)),
    infer=_infer_pool,
    lint=window_lint,
    normalize=_stride_defaults_to_kernel,
))


def _infer_adaptive(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    return (x[0], *attrs["size"])


register(OpDef(
    name="adaptive_avgpool",
    family="pool",
    summary="Average pooling to a fixed output size, whatever the input size (torchvision's AlexNet: 6x6).",
    example="pool: adaptive_avgpool(6)",
    args=(Arg("size", "pair", doc="output size, an int or (h, w)", min=1),),
    infer=_infer_adaptive,
))


def _infer_global(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    return (x[0], 1, 1)


register(OpDef(
    name="global_avgpool",
    family="pool",
    summary="Average over all positions of each channel: CxHxW -> Cx1x1.",
    example="pool: global_avgpool",
    args=(),
    infer=_infer_global,
))
