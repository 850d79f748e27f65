"""Generated PyTorch AlexNet versus the same network written by hand, in one process.

The generated module comes from ``examples/alexnet_torchvision.adsl``; the reference is an
``nn.Sequential`` laid out exactly as ``torchvision.models.AlexNet``. Both get the same
weights. Forward (eval, no_grad) and training-step (forward, cross-entropy, backward, SGD
step) times are measured interleaved (A, B, B, A, ...); the ratio of the best times is the
headline (robust to other load on the machine), medians are reported too. Prints a table,
then one JSON line with the ratios (generated / hand-written; 1.00 is parity).

    python benchmarks/torch_backend.py [--device cpu|cuda] [--batch 8] [--repeat 10] [--threads N] [--compile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import alexdsl
import alexdsl.torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from reference_models import HandAlexNet  # noqa: E402 - shared with tests/test_torch_codegen.py


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 8 on CPU, 128 on CUDA")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="run both through torch.compile")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = args.batch or (128 if device.type == "cuda" else 8)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    network = alexdsl.load(ROOT / "examples" / "alexnet_torchvision.adsl")
    torch.manual_seed(0)
    generated = alexdsl.torch.build(network)
    hand = HandAlexNet()
    alexdsl.torch.load_weights(generated, dict(zip(generated.state_dict(), hand.state_dict().values(), strict=True)))
    models = {"generated": generated.to(device), "handwritten": hand.to(device)}
    runners = {name: torch.compile(m) if args.compile else m for name, m in models.items()}
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for name, m in models.items()}

    x = torch.randn(batch, 3, 224, 224, device=device)
    label = torch.randint(0, 1000, (batch,), device=device)
    with torch.no_grad():
        for m in models.values():
            m.eval()
        difference = (runners["generated"](x) - runners["handwritten"](x)).abs().max().item()

    def forward(name: str) -> None:
        with torch.no_grad():
            runners[name](x)

    def train_step(name: str) -> None:
        optimizer = optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(runners[name](x), label).backward()
        optimizer.step()

    results: dict[str, dict[str, float]] = {}
    medians: dict[str, dict[str, float]] = {}
    for phase, fn, train in (("forward", forward, False), ("train_step", train_step, True)):
        for m in models.values():
            m.train(train)
        times: dict[str, list[float]] = {name: [] for name in models}
        for i in range(args.warmup + args.repeat):
            order = list(models) if i % 2 == 0 else list(reversed(models))  # A B, B A, ...
            for name in order:
                sync(device)
                start = time.perf_counter()
                fn(name)
                sync(device)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - start)
        results[phase] = {name: min(t) * 1e3 for name, t in times.items()}
        medians[phase] = {name: statistics.median(t) * 1e3 for name, t in times.items()}

    print(f"AlexNet (torchvision layout), batch {batch}, {device}{' + torch.compile' if args.compile else ''}, "
          f"best of {args.repeat}; max |difference| of outputs {difference:.2e}")
    print(f"{'':12} {'generated':>12} {'handwritten':>12} {'ratio':>8} {'median ratio':>13}")
    summary: dict[str, object] = {"device": str(device), "batch": batch, "compile": args.compile,
                                  "threads": torch.get_num_threads(), "max_abs_difference": difference}
    for phase, row in results.items():
        ratio = row["generated"] / row["handwritten"]
        median_ratio = medians[phase]["generated"] / medians[phase]["handwritten"]
        print(f"{phase:12} {row['generated']:10.2f}ms {row['handwritten']:10.2f}ms {ratio:8.3f} {median_ratio:13.3f}")
        summary[f"{phase}_ms"] = {k: round(v, 3) for k, v in row.items()}
        summary[f"{phase}_median_ms"] = {k: round(v, 3) for k, v in medians[phase].items()}
        summary[f"{phase}_ratio"] = round(ratio, 4)
        summary[f"{phase}_median_ratio"] = round(median_ratio, 4)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
