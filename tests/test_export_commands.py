"""export (json, prototxt, onnx) and import json: round trips through the commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import alexdsl
from alexdsl.errors import AlexDSLError
from alexdsl.interop.caffe import import_prototxt
from alexdsl.interop.caffe_export import export_prototxt
from alexdsl.interop.commands import COMMANDS, export_command, import_group
from alexdsl.interop.source import network_to_source

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.adsl"))


def comparable(network: alexdsl.Network) -> dict:
    data = json.loads(network.to_json())
    data.pop("source")
    for layer in data["layers"]:
        layer.pop("span")
        layer.pop("block")
    return data


def params(network: alexdsl.Network) -> dict:
    return {layer.name: dict(layer.params) for layer in network.layers() if layer.params}


def test_commands_list() -> None:
    assert [c.name for c in COMMANDS] == ["fmt", "import", "export", "draw", "compare"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_json_source_round_trip(path: Path) -> None:
    network = alexdsl.load(path)
    again = alexdsl.parse(network_to_source(alexdsl.Network.from_json(network.to_json())))
    assert comparable(again) == comparable(network)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_prototxt_round_trip(path: Path) -> None:
    network = alexdsl.load(path)
    again = alexdsl.parse(import_prototxt(export_prototxt(network), path.stem + ".prototxt"))
    assert again.shapes == network.shapes
    assert again.totals() == network.totals()
    assert params(again) == params(network)


def test_prototxt_export_refuses_what_caffe_cannot_say() -> None:
    net = alexdsl.parse("network A\ninput x: 3x8x8\np: avgpool(3, stride=1, pad=1, count_pad=false)\n")
    with pytest.raises(AlexDSLError, match="count_pad=false"):
        export_prototxt(net)


def test_export_and_import_json_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    ir_file = tmp_path / "alexnet.json"
    result = runner.invoke(export_command, [str(ROOT / "examples" / "alexnet.adsl"), "--format", "json",
                                            "-o", str(ir_file)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "back.adsl"
    result = runner.invoke(import_group, ["json", str(ir_file), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert comparable(alexdsl.load(out)) == comparable(alexdsl.load(ROOT / "examples" / "alexnet.adsl"))
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    result = runner.invoke(import_group, ["json", str(bad)])
    assert result.exit_code == 1 and "not valid JSON" in result.output


def test_export_prototxt_to_stdout() -> None:
    result = CliRunner().invoke(export_command, [str(ROOT / "examples" / "lenet.adsl"), "--format", "prototxt",
                                                 "-o", "-"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith('name: "LeNet"') and 'type: "SoftmaxWithLoss"' in result.output


def test_export_onnx_command_with_weights(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    src = ROOT / "examples" / "lenet.adsl"
    network = alexdsl.load(src)
    rng = np.random.default_rng(3)
    weights = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in network.state_keys().items()}
    np.savez(tmp_path / "w.npz", **weights)
    out = tmp_path / "lenet.onnx"
    result = CliRunner().invoke(export_command, [str(src), "--format", "onnx", "-o", str(out),
                                                 "--weights", str(tmp_path / "w.npz")])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    np.testing.assert_array_equal(stored["conv1.weight"], weights["conv1.weight"])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"data": np.zeros((4, 1, 28, 28), np.float32)})
    assert scores.shape == (4, 10)
    result = CliRunner().invoke(export_command, [str(src), "--format", "onnx", "-o", str(out),
                                                 "--weights", str(tmp_path / "missing.npz")])
    assert result.exit_code == 1 and "no such file" in result.output


# generated networks: both interchange paths give the network back --------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from test_fmt import networks  # noqa: E402


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_generated_networks_round_trip(src: str) -> None:
    network = alexdsl.parse(src)
    again = alexdsl.parse(network_to_source(alexdsl.Network.from_json(network.to_json())))
    assert comparable(again) == comparable(network)
    caffe = alexdsl.parse(import_prototxt(export_prototxt(network)))
    assert caffe.shapes == network.shapes and params(caffe) == params(network)
