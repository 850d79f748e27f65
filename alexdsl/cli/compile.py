"""``alexdsl compile``: write a backend's generated module for a network.

Backends are imported only when the command runs, so ``alexdsl shapes`` works without torch
or cupy installed.
"""

from __future__ import annotations

import click

from alexdsl.cli.support import load_network, report_errors
from alexdsl.errors import AlexDSLError

BACKENDS = ("cupy", "torch")


@click.command("compile", epilog="""\b
Examples:
  alexdsl compile examples/alexnet.adsl --backend cupy
  alexdsl compile examples/alexnet.adsl --backend torch -o alexnet_torch.py""")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(BACKENDS), required=True, help="What to generate.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Where to write the module [default: <stem>_<backend>.py here].")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="cupy: the executor's dtype.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=CxHxW", help="Override an input's shape.")
@report_errors
def compile_command(file: str, backend: str, output: str | None, dtype: str, inputs: tuple[str, ...]) -> None:
    """Generate a readable Python module for FILE: a CuPy/NumPy executor or a PyTorch nn.Module.

    The file is written atomically. For cupy, a summary of the kernels, fusion, parameter
    bytes and planned activation memory is printed.
    """
    network = load_network(file, inputs)
    if backend == "torch":
        from alexdsl.backends.torch.module_file import write_torch_module

        if dtype != "float32":
            raise AlexDSLError(f"error: --dtype {dtype} is for --backend cupy; the generated torch module is "
                               f"float32 (convert it after building: module.to(torch.{dtype}))")
        path = write_torch_module(network, output)
    else:
        from alexdsl.backends.executor import summary
        from alexdsl.backends.executor.module_file import write_executor_module

        path = write_executor_module(network, output, dtype=dtype)
        click.echo(summary(network, dtype=dtype))
    click.echo(f"wrote {path}")

