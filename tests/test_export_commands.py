"""export (json, prototxt, onnx) and import json: round trips through the commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import alexdsl
from alexdsl.cli import main
from alexdsl.cli.interop import export_command, import_group
from alexdsl.errors import AlexDSLError
from alexdsl.interop.caffe import import_prototxt
from alexdsl.interop.caffe_export import export_prototxt
from alexdsl.interop.writer.flat import network_to_source

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


def test_commands_are_registered() -> None:
    assert main.commands["export"] is export_command and main.commands["import"] is import_group


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_json_source_round_trip(path: Path) -> None:
    network = alexdsl.load(path)
    again = alexdsl.parse(network_to_source(alexdsl.from_json(network.to_json())))
    assert comparable(again) == comparable(network)


def test_writers_keep_a_tuple_of_equal_ints_that_is_not_a_pair() -> None:
    """roll's shifts (-3, -3) are two shifts: written as one number they would be one (Swin's cyclic shift)."""
    from alexdsl.interop.writer.readable import readable_source

    source = "network T\ninput x: 8x14x14\ndefaults roll(shifts=(1, 1), axes=(1, 2))\n" \
             "a: roll((-3, -3), (1, 2))\nb: roll((2, 2), (0, 1))\nc: roll\nd: roll((1, 1), (1, 2))\n"
    network = alexdsl.parse(source)
    for written in (network_to_source(network), readable_source(network)):
        assert "roll((-3, -3), (1, 2))" in written and "roll((2, 2), (0, 1))" in written, written
        again = alexdsl.parse(written)
        assert [again.layer(n).attrs for n in "abcd"] == [network.layer(n).attrs for n in "abcd"], written


def test_json_source_writes_a_bias_an_op_lacks_by_default() -> None:
    # scale has no bias unless told: bias=true is written, and once only when its filler is written too
    network = alexdsl.parse("network T\ninput x: 3x8x8\ns: scale(bias=true) | t: scale(bias=gaussian(0.1))\n")
    source = network_to_source(network)
    assert "s: x -> scale(bias=true)\nt: s -> scale(bias=gaussian(std=0.1))\n" in source
    assert comparable(alexdsl.parse(source)) == comparable(network)


# Examples Caffe cannot express: an op it has no layer for (relu6, hardswish, layernorm, ...), or,
# in RegNetY's squeeze-excitation, a mul that broadcasts (Caffe's Eltwise needs one shape).
def _uses_an_op_caffe_lacks(path: Path) -> bool:
    from alexdsl.ops.registry import lookup

    return any(lookup(layer.op).lower.caffe is None for layer in alexdsl.load(path).layers() if not layer.is_input)


NOT_CAFFE = {path.stem for path in EXAMPLES if _uses_an_op_caffe_lacks(path)} | {"regnet_y_400mf"}


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem not in NOT_CAFFE], ids=lambda p: p.name)
def test_prototxt_round_trip(path: Path) -> None:
    network = alexdsl.load(path)
    again = alexdsl.parse(import_prototxt(export_prototxt(network), path.stem + ".prototxt"))
    assert again.shapes == network.shapes
    assert again.totals() == network.totals()
    assert params(again) == params(network)


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem in NOT_CAFFE], ids=lambda p: p.name)
def test_prototxt_export_of_an_example_caffe_cannot_say_is_located(path: Path) -> None:
    with pytest.raises(AlexDSLError, match=rf"{path.name}:\d+:\d+: error: .*Caffe"):
        export_prototxt(alexdsl.load(path))


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
    assert result.exit_code == 1 and "missing.npz: error: no such" in result.output


# generated networks: both interchange paths give the network back --------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from test_fmt import networks  # noqa: E402


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_generated_networks_round_trip(src: str) -> None:
    network = alexdsl.parse(src)
    again = alexdsl.parse(network_to_source(alexdsl.from_json(network.to_json())))
    assert comparable(again) == comparable(network)
    caffe = alexdsl.parse(import_prototxt(export_prototxt(network)))
    assert caffe.shapes == network.shapes and params(caffe) == params(network)


# import json and export prototxt never inject (issue 9) -------------------------------------------
from hypothesis import strategies as st  # noqa: E402

from alexdsl.interop.caffe import parse_prototxt  # noqa: E402
from alexdsl.syntax.build import is_name  # noqa: E402

HOSTILE_NAMES = ["T\nsolver(lr=1000)\ndefaults conv(weight=constant(9))", "input", "true", "1st", "a b", "a-b",
                 'q"uote', "é", "a..b", "a.", "x\\", "", "net\r"]
IDENTIFIERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}(\.[a-z0-9]{1,3})?", fullmatch=True)
# mostly names the IR reader accepts (keywords and leading digits among them), some it refuses
NAME_TEXT = st.one_of(IDENTIFIERS, IDENTIFIERS, st.sampled_from(["input", "true", "repeat", "in", "1st", "7"]),
                      st.sampled_from(HOSTILE_NAMES), st.text(min_size=1, max_size=8))


def rename(data: dict, old: str, new: str) -> None:
    """Rename layer ``old`` everywhere an IR dict names it."""
    for layer in data["layers"]:
        layer["name"] = new if layer["name"] == old else layer["name"]
        layer["inputs"] = [new if i == old else i for i in layer["inputs"]]
    for key in ("inputs", "outputs"):
        data[key] = [new if i == old else i for i in data[key]]


@st.composite
def ir_documents(draw: st.DrawFn) -> dict:
    """A valid generated network's IR with random names, description and lr/decay multipliers."""
    data = json.loads(alexdsl.parse(draw(networks())).to_json())
    data["name"] = draw(NAME_TEXT)
    data["description"] = draw(st.text(max_size=30))
    for layer in data["layers"]:
        if draw(st.booleans()):
            new = draw(NAME_TEXT)
            if new not in [other["name"] for other in data["layers"]]:
                rename(data, layer["name"], new)
        for spec in layer["params"].values():
            spec["lr_mult"] = draw(st.sampled_from([1.0, 0.0, 2.0, 1e-3, 0.1, 1e30]))
            spec["decay_mult"] = draw(st.floats(0, 10, allow_nan=False, allow_infinity=False))
    return data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ir_documents())
def test_fuzzed_ir_writes_back_the_same_network_or_a_located_refusal(data: dict) -> None:
    try:
        network = alexdsl.from_json(json.dumps(data), "fuzz.json")
    except AlexDSLError:
        return  # refused by the IR reader
    names = [("name", network.name)] + [(f"layers[{i}].name", layer.name)
                                        for i, layer in enumerate(network.declared_layers())]
    unwritable = [path for path, name in names if not is_name(name)]
    try:
        source = network_to_source(network, "fuzz.json")
    except AlexDSLError as error:
        assert unwritable and sorted(d.path for d in error.diagnostics if d.path.endswith(".name") or
                                     d.path.endswith(":name")) == sorted(f"fuzz.json:{p}" for p in unwritable)
        assert all("cannot be written as an alexdsl name" in d.message for d in error.diagnostics)
        return
    assert not unwritable
    again = alexdsl.parse(source)
    assert again.name == network.name and again.description == network.description
    assert again.shapes == network.shapes and again.state_keys() == network.state_keys()
    assert params(again) == params(network)
    assert sum(line.startswith(("network ", "solver", "defaults")) for line in source.splitlines()) == 1


def test_import_json_refuses_names_source_cannot_hold(tmp_path: Path) -> None:
    data = json.loads(alexdsl.load(ROOT / "examples" / "lenet.adsl").to_json())
    data["name"] = "LeNet solver(lr=1000)"  # printable, so the IR reader lets it through
    ir_file = tmp_path / "evil.json"
    ir_file.write_text(json.dumps(data))
    out = tmp_path / "evil.adsl"
    result = CliRunner().invoke(import_group, ["json", str(ir_file), "-o", str(out)])
    assert result.exit_code == 1 and not out.exists() and "Traceback" not in result.output
    assert "evil.json:name: error: the network name cannot be written as an alexdsl name" in result.output
    rename(data, "conv1", "input")  # a layer name source cannot spell: the IR reader refuses it already
    ir_file.write_text(json.dumps(data))
    result = CliRunner().invoke(import_group, ["json", str(ir_file), "-o", str(out)])
    assert result.exit_code == 1 and not out.exists() and "Traceback" not in result.output
    index = [layer["name"] for layer in data["layers"]].index("input")
    assert f"evil.json:layers[{index}].name: error: the layer name is not a valid name" in result.output


def test_a_name_with_newlines_never_becomes_statements() -> None:
    network = alexdsl.parse("network T\ninput x: 3x8x8\nc: conv(4, 3)\n")
    network.name = HOSTILE_NAMES[0]
    with pytest.raises(AlexDSLError) as info:
        network_to_source(network, "net.json")
    assert [d.path for d in info.value.diagnostics] == ["net.json:name"]


def test_prototxt_export_escapes_strings() -> None:
    network = alexdsl.parse("network T\ninput x: 3x8x8\nc: conv(4, 3)\n")
    network.name = 'two\nlines "quoted" \\ \x01 é'
    text = export_prototxt(network)
    assert text.splitlines()[0] == 'name: "two\\nlines \\"quoted\\" \\\\ \\001 é"'
    assert parse_prototxt(text).scalar("name").value == network.name
    again = alexdsl.parse(import_prototxt(text))
    assert again.name == "two_lines__quoted______é".replace("é", "_") and again.shapes == network.shapes


def strict_json(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_export_json_is_strict_json(path: Path) -> None:
    result = CliRunner().invoke(export_command, [str(path), "--format", "json", "-o", "-"])
    assert result.exit_code == 0, result.output
    assert strict_json(result.output)["name"] == alexdsl.load(path).name


def test_export_json_of_a_non_finite_number_is_refused_at_its_source(tmp_path: Path) -> None:
    src = tmp_path / "inf.adsl"
    src.write_text("network I\ninput x: 3x8x8\nc: conv(4, 3, weight=constant(1e999))\n")
    out = tmp_path / "inf.json"
    result = CliRunner().invoke(export_command, [str(src), "--format", "json", "-o", str(out)])
    assert result.exit_code == 1 and not out.exists() and "Infinity" not in result.output
    assert f"{src}:3:" in result.output and "Traceback" not in result.output
