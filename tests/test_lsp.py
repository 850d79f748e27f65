"""`alexdsl lsp` end to end: pytest-lsp starts the server as a subprocess and speaks LSP to it.

Expected values come from the front end (`build_network`, `format_source`, the op registry)
and from AlexNet's published shapes, not from the server's own code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import re
import sys

import pytest

pytest.importorskip("pygls")
pytest_lsp = pytest.importorskip("pytest_lsp")

from conftest import EXAMPLES, ROOT  # noqa: E402
from lsprotocol import types  # noqa: E402
from pygls.exceptions import JsonRpcException  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402

from alexdsl.errors import AlexDSLError  # noqa: E402
from alexdsl.fmt import format_source  # noqa: E402
from alexdsl.frontend import build_network  # noqa: E402
from alexdsl.ops.registry import FILLERS, lookup  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

BROKEN = """network Broken
input data: 3x32x32

conv1: cnov(16, 3) | relu
conv2: conv(16, 3, strid=2) | relu
"""


@pytest_lsp.fixture(
    scope="module",
    config=ClientServerConfig(server_command=[sys.executable, "-m", "alexdsl.cli", "lsp"]),
)
async def client(lsp_client: LanguageClient):
    @lsp_client.feature(types.WORKSPACE_INLAY_HINT_REFRESH)
    def refresh(params: None) -> None:
        REFRESHES.append(params)

    capabilities = client_capabilities("visual-studio-code")
    capabilities.workspace.inlay_hint = types.InlayHintWorkspaceClientCapabilities(refresh_support=True)
    INITIALIZED["result"] = await lsp_client.initialize_session(types.InitializeParams(
        capabilities=capabilities,
        initialization_options={"alexdsl": {"inlayHints": {"params": True, "macs": True}}}))
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(
    scope="module",
    config=ClientServerConfig(server_command=[sys.executable, "-m", "alexdsl.cli", "lsp"], server_env={
        **os.environ, "ALEXDSL_PLUGINS": str(ROOT / "examples" / "plugins" / "scaled_tanh.py")}),
)
async def plugin_client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities()))
    yield
    await lsp_client.shutdown_session()


INITIALIZED: dict[str, types.InitializeResult] = {}
REFRESHES: list[None] = []  # workspace/inlayHint/refresh requests the server sent
_opened = 0


def open_document(client: LanguageClient, text: str, name: str = "net.adsl", language: str = "alexdsl") -> str:
    """Open ``text`` under a fresh URI (tests share one server) and return the URI."""
    global _opened
    _opened += 1
    uri = f"file:///tmp/lsp{_opened}/{name}"
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, language, 1, text)))
    return uri


def change(client: LanguageClient, uri: str, version: int, text: str) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(version=version, uri=uri),
        [types.TextDocumentContentChangeWholeDocument(text)]))


async def hints(client: LanguageClient, uri: str, text: str, settled: bool = True) -> dict[int, str]:
    """0-based line -> inlay hint label (the shape first). ``settled``: once the whole analysis is done
    (the first hints of a clean file come from the network alone, before block uses have theirs)."""
    if settled:
        await client.text_document_folding_range_async(types.FoldingRangeParams(types.TextDocumentIdentifier(uri)))
    whole = types.Range(types.Position(0, 0), types.Position(len(text.splitlines()), 0))
    params = types.InlayHintParams(types.TextDocumentIdentifier(uri), whole)
    result = await client.text_document_inlay_hint_async(params)
    return {hint.position.line: str(hint.label).strip() for hint in result or []}


def at(text: str, needle: str, offset: int = 0, occurrence: int = 0) -> types.Position:
    """The position of the ``occurrence``-th ``needle`` in ``text``, plus ``offset`` characters."""
    index = -1
    for _ in range(occurrence + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index)
    return types.Position(line, index - (text.rfind("\n", 0, index) + 1) + offset)


def doc(uri: str, position: types.Position) -> dict:
    return {"text_document": types.TextDocumentIdentifier(uri), "position": position}


# diagnostics -----------------------------------------------------------------------------------
async def test_diagnostics_have_the_ranges_and_words_of_check(client: LanguageClient):
    uri = open_document(client, BROKEN)
    await hints(client, uri, BROKEN)  # answered after the analysis, so its diagnostics were sent first
    with pytest.raises(AlexDSLError) as error:
        build_network(BROKEN, "/tmp/net.adsl")
    expected = error.value.diagnostics
    got = client.diagnostics[uri]
    assert len(got) == len(expected) == 2
    for diagnostic, reference in zip(got, expected):
        span = reference.span
        assert (diagnostic.range.start.line, diagnostic.range.start.character) == (span.line - 1, span.column - 1)
        assert (diagnostic.range.end.line, diagnostic.range.end.character) == (span.end_line - 1, span.end_column - 1)
        assert diagnostic.message.startswith(reference.message)
        assert diagnostic.severity == types.DiagnosticSeverity.Error
    assert "did you mean 'conv'?" in got[0].message
    assert "did you mean 'stride'?" in got[1].message


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.adsl")))
async def test_examples_open_without_errors_and_with_a_hint_per_top_level_statement(client: LanguageClient,
                                                                                   example: str):
    text = (EXAMPLES / example).read_text()
    uri = open_document(client, text, example)
    found = await hints(client, uri, text)
    network = build_network(text, example)
    # a diagnostic's message goes on with its hint (Llama-3.2-1B's memory warnings have one)
    assert [d.message.split("\n")[0] for d in client.diagnostics[uri]] == [w.message for w in network.warnings]
    layer_lines = [i for i, line in enumerate(text.splitlines()) if re.match(r"[A-Za-z_][\w.]*\s*:", line)]
    assert layer_lines and all(line in found for line in layer_lines)


async def test_alexnet_hints_are_the_published_shapes(client: LanguageClient):
    text = (EXAMPLES / "alexnet.adsl").read_text()
    uri = open_document(client, text, "alexnet.adsl")
    found = await hints(client, uri, text)
    published = {"conv1": "96x27x27", "conv2": "256x13x13", "conv3": "384x13x13", "conv4": "384x13x13",
                 "conv5": "256x6x6", "fc6": "4096", "fc7": "4096", "fc8": "1000"}
    for label, shape in published.items():
        assert found[at(text, f"{label}:").line].split(" · ")[0] == shape
    # the settings ask for parameters and MACs: conv1's are Caffe's 34,944 and 105,415,200
    assert "34,944 params" in found[at(text, "conv1:").line]
    assert "105,415,200 MACs" in found[at(text, "conv1:").line]


async def test_block_lines_show_every_instance(client: LanguageClient):
    text = (EXAMPLES / "inception.adsl").read_text()
    uri = open_document(client, text, "inception.adsl")
    found = await hints(client, uri, text)
    network = build_network(text, "inception.adsl")
    instances = sorted({layer.block for layer in network.layers() if layer.block})
    out_line = found[at(text, "out:").line]
    assert out_line.startswith(f"{len(instances)} instances")
    for instance in instances:
        assert "x".join(map(str, network.layer(f"{instance}.out").shape)) in out_line


async def test_block_lines_show_the_instance_the_cursor_is_on(client: LanguageClient):
    text = (EXAMPLES / "inception.adsl").read_text()
    uri = open_document(client, text, "inception.adsl")
    network = build_network(text, "inception.adsl")
    await hints(client, uri, text)  # settled: the refresh that follows the first hints is past
    for instance in ("inc3b", "inc4a"):
        refreshes = len(REFRESHES)
        cursor = at(text, f"{instance}:", 2)
        marks = await client.text_document_document_highlight_async(types.DocumentHighlightParams(**doc(uri, cursor)))
        assert [m.kind for m in marks] == [types.DocumentHighlightKind.Write]  # inc3b is defined, not read
        found = await hints(client, uri, text)
        shape = "x".join(map(str, network.layer(f"{instance}.out").shape))
        assert found[at(text, "out:").line].startswith(f"{shape} in {instance}")
        assert len(REFRESHES) == refreshes + 1  # the client is told its hints changed


async def test_first_hints_come_from_the_network_alone_then_the_client_is_asked_to_refresh(client: LanguageClient):
    chain = "".join(f"c{i}: conv(8, 3, pad=1) | relu\n" for i in range(300))
    text = f"input data: 8x16x16\nblock b(c) {{\n  x: conv(c, 3, pad=1)\n}}\n{chain}last: b(4)\n"
    refreshes = len(REFRESHES)
    uri = open_document(client, text)
    first = await hints(client, uri, text, settled=False)  # asked at once: answered before the syntax tree exists
    settled = await hints(client, uri, text)
    last = len(text.splitlines()) - 1
    assert last not in first and settled[last].startswith("4x16x16 ")  # a block use needs the syntax tree
    assert first == {line: label for line, label in settled.items() if line != last}
    assert len(REFRESHES) == refreshes + 1


async def test_an_edit_into_an_error_and_back(client: LanguageClient):
    text = (EXAMPLES / "alexnet.adsl").read_text()
    uri = open_document(client, text, "alexnet.adsl")
    before = await hints(client, uri, text)
    broken = text.replace("conv(384, 3, pad=1) | relu", "conv(384, 3, pad=1) | ", 1)  # half-typed
    change(client, uri, 2, broken)
    during = await hints(client, uri, broken)
    errors = client.diagnostics[uri]
    assert errors and all(d.range.start.line == at(text, "conv3:").line for d in errors)
    for label in ("conv1", "conv2", "conv5", "fc8"):  # the rest of the file keeps its shapes
        line = at(text, f"{label}:").line
        assert during[line].split(" · ")[0] == before[line].split(" · ")[0]
    change(client, uri, 3, text)
    assert await hints(client, uri, text) == before
    assert list(client.diagnostics[uri]) == []


# hover -----------------------------------------------------------------------------------------
async def test_hover_on_a_layer_shows_op_shape_params_macs_and_receptive_field(client: LanguageClient):
    text = (EXAMPLES / "alexnet.adsl").read_text()
    uri = open_document(client, text, "alexnet.adsl")
    result = await client.text_document_hover_async(types.HoverParams(**doc(uri, at(text, "conv1:", 1))))
    value = result.contents.value
    network = build_network(text, "alexnet.adsl")
    conv1 = network.layer("conv1")
    assert "`conv`" in value and "96x55x55" in value
    assert f"{conv1.param_count:,}" in value and f"{conv1.macs:,}" in value
    assert "96x3x11x11" in value and "gaussian(std=0.01" in value
    assert "receptive field: 11x11 (stride 4x4)" in value


async def test_hover_gives_alexnets_published_receptive_field(client: LanguageClient):
    text = (EXAMPLES / "alexnet.adsl").read_text()
    uri = open_document(client, text, "alexnet.adsl")
    pool5 = await client.text_document_hover_async(types.HoverParams(**doc(uri, at(text, "maxpool", 1, 2))))
    assert "conv5_maxpool" in pool5.contents.value
    assert "receptive field: 195x195 (stride 32x32)" in pool5.contents.value  # Araujo et al., Distill 2019


async def test_hover_on_an_op_and_an_argument_shows_the_registry_doc(client: LanguageClient):
    text = (EXAMPLES / "alexnet.adsl").read_text()
    uri = open_document(client, text, "alexnet.adsl")
    on_op = await client.text_document_hover_async(types.HoverParams(**doc(uri, at(text, "maxpool", 2))))
    assert lookup("maxpool").summary in on_op.contents.value
    assert lookup("maxpool").example in on_op.contents.value
    assert "conv1_maxpool" in on_op.contents.value and "96x27x27" in on_op.contents.value
    on_arg = await client.text_document_hover_async(types.HoverParams(**doc(uri, at(text, "stride=4", 1))))
    assert lookup("conv").arg("stride").doc in on_arg.contents.value


async def test_hover_on_a_block_use_shows_its_signature(client: LanguageClient):
    text = (EXAMPLES / "inception.adsl").read_text()
    uri = open_document(client, text, "inception.adsl")
    result = await client.text_document_hover_async(types.HoverParams(**doc(uri, at(text, "inception(64", 2))))
    header = re.search(r"block inception\(([^)]*)\)", text).group(1)
    assert f"block inception({header})" in result.contents.value


# names -----------------------------------------------------------------------------------------
async def test_definition_and_references(client: LanguageClient):
    text = (EXAMPLES / "alexnet.adsl").read_text()
    uri = open_document(client, text, "alexnet.adsl")
    use = at(text, "fc8, label", 1)
    found = await client.text_document_definition_async(types.DefinitionParams(**doc(uri, use)))
    assert [(loc.range.start.line, loc.range.start.character) for loc in found] == [(at(text, "fc8:").line, 0)]
    refs = await client.text_document_references_async(types.ReferenceParams(
        context=types.ReferenceContext(include_declaration=True), **doc(uri, use)))
    assert len(refs) == 1 + text.count("(fc8,")


async def test_references_of_a_block_and_of_a_block_parameter(client: LanguageClient):
    text = (EXAMPLES / "resnet18.adsl").read_text()
    uri = open_document(client, text, "resnet18.adsl")
    refs = await client.text_document_references_async(types.ReferenceParams(
        context=types.ReferenceContext(include_declaration=False), **doc(uri, at(text, "block basic", 7))))
    assert len(refs) == len(re.findall(r"\bbasic\(\d", text))
    body = text[text.index("block basic"): text.index("}")]
    param = await client.text_document_references_async(types.ReferenceParams(
        context=types.ReferenceContext(include_declaration=False), **doc(uri, at(text, "basic(c", 6))))
    assert len(param) == len(re.findall(r"\(c,", body))
    inside = await client.text_document_definition_async(types.DefinitionParams(
        **doc(uri, at(text, "conv2, downsample.0 ->"))))
    assert inside[0].range.start.line == at(text, "conv2:", 0, 1).line  # the block's own conv2, not another


async def test_rename_a_layer_and_refuse_a_clash(client: LanguageClient):
    text = (EXAMPLES / "alexnet.adsl").read_text()
    uri = open_document(client, text, "alexnet.adsl")
    edit = await client.text_document_rename_async(types.RenameParams(new_name="logits", **doc(uri, at(text, "fc8:"))))
    renamed = apply_edits(text, edit.changes[uri])
    network = build_network(renamed, "renamed.adsl")
    assert "logits" in network.graph and "fc8" not in network.graph
    assert network.layer("loss").inputs[0] == "logits"
    with pytest.raises(JsonRpcException, match="already defined"):
        await client.text_document_rename_async(types.RenameParams(new_name="fc7", **doc(uri, at(text, "fc8:"))))


async def test_rename_a_label_renames_its_generated_names(client: LanguageClient):
    text = "input x: 3x8x8\na: conv(2, 3) | relu\nb: a_relu -> conv(2, 1)\nc: a, b -> add\n"
    uri = open_document(client, text)
    edit = await client.text_document_rename_async(types.RenameParams(new_name="stem", **doc(uri, at(text, "a:"))))
    renamed = apply_edits(text, edit.changes[uri])
    assert renamed == "input x: 3x8x8\nstem: conv(2, 3) | relu\nb: stem_relu -> conv(2, 1)\nc: stem, b -> add\n"
    build_network(renamed)
    with pytest.raises(JsonRpcException, match="already defined"):  # stem -> b would also make b_relu: fine; b clashes
        await client.text_document_rename_async(types.RenameParams(new_name="b", **doc(uri, at(text, "a:"))))


async def test_rename_a_block_refuses_an_op_name(client: LanguageClient):
    text = (EXAMPLES / "resnet18.adsl").read_text()
    uri = open_document(client, text, "resnet18.adsl")
    edit = await client.text_document_rename_async(types.RenameParams(
        new_name="residual", **doc(uri, at(text, "block basic", 7))))
    renamed = apply_edits(text, edit.changes[uri])
    assert build_network(renamed).totals()["params"] == build_network(text).totals()["params"]
    with pytest.raises(JsonRpcException, match="built-in op"):
        await client.text_document_rename_async(types.RenameParams(
            new_name="conv", **doc(uri, at(text, "block basic", 7))))


def apply_edits(text: str, edits: list[types.TextEdit]) -> str:
    lines = text.split("\n")
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)

    def offset(position: types.Position) -> int:
        return offsets[position.line] + position.character

    for edit in sorted(edits, key=lambda e: offset(e.range.start), reverse=True):
        text = text[: offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end):]
    return text


# completion ------------------------------------------------------------------------------------
async def complete(client: LanguageClient, text: str, marker: str = "$") -> list[types.CompletionItem]:
    position = at(text, marker)
    uri = open_document(client, text.replace(marker, ""))
    result = await client.text_document_completion_async(types.CompletionParams(**doc(uri, position)))
    return result.items if isinstance(result, types.CompletionList) else result


async def test_completion_of_ops_with_signatures_blocks_and_layers(client: LanguageClient):
    items = await complete(client, "input data: 3x8x8\nblock b(c) {\n  x: conv(c, 1)\n}\na: conv(4, 3)\nz: $\n")
    by_label = {item.label: item for item in items}
    assert by_label["conv"].detail.startswith("conv(out, kernel, stride=1")
    assert "maxpool" in by_label and "b" in by_label and "a" in by_label and "data" in by_label
    assert by_label["b"].kind == types.CompletionItemKind.Class


async def test_completion_of_argument_names_and_fillers(client: LanguageClient):
    items = await complete(client, "input data: 3x8x8\na: conv(4, 3, $)\n")
    labels = [item.label for item in items]
    assert {"stride=", "pad=", "groups=", "weight=", "bias_lr="} <= set(labels)
    assert labels.index("stride=") < labels.index("data")  # arguments come before layer names
    fillers = await complete(client, "input data: 3x8x8\na: conv(4, 3, weight=$)\n")
    assert {item.label for item in fillers} == set(FILLERS)
    choices = await complete(client, "input data: 3x8x8\na: maxpool(2, round=$)\n")
    assert {item.label for item in choices} == set(lookup("maxpool").arg("round").choices)


async def test_completion_inside_a_block_sees_its_own_layers_and_in(client: LanguageClient):
    items = await complete(client, "input data: 3x8x8\ntop: relu\nblock b(c) {\n  x: conv(c, 1)\n  y: $\n}\n")
    labels = {item.label for item in items}
    assert {"x", "in"} <= labels and "top" not in labels


async def test_completion_in_defaults(client: LanguageClient):
    items = await complete(client, "input data: 3x8x8\ndefaults bias($)\n")
    assert {item.label for item in items} == {"filler=", "lr=", "decay="}
    items = await complete(client, "input data: 3x8x8\ndefaults maxpool($)\n")
    assert {"kernel=", "round="} <= {item.label for item in items}


async def test_plugin_ops_load_as_for_the_cli(plugin_client: LanguageClient):
    text = "input data: 3x8x8\nst: scaled_tanh(a=1.7159, b=0.6667)\n"
    uri = open_document(plugin_client, text)
    assert (await hints(plugin_client, uri, text))[1] == "3x8x8"
    assert list(plugin_client.diagnostics[uri]) == []
    result = await plugin_client.text_document_hover_async(types.HoverParams(**doc(uri, at(text, "scaled_tanh", 1))))
    assert "a * tanh(b * x)" in result.contents.value


# formatting, outline, folding, semantic tokens -------------------------------------------------
async def test_formatting_is_fmt(client: LanguageClient):
    text = "network  T\ninput x:3x8x8\nc1:conv(4,3)|relu   # two layers\n"
    uri = open_document(client, text)
    edits = await client.text_document_formatting_async(types.DocumentFormattingParams(
        types.TextDocumentIdentifier(uri), types.FormattingOptions(2, True)))
    assert apply_edits(text, edits) == format_source(text)
    ranged = await client.text_document_range_formatting_async(types.DocumentRangeFormattingParams(
        types.TextDocumentIdentifier(uri), types.Range(types.Position(1, 0), types.Position(1, 5)),
        types.FormattingOptions(2, True)))
    assert apply_edits(text, ranged).split("\n")[:3] == ["network  T", "input x: 3x8x8", text.split("\n")[2]]


async def test_document_symbols_and_folding(client: LanguageClient):
    text = (EXAMPLES / "resnet18.adsl").read_text()
    uri = open_document(client, text, "resnet18.adsl")
    symbols = await client.text_document_document_symbol_async(types.DocumentSymbolParams(
        types.TextDocumentIdentifier(uri)))
    by_name = {s.name: s for s in symbols}
    assert by_name["data"].kind == types.SymbolKind.Variable
    assert [c.name for c in by_name["basic"].children] == ["conv1", "conv2", "out"]
    assert by_name["layer1"].kind == types.SymbolKind.Function
    folds = await client.text_document_folding_range_async(types.FoldingRangeParams(types.TextDocumentIdentifier(uri)))
    start, end = at(text, "block basic").line, at(text, "}").line
    assert any(f.start_line == start and f.end_line == end for f in folds)


async def test_semantic_tokens_tell_ops_blocks_layers_and_keywords_apart(client: LanguageClient):
    text = "input data: 3x8x8\nblock b(c) {\n  x: conv(c, 1)\n}\ny: b(4) | relu\n"
    uri = open_document(client, text)
    result = await client.text_document_semantic_tokens_full_async(types.SemanticTokensParams(
        types.TextDocumentIdentifier(uri)))
    legend = INITIALIZED["result"].capabilities.semantic_tokens_provider.legend.token_types
    decoded: dict[str, str] = {}
    line = column = 0
    data = result.data
    lines = text.split("\n")
    for i in range(0, len(data), 5):
        delta_line, delta_start, length, kind, _ = data[i: i + 5]
        line += delta_line
        column = column + delta_start if delta_line == 0 else delta_start
        decoded[f"{line}:{lines[line][column: column + length]}"] = legend[kind]
    assert decoded["0:input"] == "keyword"
    assert decoded["1:b"] == "class" and decoded["4:b"] == "class"
    assert decoded["2:conv"] == "function" and decoded["4:relu"] == "function"
    assert decoded["2:x"] == "variable" and decoded["0:data"] == "variable"
    assert decoded["1:c"] == "parameter" and decoded["2:c"] == "parameter"


# robustness ------------------------------------------------------------------------------------
async def send_raw(client: LanguageClient, message: dict) -> object:
    """Send a message the typed client API would refuse to build, and wait for its response."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    client.protocol._request_futures[message["id"]] = future
    client.protocol._send_data(message)
    return await asyncio.wait_for(asyncio.wrap_future(future), 10)


async def test_a_malformed_request_gets_an_error_and_the_server_goes_on(client: LanguageClient):
    with pytest.raises(JsonRpcException):
        await send_raw(client, {"jsonrpc": "2.0", "id": "bad-1", "method": "textDocument/hover",
                                "params": {"textDocument": 5}})
    with pytest.raises(JsonRpcException):
        await send_raw(client, {"jsonrpc": "2.0", "id": "bad-2", "method": "textDocument/inlayHint",
                                "params": {"textDocument": {"uri": "file:///nowhere.adsl"},
                                           "range": {"start": {"line": -4}}}})
    text = "input x: 3x8x8\nc: conv(2, 3)\n"
    uri = open_document(client, text)
    assert (await hints(client, uri, text))[1].startswith("2x6x6")


async def test_a_document_that_is_not_alexdsl(client: LanguageClient):
    uri = open_document(client, "# Title\nSome *markdown*.\n", "notes.md", "markdown")
    result = await client.text_document_hover_async(types.HoverParams(**doc(uri, types.Position(0, 2))))
    assert result is None and uri not in client.diagnostics
    binary = "\x00\x01\ufffd{{{ ((( \u00e9\u00e9 : | -> @ \n" * 3
    uri = open_document(client, binary)
    await hints(client, uri, binary)
    assert client.diagnostics[uri] and all(d.severity == types.DiagnosticSeverity.Error
                                           for d in client.diagnostics[uri])


async def test_the_server_survives_a_fuzzed_sequence_of_edits(client: LanguageClient):
    rng = random.Random(12)
    text = (EXAMPLES / "inception.adsl").read_text()
    uri = open_document(client, text, "inception.adsl")
    pieces = ["(", ")", "|", ":", ",", "->", "conv(", "relu", "@", "{", "}", "\n", "x", "3", "=", "block b(c) {"]
    version = 1
    for _ in range(80):
        version += 1
        start = rng.randrange(len(text) + 1)
        end = min(len(text), start + rng.randrange(4))
        before = types.Position(*divmod_position(text, start))
        after = types.Position(*divmod_position(text, end))
        new = rng.choice(pieces) if rng.random() < 0.8 else ""
        text = text[:start] + new + text[end:]
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(version=version, uri=uri),
            [types.TextDocumentContentChangePartial(types.Range(before, after), new)]))
        if rng.random() < 0.2:
            position = types.Position(*divmod_position(text, rng.randrange(len(text) + 1)))
            await client.text_document_hover_async(types.HoverParams(**doc(uri, position)))
            await client.text_document_completion_async(types.CompletionParams(**doc(uri, position)))
    await hints(client, uri, text)
    try:
        build_network(text, "/tmp/x.adsl")
        expected = 0
    except AlexDSLError as error:
        expected = len(error.diagnostics)
    errors = [d for d in client.diagnostics[uri] if d.severity == types.DiagnosticSeverity.Error]
    assert len(errors) == expected  # the diagnostics describe the final text, not a stale one


def divmod_position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset)
    return line, offset - (text.rfind("\n", 0, offset) + 1)
