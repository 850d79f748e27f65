"""``alexdsl generate``: continue a sequence of token ids with a causal language model."""

from __future__ import annotations

import click

from alexdsl.cli.support import load_network, report_errors
from alexdsl.errors import AlexDSLError


def _ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise AlexDSLError(f"error: --ids takes comma-separated token ids, such as 15496,11,995; got {text!r}"
                           ) from None
    return ids


@click.command("generate", epilog="""\b
Examples:
  alexdsl generate examples/llama_tiny.adsl --weights llama.safetensors --ids 1,2,3 --max-new-tokens 20
  alexdsl generate examples/llama_tiny.adsl --ids 1,2,3 --temperature 0.8 --top-k 40 --seed 1
  alexdsl generate examples/llama_tiny.adsl --weights runs/tiny/weights.safetensors --prompt "The "
""")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Weights (.safetensors, .npz, .pt) keyed as the network's state keys; default: random, from the "
                   "fillers (--seed).")
@click.option("--ids", "ids_text", help="The prompt: comma-separated token ids (15496,11,995).")
@click.option("--prompt", help="The prompt as text, encoded with the tokenizer (give --ids or --prompt).")
@click.option("--tokenizer", type=click.Path(dir_okay=False),
              help="A tokenizer.json (Hugging Face's, or the one alexdsl train writes) to encode --prompt and print "
                   "text; default: the tokenizer.json beside --weights, if any.")
@click.option("--max-new-tokens", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="0: greedy (the highest score); else sample from softmax(scores / temperature).")
@click.option("--top-k", type=click.IntRange(min=1), help="Sample among the k highest scores only.")
@click.option("--seed", default=0, show_default=True, help="Seed for sampling and for filler weights.")
@click.option("--backend", type=click.Choice(["cupy", "torch"]), default="cupy", show_default=True)
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Keep each attention layer's keys and values, so that a new token runs alone; --no-cache reruns "
                   "the whole sequence for each token (the same tokens, slower).")
@report_errors
def generate_command(file: str, weights: str | None, ids_text: str | None, prompt: str | None, tokenizer: str | None,
                     max_new_tokens: int, temperature: float, top_k: int | None, seed: int, backend: str,
                     cache: bool) -> None:
    """Continue the prompt (--ids, or --prompt with a tokenizer) with FILE's causal language model; print the
    prompt and the new tokens, as text when there is a tokenizer, else as ids. The prompt runs once, then each
    new token alone over a key/value cache; a network that cannot be cached (a layer mixing tokens other than
    positions, rope and causal sdpa) reruns the whole sequence per token, with a note on stderr."""
    import alexdsl
    from alexdsl.generation import generate
    from alexdsl.interop.onnx import initial_weights
    from alexdsl.text import find_tokenizer, prompt_ids
    from alexdsl.weights import read_weights

    network = load_network(file)
    text_tokenizer = find_tokenizer(tokenizer, weights)
    ids = prompt_ids(text_tokenizer, prompt, None if ids_text is None else _ids(ids_text))
    if weights is None:
        click.echo(f"note: no --weights given: {network.name} runs with random weights drawn from its fillers "
                   f"(--seed {seed})", err=True)
        arrays = initial_weights(network, seed)
    else:
        arrays = read_weights(weights, network.state_keys())
    name = next(iter(network.data_inputs), "")
    tokens = generate(network, arrays, ids, max_new_tokens, backend=backend, temperature=temperature, top_k=top_k,
                      seed=seed, rebuild=lambda length: alexdsl.load(file, input_shapes={name: (length,)}), cache=cache,
                      note=lambda line: click.echo(line, err=True))
    click.echo(text_tokenizer.decode(tokens) if text_tokenizer is not None else ",".join(map(str, tokens)))
