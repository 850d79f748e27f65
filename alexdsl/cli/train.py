"""``alexdsl train``: train a network with PyTorch (imported only when the command runs)."""

from __future__ import annotations

from pathlib import Path

import click

from alexdsl.cli.support import check_memory, load_network, report_errors
from alexdsl.errors import AlexDSLError
from alexdsl.extras import install_command
from alexdsl.fileio import output_target
from alexdsl.progress import busy


@click.command("train", epilog="""\b
Examples:
  alexdsl train examples/lenet.adsl --data digits --epochs 10
  alexdsl train net.adsl --data synthetic --epochs 2 --out runs/smoke
  alexdsl train net.adsl --data images/ --out runs/net --resume
  alexdsl train examples/llama_tiny.adsl --data text:README.md --epochs 5
  torchrun --nproc-per-node 2 -m alexdsl.cli train net.adsl --data images/ --out runs/net""")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--data", required=True, metavar="SOURCE",
              help="synthetic, synthetic:N, digits, a folder with train/<class>/ and val/<class>/, or text:FILE "
                   "for a network whose input is token ids.")
@click.option("--tokenizer", type=click.Path(dir_okay=False), default=None,
              help="Encode text:FILE with this tokenizer.json (the text extra) [default: one token per character].")
@click.option("--out", "out", default=None, metavar="DIR", help="Output folder [default: runs/<file stem>].")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs [default: the solver's, or 10].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Samples per step and process [default: the solver's, or 64].")
@click.option("--lr", type=click.FloatRange(min=0), default=None, help="Base learning rate [default: the solver's].")
@click.option("--device", default=None, metavar="DEVICE", help="cpu, cuda or cuda:N [default: cuda if available].")
@click.option("--resume", is_flag=True, help="Continue from DIR/checkpoint.pt.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of initialisation, data order, dropout.")
@click.option("--compile", "compile_", is_flag=True, help="Run the forward pass through torch.compile.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=200, show_default=True,
              help="Also checkpoint every N steps (0: at the end of each epoch only).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Start from these weights (.safetensors, .npz or .pt) instead of the fillers.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=CxHxW", help="Override an input's shape.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads [default: OMP_NUM_THREADS, else 1 for small networks such as LeNet, else all].")
@click.option("--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
@report_errors
def train_command(file: str, data: str, tokenizer: str | None, out: str | None, epochs: int | None,
                  batch_size: int | None, lr: float | None, device: str | None, resume: bool, seed: int, compile_: bool,
                  checkpoint_every: int, weights: str | None, inputs: tuple[str, ...], threads: int | None,
                  quiet: bool) -> None:
    """Train the network in FILE with PyTorch and write weights, metrics and a plot to DIR.

    Writes DIR/weights.safetensors, DIR/metrics.jsonl (one line per epoch),
    DIR/checkpoint.pt (for --resume), DIR/curves.png and, for text, DIR/tokenizer.json.
    """
    startup = {"delay": 0.0, "show": False if quiet else None}  # say at once what the first seconds are spent on
    with busy("importing torch", **startup):
        try:
            import torch  # noqa: F401 - the trainer imports it only when it runs: check here, before any work
        except ImportError as error:
            raise AlexDSLError(f"alexdsl train needs the torch extra ({error}): {install_command('torch')}"
                               ) from None
    from alexdsl.backends.torch.train import train

    network = load_network(file, inputs, **startup)
    check_memory(network, batch_size or int(network.solver.get("batch_size", 64)), "train",
                 copies_of_parameters=3)  # weights, gradients, momentum
    out_dir = Path(out) if out else Path("runs") / Path(file).stem
    output_target(out_dir / "weights.safetensors")  # an unwritable --out fails now, not after an epoch
    result = train(network, data, out_dir, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                   resume=resume, seed=seed, compile=compile_, checkpoint_every=checkpoint_every,
                   progress=False if quiet else None, weights=weights, threads=threads, tokenizer=tokenizer,
                   log=None if quiet else (lambda message: click.echo(message, err=True)))
    final = result.final
    if final and not quiet:
        accuracy = final.get("val_accuracy")
        click.echo(f"wrote {out_dir / 'weights.safetensors'}"
                   + (f" (val_accuracy {accuracy:.4f})" if accuracy is not None else ""))

