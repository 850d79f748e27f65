"""``alexdsl run``: inference with either backend on image files, .npy arrays, a labelled dataset or random input."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from alexdsl.cli.support import check_memory, load_network, report_errors
from alexdsl.errors import AlexDSLError
from alexdsl.fileio import output_target
from alexdsl.progress import busy

if TYPE_CHECKING:
    from alexdsl.profiling import Profile


@click.command("run", epilog="""\b
Examples:
  alexdsl run examples/lenet.adsl --weights runs/lenet/weights.safetensors --data digits
  alexdsl run examples/alexnet.adsl --backend cupy --batch 16
  alexdsl run examples/alexnet.adsl --weights w.safetensors cat.jpg dog.jpg --top 5
  alexdsl run examples/alexnet.adsl --input batch.npy --backend torch
  alexdsl run examples/resnet18.adsl --batch 1 --profile --profile-out trace.json""")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(["cupy", "torch"]), default="cupy", show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Weights (.safetensors, .npz or a torch .pt) keyed like the state_dict [default: the fillers].")
@click.option("--input", "arrays", multiple=True, type=click.Path(dir_okay=False), metavar="X.npy",
              help="An NxCxHxW (or CxHxW) float array to run (- reads standard input).")
@click.option("--data", metavar="SOURCE", help="A labelled dataset (digits, synthetic, or a folder): print accuracy.")
@click.option("--batch", default=16, show_default=True, type=click.IntRange(min=1), help="Batch size.")
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1), help="k for top-k.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="cupy executor dtype (float16 is for GPUs: NumPy emulates it, 40-140x slower).")
@click.option("--seed", default=0, show_default=True, help="Seed for filler weights and random input.")
@click.option("--profile", is_flag=True,
              help="Print the time per layer (per fused group on the executor) and per kind, slowest first.")
@click.option("--profile-out", type=click.Path(dir_okay=False), metavar="TRACE.json",
              help="Write the per-layer profile as a Chrome trace (chrome://tracing, ui.perfetto.dev).")
@report_errors
def run_command(file: str, images: tuple[str, ...], backend: str, weights: str | None, arrays: tuple[str, ...],
                data: str | None, batch: int, top: int, device: str, dtype: str, seed: int, profile: bool,
                profile_out: str | None) -> None:
    """Run FILE's network on IMAGES, on --input arrays, on a --data set, or on random input.

    Image files get the network's preprocessing (resize, centre crop, mean) and print their
    top-k classes; a dataset prints top-1 and top-k accuracy; every run reports images/s.
    """
    import numpy  # here, not at the top: `alexdsl --help` stays light

    from alexdsl.inference import evaluate, load_array, make_predictor, top_k
    from alexdsl.profiling import Profile

    network = load_network(file)
    if sum(map(bool, (images, arrays, data))) > 1:
        raise AlexDSLError("error: give image files, --input arrays or --data, not several")
    check_memory(network, batch, "run")
    if profile_out:
        output_target(profile_out)  # refuse an unwritable trace path before the run, not after it
    classes = next((network.layer(n).attrs.get("classes", 0) for n in network.label_inputs), 0)
    timings = Profile(f"{network.name} ({backend} backend)") if profile or profile_out else None
    predict, where = make_predictor(network, backend, weights, device, dtype, seed, timings)
    if weights is None:
        chance = f"; expect chance accuracy, about 1/{classes}" if data and classes else ""
        click.echo(f"note: no --weights given: {network.name} runs with random weights drawn from its fillers "
                   f"(--seed {seed}), not trained ones{chance}", err=True)
    (input_name,) = network.data_inputs
    shape = network.shapes[input_name]
    if data:
        from alexdsl.data import open_source

        with busy(f"loading the data ({data})"):
            source = open_source(data, shape, classes, preprocess=network.preprocess.get(input_name), seed=seed)
        result = evaluate(predict, source, batch, top)
        click.echo(f"{data}: top-1 {result['top1']:.4f}  top-{top} {result[f'top{top}']:.4f} "
                   f"on {result['samples']} validation samples")
        click.echo(f"  ({source.validation})")
        click.echo(f"{result['images_per_second']:.1f} images/s on {where}")
        _report_profile(timings, profile, profile_out)
        return
    labels: list[str]
    if images:
        from alexdsl.data import Preprocess, load_image

        pre = Preprocess.from_settings(network.preprocess.get(input_name))
        x = numpy.stack([load_image(path, shape, pre) for path in images])  # type: ignore[arg-type]
        labels = list(images)
    elif arrays:
        x = numpy.concatenate([load_array(path, shape) for path in arrays])
        labels = [f"{Path(arrays[0]).name}[{i}]" for i in range(len(x))] if len(arrays) == 1 else \
            [f"sample {i}" for i in range(len(x))]
    else:
        x = numpy.random.default_rng(seed).standard_normal((batch, *shape)).astype(numpy.float32)
        labels = []
    predict(x[:1])  # warm-up: first-call allocations are not the steady state
    if timings is not None:
        timings.clear()
    began = time.perf_counter()
    scores = numpy.concatenate([predict(x[i:i + batch]) for i in range(0, len(x), batch)])
    seconds = time.perf_counter() - began
    if labels:
        order, probs = top_k(scores, top)
        for label, best, p in zip(labels, order, probs):
            click.echo(f"{label}: " + ", ".join(f"{c} ({q:.3f})" for c, q in zip(best, p)))
    else:
        click.echo(f"random {'x'.join(map(str, x.shape))} input -> output {'x'.join(map(str, scores.shape))}")
    click.echo(f"{len(x) / seconds:.1f} images/s on {where}")
    _report_profile(timings, profile, profile_out)


def _report_profile(timings: Profile | None, show: bool, trace: str | None) -> None:
    """Print the profile table (``--profile``) and write the Chrome trace (``--profile-out``)."""
    if timings is None:
        return
    if show:
        click.echo(timings.table())
    if trace:
        timings.write_trace(trace)
        click.echo(f"wrote {trace} (open it in chrome://tracing or ui.perfetto.dev)", err=True)
