"""``alexdsl fmt``, ``import``, ``export``, ``draw`` and ``compare``: other formats and tools.

Heavy modules (onnx, the Caffe grammar) are imported only when a command runs. Every output
file is written atomically. User mistakes print located diagnostics and exit with status 1.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

import click

from alexdsl.cli.support import check_memory, parse_shape_overrides, print_diagnostics, read_source, report_errors
from alexdsl.errors import AlexDSLError
from alexdsl.fileio import atomic_path, write_bytes_atomic, write_text_atomic
from alexdsl.progress import busy


# fmt ----------------------------------------------------------------------------------------------
@click.command("fmt", epilog="\b\nExamples:\n  alexdsl fmt examples/*.adsl\n  alexdsl fmt --check examples/*.adsl")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help="Change nothing; exit 1 and list the files that would change.")
def fmt_command(files: tuple[str, ...], check: bool) -> None:
    """Rewrite FILES in the canonical layout (comments kept, the network unchanged)."""
    from alexdsl.fmt import format_source

    failed = changed = 0
    for path in files:
        try:
            text = read_source(path)
            formatted = format_source(text, path)
        except AlexDSLError as error:
            print_diagnostics(error)
            failed += 1
            continue
        if path == "-" and not check:  # standard input: the formatted text goes to standard output
            click.echo(formatted, nl=False)
            continue
        if formatted == text:
            continue
        changed += 1
        if check:
            click.echo(f"would reformat {path}")
        else:
            write_text_atomic(path, formatted)
            click.echo(f"reformatted {path}", err=True)
    if failed or (check and changed):
        sys.exit(1)



def _emit(text: str, output: str | None) -> None:
    """Write ``text`` to ``output`` atomically, or to stdout when ``output`` is None or '-'."""
    if output is None or output == "-":
        click.echo(text, nl=False)
    else:
        write_text_atomic(output, text)
        click.echo(f"wrote {output}", err=True)


# import -------------------------------------------------------------------------------------------
@click.group("import", epilog="""\b
Examples:
  alexdsl import caffe deploy.prototxt -o alexnet.adsl
  alexdsl import json alexnet.json > alexnet.adsl""")
def import_group() -> None:
    """Translate another description of a network into alexdsl source."""


@import_group.command("caffe")
@click.argument("prototxt", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here (atomically); default: stdout.")
@report_errors
def import_caffe(prototxt: str, output: str | None) -> None:
    """Translate a Caffe NET.prototxt into alexdsl source (stdout unless -o)."""
    from alexdsl.interop.caffe import import_prototxt

    _emit(import_prototxt(read_source(prototxt), prototxt), output)


@import_group.command("json")
@click.argument("ir_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here (atomically); default: stdout.")
@report_errors
def import_json(ir_file: str, output: str | None) -> None:
    """Turn an IR .json file (from 'export --format json') back into alexdsl source (stdout unless -o)."""
    import alexdsl
    from alexdsl.interop.writer.flat import network_to_source

    _emit(network_to_source(alexdsl.from_json(read_source(ir_file), ir_file), ir_file), output)


@import_group.command("onnx", epilog="""\b
Examples:
  alexdsl import onnx resnet18.onnx -o resnet18.adsl --weights-out resnet18.safetensors
  alexdsl run resnet18.adsl --weights resnet18.safetensors cat.png
  alexdsl import onnx model.onnx --input data=3x224x224 -o model.adsl""")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the source here (atomically); "
              "default: stdout.")
@click.option("--weights-out", type=click.Path(dir_okay=False),
              help="Write the weights here (.safetensors, keyed as the torch module's state_dict); default: "
                   "beside -o with the suffix .safetensors.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=CxHxW",
              help="Fix a model input's shape (without the batch); needed where the model's is dynamic.")
@report_errors
def import_onnx_command(model: str, output: str | None, weights_out: str | None, inputs: tuple[str, ...]) -> None:
    """Translate an ONNX MODEL into readable alexdsl source and its weights.

    The network is written with chains and blocks, layer names from the model's initializers
    (torchvision's state_dict keys stay the same), and checked like any source; nothing is
    written unless the whole model imports.
    """
    from alexdsl.interop.onnx_import import import_onnx_source

    with busy(f"importing {model}"):
        imported = import_onnx_source(model, parse_shape_overrides(inputs) or None)
    if weights_out is None and output not in (None, "-"):
        weights_out = str(Path(output).with_suffix(".safetensors"))  # type: ignore[arg-type]
    if weights_out is not None:
        _save_weights(weights_out, imported.weights, {"source": Path(model).name})
        count = sum(int(a.size) for a in imported.weights.values())
        click.echo(f"wrote {weights_out} ({len(imported.weights)} tensors, {count:,} values)", err=True)
    else:
        click.echo("note: weights not written; give --weights-out FILE.safetensors", err=True)
    _emit(imported.source, output)


def _save_weights(path: str, weights: dict[str, Any], metadata: dict[str, str]) -> None:
    """Write ``weights`` as .safetensors atomically, straight from the arrays (no copy of them in memory).

    safetensors' ``save_file`` reports no failed write (a full disk), so the file's size is checked
    against its header: a short file is an error naming ``path``, and the target is left untouched."""
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file(weights, tmp, metadata=metadata)
        with open(tmp, "rb") as handle:
            header = int.from_bytes(handle.read(8), "little")
        if tmp.stat().st_size != 8 + header + sum(int(array.nbytes) for array in weights.values()):
            raise OSError(errno.ENOSPC, "the file was not written whole (is the disk full?)")


# export -------------------------------------------------------------------------------------------
EXPORT_FORMATS = ("json", "onnx", "prototxt")


@click.command("export", epilog="""\b
Examples:
  alexdsl export examples/alexnet.adsl --format json -o alexnet.json
  alexdsl export examples/alexnet.adsl --format onnx -o alexnet.onnx --weights alexnet.safetensors
  alexdsl export examples/lenet.adsl --format prototxt -o lenet.prototxt""")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Output file (written atomically); '-' for stdout (json and prototxt only).")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="onnx: weights (.safetensors, .npz or .pt) keyed <layer>.<param>; default: the fillers.")
@click.option("--seed", default=0, show_default=True, help="onnx: seed for weights drawn from the fillers.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=CxHxW", help="Override an input's shape.")
@report_errors
def export_command(file: str, fmt: str, output: str, weights: str | None, seed: int, inputs: tuple[str, ...]) -> None:
    """Write FILE's network as IR JSON, an ONNX model (opset 17) or a Caffe prototxt."""
    import alexdsl

    shapes = parse_shape_overrides(inputs)
    network = alexdsl.load(file, input_shapes=shapes or None)
    if fmt == "json":
        _emit(network.to_json(), output)
    elif fmt == "prototxt":
        from alexdsl.interop.caffe_export import export_prototxt

        _emit(export_prototxt(network), output)
    else:
        from alexdsl.interop.onnx import export_onnx
        from alexdsl.weights import load_for_network

        if output == "-":
            raise AlexDSLError("error: an ONNX model is binary; give a file with -o")
        check_memory(network, 1, "export", copies_of_parameters=3)  # weights, initializers, serialized model
        with busy(f"exporting {network.name} to ONNX"):
            model = export_onnx(network, load_for_network(weights, network) if weights else None, seed=seed)
            write_bytes_atomic(output, model.SerializeToString())
        click.echo(f"wrote {output}", err=True)


# draw -----------------------------------------------------------------------------------------------
@click.command("draw", epilog="""\b
Examples:
  alexdsl draw examples/inception.adsl -o inception.svg
  alexdsl draw examples/resnet18.adsl -o resnet18.dot""")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="net.dot (DOT text), or net.svg / net.png / net.pdf (runs Graphviz 'dot').")
@click.option("--input", "inputs", multiple=True, metavar="NAME=CxHxW", help="Override an input's shape.")
@report_errors
def draw_command(file: str, output: str, inputs: tuple[str, ...]) -> None:
    """Draw FILE's layer graph: shapes on edges, parameter counts on layers, blocks as boxes."""
    import alexdsl
    from alexdsl.draw import render, to_dot

    network = alexdsl.load(file, input_shapes=parse_shape_overrides(inputs) or None)
    suffix = Path(output).suffix.lower().lstrip(".")
    dot = to_dot(network)
    if suffix in ("dot", "gv", ""):
        _emit(dot, output)
    else:
        write_bytes_atomic(output, render(dot, suffix))
        click.echo(f"wrote {output}", err=True)


# compare ----------------------------------------------------------------------------------------------
@click.command("compare", epilog="""\b
Examples:
  alexdsl compare examples/lenet.adsl
  alexdsl compare examples/resnet18.adsl --backends reference,torch,cupy,onnx --input data=3x64x64
  alexdsl compare examples/alexnet.adsl --layers conv1,fc8 --weights alexnet.safetensors""")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--backends", default="reference,torch,cupy,onnx", show_default=True,
              help="Comma-separated; the first is the baseline. Choices: reference, torch, cupy, onnx.")
@click.option("--layers", default=None, help="Comma-separated layer names (default: every inference layer).")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Weights (.safetensors, .npz or .pt, keyed <layer>.<param>); default: drawn from the fillers.")
@click.option("--batch", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, help="Seed for the random inputs (and filler weights).")
@click.option("--tolerance", default=1e-4, show_default=True, type=float,
              help="Exit 1 when a relative difference exceeds this.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=CxHxW", help="Override an input's shape.")
@report_errors
def compare_command(file: str, backends: str, layers: str | None, weights: str | None, batch: int, seed: int,
                    tolerance: float, inputs: tuple[str, ...]) -> None:
    """Run FILE on several backends and print each layer's largest absolute and relative difference."""
    import alexdsl
    from alexdsl.interop.compare import compare, render_rows, worst

    network = alexdsl.load(file, input_shapes=parse_shape_overrides(inputs) or None)
    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    check_memory(network, batch, "compare", copies_of_parameters=len(chosen))
    loaded = None
    if weights:
        from alexdsl.weights import load_for_network

        loaded = load_for_network(weights, network)
    names = [n.strip() for n in layers.split(",")] if layers else None
    with busy(f"comparing {network.name} on {', '.join(chosen)}"):
        rows = compare(network, chosen, weights=loaded, batch=batch, seed=seed, layers=names)
    click.echo(render_rows(rows, chosen), nl=False)
    largest = worst(rows)
    if largest > tolerance:
        click.echo(f"largest relative difference {largest:.2e} exceeds --tolerance {tolerance:g}", err=True)
        sys.exit(1)
    click.echo(f"all layers agree within {tolerance:g} (largest relative difference {largest:.2e})", err=True)

