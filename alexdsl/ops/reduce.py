"""Reductions over one per-sample axis: ``sum``, ``mean`` and ``max`` (``axis``, ``keepdims``).

``s: sum(axis=0)`` is torch's ``x.sum(1)``: axes count the per-sample axes from 0 (the batch is
never named), negative ones from the end; ``keepdims=true`` keeps the reduced axis with size 1
(``keepdim=True``). The ONNX import reads ``ReduceSum``/``ReduceMean``/``ReduceMax`` over
axes other than the batch; a reduction over several axes becomes one layer per axis (the mean
of means is the mean). A mean over height and width stays ``global_avgpool``.
"""

from __future__ import annotations

from typing import Any

from alexdsl.ops.contexts import ExecutorContext, OnnxExportContext, OnnxImportContext, OnnxNodeView, TorchContext
from alexdsl.ops.from_onnx import axes_of
from alexdsl.ops.lowering import ExecutorKernel, ExecutorLowering, Lowerings, OnnxImport, TorchLowering
from alexdsl.ops.registry import Arg, Attrs, OpDef, Shape, ShapeError, format_shape, register

_ONNX = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax"}
_TORCH = {"sum": "sum", "mean": "mean", "max": "amax"}


def _axis(attrs: Attrs, shape: Shape) -> int:
    """The reduced axis counted from 0 over the per-sample axes."""
    axis = attrs["axis"]
    if not -len(shape) <= axis < len(shape):
        raise ShapeError(f"axis {axis} is not an axis of a {len(shape)}-axis input", arg="axis",
                         expected=f"an axis from {-len(shape)} to {len(shape) - 1}", received=format_shape(shape))
    return axis % len(shape)


def _infer(attrs: Attrs, inputs: list[Shape]) -> Shape:
    (x,) = inputs
    axis = _axis(attrs, x)
    if attrs["keepdims"]:
        return (*x[:axis], 1, *x[axis + 1 :])
    if len(x) == 1:
        raise ShapeError("reducing the only axis leaves a scalar per sample", arg="keepdims",
                         expected="keepdims=true", received=format_shape(x))
    return (*x[:axis], *x[axis + 1 :])


def _torch(layer: Any, args: list[str], ctx: TorchContext) -> str:
    dim = ctx.int(_axis(layer.attrs, ctx.input_shape(layer, 0)) + 1)
    keep = ", keepdim=True" if layer.attrs["keepdims"] else ""
    return f"{args[0]}.{_TORCH[layer.op]}({dim}{keep})"


def _executor(layer: Any, ctx: ExecutorContext) -> ExecutorKernel:
    dim = _axis(layer.attrs, ctx.input_shape(layer, 0)) + 1
    return ExecutorKernel(f"rt.reduce({ctx.inputs[0]}, {ctx.lit(layer.op)}, ({dim},), "
                          f"{ctx.lit(bool(layer.attrs['keepdims']))}, out={{out}})", f"reduce_{layer.op}")


def _onnx(layer: Any, ctx: OnnxExportContext) -> None:
    dim = _axis(layer.attrs, ctx.input_shape(layer, 0)) + 1
    keep = int(bool(layer.attrs["keepdims"]))
    if layer.op == "sum":  # axes is an input of ReduceSum from opset 13, of the others from 18
        ctx.node("ReduceSum", [ctx.inputs[0], ctx.constant([dim], output=f"{layer.name}.axes", integer=True)],
                 keepdims=keep)
    else:
        ctx.node(_ONNX[layer.op], ctx.inputs, axes=[dim], keepdims=keep)


def _reference(layer: Any, xs: list[Any], w: Any, F: Any) -> Any:  # noqa: N803 - torch.nn.functional
    dim = _axis(layer.attrs, tuple(xs[0].shape[1:])) + 1
    return getattr(xs[0], _TORCH[layer.op])(dim, keepdim=bool(layer.attrs["keepdims"]))


def _from_onnx(op: str) -> Any:
    def convert(node: OnnxNodeView, ctx: OnnxImportContext) -> OnnxImport | list[OnnxImport] | None:
        """``Reduce<Op>`` over axes other than the batch -> one layer per axis, the highest axis first."""
        shape = ctx.shape(node.inputs[0])
        axes = axes_of(node, ctx.const)
        if shape is None or axes is None or not axes:
            return ctx.fail(node, "only a reduction over given axes of an input of known shape is imported")
        rank = len(shape) + 1
        dims = sorted({a % rank for a in axes if -rank <= a < rank}, reverse=True)
        if len(dims) != len(axes) or 0 in dims:
            return ctx.fail(node, f"axes {axes} include the batch axis; alexdsl reduces per-sample axes only")
        keep = bool(node.attr("keepdims", 1))
        results = []
        source = node.inputs[0]
        for i, dim in enumerate(dims):
            output = node.outputs[0] if i == len(dims) - 1 else f"{node.outputs[0]}.axis{dim}"
            results.append(OnnxImport(op, [source], {"axis": dim - 1, "keepdims": keep}, output=output))
            source = output
        return results if len(results) > 1 else results[0]

    return convert


for _op, _meaning in (("sum", "Sum"), ("mean", "Mean"), ("max", "Maximum")):
    register(OpDef(
        name=_op,
        family="reduce",
        summary=f"{_meaning} over one per-sample axis (torch's x.{_TORCH[_op]}(axis + 1)); keepdims keeps it as 1.",
        example=f"r: {_op}(axis=0, keepdims=true)",
        args=(Arg("axis", "int", doc="the per-sample axis reduced, from 0 (negative: from the end)"),
              Arg("keepdims", "bool", False, "keep the reduced axis with size 1 (torch's keepdim)")),
        infer=_infer,
        lower=Lowerings(
            torch=TorchLowering(forward=_torch),
            executor=ExecutorLowering(lower=_executor),
            onnx=_onnx,
            reference=_reference,
            from_onnx={_ONNX[_op]: _from_onnx(_op)},
        ),
    ))
