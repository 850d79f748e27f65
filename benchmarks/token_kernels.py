"""Benchmark: the executor's layer norm over the last axis and its sdpa on NumPy vs torch, one thread, in one process.

    python benchmarks/token_kernels.py                # ViT-B/16 and Swin-T shapes, batch 1
    python benchmarks/token_kernels.py --batch 8 --repeat 30

Times, at the shapes vit_b_16 and swin_t run them (examples/*.adsl), ``tokens.layer_norm_last``
against ``F.layer_norm`` and ``attention.sdpa`` against ``F.scaled_dot_product_attention`` (with
Swin's relative position bias and shifted-window mask added to the scores as one float mask),
both into a preallocated ``out`` as the executor calls them, and one float32 ``np.multiply``
pass over the kernel's input (what one NumPy pass costs here, to read the kernels' times in
passes).  CPU time of the process, best of alternating blocks (benchmarks/executor.py's
``_time_each``), so that other processes on a shared machine count less.  The last line is
JSON: milliseconds per call, the ratios kernel / torch, and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ALEXDSL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from executor import _time_each  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from alexdsl.backends.executor.attention import sdpa  # noqa: E402
from alexdsl.backends.executor.tokens import layer_norm_last  # noqa: E402

# name -> per-sample shape of the layer norm's input
NORMS = {"vit_b_16 ln (197x768)": (197, 768), "swin_t stage 1 norm (56x56x96)": (56, 56, 96),
         "swin_t stage 4 norm (7x7x768)": (7, 7, 768)}
# name -> (windows, tokens, heads, head size, added bias and mask)
ATTENTIONS = {"vit_b_16 attention (197 tokens, 12 heads)": (1, 197, 12, 64, False),
              "swin_t stage 1 window attention (64 x 49 tokens, 3 heads)": (64, 49, 3, 32, True),
              "swin_t stage 3 window attention (4 x 49 tokens, 12 heads)": (4, 49, 12, 32, True)}


def _norm_case(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[list[Callable[[], object]], str]:
    x = rng.standard_normal(shape, dtype=np.float32)
    weight, bias = rng.standard_normal(shape[-1], dtype=np.float32), rng.standard_normal(shape[-1], dtype=np.float32)
    out, spare = np.empty_like(x), np.empty_like(x)
    tx, tw, tb = (torch.from_numpy(a) for a in (x, weight, bias))
    want = torch.nn.functional.layer_norm(tx.double(), shape[-1:], tw.double(), tb.double(), 1e-6).numpy()
    got = layer_norm_last(x, weight, bias, 1e-6, out=out)
    note = f"largest difference from torch in float64 {np.abs(got - want).max() / np.abs(want).max():.1e} of max"
    return [lambda: layer_norm_last(x, weight, bias, 1e-6, out=out),
            lambda: torch.nn.functional.layer_norm(tx, shape[-1:], tw, tb, 1e-6),
            lambda: np.multiply(x, x, out=spare)], note


def _attention_case(batch: int, windows: int, tokens: int, heads: int, size: int, masked: bool,
                    rng: np.random.Generator) -> tuple[list[Callable[[], object]], str]:
    features = heads * size
    qkv = rng.standard_normal((batch, windows, tokens, 3 * features), dtype=np.float32)
    q, k, v = qkv[..., :features], qkv[..., features:2 * features], qkv[..., 2 * features:]
    added = (rng.standard_normal((1, heads, tokens, tokens), dtype=np.float32),
             np.where(rng.random((1, windows, 1, tokens, tokens)) < 0.3, -100.0, 0.0).astype(np.float32)) \
        if masked else ()
    out, spare = np.empty((batch, windows, tokens, features), np.float32), np.empty_like(qkv)

    def heads_first(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).unflatten(-1, (heads, size)).transpose(-3, -2)

    tq, tk, tv = heads_first(q), heads_first(k), heads_first(v)
    mask = torch.from_numpy(added[0][:, None] + added[1]) if added else None  # (1, windows, heads, L, L)

    def torch_sdpa() -> torch.Tensor:
        mixed = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask)
        return mixed.transpose(-3, -2).flatten(-2)

    got = sdpa(q, k, v, *added, heads=heads, out=out)
    want = torch_sdpa().numpy()
    note = f"largest difference from torch {np.abs(got - want).max() / np.abs(want).max():.1e} of max"
    return [lambda: sdpa(q, k, v, *added, heads=heads, out=out), torch_sdpa,
            lambda: np.multiply(qkv, qkv, out=spare)], note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    results = {}
    cases = {name: _norm_case((args.batch, *shape), rng) for name, shape in NORMS.items()}
    cases |= {name: _attention_case(args.batch, *case, rng) for name, case in ATTENTIONS.items()}
    with threadpool_limits(1), torch.inference_mode():
        for name, (fns, note) in cases.items():
            ours, theirs, one_pass = (1e3 * s for s in _time_each(fns, args.repeat, clock=time.process_time))
            results[name] = {"ms": round(ours, 4), "torch_ms": round(theirs, 4), "passes": round(ours / one_pass, 1),
                             "ratio_over_torch": round(ours / theirs, 2)}
            print(f"{name:>58}: {ours:7.3f} ms, torch {theirs:7.3f} ms ({ours / theirs:4.1f}x), "
                  f"{ours / one_pass:5.1f} passes; {note}")
    print(json.dumps({"batch": args.batch, "load_1min": os.getloadavg()[0], "kernels": results}))


if __name__ == "__main__":
    main()
