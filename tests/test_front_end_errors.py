"""What network writers trip over (issue 23): unknown ops, the op list, plugins, block uses, names."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXAMPLES

import alexdsl
from alexdsl.errors import AlexDSLError


def _error(text: str, file: str = "e.adsl") -> AlexDSLError:
    with pytest.raises(AlexDSLError) as info:
        alexdsl.parse(text, file)
    return info.value


def test_every_unknown_op_of_a_chain_is_reported() -> None:
    error = _error("input x: 3x8x8\nc: transpose_all | relu | squeeze(3)\nd: c -> relu\n")
    assert [(d.span.column, d.message) for d in error.errors] == [(4, "unknown op 'transpose_all'"),
                                                                  (27, "unknown op 'squeeze'")]


def test_a_mistake_after_a_failed_link_is_reported_too() -> None:
    error = _error("input x: 3x8x8\nc: cnov(4, 3) | conv(4, 3, strid=2)\n")
    assert [d.message for d in error.errors] == ["unknown op 'cnov'", "unknown argument 'strid' for conv"]


def test_the_op_list_is_shown_once_per_file() -> None:
    error = _error("input x: 3x8x8\na: cnov(4, 3)\nb: a -> cnov(4, 3) | relu\nc: b -> transpose_all\n")
    expected = [d.expected for d in error.errors]
    assert expected[0].startswith("an op (accuracy, ") and "conv" in expected[0]
    assert expected[1:] == ["an op or a block, as listed at line 2"] * 2
    assert str(error).count("adaptive_avgpool") == 1


def test_a_mistake_in_every_instance_of_a_block_is_one_error_with_its_hint() -> None:
    uses = "".join(f"u{i}: b()\n" for i in range(120))  # past the first 100 hints
    error = _error("input x: 3x8x8\nblock b() {\n  c: cnov(4, 3)\n}\n" + uses)
    (diagnostic,) = error.errors
    assert diagnostic.message == "unknown op 'cnov' (in 120 instances)" and diagnostic.hint == "did you mean 'conv'?"


def test_an_unknown_op_names_the_plugin_that_declares_it_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "wavy.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "from alexdsl.ops.registry import OpDef, register\n"
        "register(OpDef(name='wavy', family='activation', summary='x'))\n", encoding="utf-8")
    (tmp_path / "broken.py").write_text("def (:\n", encoding="utf-8")  # unreadable plugins are skipped
    source = tmp_path / "net.adsl"
    source.write_text("input x: 3x8x8\na: conv(4, 3) | wavy\nb: wavy\n", encoding="utf-8")
    with pytest.raises(AlexDSLError) as info:
        alexdsl.load(source)
    first, second = info.value.errors
    assert "'wavy' is defined by the plugin" in first.hint and "wavy.py" in first.hint
    assert "--plugin" in first.hint and second.hint is None  # said once per op
    assert not marker.exists()


def test_the_example_plugin_network_says_which_plugin_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES.parent)
    with pytest.raises(AlexDSLError) as info:
        alexdsl.load("examples/plugins/lenet5.adsl")
    hints = [d.hint for d in info.value.errors]
    assert hints[0] == ("'scaled_tanh' is defined by the plugin examples/plugins/scaled_tanh.py: load it with "
                        "'alexdsl --plugin examples/plugins/scaled_tanh.py COMMAND ...'")
    assert len(hints) == 4 and hints[1:] == [None] * 3  # not "did you mean 'hardtanh'?" either


def test_an_error_in_a_block_notes_each_use_innermost_first() -> None:
    text = ("input x: 3x8x8\nblock res(c) {\n  b: conv(c, 3, pad=1)\n  out: in, b -> add\n}\n"
            "block stage(c) {\n  first: res(c)\n}\nc1: conv(4, 1)\ns: stage(8)\n")
    (diagnostic,) = _error(text).errors
    assert diagnostic.span.line == 4
    assert [(n.span.line, n.message, n.subject) for n in diagnostic.notes] == [
        (7, "in block 'res', used here", "s.first"), (10, "in block 'stage', used here", "s")]
    rendered = str(_error(text))
    assert "e.adsl:10:4: note: in block 'stage', used here as 's'\n    s: stage(8)\n       ^~~~~~~~" in rendered


def test_an_argument_error_in_a_block_notes_the_use() -> None:
    text = "input x: 3x8x8\nblock b(s) {\n  c: conv(4, 3, stride=s)\n}\nok: b(1)\nbad: b(0)\n"
    (diagnostic,) = _error(text).errors
    assert diagnostic.message == "argument 'stride' of conv must be at least 1"
    assert [(n.span.line, n.subject) for n in diagnostic.notes] == [(6, "bad")]


def test_an_unlabelled_stage_is_named_after_the_nearest_label_before_it() -> None:
    net = alexdsl.parse("input x: 16x8x8\n"
                        "se: pool: global_avgpool | fc1: conv(4, 1, bias=true) | relu | fc2: conv(16, 1, bias=true)"
                        " | sigmoid\n")
    assert [layer.name for layer in net.layers()] == ["x", "pool", "fc1", "fc1_relu", "fc2", "fc2_sigmoid"]


def test_renaming_an_inline_label_renames_the_names_after_it() -> None:
    from alexdsl.lsp.symbols import SymbolIndex
    from alexdsl.syntax.parser import parse_module

    index = SymbolIndex(parse_module("input x: 3x8x8\na: conv(2, 3) | b: batchnorm | relu\nc: b_relu -> relu\n"))
    (generated,) = index.generated_from(index.scopes[None]["b"])
    assert generated.name == "b_relu"
