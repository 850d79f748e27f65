"""Reference data from torchvision: each model's state_dict keys, shapes and parameter count.

    python benchmarks/torchvision_reference.py                 # every model below
    python benchmarks/torchvision_reference.py mobilenet_v2    # one

Writes tests/data/torchvision/<model>.json, which tests/test_examples_mobile.py compares with the
examples without needing torchvision. Runs with any python that has torchvision (no alexdsl needed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torchvision
from reference_json import dumps_reference

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "torchvision"
MODELS = ("mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
          "shufflenet_v2_x1_0", "regnet_y_400mf", "convnext_tiny")


def reference(name: str) -> dict:
    """Keys and shapes of ``torchvision.models.<name>()``'s state_dict (no num_batches_tracked) and its params."""
    model = getattr(torchvision.models, name)()
    state = {key: list(value.shape) for key, value in model.state_dict().items()
             if not key.endswith("num_batches_tracked")}
    return {
        "model": f"torchvision.models.{name}",
        "torchvision": torchvision.__version__,
        "params": sum(parameter.numel() for parameter in model.parameters()),
        "state": state,
    }



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        data = reference(name)
        path = OUT / f"{name}.json"
        path.write_text(dumps_reference(data))
        print(f"{path.relative_to(ROOT)}: {len(data['state'])} keys, {data['params']:,} parameters")


if __name__ == "__main__":
    main()
