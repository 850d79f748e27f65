"""PyTorch for alexdsl networks: ``build``, ``generate_source``, ``train``, ``load_weights``.

>>> import alexdsl, alexdsl.torch
>>> net = alexdsl.parse("network Tiny\\ninput x: 3x8x8\\nc1: conv(4, 3) | relu\\n")
>>> module = alexdsl.torch.build(net)
>>> sorted(module.state_dict())
['c1.bias', 'c1.weight']
>>> "class Tiny(nn.Module)" in module.code
True
"""

from __future__ import annotations

from alexdsl.backends.torch import TrainResult, build, generate_source, load_weights, train, write_torch_module

__all__ = ["TrainResult", "build", "generate_source", "load_weights", "train", "write_torch_module"]
