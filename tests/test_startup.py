"""Start-up: `alexdsl --help` and a command's own --help import none of the heavy packages."""

from __future__ import annotations

import subprocess
import sys

import pytest

# What `alexdsl --help` may not load: the array, graph and parser libraries are for commands that
# read a network, the backends and interop packages for the commands that use them.
HEAVY = ("numpy", "networkx", "lark", "torch", "onnx", "onnxruntime", "cupy", "pygls", "google.protobuf",
         "alexdsl.frontend", "alexdsl.ir.network")

PROBE = """
import runpy, sys
sys.argv = ["alexdsl", *sys.argv[1:]]
try:
    runpy.run_module("alexdsl.cli", run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
print("loaded:", *(name for name in {heavy!r} if name in sys.modules))
"""


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["import", "onnx", "--help"], ["--version"]])
def test_help_imports_no_heavy_package(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True,
                            text=True, check=True)
    *shown, loaded = result.stdout.strip().splitlines()
    assert shown, "the command printed nothing"
    assert loaded == "loaded:", f"alexdsl {' '.join(args)} imported {loaded.removeprefix('loaded: ')}"


def test_reading_a_network_loads_the_parser_but_not_the_backends() -> None:
    probe = ("import sys, alexdsl; alexdsl.load('examples/lenet.adsl'); "
             "print(' '.join(m for m in ('torch', 'onnx', 'onnxruntime', 'cupy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
