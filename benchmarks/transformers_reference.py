"""Reference data from Hugging Face transformers: each language model's state_dict keys, shapes and parameters.

    python benchmarks/transformers_reference.py              # every model below
    python benchmarks/transformers_reference.py llama_tiny   # one

Writes tests/data/transformers/<model>.json (the configuration, the state_dict's keys and shapes, the
parameter count with tied weights counted once, and the tied keys), which tests/test_language_models.py
compares with examples/<model>.adsl without needing transformers. Models are built on torch's meta
device: nothing is downloaded and no weights are allocated. Runs with any python that has transformers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers
from reference_json import dumps_reference

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "transformers"

LLAMA_3_2_1B = {  # meta-llama/Llama-3.2-1B's config.json, the fields that shape the network
    "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": True, "attention_bias": False,
    "mlp_bias": False, "hidden_act": "silu",
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
}
LLAMA_TINY = {  # the same family at a test size (examples/llama_tiny.adsl)
    "vocab_size": 256, "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 128,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": True, "attention_bias": False,
    "mlp_bias": False, "hidden_act": "silu",
}
MODELS = {
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", {}),
    "llama_tiny": ("LlamaForCausalLM", "LlamaConfig", LLAMA_TINY),
    "llama": ("LlamaForCausalLM", "LlamaConfig", LLAMA_3_2_1B),
}


def build(name: str, device: str = "meta") -> torch.nn.Module:
    """``<Model>(<Config>(**config))`` of ``MODELS[name]`` on ``device``, in eval mode."""
    model_class, config_class, config = MODELS[name]
    with torch.device(device):
        model = getattr(transformers, model_class)(getattr(transformers, config_class)(**config))
    return model.eval()


def reference(name: str) -> dict:
    """Keys and shapes of the model's state_dict, its parameters (tied ones once) and its tied keys."""
    model = build(name)
    model_class, config_class, config = MODELS[name]
    state = {key: list(value.shape) for key, value in model.state_dict().items()}
    first: dict[int, str] = {}
    tied = {}
    for key, value in model.state_dict(keep_vars=True).items():
        owner = first.setdefault(id(value), key)
        if owner != key:
            tied[key] = owner
    return {
        "model": f"transformers.{model_class}(transformers.{config_class}(**config))",
        "transformers": transformers.__version__,
        "config": config,
        "params": sum(parameter.numel() for parameter in model.parameters()),
        "tied": tied,
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
        print(f"{path.relative_to(ROOT)}: {len(data['state'])} keys, {data['params']:,} parameters, "
              f"tied {data['tied']}")


if __name__ == "__main__":
    main()
