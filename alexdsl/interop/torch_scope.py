"""The torch module an ONNX node came from, read from the scoped name torch's exporter gives it.

Both the channels-last rewrite (:mod:`alexdsl.interop.onnx_layout`) and the layer naming of
:mod:`alexdsl.interop.onnx_import` name what they make after it.
"""

from __future__ import annotations


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
