"""A plain interpreter of the IR: the yardstick ``alexdsl compare`` and the ONNX tests measure backends
against. One op per line, no fusion, no memory planning; each op through its ``reference`` lowering, in
torch.nn.functional, or for an op whose math is an xp kernel (the activations), that kernel in float64 on
NumPy.

>>> import alexdsl, numpy as np
>>> net = alexdsl.parse("network T\\ninput x: 3x8x8\\nc: conv(4, 3) | relu\\n")
>>> w = {"c.weight": np.ones((4, 3, 3, 3), np.float32), "c.bias": np.zeros(4, np.float32)}
>>> run_reference(net, w, {"x": np.ones((1, 3, 8, 8), np.float32)})["c_relu"][0, 0, 0, 0].item()
27.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from alexdsl.errors import AlexDSLError, Diagnostic
from alexdsl.extras import install_command
from alexdsl.ir.network import Network
from alexdsl.ops.registry import lookup


def run_reference(network: Network, weights: Mapping[str, Any], feeds: Mapping[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
    """Every inference-time layer's output (test phase; losses, metrics and labels skipped).

    Each op computes through its own ``reference`` lowering (:mod:`alexdsl.ops.lowering`; an
    :class:`~alexdsl.ops.lowering.XpKernel`'s by default).
    """
    try:
        import torch
        import torch.nn.functional as F  # noqa: N812
    except ImportError:
        raise AlexDSLError(f"error: the reference interpreter needs torch: {install_command('torch')}") from None
    view = network.inference_view()
    values: dict[str, Any] = {name: torch.as_tensor(np.asarray(feeds[name], dtype=np.float32)) for name in view.inputs}
    with torch.no_grad():
        for layer in view.layers:
            op = lookup(layer.op)
            if op is None or op.lower.reference is None:
                raise AlexDSLError([Diagnostic("error", f"op '{layer.op}' has no reference lowering (layer "
                                                        f"'{layer.name}')", layer.span)])
            own = {name: torch.as_tensor(np.asarray(weights[layer.state_key(name)], dtype=np.float32))
                   for name in (*layer.params, *layer.buffers)}
            value = op.lower.reference(layer, [values[i] for i in layer.inputs], own, F)
            if not layer.inputs and view.inputs:  # a layer without inputs (param) is broadcast over the batch
                value = value.expand(len(values[view.inputs[0]]), *value.shape[1:])
            values[layer.name] = value
    return {k: v.numpy() for k, v in values.items()}
