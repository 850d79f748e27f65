"""Write a network's generated ``nn.Module`` source to a file (``alexdsl compile --backend torch``).

Writing the source does not import torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alexdsl.backends.torch.codegen import generate_source
from alexdsl.fileio import write_text_atomic


def default_module_path(network: Any) -> Path:
    """``examples/alexnet.adsl`` -> ``alexnet_torch.py`` in the current directory."""
    stem = Path(network.source_file).stem if network.source_file else str(network.name).lower()
    return Path(f"{stem}_torch.py")


def write_torch_module(network: Any, out_path: str | os.PathLike[str] | None = None) -> Path:
    """Write the generated PyTorch source of ``network`` atomically; return the path written.

    ``out_path`` defaults to :func:`default_module_path`.
    """
    path = Path(out_path) if out_path is not None else default_module_path(network)
    write_text_atomic(path, generate_source(network))
    return path
