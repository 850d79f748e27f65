"""The argument kinds shape, ints, string and sizes, and ops without inputs (issue 19's front end).

Throwaway ops, registered through the public plugin API (``registry.register``) for each test and
removed after it, use every kind: binding, located errors (goldens), IR JSON and fmt round trips,
and the language server's words for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

import alexdsl
from alexdsl.cli import main
from alexdsl.errors import AlexDSLError
from alexdsl.fmt import format_source
from alexdsl.interop.writer.flat import network_to_source
from alexdsl.ops import registry
from alexdsl.ops.registry import Arg, OpDef, ShapeError, expect_rank

# A learned tensor without input: its written shape includes the batch axis, as param's does.
TOKEN = OpDef(
    name="test_token", summary="A test tensor without input.", example="cls: test_token(1x1x8)",
    args=(Arg("shape", "shape", doc="the tensor's shape"),
          Arg("order", "ints", default=0, doc="axes"),
          Arg("pattern", "string", default="a", doc="a pattern"),
          Arg("sizes", "sizes", doc="named sizes")),
    infer=lambda attrs, inputs: attrs["shape"][1:], family="test", inputs=(0, 0))
# An op with an input, an ints argument with a floor, and no sizes: unknown keywords stay errors.
PICK = OpDef(
    name="test_pick", summary="A test op with an input.", example="y: test_pick((0, 1))",
    args=(Arg("axes", "ints", min=0), Arg("shape", "shape", default=(4, 8))),
    infer=lambda attrs, inputs: inputs[0], family="test")


@pytest.fixture(autouse=True)
def test_ops() -> Iterator[None]:
    for op in (TOKEN, PICK):
        registry.register(op)
    yield
    for op in (TOKEN, PICK):
        registry._REGISTRY.pop(op.name)  # noqa: SLF001 - the registry has no public removal: tests only


def errors_of(text: str) -> str:
    with pytest.raises(AlexDSLError) as caught:
        alexdsl.parse(text, "net.adsl")
    return str(caught.value)


NET = """\
network T
input x: 4x8
cls: test_token(1x4x8, order=(0, -1), pattern="b (h p) -> h p b", p=16, q=2)
pos: test_token(1x4x8)
y: cls, x -> add
z: pos, x -> add
output y, z
"""


def test_each_kind_binds_to_its_attribute_value() -> None:
    network = alexdsl.parse(NET, "net.adsl")
    cls, pos = network.layer("cls"), network.layer("pos")
    assert cls.attrs == {"shape": (1, 4, 8), "order": (0, -1), "pattern": "b (h p) -> h p b",
                         "sizes": (("p", 16), ("q", 2))}
    assert pos.attrs == {"shape": (1, 4, 8), "order": (0,), "pattern": "a", "sizes": ()}  # the defaults
    assert cls.inputs == [] and pos.inputs == [] and cls.shape == (4, 8) and pos.shape == (4, 8)
    assert network.layer("z").inputs == ["pos", "x"]


def test_one_int_is_a_shape_or_ints_of_one() -> None:
    network = alexdsl.parse("input x: 4x8\nt: test_token(8, order=3, p=1)\ny: x -> test_pick(1, shape=5)\n"
                            "z: t, y -> add\n", "net.adsl")
    assert network.layer("t").attrs["shape"] == (8,) and network.layer("t").attrs["order"] == (3,)
    assert network.layer("y").attrs == {"axes": (1,), "shape": (5,)}


def test_an_op_without_inputs_never_reads_the_layer_before() -> None:
    network = alexdsl.parse("input x: 4x8\na: relu\nt: test_token(1x4x8) | relu\nz: a, t_relu -> add\n",
                            "net.adsl")
    assert network.layer("t").inputs == [] and network.layer("t_relu").inputs == ["t"]
    view = network.inference_view()
    assert view.inputs == ["x"] and view.outputs == ["z"] and "t" in {layer.name for layer in view.layers}


def test_ops_without_inputs_in_blocks_and_repeats() -> None:
    text = ("input x: 4x8\nblock b(s) {\n  p: test_token(s)\n  y: in, p -> add\n}\n"
            "u: b(1x4x8)\nv: u -> repeat 2 b(1x4x8)\n")
    network = alexdsl.parse(text, "net.adsl")
    assert network.layer("u.p").inputs == [] and network.layer("u.y").inputs == ["x", "u.p"]
    assert network.layer("v.1.y").inputs == ["v.0.y", "v.1.p"]


def test_mistakes_are_located_errors(golden) -> None:
    text = """\
network T
input x: 4x8
a: test_token(1x0x8, order=(0, 1.5), pattern=abc, p=0, p=2, q=x)
b: x -> test_token(2)
c: x -> relu | test_token(1x1x8)
d: test_token(1x1x1x1x1x1x1)
e: x -> test_pick((0, -1), shape=3x3, shap=2)
f: x -> test_pick(1, 2x2, 1)
g: x -> conv(8, 3x3)
h: test_token(1x2, pattern="""+'"'+"x" * 4097+'")'+"""
i: test_token()
j: x -> test_pick((1, 2), shape="4x8")
k: test_token(1x99999999999999999999999x08)
l: test_token(1x2, sizes=3)
"""
    golden("errors/tensor_args.txt", errors_of(text))


def test_an_unknown_keyword_of_an_op_without_sizes_keeps_did_you_mean() -> None:
    message = errors_of("input x: 4x8\ny: x -> test_pick(1, shap=3)\n")
    assert "error: unknown argument 'shap' for test_pick" in message
    assert "expected: axes, shape" in message and "did you mean 'shape'?" in message


def test_ir_json_round_trips_every_kind_exactly(tmp_path) -> None:
    network = alexdsl.parse(NET, "net.adsl")
    data = json.loads(network.to_json())
    cls = next(layer for layer in data["layers"] if layer["name"] == "cls")
    assert cls["attrs"] == {"shape": [1, 4, 8], "order": [0, -1], "pattern": "b (h p) -> h p b",
                            "sizes": [["p", 16], ["q", 2]]}
    again = alexdsl.from_json(network.to_json(), "net.json")
    assert [(layer.name, layer.attrs, layer.inputs) for layer in again.layers()] == \
        [(layer.name, layer.attrs, layer.inputs) for layer in network.layers()]


def test_import_json_and_fmt_write_every_kind_back() -> None:
    network = alexdsl.parse(NET, "net.adsl")
    source = network_to_source(alexdsl.from_json(network.to_json(), "net.json"), "net.json")
    assert 'cls: test_token(1x4x8, order=(0, -1), pattern="b (h p) -> h p b", p=16, q=2)' in source
    assert "pos: test_token(1x4x8)\n" in source
    rebuilt = alexdsl.parse(source, "again.adsl")
    assert [(layer.name, layer.attrs) for layer in rebuilt.layers()] == \
        [(layer.name, layer.attrs) for layer in network.layers()]
    assert format_source(NET, "net.adsl") == NET.replace("y: ", "y:   ").replace("z: ", "z:   ")
    kept = "network T\ninput x: 4x8\nt: test_token(1x99999999999999999999999x08)\n"
    assert format_source(kept, "net.adsl") == kept  # a shape stays as written, even one refused when bound


def test_a_string_that_reads_as_a_name_is_written_quoted() -> None:
    network = alexdsl.parse('input x: 4x8\nt: test_token(1x4x8, pattern="ab", order=(1, 2))\nz: t, x -> add\n',
                            "net.adsl")
    source = network_to_source(network, "net.json")
    assert 't: test_token(1x4x8, (1, 2), "ab")' in source or 'pattern="ab"' in source
    assert alexdsl.parse(source, "again.adsl").layer("t").attrs == network.layer("t").attrs


HOSTILE = {
    "shape": ([1, 0, 8], [1] * 7, [], "1x8", [1.5]),
    "order": ([], [0, "x"], 3, [True]),
    "pattern": (3, "x" * 4097),
    "sizes": ([["p", 16], ["p", 2]], [["shape", 3]], [["a b", 1]], "p=1", [[1]], [["p", 0]],
              [["q", 1]] * 65),
}


@pytest.mark.parametrize("key,bad", [(k, v) for k, values in HOSTILE.items() for v in values],
                         ids=lambda v: str(v)[:20])
def test_hostile_ir_values_are_located_errors(key, bad) -> None:
    data = json.loads(alexdsl.parse(NET, "net.adsl").to_json())
    cls = next(layer for layer in data["layers"] if layer["name"] == "cls")
    cls["attrs"][key] = bad
    with pytest.raises(AlexDSLError) as caught:
        alexdsl.from_json(json.dumps(data), "net.json")
    first = str(caught.value).splitlines()[0]
    assert first.startswith("net.json:layers[1].attrs." + key) and ": error: " in first


def test_hostile_ir_messages(golden) -> None:
    data = json.loads(alexdsl.parse(NET, "net.adsl").to_json())
    messages = []
    for key, values in HOSTILE.items():
        for bad in values:
            cls = json.loads(json.dumps(data))
            next(layer for layer in cls["layers"] if layer["name"] == "cls")["attrs"][key] = bad
            with pytest.raises(AlexDSLError) as caught:
                alexdsl.from_json(json.dumps(cls), "net.json")
            messages.append(str(caught.value))
    golden("errors/tensor_args_ir.txt", "\n".join(messages) + "\n")


def test_expect_rank_names_tokens_for_rank_two() -> None:
    with pytest.raises(ShapeError) as caught:
        expect_rank((16, 64), 3)
    assert caught.value.expected == "CxHxW" and caught.value.received == "16x64"
    with pytest.raises(ShapeError) as caught:
        expect_rank((3, 8, 8), 2)
    assert caught.value.message == "expects input of rank 2 (LxD (tokens x features))"
    with pytest.raises(ShapeError, match=r"rank 4 \(rank 4\)"):
        expect_rank((3, 8), 4)


def test_shapes_of_every_rank_in_check_and_shapes() -> None:
    for dims in ("64", "16x64", "2x3x4", "2x3x4x5", "2x3x4x5x6", "2x3x4x5x6x7"):
        result = CliRunner().invoke(main, ["shapes", "-"], input=f"network T\ninput x: {dims}\na: relu\n")
        assert result.exit_code == 0, result.output
        assert f"a      relu   {dims}" in result.output
    result = CliRunner().invoke(main, ["check", "-"], input="network T\ninput x: 16x64\na: conv(8, 3)\n")
    assert result.exit_code == 1
    assert "error: a: expects input of rank 3 (CxHxW)" in result.output and "received: 16x64" in result.output


def test_the_language_server_says_each_kind_in_words() -> None:
    pytest.importorskip("pygls", reason="the language server needs pygls: pip install 'alexdsl[lsp]'")
    from alexdsl.lsp import features
    from alexdsl.lsp.server import check, run_front_end

    text = 'input x: 4x8\ncls: test_token(1x1x8, pattern="a", p=4)\ny: cls, x -> add\nz: x -> test_pick(0, )\n'
    checked = check(text, "/tmp/net.adsl", None, run_front_end(text, "/tmp/net.adsl"))
    assert features.signature(TOKEN) == 'test_token(shape, order=0, pattern="a", **sizes)'

    def hover(line: int, word: str) -> str:
        column = text.split("\n")[line - 1].index(word) + 1
        found = features.hover(checked.analysis, checked.index, checked.positions, line, column)
        assert found is not None
        return found.contents.value

    assert "`pattern=\"a\"`: a string such as \"b c -> c b\". a pattern" in hover(2, "pattern")
    assert "`p`: a size collected by `**sizes` (keyword sizes such as p=16" in hover(2, "p=")
    assert "**cls**: `test_token` → `1x8`" in hover(2, "cls")
    line = text.split("\n")[3]
    items = {item.label: item for item in features.completion(checked.analysis, checked.index, 4,
                                                                  line.index(")") + 1)}
    assert items["shape="].detail == "a shape such as 1x197x768, or one integer, default shape=4x8"
    assert "sizes=" not in items
    hints = features.inlay_hints(checked.analysis, checked.positions, 0, 3)
    assert "1x8" in {str(hint.label) for hint in hints}


def test_the_readable_writer_of_importers_writes_every_kind_back() -> None:
    from alexdsl.interop.writer.readable import readable_source

    text = NET + "block b(s) {\n  p: test_token(s, p=2)\n  y: in, p -> add\n}\nu: x -> b(1x4x8)\nw: u -> relu\n"
    network = alexdsl.parse(text.replace("output y, z\n", "output y, z, w\n"), "net.adsl")
    source = readable_source(network)
    assert 'cls: test_token(1x4x8, order=(0, -1), pattern="b (h p) -> h p b", p=16, q=2)\n' in source
    rebuilt = alexdsl.parse(source, "again.adsl")
    assert [(layer.name, layer.attrs, layer.inputs) for layer in rebuilt.layers()] == \
        [(layer.name, layer.attrs, layer.inputs) for layer in network.layers()]
