"""A plain torch.nn.functional interpreter of the IR: the yardstick ``alexdsl compare`` and the
ONNX tests measure backends against. One op per line, no fusion, no memory planning.

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

from alexdsl.errors import AlexDSLError
from alexdsl.ir.network import Network


def run_reference(network: Network, weights: Mapping[str, Any], feeds: Mapping[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
    """Every inference-time layer's output (test phase; losses, metrics and labels skipped)."""
    try:
        import torch
        import torch.nn.functional as F  # noqa: N812
    except ImportError:
        raise AlexDSLError("error: the reference interpreter needs torch: pip install 'alexdsl[torch]'") from None
    w = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in weights.items()}
    values: dict[str, Any] = {}
    with torch.no_grad():
        for layer in network.layers("test"):
            a, name = layer.attrs, layer.name
            if layer.op == "input":
                if not layer.is_label:
                    values[name] = torch.as_tensor(np.asarray(feeds[name], dtype=np.float32))
                continue
            if layer.op in ("softmax_loss", "accuracy"):
                continue
            xs = [values[i] for i in layer.inputs]
            x = xs[0]
            bias = w.get(f"{name}.bias")
            if layer.op == "conv":
                y = F.conv2d(x, w[f"{name}.weight"], bias, stride=a["stride"], padding=a["pad"],
                             dilation=a["dilation"], groups=a["groups"])
            elif layer.op == "fc":
                y = F.linear(x.flatten(1), w[f"{name}.weight"], bias)
            elif layer.op == "maxpool":
                y = F.max_pool2d(x, a["kernel"], a["stride"], a["pad"], ceil_mode=a["round"] == "ceil")
            elif layer.op == "avgpool":
                y = F.avg_pool2d(x, a["kernel"], a["stride"], a["pad"], ceil_mode=a["round"] == "ceil",
                                 count_include_pad=a["count_pad"])
            elif layer.op == "adaptive_avgpool":
                y = F.adaptive_avg_pool2d(x, a["size"])
            elif layer.op == "global_avgpool":
                y = x.mean(dim=(2, 3), keepdim=True)
            elif layer.op == "lrn":
                y = F.local_response_norm(x, a["size"], a["alpha"], a["beta"], a["k"])
            elif layer.op == "batchnorm":
                y = F.batch_norm(x, w[f"{name}.running_mean"], w[f"{name}.running_var"], w[f"{name}.weight"],
                                 bias, training=False, eps=a["eps"])
            elif layer.op == "relu":
                y = F.relu(x)
            elif layer.op == "leaky_relu":
                y = F.leaky_relu(x, a["slope"])
            elif layer.op == "sigmoid":
                y = torch.sigmoid(x)
            elif layer.op == "tanh":
                y = torch.tanh(x)
            elif layer.op == "softmax":
                y = F.softmax(x, dim=1)
            elif layer.op == "concat":
                y = torch.cat(xs, dim=1)
            elif layer.op == "add":
                y = sum(xs[1:], xs[0])
            elif layer.op == "flatten":
                y = x.flatten(1)
            elif layer.op == "dropout":
                y = x
            else:
                raise AlexDSLError(f"error: layer '{name}': the reference interpreter has no op '{layer.op}'")
            values[name] = y
    return {k: v.numpy() for k, v in values.items()}
