"""alexdsl compare: per-layer differences between backends."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from click.testing import CliRunner

import alexdsl
from alexdsl.errors import AlexDSLError

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from alexdsl.cli.interop import compare_command  # noqa: E402
from alexdsl.interop.compare import compare, compared_layers, render_rows, subnetwork, worst  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def available(backend: str) -> bool:
    try:
        importlib.import_module(f"alexdsl.backends.{backend}")
    except Exception:  # noqa: BLE001 - a backend that does not import is simply not compared
        return False
    return True


def test_subnetwork_cuts_at_a_layer() -> None:
    net = alexdsl.load(ROOT / "examples" / "inception.adsl", input_shapes={"data": (3, 64, 64)})
    sub = subnetwork(net, "inc3a.b3")
    assert sub.outputs == ["inc3a.b3"] and "inc3a.b1" not in sub.graph and sub.data_inputs == ["data"]
    assert sub.shapes["inc3a.b3"] == net.shapes["inc3a.b3"]
    assert "loss" not in compared_layers(net) and "data" not in compared_layers(net)


def test_reference_and_onnx_agree_on_every_layer() -> None:
    net = alexdsl.load(ROOT / "examples" / "lenet.adsl")
    rows = compare(net, ["reference", "onnx"])
    assert [r.layer for r in rows] == compared_layers(net)
    assert all(r.diffs["onnx"] is not None for r in rows)
    assert worst(rows) < 1e-5
    table = render_rows(rows, ["reference", "onnx"])
    assert table.splitlines()[0].startswith("layer") and "onnx vs reference" in table


@pytest.mark.parametrize("backend", ["torch", "cupy"])
def test_backends_agree_with_the_reference(backend: str) -> None:
    if not available(backend):
        pytest.skip(f"alexdsl.backends.{backend} does not import here: pip install -e '.[torch]'")
    net = alexdsl.parse(
        "network Small\ninput data: 3x12x12\n"
        "c1: conv(4, 3, pad=1) | bn: batchnorm | relu | maxpool(3, stride=2, round=ceil) | lrn(3)\n"
        "a: c1 -> conv(4, 1)\nb: c1 -> conv(4, 3, pad=1)\ns: a, b -> add | dropout | fc(5) | softmax\n")
    rows = compare(net, ["reference", backend])
    assert worst(rows) < 1e-4, render_rows(rows, ["reference", backend])


def test_compare_command(tmp_path: Path) -> None:
    runner = CliRunner()
    lenet = str(ROOT / "examples" / "lenet.adsl")
    result = runner.invoke(compare_command, [lenet, "--backends", "reference,onnx", "--layers", "conv1,ip2"])
    assert result.exit_code == 0, result.output
    assert "conv1" in result.output and "ip2" in result.output and "agree" in result.output
    result = runner.invoke(compare_command, [lenet, "--backends", "reference,onnx", "--tolerance", "-1"])
    assert result.exit_code == 1 and "exceeds" in result.output
    result = runner.invoke(compare_command, [lenet, "--backends", "reference,tensorflow"])
    assert result.exit_code == 1 and "unknown backend 'tensorflow'" in result.output
    result = runner.invoke(compare_command, [lenet, "--backends", "reference,onnx", "--layers", "conv9"])
    assert result.exit_code == 1 and "conv9" in result.output and "Traceback" not in result.output


def test_needs_two_backends() -> None:
    with pytest.raises(AlexDSLError, match="two backends"):
        compare(alexdsl.load(ROOT / "examples" / "lenet.adsl"), ["onnx"])


def test_compare_reports_a_model_that_fails_the_checker(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_onnx_export import lower_pools_with_onnx_ceil_mode

    net = alexdsl.parse("network P\ninput data: 3x7x7\np: maxpool(2, stride=2, pad=1, round=ceil) | fc(3)\n")
    rows = compare(net, ["reference", "onnx"])  # the ceil-mode pool ONNX once disagreed on
    assert [r.layer for r in rows] == ["p", "p_fc"] and worst(rows) < 1e-5
    lower_pools_with_onnx_ceil_mode(monkeypatch)
    with pytest.raises(AlexDSLError, match="fails onnx.checker"):
        compare(net, ["reference", "onnx"])
