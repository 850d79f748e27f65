"""Choosing the torch device, the same way for ``alexdsl run --backend torch`` and ``alexdsl train``.

>>> torch_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

from typing import Any

from alexdsl.errors import AlexDSLError


def torch_device(name: str | None, local_rank: int = 0) -> Any:
    """``auto``/None (CUDA when PyTorch sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    A bare ``cuda`` is this process's GPU under torchrun (``local_rank``).
    """
    import torch

    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise AlexDSLError(f"error: unknown device '{name}': expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise AlexDSLError(f"error: unsupported device '{name}': expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AlexDSLError(f"error: device '{name}' requested but CUDA is not available here "
                               "(PyTorch sees no GPU); use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise AlexDSLError(f"error: device '{name}': only {torch.cuda.device_count()} CUDA device(s)")
    return device
