"""The torch module an ONNX node came from, read from the scoped name torch's TorchScript exporter gives it,
or from the ``namespace`` metadata the dynamo exporter (``torch.onnx.export(dynamo=True)``) writes.

Both the channels-last rewrite (:mod:`alexdsl.interop.onnx_layout`) and the layer naming of
:mod:`alexdsl.interop.onnx_import` name what they make after it.
"""

from __future__ import annotations

from typing import Any


def module_path(node_name: str) -> str | None:
    """The torch module a node came from, from the exporter's scoped node name.

    >>> module_path("/layer1/layer1.0/conv1/Conv"), module_path("/features/features.3/conv/conv.0/conv.0.0/Conv")
    ('layer1.0.conv1', 'features.3.conv.0.0')
    """
    segments = [s for s in node_name.split("/") if s]
    if len(segments) < 2 or not node_name.startswith("/"):
        return None
    parts: list[str] = []
    previous = ""
    for segment in segments[:-1]:  # a child of a container is scoped "<container>.<index>"
        parts.append(segment[len(previous) + 1:] if previous and segment.startswith(previous + ".") else segment)
        previous = segment
    return ".".join(parts)


def namespace_path(namespace: str) -> str | None:
    """The torch module a node came from, from the dynamo exporter's ``namespace`` metadata: the module names
    of its ``name: class`` segments, the last of which is the op.

    >>> namespace_path(": torchvision.models.resnet.ResNet/layer1: torch.nn.modules.container.Sequential/"
    ...                "layer1.0: torchvision.models.resnet.BasicBlock/layer1.0.relu: torch.nn.modules.activation.ReLU/"
    ...                "relu_2: aten.relu.default")
    'layer1.0.relu'
    >>> namespace_path(": torchvision.models.resnet.ResNet/add: aten.add.Tensor") is None
    True
    """
    segments = namespace.split("/")
    if len(segments) < 3:
        return None
    return segments[-2].split(":", 1)[0].strip() or None


def node_scope(node: Any) -> str | None:
    """The torch module of an ONNX node (an :class:`~alexdsl.interop.onnx_graph.OnnxNode`): its dynamo
    ``namespace`` where it has one, else its TorchScript scoped name; None for neither."""
    return node.scope or module_path(node.name)
