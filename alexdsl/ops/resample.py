"""Upsampling by an integer factor: ``upsample(scale, mode=nearest|bilinear, align_corners=false)``.

torch's ``F.interpolate(x, scale_factor=scale, mode=mode)`` / ``nn.Upsample``, as HRNet's fuse
layers and segmentation decoders use it; ONNX's ``Resize`` both ways (torch's exports at opsets
11 to 21: nearest with ``asymmetric``/``floor``, linear with ``pytorch_half_pixel`` or
``align_corners``).
"""

from __future__ import annotations

from typing import Any

from alexdsl.ops.contexts import ExecutorContext, OnnxExportContext, OnnxImportContext, OnnxNodeView, TorchContext
from alexdsl.ops.from_onnx import pair
from alexdsl.ops.lowering import ExecutorKernel, ExecutorLowering, Lowerings, OnnxImport, TorchLowering
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, expect_rank, register

_ONNX_MODE = {"nearest": "nearest", "bilinear": "linear"}


def _infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    expect_rank(x, 3)
    if attrs["align_corners"] and attrs["mode"] == "nearest":
        raise ShapeError("align_corners applies to bilinear upsampling only (as in torch)", arg="align_corners",
                         expected="align_corners=false with mode=nearest", received="align_corners=true")
    sh, sw = attrs["scale"]
    return (x[0], x[1] * sh, x[2] * sw)


def _torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    a = layer.attrs
    corners = f", align_corners={a['align_corners']}" if a["mode"] == "bilinear" else ""
    return f"F.interpolate({args[0]}, scale_factor={ctx.pair(a['scale'])}, mode={a['mode']!r}{corners})"


def _executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    a = layer.attrs
    scale = ctx.lit(tuple(a["scale"]))
    if a["mode"] == "nearest":
        return ExecutorKernel(f"rt.upsample_nearest({ctx.inputs[0]}, {scale}, out={{out}})", "upsample_nearest")
    _, height, width = ctx.input_shape(layer, 0)
    return ExecutorKernel(
        f"rt.upsample_bilinear({ctx.inputs[0]}, self.{ctx.ident}_mats, out={{out}})", "upsample_bilinear",
        (f"self.{ctx.ident}_mats = tuple(self.const(m) for m in rt.bilinear_matrices("
         f"{ctx.lit(height)}, {ctx.lit(width)}, {scale}, {ctx.lit(bool(a['align_corners']))}))",))


def _onnx(layer: Any, ctx: OnnxExportContext) -> None:
    a = layer.attrs
    scales = ctx.constant([1.0, 1.0, *(float(s) for s in a["scale"])], output=f"{layer.name}.scales")
    if a["mode"] == "nearest":
        ctx.node("Resize", [ctx.inputs[0], "", scales], mode="nearest", coordinate_transformation_mode="asymmetric",
                 nearest_mode="floor")
        return
    ctx.node("Resize", [ctx.inputs[0], "", scales], mode="linear",
             coordinate_transformation_mode="align_corners" if a["align_corners"] else "pytorch_half_pixel")


def _reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    a = layer.attrs
    if a["mode"] == "nearest":
        return F.interpolate(xs[0], scale_factor=tuple(a["scale"]), mode="nearest")
    return F.interpolate(xs[0], scale_factor=tuple(a["scale"]), mode="bilinear", align_corners=a["align_corners"])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _from_onnx(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | None:
    """``Resize`` (or opset 9's ``Upsample``) of height and width by integer factors with torch's coordinates
    -> upsample: nearest with ``asymmetric`` coordinates and ``floor`` rounding; linear with
    ``pytorch_half_pixel``/``half_pixel`` (align_corners=false) or ``align_corners``."""
    source, result = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    if source is None or result is None or len(source) != 3 or len(result) != 3:
        return ctx.fail(node, "only a Resize of a CxHxW input of known shape is imported")
    if result[0] != source[0] or any(r % s for r, s in zip(result[1:], source[1:])) \
            or any(r < s for r, s in zip(result[1:], source[1:])):
        return ctx.fail(node, f"it resizes {'x'.join(map(str, source))} to {'x'.join(map(str, result))}; "
                              "alexdsl's upsample scales height and width by integer factors")
    scale = pair(r // s for r, s in zip(result[1:], source[1:]))
    mode = _text(node.attr("mode", "nearest"))
    coordinates = _text(node.attr("coordinate_transformation_mode", "half_pixel"))
    if node.op_type == "Upsample":
        coordinates = "asymmetric"  # opset 9's Upsample: x_original = x_resized / scale
    if mode == "nearest":
        rounding = _text(node.attr("nearest_mode", "round_prefer_floor"))
        if node.op_type == "Upsample":
            rounding = "floor"
        if coordinates != "asymmetric" or rounding != "floor":
            return ctx.fail(node, f"nearest with coordinate_transformation_mode={coordinates}, nearest_mode="
                                  f"{rounding} is not torch's nearest (asymmetric, floor)")
        return OnnxImport("upsample", node.inputs[:1], {"scale": scale})
    if mode != "linear" or node.attr("antialias", 0):
        return ctx.fail(node, f"mode={mode} is not supported (alexdsl's upsample is nearest or bilinear)")
    if coordinates not in ("pytorch_half_pixel", "half_pixel", "align_corners"):
        return ctx.fail(node, f"linear with coordinate_transformation_mode={coordinates} is not torch's bilinear")
    corners = coordinates == "align_corners"
    return OnnxImport("upsample", node.inputs[:1], {"scale": scale, "mode": "bilinear", "align_corners": corners})


register(OpDef(
    name="upsample",
    family="pool",
    summary="Upsample height and width by integer factors, nearest or bilinear (F.interpolate, nn.Upsample).",
    example="up: upsample(2, mode=bilinear)",
    args=(
        Arg("scale", "pair", doc="the factor of height and width, an int or (h, w)", min=1),
        Arg("mode", "choice", "nearest", "nearest (each pixel repeated) or bilinear", choices=("nearest", "bilinear")),
        Arg("align_corners", "bool", False, "bilinear only: corner pixels aligned (torch's align_corners)",
            positional=False),
    ),
    infer=_infer,
    lower=Lowerings(
        torch=TorchLowering(forward=_torch),
        executor=ExecutorLowering(lower=_executor),
        onnx=_onnx,
        reference=_reference,
        from_onnx={"Resize": _from_onnx, "Upsample": _from_onnx},
    ),
))
