"""The pygls server: document sync, scheduling, and the wiring of :mod:`alexdsl.lsp.features`.

Each edit starts an analysis on one worker thread (the Lark parser is shared and not
re-entrant), so the event loop stays free for requests. A newer edit cancels the older
analysis: a queued one never runs, a running one is discarded. Requests wait for the
analysis of the latest text, then answer from it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.uris import to_fs_path

import alexdsl
from alexdsl.errors import Diagnostic
from alexdsl.frontend import gc_paused
from alexdsl.limits import max_lsp_message_bytes
from alexdsl.lsp import features
from alexdsl.lsp.analysis import Analysis, FrontEnd, analyze, front_end, quick_analysis
from alexdsl.lsp.features import Positions
from alexdsl.lsp.symbols import SymbolIndex

LANGUAGE_ID = "alexdsl"
EXTENSION = ".adsl"
log = logging.getLogger(__name__)


class RequestFailed(JsonRpcException):
    """LSP's RequestFailed: a valid request that cannot be carried out (a refused rename)."""

    CODE = -32803
    MESSAGE = "Request failed"


@dataclass
class Checked:
    """An analysis with its symbol index (None where the text could not be parsed)."""

    analysis: Analysis
    index: SymbolIndex | None
    positions: features.Positions


@dataclass
class DocumentState:
    latest: Checked | None = None
    task: asyncio.Future[Checked] | None = None  # the full analysis of the latest text
    quick: asyncio.Future[Checked | None] | None = None  # its hints from the network alone (None: wait for the task)
    focus: str | None = None  # the block instance whose shapes the block bodies show (the cursor's)


def _internal_error(error: Exception) -> list[Diagnostic]:
    log.exception("analysis failed")
    return [Diagnostic("error", f"internal error in alexdsl: {error!r}")]


def run_front_end(text: str, file: str) -> FrontEnd:
    """The diagnostics of ``text``: never raises (an internal failure becomes a diagnostic)."""
    with gc_paused():
        try:
            return front_end(text, file)
        except Exception as error:  # noqa: BLE001 - a bug must not take the server down with the document
            return _internal_error(error), None


def run_quick(text: str, file: str, checked: FrontEnd) -> Analysis | None:
    """:func:`quick_analysis`, or None if it fails (the full analysis then answers)."""
    try:
        return quick_analysis(text, file, checked)
    except Exception:  # noqa: BLE001 - as above
        log.exception("quick analysis failed")
        return None


def check(text: str, file: str, previous: Analysis | None, checked: FrontEnd) -> Checked:
    """The rest of the analysis (recovery, syntax tree, hints, names); never raises."""
    with gc_paused():
        try:
            analysis = analyze(text, file, previous, checked)
            return Checked(analysis, SymbolIndex(analysis.module) if analysis.module else None, Positions(text))
        except Exception as error:  # noqa: BLE001 - as above
            analysis = Analysis(text, file, checked[0] or _internal_error(error), None, text, None)
            if previous is not None:
                analysis.line_hints, analysis.stale_lines = previous.line_hints, frozenset(previous.line_hints)
            return Checked(analysis, None, Positions(text))


class _Protocol(LanguageServerProtocol):
    """Answers a request whose parameters do not fit the protocol with an error (pygls only logs it)."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            if "id" in data and "method" in data:
                self._send_response(data["id"], None, JsonRpcInvalidParams(str(error) or None).to_response_error())
            raise


class AlexDSLServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("alexdsl", alexdsl.__version__, protocol_cls=_Protocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alexdsl-analysis")
        self.documents: dict[str, DocumentState] = {}
        self.hint_settings = features.HintSettings()

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Log errors that have no request to answer, instead of popping up a message."""
        log.error("alexdsl lsp: %s: %s", getattr(source, "__name__", source), error)

    # scheduling ------------------------------------------------------------------------------
    def schedule(self, uri: str) -> None:
        document = self.workspace.get_text_document(uri)
        state = self.documents.setdefault(uri, DocumentState())
        for stale in (state.task, state.quick):
            if stale is not None and not stale.done():
                stale.cancel()
        state.quick = asyncio.get_running_loop().create_future()
        state.task = asyncio.ensure_future(self._run(uri, document.source, document.version, state, state.quick))

    async def _run(self, uri: str, text: str, version: int | None, state: DocumentState,
                   quick: asyncio.Future[Checked | None]) -> Checked:
        previous = state.latest.analysis if state.latest else None
        file = to_fs_path(uri) or uri
        document = self.workspace.get_text_document(uri)
        positions = Positions(text, document.position_codec.client_num_units)
        loop = asyncio.get_running_loop()
        try:
            checked = await loop.run_in_executor(self.worker, run_front_end, text, file)
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
                uri, features.diagnostics(checked[0], file, positions), version))
            early = await loop.run_in_executor(self.worker, run_quick, text, file, checked)
        except asyncio.CancelledError:
            quick.cancel()
            raise
        quick.set_result(Checked(early, None, positions) if early is not None else None)
        result = await loop.run_in_executor(self.worker, check, text, file, previous, checked)
        result.positions = positions
        state.latest = result
        if early is not None and early.line_hints != result.analysis.line_hints:
            self.refresh_inlay_hints()
        return result

    def refresh_inlay_hints(self) -> None:
        """Ask the client to ask again for the hints, where it can."""
        if get_capability(self.client_capabilities, "workspace.inlay_hint.refresh_support", False):
            self.workspace_inlay_hint_refresh(None)

    async def current(self, uri: str, quick: bool = False) -> Checked | None:
        """The analysis of the document's latest text (waiting for it if it is running); ``quick``:
        its :func:`quick_analysis` while the full one is still running."""
        state = self.documents.get(uri)
        if state is None:
            return None
        if quick and not (state.task is not None and state.task.done()):
            early = await self._latest(state, "quick")
            if early is not None:
                return early
        full = await self._latest(state, "task")
        return full if full is not None else state.latest

    @staticmethod
    async def _latest(state: DocumentState, which: str) -> Any:
        """Await ``state.<which>``; when a newer edit replaces it meanwhile, await the newer one."""
        while True:
            future = getattr(state, which)
            if future is None:
                return None
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise  # this request was cancelled, not the analysis

    def close(self, uri: str) -> None:
        state = self.documents.pop(uri, None)
        for future in (state.task, state.quick) if state is not None else ():
            if future is not None:
                future.cancel()
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri, []))


def is_alexdsl(uri: str, language_id: str | None = None) -> bool:
    return language_id == LANGUAGE_ID or uri.endswith(EXTENSION)


def _settings(value: Any) -> features.HintSettings:
    if isinstance(value, dict) and isinstance(value.get("alexdsl"), dict):
        value = value["alexdsl"]
    return features.HintSettings.from_settings(value)


def create_server() -> AlexDSLServer:
    server = AlexDSLServer()

    @server.feature(types.INITIALIZE)
    def initialize(ls: AlexDSLServer, params: types.InitializeParams) -> None:
        ls.hint_settings = _settings(params.initialization_options)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: AlexDSLServer, params: types.DidChangeConfigurationParams) -> None:
        ls.hint_settings = _settings(params.settings)

    @server.feature(DROPPED)
    def dropped(ls: AlexDSLServer, params: Any) -> None:
        """A message over the size limit was thrown away (:class:`CappedInput`): say so, and fail
        its request if it had an id."""
        size, limit, request = getattr(params, "bytes", 0), getattr(params, "limit", 0), getattr(params, "id", None)
        message = (f"alexdsl: ignored a message of {size:,} bytes, over the limit of {limit:,} "
                   "(set ALEXDSL_MAX_LSP_MESSAGE_BYTES to allow larger ones)")
        log.warning("%s", message)
        if request is not None:
            ls.protocol._send_response(request, None, JsonRpcInvalidRequest(message).to_response_error())
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Warning, message))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: AlexDSLServer, params: types.DidOpenTextDocumentParams) -> None:
        if is_alexdsl(params.text_document.uri, params.text_document.language_id):
            ls.schedule(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: AlexDSLServer, params: types.DidChangeTextDocumentParams) -> None:
        if params.text_document.uri in ls.documents:
            ls.schedule(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: AlexDSLServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.close(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLAY_HINT)
    async def inlay_hint(ls: AlexDSLServer, params: types.InlayHintParams) -> list[types.InlayHint] | None:
        checked = await ls.current(params.text_document.uri, quick=True)
        if checked is None:
            return None
        state = ls.documents.get(params.text_document.uri)
        return features.inlay_hints(checked.analysis, checked.positions, params.range.start.line,
                                    params.range.end.line, ls.hint_settings, state.focus if state else None)

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_HIGHLIGHT)
    async def document_highlight(ls: AlexDSLServer, params: types.DocumentHighlightParams
                                 ) -> list[types.DocumentHighlight] | None:
        """Editors ask for highlights as the cursor moves: on a block use, its instance becomes the
        one whose shapes the block's body shows."""
        checked = await ls.current(params.text_document.uri)
        state = ls.documents.get(params.text_document.uri)
        if checked is None or state is None:
            return None
        line, column = checked.positions.point(params.position)
        focus = features.instance_at(checked.index, line)
        if focus is not None and focus != state.focus:
            state.focus = focus
            ls.refresh_inlay_hints()
        return features.highlights(checked.index, checked.positions, line, column)

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: AlexDSLServer, params: types.HoverParams) -> types.Hover | None:
        checked = await ls.current(params.text_document.uri)
        if checked is None:
            return None
        return features.hover(checked.analysis, checked.index, checked.positions,
                              *checked.positions.point(params.position))

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    async def definition(ls: AlexDSLServer, params: types.DefinitionParams) -> list[types.Location] | None:
        checked = await ls.current(params.text_document.uri)
        if checked is None:
            return None
        return features.definition(checked.index, checked.positions, params.text_document.uri,
                                   *checked.positions.point(params.position))

    @server.feature(types.TEXT_DOCUMENT_REFERENCES)
    async def references(ls: AlexDSLServer, params: types.ReferenceParams) -> list[types.Location] | None:
        checked = await ls.current(params.text_document.uri)
        if checked is None:
            return None
        line, column = checked.positions.point(params.position)
        return features.references(checked.index, checked.positions, params.text_document.uri, line, column,
                                   params.context.include_declaration)

    @server.feature(types.TEXT_DOCUMENT_PREPARE_RENAME)
    async def prepare_rename(ls: AlexDSLServer, params: types.PrepareRenameParams) -> types.Range | None:
        checked = await ls.current(params.text_document.uri)
        if checked is None:
            return None
        try:
            _, span = features.prepare_rename(checked.index, *checked.positions.point(params.position))
        except features.RenameRefused as refused:
            raise RequestFailed(str(refused)) from None
        return checked.positions.range(span)

    @server.feature(types.TEXT_DOCUMENT_RENAME, types.RenameOptions(prepare_provider=True))
    async def rename(ls: AlexDSLServer, params: types.RenameParams) -> types.WorkspaceEdit | None:
        checked = await ls.current(params.text_document.uri)
        if checked is None:
            return None
        try:
            edits = features.rename(checked.index, checked.positions, *checked.positions.point(params.position),
                                    params.new_name)
        except features.RenameRefused as refused:
            raise RequestFailed(str(refused)) from None
        return types.WorkspaceEdit(changes={params.text_document.uri: edits})

    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=["(", ",", "|", "=", "@", ":", " "]))
    async def completion(ls: AlexDSLServer, params: types.CompletionParams) -> list[types.CompletionItem] | None:
        checked = await ls.current(params.text_document.uri)
        if checked is None:
            return None
        return features.completion(checked.analysis, checked.index, *checked.positions.point(params.position))

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    async def formatting(ls: AlexDSLServer, params: types.DocumentFormattingParams) -> list[types.TextEdit] | None:
        checked = await ls.current(params.text_document.uri)
        if checked is None:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(ls.worker, features.formatting, checked.analysis, checked.positions)

    @server.feature(types.TEXT_DOCUMENT_RANGE_FORMATTING)
    async def range_formatting(ls: AlexDSLServer, params: types.DocumentRangeFormattingParams
                               ) -> list[types.TextEdit] | None:
        checked = await ls.current(params.text_document.uri)
        if checked is None:
            return None
        lines = (params.range.start.line, params.range.end.line)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(ls.worker, features.formatting, checked.analysis, checked.positions, lines)

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    async def document_symbol(ls: AlexDSLServer, params: types.DocumentSymbolParams
                              ) -> list[types.DocumentSymbol] | None:
        checked = await ls.current(params.text_document.uri)
        return features.document_symbols(checked.index, checked.positions) if checked else None

    @server.feature(types.TEXT_DOCUMENT_FOLDING_RANGE)
    async def folding_range(ls: AlexDSLServer, params: types.FoldingRangeParams) -> list[types.FoldingRange] | None:
        checked = await ls.current(params.text_document.uri)
        return features.folding_ranges(checked.index) if checked else None

    @server.feature(types.TEXT_DOCUMENT_SEMANTIC_TOKENS_FULL,
                    types.SemanticTokensLegend(token_types=features.TOKEN_TYPES,
                                               token_modifiers=features.TOKEN_MODIFIERS))
    async def semantic_tokens(ls: AlexDSLServer, params: types.SemanticTokensParams) -> types.SemanticTokens | None:
        checked = await ls.current(params.text_document.uri)
        return types.SemanticTokens(features.semantic_tokens(checked.index, checked.positions)) if checked else None

    return server


class CappedInput:
    """Standard input for pygls's reader, with every message bounded by ``limit`` bytes.

    pygls reads a body with ``read(Content-Length)``, which would allocate whatever a header
    claims (``Content-Length: 99999999999``: a MemoryError that ends the server). Here a body
    over the limit is read in chunks and thrown away, and pygls receives a
    :data:`DROPPED` notification in its place (the server warns the user and answers the
    request with an error if its id was seen); header lines are bounded too.
    """

    HEADER_LINE = 4096  # bytes of one header line
    PEEK = 4096  # bytes of a dropped body searched for its request id

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self.stream, self.limit = stream, limit
        self.declared: int | None = None  # the Content-Length of the message being read

    def readline(self) -> bytes:
        line = self.stream.readline(self.HEADER_LINE)
        if not line.strip() and not self.declared:  # headers without a length: pygls reads no body
            self.declared = None
        match = CONTENT_LENGTH.fullmatch(line)
        if match and self.declared is None:
            digits = match.group(1)
            self.declared = int(digits) if len(digits) <= 30 else 10**30
            if self.declared > self.limit:  # pygls parses the line again: give it a number it can hold
                return b"Content-Length: %d\r\n" % (self.limit + 1)
        return line

    def read(self, count: int) -> bytes:
        declared, self.declared = self.declared, None
        if count <= self.limit or declared is None:
            return self.stream.read(count)
        head, left = b"", declared
        while left > 0:
            chunk = self.stream.read(min(left, 1 << 16))
            if not chunk:
                return b""  # the client is gone: pygls ends the loop
            head, left = head or chunk[:self.PEEK], left - len(chunk)
        found = REQUEST_ID.search(head.split(b'"params"', 1)[0])
        request = json.loads(found.group(1)) if found else None
        return json.dumps({"jsonrpc": "2.0", "method": DROPPED,
                           "params": {"bytes": declared, "limit": self.limit, "id": request}}).encode()


CONTENT_LENGTH = re.compile(rb"^Content-Length: (\d+)\r\n$")  # pygls's own pattern
REQUEST_ID = re.compile(rb'"id"\s*:\s*(-?\d{1,18}|"[^"\\]{0,256}")')
DROPPED = "alexdsl/droppedMessage"


def serve(limit: int | None = None) -> None:
    """Speak LSP on stdin/stdout until the client says exit; messages over ``limit`` bytes
    (:func:`alexdsl.limits.max_lsp_message_bytes`) are dropped with a warning."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    create_server().start_io(stdin=CappedInput(sys.stdin.buffer, max_lsp_message_bytes(limit)))  # type: ignore[arg-type]
