"""Output-size arithmetic shared by the shape rules, the kernels and the backends.

>>> conv_output_size(227, kernel=11, stride=4, pad=0)
55
>>> pool_output_size(13, kernel=3, stride=2, pad=0, ceil_mode=True)
6
"""

from __future__ import annotations


def conv_output_size(size: int, kernel: int, stride: int = 1, pad: int = 0, dilation: int = 1) -> int:
    """floor((size + 2*pad - dilation*(kernel-1) - 1) / stride) + 1, the seed's formula."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, pad: int = 0, ceil_mode: bool = False) -> int:
    """Pooling output size with floor or ceil rounding.

    With ceil rounding the last window must start inside the input or the left padding
    (the rule Caffe and PyTorch share), so one window is dropped when it would start in
    the right padding.
    """
    span = size + 2 * pad - kernel
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad:
            out -= 1
        return out
    return span // stride + 1


def uncovered_pixels(size: int, kernel: int, stride: int, pad: int = 0, dilation: int = 1) -> int:
    """How many real input pixels (not padding) a floor-rounded window sweep never reaches.

    >>> uncovered_pixels(224, kernel=11, stride=4)
    1
    >>> uncovered_pixels(224, kernel=11, stride=4, pad=2)
    0
    """
    extent = dilation * (kernel - 1) + 1
    span = size + 2 * pad - extent
    if span < 0:
        return 0
    return max(0, span % stride - pad)
