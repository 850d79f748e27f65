"""IR JSON is a trust boundary: every field is checked, shapes are recomputed, errors carry JSON paths.

The fuzz test mutates the IR of every example with hostile values (code in strings, NaN,
huge ints, wrong types) and requires either a located AlexDSLError or a network whose
generated sources compile and equal what the shape pass computes.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import EXAMPLES

import alexdsl
from alexdsl.backends.executor.codegen import generate_source as cupy_source
from alexdsl.backends.torch.codegen import generate_source as torch_source
from alexdsl.cli import main
from alexdsl.errors import AlexDSLError

INJECTION = "(8 if __import__('os').system('touch pwned') else 8)"


def alexnet_ir() -> dict[str, Any]:
    return json.loads(alexdsl.load(EXAMPLES / "alexnet.adsl").to_json())


def read_errors(data: dict[str, Any]) -> str:
    with pytest.raises(AlexDSLError) as info:
        alexdsl.from_json(json.dumps(data), "net.json")
    return str(info.value)


def test_code_in_a_shape_is_refused_and_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = alexnet_ir()
    data["layers"][0]["shape"][1] = INJECTION
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    for command in (["check", str(path)], ["run", str(path), "--backend", "cupy", "--batch", "1"],
                    ["compile", str(path), "--backend", "cupy", "-o", str(tmp_path / "out.py")]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1, (command, result.output)
        assert "evil.json:layers[0].shape[1]: error: a dimension must be a positive integer" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "out.py").exists()


def test_every_problem_is_reported_with_its_json_path() -> None:
    data = alexnet_ir()
    assert [layer["name"] for layer in data["layers"][2:7]] == ["conv1", "conv1_relu", "conv1_maxpool", "conv1_lrn",
                                                                 "conv2"]
    data["layers"][3]["attrs"] = {"kernel": [3, "x"]}  # conv1_relu takes no arguments
    data["layers"][4]["attrs"]["kernel"] = [3, "x"]  # conv1_maxpool
    data["layers"][5]["op"] = "lrnn"
    data["layers"][6]["inputs"] = ["nope"]
    data["layers"][6]["params"]["weight"]["filler"] = {"type": "gaussian", "std": float("nan")}
    data["name"] = "Bad\nName"
    text = read_errors(data)
    for expected in (
        "net.json:name: error: field 'name' has the wrong type or value",
        "net.json:layers[3].attrs.kernel: error: unknown argument 'kernel' for relu",
        "net.json:layers[4].attrs.kernel: error: argument 'kernel' of maxpool has the wrong type",
        "net.json:layers[5].op: error: unknown op \"lrnn\"",
        "did you mean 'lrn'?",
        "net.json:layers[6].inputs[0]: error: layer 'conv2' reads \"nope\", which is not a layer in the file",
        "net.json:layers[6].params.weight.filler.std: error: NaN is not a number (strict JSON has no NaN or Infinity)",
    ):
        assert expected in text, text


def test_shapes_params_and_macs_are_recomputed_and_compared() -> None:
    data = alexnet_ir()
    data["layers"][2]["shape"] = [96, 54, 55]
    data["layers"][2]["params"]["weight"]["shape"] = [96, 3, 11, 10]
    data["layers"][2]["macs"] = 1
    text = read_errors(data)
    assert "net.json:layers[2].shape: error: the shape in the file is not what the layer computes" in text
    assert "expected: 96x55x55" in text
    assert "net.json:layers[2].params: error: the parameters in the file are not what the layer has" in text
    assert "net.json:layers[2].macs: error: the MAC count in the file is not what the layer computes" in text


def test_shape_rule_errors_are_located_by_json_path() -> None:
    data = alexnet_ir()
    data["layers"][2]["attrs"]["groups"] = 7  # conv1: 3 channels are not divisible by 7
    text = read_errors(data)
    assert "net.json:layers[2]: error: conv1: input channels (3) are not divisible by groups (7)" in text


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["layers"][0].update(attrs={"kind": "tensor", "code": "x"}), "an input's attrs must be"),
    (lambda d: d["layers"][1].update(attrs={"kind": "label", "classes": 10**30}), "an input's attrs must be"),
    (lambda d: d["layers"][2]["attrs"].update(out=10**30), "argument 'out' of conv is out of range"),
    (lambda d: d["layers"][2]["attrs"].update(out=True), "argument 'out' of conv has the wrong type"),
    (lambda d: d["layers"][5]["attrs"].update(alpha=float("inf")),
     "net.json:layers[5].attrs.alpha: error: Infinity is not a number (strict JSON has no NaN or Infinity)"),
    (lambda d: d["layers"][4]["attrs"].update(round="ceil; import os"), "argument 'round' of maxpool"),
    (lambda d: d["layers"][2].update(phase="sometimes"), "field 'phase' has the wrong type or value"),
    (lambda d: d["layers"][2].update(name="conv1\nimport os"), "the layer name is not a valid name"),
    (lambda d: d["layers"][2].update(name="input"), "the layer name is not a valid name"),
    (lambda d: d["layers"][2].update(name="1st"), "the layer name is not a valid name"),
    (lambda d: d["layers"][3].update(name="conv1"), "duplicate layer name 'conv1'"),
    (lambda d: d["layers"][2]["inputs"].append("data"), "conv takes 1 inputs, received 2"),
    (lambda d: d.update(outputs=["missing"]), "\"missing\" is not a layer in the file"),
    (lambda d: d.update(inputs=["conv1"]), "is not a declared input"),
    (lambda d: d.update(solver={"base_lr": "0.1"}), "setting 'base_lr' has the wrong type or value"),
    (lambda d: d.update(solver={"rm": 1}), "unknown setting 'rm'"),
    (lambda d: d.update(preprocess={"conv1": {}}), "which is not an input"),
    (lambda d: d["layers"][2]["params"].update(gamma={}), "conv has no parameter 'gamma'"),
    (lambda d: d["layers"][2]["params"]["bias"].update(lr_mult=-1), "field 'lr_mult' has the wrong type or value"),
    (lambda d: d["layers"].__setitem__(2, "conv"), "a layer must be an object"),
    (lambda d: d.update(layers=[]), "field 'layers' has the wrong type or value"),
    (lambda d: d.update(version=2), "IR version 2 is not supported"),
])
def test_hostile_fields_are_refused(mutate: Any, message: str) -> None:
    data = alexnet_ir()
    mutate(data)
    assert message in read_errors(data)


def test_cycles_and_deep_nesting_are_errors_not_tracebacks() -> None:
    data = alexnet_ir()
    data["layers"][2]["inputs"] = ["conv1_relu"]  # conv1 <- conv1_relu <- conv1
    assert "cycle" in read_errors(data)
    with pytest.raises(AlexDSLError, match="nested too deeply|not valid JSON"):
        alexdsl.from_json("[" * 100_000 + "]" * 100_000)


def test_json_python_cannot_hold_is_a_located_error_from_every_command(tmp_path: Path) -> None:
    """Issue 22 item 6: an integer of more than 4,300 digits was `ValueError: Exceeds the limit` as a traceback."""
    text = json.dumps(alexnet_ir()).replace('"macs": 0', '"macs": 1' + "0" * 5000, 1)
    path = tmp_path / "huge.json"
    path.write_text(text)
    for command in (["check", str(path)], ["import", "json", str(path)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1, (command, result.output)
        assert "huge.json:layers[0].macs: error: the integer has 5,001 digits" in result.output
        assert "expected: an integer of at most 640 digits" in result.output and "Traceback" not in result.output
    assert "Exceeds the limit" not in result.output


def test_every_unreadable_number_is_reported_at_its_json_path() -> None:
    text = json.dumps(alexnet_ir())
    for old, new in (('"lr_mult": 1.0', '"lr_mult": NaN'), ('"decay_mult": 1.0', '"decay_mult": -Infinity'),
                     ('"decay_mult": 0.0', '"decay_mult": 1e999'), ('"macs": 0', '"macs": -' + "9" * 700)):
        assert old in text
        text = text.replace(old, new, 1)
    with pytest.raises(AlexDSLError) as info:
        alexdsl.from_json(text, "net.json")
    paths = [(d.path, d.message) for d in info.value.diagnostics]
    assert paths == [("net.json:layers[0].macs", "the integer has 700 digits"),
                     ("net.json:layers[2].params.weight.lr_mult",
                      "NaN is not a number (strict JSON has no NaN or Infinity)"),
                     ("net.json:layers[2].params.weight.decay_mult",
                      "-Infinity is not a number (strict JSON has no NaN or Infinity)"),
                     ("net.json:layers[2].params.bias.decay_mult", "the number is too large for a float")]


def test_deep_nesting_is_located_by_path_or_by_line() -> None:
    data = alexnet_ir()
    data["layers"][0]["shape"] = json.loads("[" * 40 + "]" * 40)
    message = read_errors(data)
    assert "net.json:layers[0].shape" + "[0]" * 29 + ": error: the JSON is nested too deeply" in message
    assert "expected: at most 32 levels of arrays and objects" in message
    deeper = '{"format": "alexdsl-ir",\n "description": "[[[",\n "layers": ' + "[" * 50_000 + "]" * 50_000 + "}"
    with pytest.raises(AlexDSLError, match=r"net.json:3:43: error: the JSON is nested too deeply"):
        alexdsl.from_json(deeper, "net.json")


def test_export_writes_strict_json() -> None:
    net = alexdsl.load(EXAMPLES / "lenet.adsl")
    layer = next(layer for layer in net.layers() if layer.params)
    spec = layer.params["weight"]
    layer.params["weight"] = type(spec)(spec.shape, type(spec.filler)("constant", (("value", float("inf")),)), 1.0, 1.0)
    with pytest.raises(AlexDSLError, match="not finite"):
        net.to_json()


HOSTILE_VALUES: list[Any] = [
    INJECTION, "", "x" * 300, "conv1\n", None, True, False, 0, -1, 2**31, 10**40, 0.5, float("nan"),
    float("inf"), [], [1], [1, 2, 3], ["a", "b"], {}, {"type": "constant"}, {"kind": "label"},
]


def _mutation_sites(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    sites = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            sites += _mutation_sites(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            sites += _mutation_sites(value, (*path, i))
    return sites


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@pytest.mark.parametrize("example", ["alexnet", "resnet18", "inception"])
def test_fuzzed_ir_gives_located_errors_or_a_safe_network(example: str) -> None:
    base = json.loads(alexdsl.load(EXAMPLES / f"{example}.adsl").to_json())
    sites = _mutation_sites(base)
    rng = random.Random(f"ir-fuzz-{example}-3")
    accepted = 0
    for _ in range(60):
        data = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            _set(data, rng.choice(sites), copy.deepcopy(rng.choice(HOSTILE_VALUES)))
        try:
            net = alexdsl.from_json(json.dumps(data), "fuzz.json")
        except AlexDSLError as error:
            text = str(error)
            assert "fuzz.json" in text and "error:" in text
            continue
        accepted += 1
        for source in (cupy_source(net), torch_source(net)):
            compile(source, "<generated>", "exec")
            assert "__import__" not in source and "system(" not in source
        again = alexdsl.from_json(net.to_json())
        assert again.shapes == net.shapes and again.state_keys() == net.state_keys()
    assert accepted < 60  # the mutations do reach the checks


def test_ir_fuzz_findings_are_located_errors() -> None:
    """Inputs benchmarks/fuzz.py found: a missing required field, a huge integer where a number goes."""
    data = alexnet_ir()
    del data["layers"]
    assert "net.json:layers: error: missing field 'layers'" in read_errors(data)
    data = alexnet_ir()
    del data["layers"][2]["inputs"]
    assert "net.json:layers[2].inputs: error: missing field 'inputs'" in read_errors(data)
    data = alexnet_ir()
    data["layers"][5]["attrs"]["alpha"] = 10**400
    assert "argument 'alpha' of lrn has the wrong type" in read_errors(data)
    data = alexnet_ir()
    data["solver"] = {"base_lr": 10**400}
    assert "net.json:solver.base_lr: error: setting 'base_lr' is out of range" in read_errors(data)
