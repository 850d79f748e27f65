"""alexdsl draw: DOT structure, and rendering when Graphviz is installed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import alexdsl
from alexdsl.cli.interop import draw_command
from alexdsl.draw import render, to_dot
from alexdsl.errors import AlexDSLError

ROOT = Path(__file__).resolve().parents[1]


def test_alexnet_dot_structure() -> None:
    net = alexdsl.load(ROOT / "examples" / "alexnet.adsl")
    dot = to_dot(net)
    assert dot.startswith('digraph "AlexNet" {') and dot.rstrip().endswith("}")
    nodes = set(re.findall(r'^  "([^"]+)" \[label=', dot, re.M))
    assert nodes == {layer.name for layer in net.layers()}
    edges = re.findall(r'^  "([^"]+)" -> "([^"]+)" \[label="([^"]+)"\];', dot, re.M)
    assert len(edges) == sum(len(layer.inputs) for layer in net.layers())
    assert ("conv1", "conv1_relu", "96x55x55") in edges
    assert ("label", "loss", "class(1000)") in edges
    assert "conv(96, 11, stride=4)" in dot and "34.9K params" in dot
    accuracy = next(line for line in dot.splitlines() if line.startswith('  "accuracy" ['))
    assert "dashed" in accuracy and "#2b6cd9" in accuracy
    assert dot.count("{") == dot.count("}")


def test_blocks_are_nested_clusters() -> None:
    dot = to_dot(alexdsl.load(ROOT / "examples" / "vgg16.adsl"))
    assert 'subgraph "cluster_stage1" {' in dot
    outer = dot.index('subgraph "cluster_stage1" {')
    inner = dot.index('subgraph "cluster_stage1_convs_0" {')
    assert outer < inner < dot.index('subgraph "cluster_stage2" {')
    train = next(line for line in dot.splitlines() if line.startswith('  "loss" ['))
    assert "#d9822b" in train


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed: apt-get install graphviz")
def test_draw_svg(tmp_path: Path) -> None:
    out = tmp_path / "net.svg"
    result = CliRunner().invoke(draw_command, [str(ROOT / "examples" / "inception.adsl"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().lstrip().startswith("<?xml") and "inc3a.b1" in out.read_text()


def test_draw_dot_file_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "net.dot"
    runner = CliRunner()
    result = runner.invoke(draw_command, [str(ROOT / "examples" / "lenet.adsl"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith('digraph "LeNet"')
    result = runner.invoke(draw_command, [str(ROOT / "examples" / "lenet.adsl"), "-o", str(tmp_path / "x.bmp")])
    assert result.exit_code == 1 and "cannot draw to .bmp" in result.output
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(AlexDSLError, match="Graphviz"):
        render("digraph {}", "svg")
    result = runner.invoke(draw_command, [str(ROOT / "examples" / "lenet.adsl"), "-o", str(tmp_path / "x.svg")])
    assert result.exit_code == 1 and "Graphviz" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.svg").exists()


def test_docs_show_the_alexnet_picture() -> None:
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    assert "](alexnet.svg)" in (docs / "interop.md").read_text()
    svg = (docs / "alexnet.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "conv2" in svg and "60,965,224" in svg
