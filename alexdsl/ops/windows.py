"""The constants of Swin's and MaxViT's window attention, as torchvision computes them: the index of each pair
of tokens into the relative position bias table, and the shifted-window mask. Plain NumPy, shared by the ops
(:mod:`alexdsl.ops.attention`), the executor's runtime and the ONNX importer."""

from __future__ import annotations

from typing import Any


def relative_position_index(window: int, square: bool) -> Any:
    """torchvision's index into the bias table of each pair of tokens of a ``window`` x ``window`` window, int64:
    (w^2, w^2) for MaxViT (``square``), flattened to (w^4,) for Swin.

    >>> relative_position_index(2, square=True).tolist()
    [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    """
    import numpy

    coords = numpy.stack(numpy.meshgrid(numpy.arange(window), numpy.arange(window), indexing="ij")).reshape(2, -1)
    relative = coords[:, :, None] - coords[:, None, :] + window - 1  # (2, w^2, w^2): row and column offsets
    index = (relative[0] * (2 * window - 1) + relative[1]).astype(numpy.int64)
    return index if square else index.reshape(-1)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> Any:
    """torchvision's attention mask of Swin's shifted windows, float32 (windows, 1, w^2, w^2): after the cyclic
    shift, -100 between two tokens of a window that came from different regions of the map, else 0.

    >>> shifted_window_mask(4, 4, 2, 1)[-1, 0].tolist()[0]
    [0.0, -100.0, -100.0, -100.0]
    """
    import numpy

    regions = numpy.zeros((height, width), dtype=numpy.float32)
    slices = ((0, -window), (-window, -shift), (-shift, None))
    for count, (rows, cols) in enumerate((rows, cols) for rows in slices for cols in slices):
        regions[rows[0]:rows[1], cols[0]:cols[1]] = count
    windows = regions.reshape(height // window, window, width // window, window).transpose(0, 2, 1, 3)
    windows = windows.reshape(-1, window * window)
    differs = windows[:, None, :] - windows[:, :, None]
    return numpy.where(differs != 0, numpy.float32(-100.0), numpy.float32(0.0))[:, None]
