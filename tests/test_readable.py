"""readable_source: any network written back as source a person would write (chains, defaults, blocks),
which builds the same network again.

The reference is the network itself: the text is parsed again and compared with the original field by
field (layer names, ops, arguments, inputs, shapes, parameters with fillers and multipliers, buffers,
phases, outputs, state keys), and the formatter must leave the text unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import pytest
from conftest import EXAMPLES

import alexdsl
from alexdsl.errors import AlexDSLError
from alexdsl.fmt import format_source
from alexdsl.interop.writer.flat import network_to_source
from alexdsl.interop.writer.readable import _Writer, readable_source
from alexdsl.ir.network import graph_of

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.adsl"))  # examples/plugins/ holds plugin modules, not examples


def ir(network: alexdsl.Network) -> dict:
    """What must survive: the IR JSON without source positions, the source file and block provenance."""
    data = json.loads(network.to_json())
    data.pop("source")
    for layer in data["layers"]:
        layer.pop("span")
        layer.pop("block")
    data["state_keys"] = [[key, list(shape)] for key, shape in network.state_keys().items()]
    return data


def rebuilds(network: alexdsl.Network, text: str) -> None:
    assert format_source(text) == text, "readable_source output is not in fmt's layout"
    again = alexdsl.parse(text, "again.adsl")
    assert ir(again) == ir(network)


def statements(text: str, pattern: str) -> list[str]:
    return re.findall(pattern, text, re.MULTILINE)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_example_comes_back_as_the_same_network(path: Path) -> None:
    network = alexdsl.load(path)
    rebuilds(network, readable_source(network))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_blocks_are_found_from_names_and_structure_not_from_the_ir_block_field(path: Path) -> None:
    """An IR read from JSON (as import json and import onnx give it) has no block provenance."""
    network = alexdsl.load(path)
    flat = alexdsl.parse(network_to_source(network), "flat.adsl")
    assert all(layer.block is None for layer in flat.layers())
    assert readable_source(flat) == readable_source(network)


def test_resnet18_reads_like_the_hand_written_example() -> None:
    text = readable_source(alexdsl.load(EXAMPLES / "resnet18.adsl"))
    assert statements(text, r"^block .*$") == ["block layer(c) {", "block layer_downsample(c) {"]
    assert "defaults conv(bias=false, weight=msra(fan_out))" in text
    assert "  conv1: conv(c, 3, pad=1) | bn1: batchnorm | relu" in text
    assert "  out:   add(in) | relu" in text
    assert "  downsample.0: in -> conv(c, 1, stride=2) | downsample.1: batchnorm" in text
    assert statements(text, r"^layer\S+: .*$") == [  # a stage whose first block differs: 'first, then'
        "layer1:  repeat 2 layer(64)", "layer2:  repeat 2 layer_downsample(128), then layer(128)",
        "layer3:  repeat 2 layer_downsample(256), then layer(256)",
        "layer4:  repeat 2 layer_downsample(512), then layer(512)"]
    assert "conv1:   conv(64, 7, stride=2, pad=3) | bn1: batchnorm | relu | maxpool(3, stride=2, pad=1)" in text
    assert "loss:     softmax_loss(fc, label) @train" in text


_STAGE_BLOCK = """network T
input x: 3x32x32
block b(c, stride=1) {
  conv:  conv(c, 3, stride=stride, pad=1) | relu
  conv2: conv(c, 1)
}
"""


@pytest.mark.parametrize(("stage", "written"), [
    ("s: repeat 4 as i: b(8 + 4 * i)", "s: repeat 4 as i: s(8 + 4 * i)"),
    ("s: repeat 3 conv(8, 3, stride=2, pad=1), then b(8)", "s: repeat 3 conv(8, 3, stride=2, pad=1), then s"),
    ("s: repeat 4 as i: b(8, stride=2), then b(20 - 4 * i)", "s: repeat 4 as i: s(8, stride=2), then s(20 - 4 * i)"),
    ("s: repeat 4 as i: conv(8, 3, stride=2, pad=1), then b(8 * i)",
     "s: repeat 4 as i: conv(8, 3, stride=2, pad=1), then s(8 * i)"),
])
def test_a_stage_whose_copies_differ_by_their_index_or_first_copy_is_one_repeat(stage: str, written: str) -> None:
    network = alexdsl.parse(_STAGE_BLOCK + stage + "\n")
    flat = alexdsl.parse(network_to_source(network), "flat.adsl")  # no block provenance, as imports give
    text = readable_source(flat)
    assert statements(text, r"^s: .*$") == [written]
    rebuilds(flat, text)


@pytest.mark.parametrize("stage", ["s: repeat 2 as i: b(8 + 4 * i)",
                                   "s: repeat 2 conv(8, 3, stride=2, pad=1), then b(8)"])
def test_two_copies_that_differ_are_written_out(stage: str) -> None:
    """Any two numbers make a step, and a layer with one use after it says nothing a repeat would."""
    network = alexdsl.parse(_STAGE_BLOCK + stage + "\n")
    text = readable_source(alexdsl.parse(network_to_source(network), "flat.adsl"))
    assert "repeat" not in text


def test_a_stage_repeat_inside_a_block_keeps_its_index_and_first_copy() -> None:
    network = alexdsl.parse(_STAGE_BLOCK + "block outer(c) {\n  s: repeat 4 as i: b(c, stride=2), then b(c + 4 * i)\n"
                            "  p: conv(c, 1) | relu\n}\no.0: outer(8)\no.1: outer(16)\no.2: outer(24)\n")
    flat = alexdsl.parse(network_to_source(network), "flat.adsl")
    text = readable_source(flat)
    assert "  s: repeat 4 as i: s(c, stride=2), then s(c + 4 * i)" in text
    assert "o: repeat 3 as i: o(8 + 8 * i)" in text
    rebuilds(flat, text)


def test_an_activation_inside_the_norm_module_before_it_continues_the_chain() -> None:
    """timm's BatchNormAct2d keeps its activation as ``bn.act``: one chain, as a person writes it."""
    network = alexdsl.parse("network T\ninput x: 3x8x8\nconv: conv(8, 3, pad=1)\nbn: batchnorm\nbn.act: silu\n"
                            "conv2: conv(8, 1)\nother.act: relu\n")
    text = readable_source(network)
    assert statements(text, r"^\S+: .*$") == ["conv:      conv(8, 3, pad=1) | bn: batchnorm | bn.act: silu",
                                              "conv2:     conv(8, 1)", "other.act: relu"]
    rebuilds(network, text)


def test_a_block_is_not_named_as_another_blocks_uses_are_labelled() -> None:
    """GhostNet's ghost1 and ghost2 differ by a relu in some blocks: 'ghost1: ghost2(...)' would mislead."""
    body = "  a: conv(8, 1){act}\n  b: conv(8, 3, pad=1){act}\n  c: conv(8, 1){act}\n"
    network = alexdsl.parse("network T\ninput x: 8x8x8\nblock s1() {\n" + body.format(act=" | relu") + "}\n"
                            "block s2() {\n" + body.format(act="") + "}\n"
                            + "".join(f"p.{k}.g{i}: s{k + 1}\n" for k in range(2) for i in range(1, 4)))
    text = readable_source(alexdsl.parse(network_to_source(network), "flat.adsl"))
    names = statements(text, r"^block (\w+)\(")
    assert len(names) == 2 and not {"g1", "g2", "g3"} & set(names), text
    rebuilds(alexdsl.parse(network_to_source(network), "flat.adsl"), text)


def test_a_use_after_a_block_that_ends_in_a_repeat_of_its_own_count_reads_it_implicitly() -> None:
    """The last copy of ``blocks: repeat n b`` is s2.blocks.2, not the first instance's s1.blocks.1: no 'x ->'."""
    network = alexdsl.parse("network T\ninput x: 8x8x8\nblock b() {\n  conv: conv(8, 3, pad=1) | relu\n"
                            "  conv2: conv(8, 1)\n}\nblock st(n) {\n  down: conv(8, 1) | relu\n"
                            "  mid: conv(8, 3, pad=1)\n  blocks: repeat n b\n}\n"
                            "s1: st(2)\ns2: st(3)\ns3: st(2)\nhead: conv(4, 1)\n")
    flat = alexdsl.parse(network_to_source(network), "flat.adsl")
    text = readable_source(flat)
    assert statements(text, r"^\w+: .*$") == ["s1:   s(2)", "s2:   s(3)", "s3:   s(2)", "head: conv(4, 1)"]
    rebuilds(flat, text)


def test_vgg16_stages_are_blocks_that_repeat_a_block() -> None:
    text = readable_source(alexdsl.load(EXAMPLES / "vgg16.adsl"))
    assert "block convs(c) {\n  conv: conv(c, 3, pad=1) | relu\n}" in text
    assert "block stage(c, n) {\n  convs: repeat n convs(c)\n  pool:  maxpool(2)\n}" in text
    assert statements(text, r"^stage\d: .*$") == ["stage1: stage(64, 2)", "stage2: stage(128, 2)",
                                                  "stage3: stage(256, 3)", "stage4: stage(512, 3)",
                                                  "stage5: stage(512, 3)"]


def test_mobilenet_v2_widths_are_multiples_of_the_block_input() -> None:
    text = readable_source(alexdsl.load(EXAMPLES / "mobilenet_v2.adsl"))
    assert "block features(c, c2, stride=2) {" in text  # c: the input's channels, c2: the output's
    assert "  conv.1.0: conv(c * 6, 3, stride=stride, pad=1, groups=c * 6) | conv.1.1: batchnorm | relu6" in text
    assert "block features_res(c) {" in text and "  out:      add(in)" in text
    assert "features.2:          features(16, 24)" in text
    assert "features.11:         features(64, 96, stride=1)" in text
    assert len(statements(text, r"^features\.\d+: +features_res\(\d+\)$")) == 10


@pytest.mark.parametrize("name, blocks", [("resnet18", 2), ("resnext50", 2), ("vgg16", 2), ("mobilenet_v2", 2),
                                          ("efficientnet_b0", 3), ("shufflenet_v2", 2), ("convnext_tiny", 1),
                                          ("inception", 1), ("regnet_y_400mf", 4), ("mobilenet_v3_large", 5)])
def test_repeated_structure_becomes_blocks_and_shortens_the_file(name: str, blocks: int) -> None:
    network = alexdsl.load(EXAMPLES / f"{name}.adsl")
    text = readable_source(network)
    assert len(statements(text, r"^block ")) == blocks
    without = _Writer(network, "x", blocks=False, chains=True).text(None)
    assert len(text.splitlines()) < len(without.splitlines())


def test_a_network_without_repetition_is_chains_and_defaults() -> None:
    text = readable_source(alexdsl.load(EXAMPLES / "lenet.adsl"))
    assert "block" not in text
    assert statements(text, r"^\w+: .*$") == [
        "conv1: conv(20, 5) | maxpool(2)", "conv2: conv(50, 5) | maxpool(2)", "ip1:   fc(500) | relu",
        "ip2:   fc(10)", "loss:     softmax_loss(ip2, label)", "accuracy: accuracy(ip2, label) @test"]
    assert "defaults bias(lr=2)" in text  # every bias has lr_mult 2


def test_defaults_keep_each_layer_that_differs_and_the_op_default_where_the_file_overrides_it() -> None:
    text = readable_source(alexdsl.load(EXAMPLES / "alexnet.adsl"))
    assert "defaults conv(bias=constant(1), weight=gaussian(0.01))" in text
    assert "defaults bias(lr=2, decay=0)" in text
    assert "conv1: conv(96, 11, stride=4, bias=constant(0)) | relu" in text  # the file's bias is 1: 0 is written


MIXED = """network Mixed
description "splits, phases, self, outputs and layers read from inside instances"
input data:  16x8x8
input label: class(10)
preprocess data(mean=(1, 2, 3), mirror=true)
solver(base_lr=0.1, stepvalues=(10, 20))

block unit(c, p) {
  half: chunk(2)
  b:    half.1 -> conv(c, 1) | relu
  self: concat(half.0, b) | scale(param=layer_scale)
  drop: dropout(p) @train
  out:  add(in)
}

stem:   conv(16, 3, pad=1, weight=gaussian(0.02), weight_lr=0.5)
u.0:    unit(8, 0.1)
u.1:    unit(8, 0.2)
u.2:    unit(8, 0.3)
peek:   u.1.b -> conv(4, 1, bias=false)
parts:  u.2 -> split((4, 12))
joined: concat(parts.1, parts.0)
head:   fc(10) | relu
loss:   softmax_loss(head, label) @train
output head_relu, peek
"""


def test_splits_phases_self_layers_settings_and_outputs_survive() -> None:
    network = alexdsl.parse(MIXED, "mixed.adsl")
    text = readable_source(network)
    rebuilds(network, text)
    assert "block u(p) {" in text  # the numbers equal in every instance stay in the body: conv(8, 1)
    assert "  self:   concat(half.0, b_relu) | scale(param=layer_scale)" in text  # 'u.0_scale' keeps its name
    assert "  half:   chunk(2)" in text and "  drop:   dropout(p) @train" in text
    assert "  b:      half.1 -> conv(8, 1)\n  b_relu: relu\n" in text  # u.1.b is read from outside: no chain
    assert "u.1:    u(0.2)" in text
    assert "parts:  u.2 -> split((4, 12))" in text
    assert "output head_relu, peek" in text


def test_a_chain_link_keeps_its_automatic_name_or_is_named_inline() -> None:
    network = alexdsl.parse("input x: 3x8x8\na: conv(4, 3) | relu | conv(4, 1) | relu\n"
                            "b: x -> conv(4, 3) | act: relu\nc: a, b -> add\nd: a -> relu\n", "names.adsl")
    assert [layer.name for layer in network.layers()][2:5] == ["a_relu", "a_conv2", "a_relu2"]
    text = readable_source(network)
    rebuilds(network, text)
    assert statements(text, r"^\w: .*$") == ["a: conv(4, 3) | relu | conv(4, 1) | relu",
                                             "b: x -> conv(4, 3) | act: relu", "c: add(a, b)", "d: a -> relu"]


def test_a_first_link_read_elsewhere_ends_its_chain() -> None:
    """A label names its chain's output, so a chain whose first op another layer reads stops after that op."""
    network = alexdsl.parse("input x: 3x8x8\nc: conv(4, 3)\nr: relu\nraw: c -> relu\nout: r, raw -> add\n",
                            "first.adsl")
    text = readable_source(network)
    rebuilds(network, text)
    assert statements(text, r"^\w+: .*$") == ["c:   conv(4, 3)", "r:   relu", "raw: c -> relu", "out: add(r, raw)"]


def _random_network(rng: random.Random) -> str:
    """Instances of a random template under name prefixes, with numbers that differ, layers read from
    inside them, splits, named and automatically named links: the shapes a block finder can get wrong."""
    names = ["conv1", "bn1", "relu", "conv1_relu", "out", "self", "a.0", "a.1", "b", "b_relu", "c.x", "fc", "half"]

    def unary() -> str:
        kernel, pad = rng.choice([(1, 0), (3, 1), (5, 2)])
        return rng.choice([f"conv(8, {kernel}, pad={pad})", "conv(8, 1, bias=false)", "batchnorm", "relu",
                           f"dropout({rng.choice([0.1, 0.2])})", f"leaky_relu({rng.choice([0.1, 0.2])})",
                           "batchnorm(eps=0.001)", "conv(8, 1, weight=gaussian(0.01))"])

    lines = ["network R", "input data: 8x8x8", "input label: class(10)"]
    last = "data"
    for group in range(rng.randint(1, 3)):
        local = rng.sample(names, rng.randint(1, 5))
        template = []
        for i, name in enumerate(local):
            before = ["IN"] + local[:i]
            if i and rng.random() < 0.25:
                template.append((name, rng.choice(["add", "mul"]), [rng.choice(before), rng.choice(before)]))
            else:
                template.append((name, unary(), [local[i - 1] if i and rng.random() < 0.7 else rng.choice(before)]))
        if rng.random() < 0.3:
            template += [("p.0", "channel_chunk(2, 0)", [local[-1]]), ("p.1", "channel_chunk(2, 1)", [local[-1]]),
                         ("cat", "concat", ["p.1", "p.0"])]
        parent = rng.choice([f"layer{group}", f"features.{group}", f"g{group}.sub"])
        for k in range(rng.randint(2, 4)):
            prefix = f"{parent}.{k}"
            change = rng.choice([0.1, 0.3])
            for name, op, inputs in template:
                full = prefix if name == "self" else f"{prefix}.{name}"
                reads = [last if x == "IN" else (prefix if x == "self" else f"{prefix}.{x}") for x in inputs]
                lines.append(f"{full}: {', '.join(reads)} -> {op.replace('0.1)', f'{change})')}")
            last = prefix if template[-1][0] == "self" else f"{prefix}.{template[-1][0]}"
            if rng.random() < 0.2:
                inner = rng.choice(template)[0]
                lines.append(f"peek{group}_{k}: {prefix if inner == 'self' else f'{prefix}.{inner}'} -> relu")
                last = f"peek{group}_{k}"
    lines += [f"head: {last} -> fc(10)", "loss: softmax_loss(head, label) @train"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", range(40))
def test_random_instances_come_back_with_blocks_as_the_same_network(seed: int) -> None:
    try:
        network = alexdsl.parse(_random_network(random.Random(seed)), f"random{seed}.adsl")
    except AlexDSLError:
        pytest.skip("the generator made a network that does not check (shapes)")
    blocks = _Writer(network, "x", blocks=True, chains=True).text(None)  # the first form, not a fallback
    rebuilds(network, blocks)
    rebuilds(network, readable_source(network))


def test_a_thousand_layers_of_repeated_units_become_one_block_and_a_repeat() -> None:
    units = "\n".join(f"u.{i}.conv: conv(8, 3, pad=1, bias=false) | u.{i}.bn: batchnorm | u.{i}.relu: relu\n"
                      f"u.{i}.add: add(u.{i - 1}.add)" if i else
                      "u.0.conv: conv(8, 3, pad=1, bias=false) | u.0.bn: batchnorm | u.0.relu: relu\nu.0.add: add(data)"
                      for i in range(250))
    network = alexdsl.parse(f"network Chain\ninput data: 8x8x8\n{units}\n", "chain.adsl")
    assert len(network) == 1001
    text = readable_source(network)
    rebuilds(network, text)
    assert "u: repeat 250 u" in text and len(text.splitlines()) < 15


def test_header_lines_come_first_as_comments() -> None:
    network = alexdsl.parse("network T\ninput x: 3x8x8\nc: conv(4, 3)\n", "t.adsl")
    text = readable_source(network, header="Imported from t.onnx by alexdsl import onnx.\nsecond line")
    assert text.startswith("# Imported from t.onnx by alexdsl import onnx.\n# second line\nnetwork T\n")


def test_a_name_source_cannot_hold_is_a_located_error() -> None:
    parsed = alexdsl.parse("network T\ninput x: 3x8x8\nc: conv(4, 3) | relu\n", "t.adsl")
    layers = [dataclasses.replace(layer, name="c relu") if layer.name == "c_relu" else layer
              for layer in parsed.layers()]
    network = alexdsl.Network(parsed.name, graph_of(layers), inputs=parsed.inputs, source_file=parsed.source_file)
    with pytest.raises(AlexDSLError) as error:
        readable_source(network, file="t.onnx")
    text = str(error.value)
    assert "t.onnx:layers[2].name: error: the layer name cannot be written as an alexdsl name" in text
    assert "received: 'c relu'" in text
