"""The PyTorch backend: generated ``nn.Module`` source, a Caffe-style solver and a trainer.

Importing this package does not import torch; the functions do when they run.
"""

from __future__ import annotations

from alexdsl.backends.torch.codegen import build, generate_source, load_weights
from alexdsl.backends.torch.module_file import write_torch_module
from alexdsl.backends.torch.train import TrainResult, train

__all__ = ["TrainResult", "build", "generate_source", "load_weights", "train", "write_torch_module"]
