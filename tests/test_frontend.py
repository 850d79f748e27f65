"""The language and IR against published figures, the seed's numbers, and golden diagnostics."""

from __future__ import annotations

import os

import pytest
from conftest import EXAMPLES, GOLDEN, ROOT

import alexdsl
from alexdsl.errors import AlexDSLError
from alexdsl.report import render

# (file, parameters, MACs): published parameter counts; MACs of conv and fc weights.
PUBLISHED = [
    ("alexnet.adsl", 60_965_224, 724_406_816),  # Caffe bvlc_alexnet
    ("alexnet_torchvision.adsl", 61_100_840, 714_188_480),  # torchvision alexnet()
    ("vgg16.adsl", 138_357_544, None),  # torchvision vgg16()
    ("resnet18.adsl", 11_689_512, None),  # torchvision resnet18()
    ("resnext50.adsl", 25_028_904, None),  # torchvision resnext50_32x4d()
    ("lenet.adsl", 431_080, 2_293_000),  # Caffe examples/mnist LeNet
]


@pytest.mark.parametrize(("file", "params", "macs"), PUBLISHED)
def test_published_parameter_counts(file: str, params: int, macs: int | None) -> None:
    totals = alexdsl.load(EXAMPLES / file).totals()
    assert totals["params"] == params
    if macs is not None:
        assert totals["macs"] == macs


def test_alexnet_matches_the_seed_layer_by_layer() -> None:
    net = alexdsl.load(EXAMPLES / "alexnet.adsl")
    shapes = net.shapes
    # The seed's formula [(size + 2*pad - kernel) / stride] + 1 at each step.
    assert shapes["conv1"] == (96, 55, 55)  # [227 - 11] / 4 + 1
    assert shapes["conv1_maxpool"] == (96, 27, 27)  # [55 - 3] / 2 + 1
    assert shapes["conv2"] == (256, 27, 27)  # [27 + 2*2 - 5] / 1 + 1
    assert shapes["conv2_maxpool"] == (256, 13, 13)  # [27 - 3] / 2 + 1
    assert shapes["conv3"] == (384, 13, 13)
    assert shapes["conv4"] == (384, 13, 13)
    assert shapes["conv5"] == (256, 13, 13)
    assert shapes["conv5_maxpool"] == (256, 6, 6)  # [13 - 3] / 2 + 1
    assert [shapes[n] for n in ("fc6", "fc7", "fc8")] == [(4096,), (4096,), (1000,)]
    conv2 = net.layer("conv2")
    assert conv2.params["weight"].shape == (256, 48, 5, 5)  # group: 2 splits the 96 inputs
    assert conv2.params["bias"].filler.get("value") == 1.0
    assert (conv2.params["bias"].lr_mult, conv2.params["bias"].decay_mult) == (2.0, 0.0)
    assert (conv2.params["weight"].lr_mult, conv2.params["weight"].decay_mult) == (1.0, 1.0)
    assert net.layer("fc6").params["weight"].filler.get("std") == 0.005
    assert net.layer("fc8").params["weight"].filler.get("std") == 0.01
    assert net.layer("accuracy").phase == "test"
    assert net.outputs == ["fc8"]
    parametric = [layer.name for layer in net.layers() if layer.params]
    assert parametric == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]


def test_resnet18_weight_keys_follow_torchvision() -> None:
    keys = alexdsl.load(EXAMPLES / "resnet18.adsl").state_keys()
    for key in ("conv1.weight", "bn1.running_var", "layer1.1.conv2.weight", "layer2.0.downsample.0.weight",
                "layer2.0.downsample.1.bias", "layer4.1.bn2.weight", "fc.weight", "fc.bias"):
        assert key in keys
    assert keys["layer3.0.conv1.weight"] == (256, 128, 3, 3)


def test_inception_block_is_a_dag_with_hierarchical_names() -> None:
    net = alexdsl.load(EXAMPLES / "inception.adsl")
    assert net.shapes["inc3a.out"] == (256, 28, 28)  # 64 + 128 + 32 + 32 channels
    assert net.shapes["inc3b.out"] == (480, 28, 28)
    assert net.layer("inc3a.out").inputs == ["inc3a.b1_relu", "inc3a.b3_relu2", "inc3a.b5_relu2", "inc3a.bp_relu"]
    assert net.layer("inc3a.bp").inputs == ["inc3a.bp_maxpool"] or net.layer("inc3a.bp").op == "maxpool"
    assert net.layer("inc3a.b1").block == "inc3a"


@pytest.mark.parametrize("file", sorted(p.name for p in EXAMPLES.glob("*.adsl")))
def test_shapes_table_golden(file: str, golden) -> None:
    golden(f"shapes/{file}.txt", render(alexdsl.load(EXAMPLES / file)))


@pytest.mark.parametrize("file", sorted(p.name for p in (GOLDEN / "errors").glob("*.adsl")))
def test_error_messages_golden(file: str, golden) -> None:
    path = GOLDEN / "errors" / file
    with pytest.raises(AlexDSLError) as info:
        alexdsl.load(os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else path)
    golden(f"errors/{file}.txt", info.value.render().replace(str(ROOT) + os.sep, "") + "\n")


def test_every_error_is_reported_in_one_run() -> None:
    text = (GOLDEN / "errors" / "many_mistakes.adsl").read_text()
    with pytest.raises(AlexDSLError) as info:
        alexdsl.parse(text, "m.adsl")
    messages = [d.message for d in info.value.errors]
    assert len(messages) == 5
    assert any("unknown op 'cnov'" in m for m in messages)
    assert any("'strid'" in m for m in messages)
    assert any("duplicate name 'fc1'" in m for m in messages)
    assert any("'lable'" in m for m in messages)
    assert any("@testing" in m for m in messages)


@pytest.mark.parametrize(("source", "message"), [
    ("c: conv(16)", "missing required argument 'kernel'"),
    ("c: conv(16, 3, groups=5)", "not divisible by groups"),
    ("c: conv(6, 3, groups=4)", "not divisible by groups"),
    ("c: conv(16, 3, stride=0)", "must be at least 1"),
    ("c: conv(16, 3, stride=true)", "wrong type"),
    ("c: conv(16, 3, stride=2, stride=3)", "given twice"),
    ("c: conv(16, 3, 1, 0, 1, 1, true, 7)", "too many positional"),
    ("c: maxpool(3, round=up)", "must be one of floor, ceil"),
    ("c: maxpool(3, pad=2)", "more than half the kernel"),
    ("c: conv(16, 40)", "output height would be"),
    ("c: lrn(4)", "must be odd"),
    ("c: relu(x, y)", "relu takes 1 input, received 2"),
    ("c: data -> concat", "concat takes at least 2 inputs, received 1"),
    ("c: softmax_loss(data, data)", "needs a label as its second input"),
    ("c: fc(12) | softmax_loss(label)", "scores 12 classes but the label"),
    ("c: conv(16, 3, weight=gauss(0.1))", "unknown filler 'gauss'"),
    ("c: conv(16, 3, weight=gaussian(0.1, 0, 3))", "too many arguments for gaussian"),
    ("c: conv(16, 3, weight_lr=-1)", "non-negative"),
    ("c: nope -> relu", "unknown input name 'nope'"),
    ("c: in -> relu", "'in' is only defined inside a block"),
    ("c: relu @val", "unknown phase"),
    ("c: relu\nc: relu", "duplicate name 'c'"),
    ("c: r: relu | r: relu", "duplicate name 'r'"),
    ("c: repeat 0 relu", "count of at least 1"),
    ("block b(x) {\n  o: relu\n}\nc: b(1, 2)", "too many arguments for block b"),
    ("block b(x) {\n  o: relu\n}\nc: b()", "missing argument 'x'"),
    ("block b(x) {\n  o: b(x)\n}\nc: b(1)", "expands into itself"),
    ("block conv(x) {\n  o: relu\n}", "name of a built-in op"),
    ("defaults cnv(bias=false)", "defaults for unknown op"),
    ("defaults conv(strid=2)", "unknown argument 'strid' for defaults conv"),
    ("defaults bias(rate=2)", "unknown argument 'rate' for defaults bias"),
    ("solver(base_lr=0.1, lr_policy=linear)", "wrong type"),
    ("solver(baselr=0.1)", "unknown solver setting 'baselr'"),
    ("preprocess dat(mirror=true)", "not a declared input"),
    ("input data: 3x0x8", "declared twice"),
    ("input lab: klass(10)", "unknown input type"),
    ("output nothere", "unknown input name 'nothere'"),
    ("network Again", "named twice"),
])
def test_semantic_errors(source: str, message: str) -> None:
    text = f"network T\ninput data: 3x32x32\ninput label: class(10)\n{source}\n"
    with pytest.raises(AlexDSLError) as info:
        alexdsl.parse(text, "t.adsl")
    rendered = info.value.render()
    assert message in rendered
    assert "t.adsl:" in rendered and "^" in rendered


def test_input_dimension_below_one() -> None:
    with pytest.raises(AlexDSLError, match="dimension below 1"):
        alexdsl.parse("input data: 3x0x8\nc: relu\n")


def test_cycles_are_errors() -> None:
    with pytest.raises(AlexDSLError, match="cycle: a -> b -> a"):
        alexdsl.parse("input x: 3x8x8\na: b -> relu\nb: a -> relu\n")


def test_no_input_is_an_error() -> None:
    with pytest.raises(AlexDSLError, match="declares no input"):
        alexdsl.parse("network T\n")


def test_warning_for_the_seed_224_confusion() -> None:
    net = alexdsl.load(EXAMPLES / "alexnet.adsl", input_shapes={"data": (3, 224, 224)})
    first = net.warnings[0]
    assert first.severity == "warning" and first.span.line == 14
    assert "224x224 input never reads the last row and column; a 227x227" in first.message
    assert not alexdsl.load(EXAMPLES / "alexnet.adsl").warnings  # 227 is covered exactly


def test_warning_for_unused_output() -> None:
    net = alexdsl.parse("input x: 3x8x8\na: conv(4, 3)\nb: x -> relu\nc: a -> relu\n")
    assert any("'b' is never used" in w.message for w in net.warnings)
    assert net.outputs == ["c"]


def test_defaults_precedence() -> None:
    net = alexdsl.parse(
        "input x: 3x8x8\n"
        "defaults weight(filler=msra(), lr=3)\n"
        "defaults conv(weight=uniform(-1, 1), weight_decay=0.5)\n"
        "a: conv(4, 3, weight_lr=7)\n"
        "b: fc(2, bias=false)\n"
    )
    a, b = net.layer("a"), net.layer("b")
    assert str(a.params["weight"].filler) == "uniform(min=-1.0, max=1.0)"
    assert (a.params["weight"].lr_mult, a.params["weight"].decay_mult) == (7.0, 0.5)
    assert b.params["weight"].filler.type == "msra" and b.params["weight"].lr_mult == 3.0
    assert "bias" not in b.params


def test_chain_naming_inline_labels_and_explicit_inputs() -> None:
    net = alexdsl.parse(
        "input x: 3x8x8\n"
        "a: conv(4, 3) | relu | p: maxpool(1) | relu\n"
        "b: x -> conv(4, 3, pad=1)\n"
        "    | conv(4, 3)\n"
        "c: add(a, b) @train\n"
    )
    assert [layer.name for layer in net.layers()] == ["x", "a", "a_relu", "p", "p_relu", "b", "b_conv2", "c"]
    assert net.layer("c").inputs == ["p_relu", "b_conv2"]
    assert net.layer("c").phase == "train"


def test_repeat_and_block_parameters() -> None:
    net = alexdsl.parse(
        "input x: 3x8x8\n"
        "block unit(c, k=3) {\n  conv: conv(c, k, pad=1) | relu\n}\n"
        "stack: repeat 3 unit(8)\n"
        "wide: unit(16, k=1)\n"
    )
    assert net.shapes["stack.2.conv"] == (8, 8, 8)
    assert net.layer("stack.1.conv").inputs == ["stack.0.conv_relu"]
    assert net.layer("wide.conv").attrs["kernel"] == (1, 1)


def test_ceil_rounding_and_the_last_window_rule() -> None:
    net = alexdsl.parse("input x: 3x13x13\np: maxpool(3, stride=2, round=ceil)\n"
                        "q: x -> maxpool(2, stride=2, pad=1, round=ceil)\n")
    assert net.shapes["p"] == (3, 6, 6)
    assert net.shapes["q"] == (3, 7, 7)  # ceil((13+2-2)/2)+1 = 8, but the 8th window starts in the padding


def test_json_round_trip_for_every_example() -> None:
    for path in EXAMPLES.glob("*.adsl"):
        net = alexdsl.load(path)
        again = alexdsl.from_json(net.to_json())
        assert again.to_json() == net.to_json()
        assert again.layer_names() == net.layer_names()
        assert again.state_keys() == net.state_keys()


def test_bad_json_is_reported() -> None:
    with pytest.raises(AlexDSLError, match="not valid JSON"):
        alexdsl.from_json("{")
    with pytest.raises(AlexDSLError, match="not an alexdsl IR file"):
        alexdsl.from_json('{"format": "onnx"}')


def test_load_missing_file() -> None:
    with pytest.raises(AlexDSLError, match="no such file"):
        alexdsl.load("does/not/exist.adsl")


# Hostile input (issue 9): every case is refused with a located error, quickly and in bounded memory.

def _error(text: str, **kwargs) -> AlexDSLError:
    with pytest.raises(AlexDSLError) as info:
        alexdsl.parse(text, "h.adsl", **kwargs)
    return info.value


def test_a_huge_repeat_count_is_refused_before_expanding() -> None:
    error = _error("input x: 3x8x8\nr: repeat 1000000000000 relu\n")
    (diagnostic,) = error.errors
    assert diagnostic.message == ("repeat 1000000000000 relu expands to 1,000,000,000,000 layers, so the network "
                                  "would have 1,000,000,000,001, more than the limit of 20,000")
    assert (diagnostic.span.line, diagnostic.span.column) == (2, 11)  # the count


def test_a_block_that_uses_itself_twice_is_refused_without_expanding() -> None:
    error = _error("input x: 3x8x8\nblock b() {\n  p: b() | b()\n}\nc: b()\n")
    (diagnostic,) = error.errors
    assert "block b expands into itself" in diagnostic.message and diagnostic.span.line == 5


def test_block_sizes_are_computed_without_expanding_them() -> None:
    doubling = "".join(f"block b{i}() {{\n  p: b{i - 1}() | b{i - 1}()\n}}\n" for i in range(1, 31))
    error = _error("input x: 3x8x8\nblock b0() {\n  r: relu\n}\n" + doubling + "c: b30()\n")
    assert "block b30 expands to 1,073,741,824 layers" in error.errors[0].message  # 2**30, never built
    assert error.errors[0].span.line == 95


def test_the_layer_limit_is_settable(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "input x: 3x8x8\nr: repeat 30 relu\n"
    assert "limit of 20" in _error(text, max_layers=20).errors[0].message
    monkeypatch.setenv("ALEXDSL_MAX_LAYERS", "25")
    assert "limit of 25" in _error(text).errors[0].message
    assert len(alexdsl.parse(text, max_layers=31)) == 31
    monkeypatch.setenv("ALEXDSL_MAX_LAYERS", "many")
    assert "ALEXDSL_MAX_LAYERS='many' is not an integer" in str(_error(text))


def test_an_empty_block_reading_a_later_layer_is_an_error_not_a_placeholder() -> None:
    error = _error("input x: 3x8x8\nblock e() {\n}\na: b -> relu\nb: y -> e()\ny: x -> relu\n")
    (diagnostic,) = error.errors
    assert "block e has no layers" in diagnostic.message and diagnostic.span.line == 5
    net = alexdsl.parse("input x: 3x8x8\nblock e() {\n}\na: b -> relu\nb: x -> e()\n")
    assert net.layer("a").inputs == ["x"]  # an empty block passes its input on


def test_a_block_may_read_a_layer_defined_later() -> None:
    net = alexdsl.parse("input x: 3x8x8\nblock u() {\n  c: conv(4, 3, pad=1)\n  d: in -> relu\n"
                        "  out: concat(c, d)\n}\nb: y -> u()\ny: x -> relu\n")
    assert net.layer("b.c").inputs == ["y"] and net.layer("b.d").inputs == ["y"]
    assert net.shapes["b.out"] == (7, 8, 8)
    assert all("\0" not in i for layer in net.layers() for i in layer.inputs)
    error = _error("input x: 3x8x8\nblock u() {\n  c: conv(4, 3)\n  d: in -> relu\n}\nb: yy -> u()\n")
    assert [d.message for d in error.errors] == ["unknown input name 'yy'"]  # once, not once per reader


@pytest.mark.parametrize("value", ["(" * 500 + "1" + ", 1)" * 500, "f(" * 500 + ")" * 500])
def test_deep_nesting_is_a_located_error(value: str) -> None:
    error = _error(f"input x: 3x8x8\nc: conv(4, 3, weight={value})\n")
    (diagnostic,) = error.errors
    assert "more than 64 parentheses are open" in diagnostic.message and diagnostic.span.line == 2


HUGE = "9" * 400


@pytest.mark.parametrize("text", [
    f"c: conv(4, 3, weight=gaussian({HUGE}))",  # filler
    f"solver(base_lr={HUGE})",  # solver
    f"c: leaky_relu({HUGE})",  # op float argument
    f"c: conv(4, 3, weight_lr={HUGE})",  # _lr
    f"preprocess x(mean={HUGE})",  # preprocess
    f"defaults weight(lr={HUGE})",  # defaults
    "c: conv(" + "9" * 5000 + ", 3)",  # past Python's int() digit limit
])
def test_huge_integers_are_located_errors(text: str) -> None:
    error = _error(f"input x: 3x8x8\n{text}\n")
    (diagnostic,) = error.errors
    assert diagnostic.message == "the integer is too large" and diagnostic.span.line == 2
    assert len(error.render()) < 2000  # the 400-digit line is shown as a window


def test_non_finite_numbers_are_errors_at_the_source() -> None:
    (diagnostic,) = _error("input x: 3x8x8\nc: conv(4, 3, weight=constant(1e999))\n").errors
    assert diagnostic.message == "the number is too large" and diagnostic.span.column == 31
    assert "must be a number" in _error("input x: 3x8x8\nc: conv(4, 3, weight=constant(nan))\n").render()
    (diagnostic,) = _error("input x: 3x99999999999999999999x8\n").diagnostics  # and no "declares no input"
    assert diagnostic.message == "input 'x' is too large" and diagnostic.received == "3x99999999999999999999x8"


def test_sources_keep_to_what_the_ir_reader_accepts() -> None:
    assert "'out' of fc must be at most 2147483647" in str(_error("input x: 3x8x8\nf: fc(2147483648)\n"))
    (diagnostic,) = _error(f"input x: 3x8x8\n{'n' * 300}: x -> relu\n").errors  # found by fuzzing: a KeyError
    assert diagnostic.message == "the name is 300 characters long" and diagnostic.span.column == 1
    assert "input 'x' is too large" in str(_error("input x: " + "x".join(["2"] * 9) + "\n"))
    assert "'stepsize' has the wrong type" in str(_error("input x: 3x8x8\nsolver(stepsize=2147483648)\n"))


def test_a_byte_order_mark_is_accepted(tmp_path) -> None:
    assert alexdsl.parse("\ufeffinput x: 3x8x8\nc: relu\n").shapes["c"] == (3, 8, 8)
    path = tmp_path / "bom.adsl"
    path.write_bytes(b"\xef\xbb\xbfinput x: 3x8x8\nc: relu\n")
    assert alexdsl.load(path).layer("x").span.column == 1


def test_source_size_is_limited(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.adsl"
    path.write_text("input x: 3x8x8\n" + "# padding\n" * 200)
    with pytest.raises(AlexDSLError, match="larger than the limit of 1,000 bytes"):
        alexdsl.load(path, max_bytes=1000)
    monkeypatch.setenv("ALEXDSL_MAX_SOURCE_BYTES", "1000")
    with pytest.raises(AlexDSLError, match=r"/dev/zero: error: the file is larger than the limit"):
        alexdsl.load("/dev/zero")


def test_a_utf8_error_names_the_file_and_the_place(tmp_path) -> None:
    path = tmp_path / "latin1.adsl"
    path.write_bytes(b"input x: 3x8x8\nc: relu # caf\xe9\n")
    with pytest.raises(AlexDSLError) as info:
        alexdsl.load(path)
    assert str(info.value).startswith(f"{path}:2:14: error: the file is not valid UTF-8")
    assert "received: the byte e9" in str(info.value)


def test_no_input_names_the_file() -> None:
    assert str(_error("network T\n")).startswith("h.adsl: error: the network declares no input")


def test_an_error_in_a_block_body_is_reported_once() -> None:
    error = _error("input x: 3x8x8\nblock u() {\n  c: cnov(4, 3)\n}\nblock v() {\n  d: conv(4, 30)\n}\n"
                   "r: repeat 7 u()\na: x -> v()\nb: x -> v()\n")
    assert [(d.message, d.span.line) for d in error.errors] == [
        ("unknown op 'cnov' (in 7 instances)", 3),
        ("d: output height would be -21: a window of 30 does not fit in 8 + 2*0 padding (in 2 instances)", 6),
    ]


def test_a_bad_argument_does_not_hide_later_errors() -> None:
    error = _error("input x: 3x32x32\nconv1: conv(16, 3, strde=4)\nconv2: conv(16, 3, groups=7)\n"
                   "conv3: conv(8, 3, stride=true) | conv(8, 3, 1, 0, 1, 1, true, 7, 9)\nfc: fc(10)\n")
    messages = [d.message for d in error.errors]
    assert messages[0] == "unknown argument 'strde' for conv"
    assert "conv2: input channels (16) are not divisible by groups (7)" in messages[1]
    assert "'stride' of conv has the wrong type" in messages[2]
    assert "too many positional arguments for conv" in messages[3]
    assert len(messages) == 5  # conv3's two mistakes each dropped; fc reads a good shape


def test_many_errors_on_a_long_line_are_capped_and_windowed() -> None:
    text = "input x: 3x8x8\nc: conv(4, 3, " + ", ".join(f"zz{i}=1" for i in range(8000)) + ")\n"
    error = _error(text)
    assert len(error.errors) == 8000
    rendered = error.render()
    assert rendered.splitlines()[-1] == "... and 7900 more errors"
    assert max(len(line) for line in rendered.splitlines() if line.startswith("    ")) <= 110
    assert len(rendered) < 100 * 600


def test_errors_past_those_shown_skip_their_hints() -> None:
    layers = "".join(f"l{i}: relu\n" for i in range(3000))
    error = _error("input x: 3x8x8\n" + layers + "".join(f"u{i}: l{i}x -> relu\n" for i in range(300)))
    assert error.errors[0].hint == "did you mean 'l0'?" and error.errors[99].hint == "did you mean 'l99'?"
    assert error.errors[100].hint is None  # not rendered: no need to compare with 3,000 names
    blocks = "".join(f"block b{i}() {{\n  r: relu\n}}\n" for i in range(50))
    (diagnostic,) = _error("input x: 3x8x8\n" + blocks + "c: nope\n").errors
    assert diagnostic.expected.endswith("b26, ... (50 in all))")


def test_long_line_excerpt_keeps_the_caret_under_the_mistake() -> None:
    text = "input x: 3x8x8\nc: " + " | ".join(["relu"] * 100) + " | cnov\n"
    lines = str(_error(text)).splitlines()
    source, caret = lines[1], lines[2]
    assert source.startswith("    …") and source.endswith("cnov")
    assert source[caret.index("^"):caret.index("^") + 4] == "cnov"


def test_sizes_past_4_gib_warn_and_past_int64_are_errors() -> None:
    net = alexdsl.parse("input v: 1000\nf: fc(1100000)\n", "big.adsl")
    warned = {(w.message, w.span.line if w.span else None) for w in net.warnings}
    assert warned == {("f: its parameters need 4.1 GiB", 2), ("the network's parameters need 4.1 GiB in all", None)}
    error = _error("input x: 3x100000x100000\nc: conv(1000000000, 3)\n")
    assert [d.message for d in error.errors] == ["c: the layer is too large to compute"]
    assert "x: one sample's output needs 111.8 GiB" in [d.message for d in error.diagnostics]


def test_estimate_bytes_and_require_memory() -> None:
    from alexdsl.passes.resources import estimate_bytes, require_memory

    net = alexdsl.load(EXAMPLES / "alexnet.adsl")
    estimate = estimate_bytes(net, batch=2)
    assert estimate.parameters == 4 * net.totals()["params"]
    assert estimate.activations == net.totals(batch=2)["activation_bytes"]
    with pytest.raises(AlexDSLError, match=r"run AlexNet with batch 2 needs about 2\d\d\.\d MiB, more than the 1\.0"):
        require_memory(net, 2, "run", limit=1024**2)
    assert require_memory(net, 2, "run", limit=1024**3) == estimate


def test_parsing_is_thread_safe() -> None:
    from concurrent.futures import ThreadPoolExecutor

    sources = {f"f{i}.adsl": f"input x: 3x8x8\nc{i}: conv({i + 1}, 3)\n" + "".join(f"r{j}: relu\n" for j in range(i))
               for i in range(8)}

    def parse(item: tuple[str, str]) -> bool:
        file, text = item
        net = alexdsl.parse(text, file)
        return all(layer.span.file == file for layer in net.layers())

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(parse, list(sources.items()) * 25))


def test_a_cold_registry_is_loaded_once_for_every_thread() -> None:
    import subprocess
    import sys

    script = ("import threading\nfrom alexdsl.ops.registry import lookup\nfound = []\n"
              "def find():\n    found.append(lookup('conv') is not None)\n"
              "threads = [threading.Thread(target=find) for _ in range(8)]\n"
              "[t.start() for t in threads]\n[t.join() for t in threads]\nassert found == [True] * 8, found\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_check_refuses_an_endless_file_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from alexdsl.cli import main

    monkeypatch.setenv("ALEXDSL_MAX_SOURCE_BYTES", "4096")
    result = CliRunner().invoke(main, ["check", "/dev/zero"])
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit))
    assert "/dev/zero: error: the file is larger than the limit of 4,096 bytes" in result.output
    assert "Traceback" not in result.output


# integer arithmetic ------------------------------------------------------------------------------
ARITH = """input x: 8x16x16
block b(w, n, g=2) {
  c: conv(4 * w, (w // 2 + 1, 3 - 2), pad=(w // 4, 0), groups=g * 2) | relu
  r: repeat n + 1 conv(-(-w) * (n - 1) + w, 1)
}
y: b(4, 2)
z: conv(2 * (3 + 5) // 4 - 1, 1)
"""


def test_arithmetic_is_evaluated_against_block_parameters() -> None:
    net = alexdsl.parse(ARITH)
    assert net.layer("y.c").attrs["out"] == 16 and net.layer("y.c").attrs["groups"] == 4
    assert net.layer("y.c").attrs["kernel"] == (3, 1) and net.layer("y.c").attrs["pad"] == (1, 0)
    assert [n for n in net.graph if n.startswith("y.r.")] == ["y.r.0", "y.r.1", "y.r.2"]  # repeat n + 1
    assert net.shapes["y.r.2"] == (8, 16, 16)  # -(-4) * (2 - 1) + 4
    assert net.shapes["z"] == (3, 16, 16)  # 2 * 8 // 4 - 1, Python's precedence


@pytest.mark.parametrize(("source", "message", "column", "extra"), [
    ("block b(w) {\n  c: conv(w // (w - 4), 1)\n}\ny: b(4)\n", "division by zero", 17, "received: w - 4 = 0"),
    ("block b(w) {\n  c: conv(w - 10, 1)\n}\ny: b(4)\n", "argument 'out' of conv must be at least 1", 11,
     "received: w - 10 = -6"),
    ("block b(w) {\n  c: conv(w * 0.5, 1)\n}\ny: b(4)\n", "argument 'out' of conv has the wrong type", 11,
     "divide integers with '//'"),
    ("block b(width) {\n  c: conv(widht * 2, 1)\n}\ny: b(4)\n", "unknown name 'widht' in an expression", 11,
     "did you mean 'width'?"),
    ("block b(w) {\n  c: conv(w * 4611686018427387904, 1)\n}\ny: b(4)\n", "the value is too large", 11,
     "expected: at most 9,223,372,036,854,775,807"),
    ("block b(w) {\n  c: repeat w - 4 relu\n}\ny: b(4)\n", "repeat needs a count of at least 1", 13,
     "received: w - 4 = 0"),
    ("block b(m) {\n  c: conv(m + 1, 1)\n}\ny: b(ceil)\n", "'m' is not a number", 11, "received: ceil"),
])
def test_arithmetic_errors_point_at_the_expression(source: str, message: str, column: int, extra: str) -> None:
    text = str(_error("input x: 8x16x16\n" + source))
    assert f"h.adsl:3:{column}: error: {message}" in text, text
    assert extra in text, text


def test_a_slash_where_an_integer_goes_suggests_floor_division() -> None:
    text = str(_error("input x: 8x16x16\nc: conv(8 / 2, 1)\n"))
    assert "h.adsl:2:9: error: argument 'out' of conv has the wrong type" in text
    assert "received: 8 / 2 = 4.0" in text and "divide integers with '//'" in text


def test_arithmetic_keeps_the_arrow_negative_numbers_and_shapes_apart() -> None:
    net = alexdsl.parse("input x: 3x8x8\na: x -> conv(8-2, 3-2) | hardtanh(-1, 1)\nb: a->conv(2--1, 1)\n")
    assert net.shapes["a"] == (6, 8, 8) and net.shapes["b"] == (3, 8, 8)
    assert net.layer("a_hardtanh").attrs["min"] == -1.0


def test_block_parameters_in_expressions_are_references_for_rename() -> None:
    from alexdsl.lsp.symbols import SymbolIndex
    from alexdsl.syntax.parser import parse_module

    index = SymbolIndex(parse_module("input x: 3x8x8\nblock b(w, n) {\n  c: repeat n + 1 conv(4 * w, (w // 2, 1))\n}\n"
                                     "y: b(4, n=1)\n"))
    assert [(o.span.line, o.span.column) for o in index.occurrences_of(index.scopes["b"]["w"])] == \
        [(2, 9), (3, 28), (3, 32)]
    assert [(o.span.line, o.span.column) for o in index.occurrences_of(index.scopes["b"]["n"])] == \
        [(2, 12), (3, 13), (5, 9)]


# chunk and split -----------------------------------------------------------------------------------
def test_chunk_and_split_name_each_part() -> None:
    net = alexdsl.parse("""input x: 10x4x4
half:  chunk(3)
b:     half.1 -> conv(4, 1)
parts: x -> split((2 * 2, 6))
out:   concat(half.0, b, half.2, parts.1)
""")
    assert [net.shapes[f"half.{i}"][0] for i in range(3)] == [4, 4, 2]  # torch.chunk: ceil(10 / 3) each
    assert (net.shapes["parts.0"][0], net.shapes["parts.1"][0]) == (4, 6)
    assert net.layer("half.2").op == "channel_chunk" and net.layer("parts.1").op == "channel_slice"
    assert net.layer("parts.1").attrs["start"] == 4 and net.layer("parts.1").attrs["stop"] == 10
    assert net.shapes["out"] == (4 + 4 + 2 + 6, 4, 4)


@pytest.mark.parametrize(("source", "message"), [
    ("half: chunk(2)\nb: half -> relu\n", "h.adsl:3:4: error: 'half' is split into 2 parts: read one of them by name"),
    ("half: chunk(2)\nb: relu\n", "h.adsl:3:4: error: 'half' is split into 2 parts"),
    ("half: chunk(2) | relu\n", "h.adsl:2:7: error: chunk must end its chain"),
    ("half: split((3, 4))\n", "h.adsl:2:13: error: half.1: the parts of the split add up to 7 channels, but the input "
                               "has 8"),
    ("half: split(4)\n", "h.adsl:2:13: error: split needs the size of each part"),
    ("half: chunk(2 - 2)\n", "h.adsl:2:13: error: chunk needs a number of parts of at least 1"),
    ("half: chunk(16)\n", "chunk(16) of 8 channels makes only 8 parts"),
    ("half: chunk(2)\nb: half.2 -> relu\n", "h.adsl:3:4: error: unknown input name 'half.2'"),
])
def test_split_mistakes_are_located(source: str, message: str) -> None:
    text = str(_error("input x: 8x4x4\n" + source))
    assert message in text, text


def test_renaming_a_split_renames_its_parts() -> None:
    from alexdsl.lsp import features
    from alexdsl.lsp.symbols import SymbolIndex
    from alexdsl.syntax.parser import parse_module

    text = "input x: 8x4x4\nhalf: chunk(2)\nb: half.1 -> relu\nout: concat(half.0, b)\n"
    index = SymbolIndex(parse_module(text))
    assert index.resolve("half.1", None, layers_only=True).label is index.scopes[None]["half"]
    edits = features.rename(index, features.Positions(text), 2, 1, "pair")
    lines = text.split("\n")
    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        row = lines[edit.range.start.line]
        lines[edit.range.start.line] = row[:edit.range.start.character] + edit.new_text + row[edit.range.end.character:]
    renamed = "\n".join(lines)
    assert renamed == "input x: 8x4x4\npair: chunk(2)\nb: pair.1 -> relu\nout: concat(pair.0, b)\n"
    assert alexdsl.parse(renamed).shapes["out"] == (8, 4, 4)


def test_a_dotted_name_may_hold_a_hyphen_and_arithmetic_keeps_its_minus() -> None:
    """torchvision's RegNet keys are trunk_output.block1.block1-0...; 'w-1' stays arithmetic, 'a.b->c' an arrow."""
    net = alexdsl.parse("input x: 3x8x8\ntrunk.block1-0: conv(4, 1)\nb: trunk.block1-0->relu\n"
                        "block q(w) {\n  d: conv(w-1, 1)\n}\ne: b -> q(3)\n")
    assert net.shapes["b"] == (4, 8, 8) and net.shapes["e.d"] == (2, 8, 8)
    assert "trunk.block1-0.weight" in net.state_keys()
    assert alexdsl.from_json(net.to_json()).state_keys() == net.state_keys()


def test_the_ir_readers_name_pattern_is_the_grammars() -> None:
    from alexdsl.syntax.build import NAME
    from alexdsl.syntax.parser import grammar_text

    (line,) = [line for line in grammar_text().splitlines() if line.startswith("NAME:")]
    assert line.split("/")[1] == NAME.pattern


@pytest.mark.parametrize("expression", ["1+" * 100_000 + "1", "-" * 100_000 + "w", "w*" * 65 + "1"])
def test_a_deeply_nested_expression_is_a_located_error(expression: str) -> None:
    text = str(_error(f"input x: 3x8x8\nc: conv({expression}, 1)\n"))
    assert "h.adsl:2:" in text and "error: the expression nests more than 64 operators" in text


def test_a_scalar_cannot_be_split() -> None:
    text = str(_error("input v: class(3)\ninput x: 3x4x4\na: x -> fc(3)\nacc: accuracy(a, v)\nh: acc -> chunk(2)\n"))
    assert "h.adsl:5:11: error: h.0: a scalar has no channels to split" in text, text


def test_splits_round_trip_through_caffe_slice_layers() -> None:
    from alexdsl.interop.caffe import import_prototxt
    from alexdsl.interop.caffe_export import export_prototxt

    net = alexdsl.parse("input x: 10x4x4\nhalf: chunk(2)\nb: half.1 -> relu\nparts: x -> split((3, 4, 3))\n"
                        "odd: x -> chunk(3)\nout: concat(half.0, b, parts.1, odd.2)\n")
    prototxt = export_prototxt(net)
    assert prototxt.count('type: "Slice"') == 2 + 3 + 3 and "slice_point: 3\n    slice_point: 7" in prototxt
    again = alexdsl.parse(import_prototxt(prototxt, "net.prototxt"))
    assert {name: again.shapes[name] for name in net.shapes} == net.shapes
    assert again.layer("half.1").op == "channel_chunk" and again.layer("parts.1").op == "channel_slice"
    assert (again.layer("parts.1").attrs["start"], again.layer("parts.1").attrs["stop"]) == (3, 7)


def test_a_caffe_slice_with_too_few_points_is_a_located_error() -> None:
    from alexdsl.interop.caffe import import_prototxt

    prototxt = ('input: "x"\ninput_shape { dim: 1 dim: 8 dim: 2 dim: 2 }\nlayer {\n  name: "s"\n  type: "Slice"\n'
                '  bottom: "x"\n  top: "a"\n  top: "b"\n  top: "c"\n  slice_param { axis: 1 slice_point: 2 }\n}\n')
    with pytest.raises(AlexDSLError, match=r"net.prototxt:10:15: error: Slice layer 's' has 1 slice points for 3 tops"):
        import_prototxt(prototxt, "net.prototxt")


def test_self_names_a_layer_after_its_block_instance() -> None:
    net = alexdsl.parse("input x: 4x8x8\nblock b(c) {\n  conv1: conv(c, 3, pad=1)\n  self: scale(param=layer_scale)\n"
                        "  out: add(in)\n}\nstage.0: b(4)\nstage.1: b(4)\n")
    assert list(net.state_keys())[:3] == ["stage.0.layer_scale", "stage.0.conv1.weight", "stage.0.conv1.bias"]
    assert net.layer("stage.1").op == "scale" and net.layer("stage.1").inputs == ["stage.1.conv1"]
    assert alexdsl.parse("input x: 4x8x8\nself: relu\n").layer("self").op == "relu"  # only a block gives it meaning


def test_source_text_given_in_memory_is_bounded_like_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALEXDSL_MAX_SOURCE_BYTES", "1000")
    with pytest.raises(AlexDSLError, match="big.adsl: error: the source is larger than the limit of 1,000 bytes"):
        alexdsl.parse("input x: 3x8x8\n" + "# padding\n" * 200, "big.adsl")
    assert alexdsl.parse("input x: 3x8x8\nc: conv(2, 3)\n").shapes["c"] == (2, 6, 6)


def test_state_keys_follow_the_order_layers_are_written() -> None:
    """torch's state_dict follows __init__'s registration order, not forward's: a block lists reduction before
    the norm it reads (torchvision's PatchMerging), its keys come in that order everywhere, and it still runs norm
    first; the block's output is its last statement that nothing in it reads."""
    text = ("network Merge\ninput x: 8x4x4\nblock merge(c) {\n  merged:    permute((1, 2, 0))\n"
            "  reduction: norm -> linear(2 * c, bias=false)\n  norm:      merged -> layernorm(axis=-1)\n}\n"
            "m: merge(8)\nafter: relu\n")
    net = alexdsl.parse(text)
    keys = ["m.reduction.weight", "m.norm.weight", "m.norm.bias"]
    assert list(net.state_keys()) == keys
    assert net.layer("after").inputs == ["m.reduction"]
    assert [layer.name for layer in net.layers()] == ["x", "m.merged", "m.norm", "m.reduction", "after"]
    assert [layer.name for layer in net.declared_layers()] == ["x", "m.merged", "m.reduction", "m.norm", "after"]
    again = alexdsl.from_json(net.to_json())
    assert list(again.state_keys()) == keys and again.layer_names() == net.layer_names()
    from alexdsl.interop.writer.flat import network_to_source
    from alexdsl.interop.writer.readable import readable_source

    for source in (network_to_source(again, "net.json"), readable_source(again, file="net.json")):  # import json
        assert list(alexdsl.parse(source).state_keys()) == keys

    from alexdsl.backends.executor.codegen import lower

    assert list(lower(net).state) == keys
    torch = pytest.importorskip("torch", reason="pip install torch (the torch extra) to build the torch module")
    from alexdsl.backends.torch import build

    module = build(net)
    assert list(module.state_dict()) == keys
    assert module(torch.zeros(2, 8, 4, 4)).shape == (2, 4, 4, 16)


def test_a_block_output_named_out_or_written_last_is_unchanged_by_forward_references() -> None:
    """``out`` is the output even when read by a statement before it; without forward references the last
    statement is, even when nothing reads it."""
    named = alexdsl.parse("input x: 8\nblock b(c) {\n  first: out -> fc(c)\n  out: in -> fc(c)\n}\ny: b(4)\nz: relu\n")
    assert named.layer("z").inputs == ["y.out"]
    plain = alexdsl.parse("input x: 8\nblock b(c) {\n  side: fc(c)\n  last: in -> fc(c)\n}\ny: b(4)\nz: relu\n")
    assert plain.layer("z").inputs == ["y.last"]
