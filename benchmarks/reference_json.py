"""The JSON layout of the reference data files that benchmarks/torchvision_reference.py and
benchmarks/transformers_reference.py write under tests/data/ (no alexdsl, torch or model library needed)."""

from __future__ import annotations

import json


def dumps_reference(data: dict) -> str:
    """JSON with one state_dict key and its shape per line, so a diff shows which layer changed.

    >>> print(dumps_reference({"params": 3, "state": {"fc.weight": [1, 2], "fc.bias": [1]}}), end="")
    {
     "params": 3,
     "state": {
      "fc.weight": [1, 2],
      "fc.bias": [1]
     }
    }
    """
    head = {key: value for key, value in data.items() if key != "state"}
    lines = [f" {json.dumps(key)}: {json.dumps(value)}," for key, value in head.items()]
    state = ",\n".join(f"  {json.dumps(key)}: {json.dumps(shape)}" for key, shape in data["state"].items())
    return "{\n" + "\n".join(lines) + '\n "state": {\n' + state + "\n }\n}\n"
