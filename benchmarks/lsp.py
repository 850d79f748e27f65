"""Language-server latency, measured through the protocol against `alexdsl lsp` in a subprocess.

- diagnostics: a one-line edit of a 500-line file, until its ``publishDiagnostics`` arrives: with
  the server idle at the edit, and with each edit sent as soon as the last one's diagnostics came
  (the rest of that analysis, which the next edit cannot interrupt, is then still running);
- hover and completion on that file (its analysis done);
- inlay hints for a 10,000-layer file: from ``didOpen`` to the hints (the analysis included),
  and the request alone once the analysis is done.

The baseline, measured in this process, is the front end alone (``build_network``) on the
same text: the ratios say what the server adds to it. Prints a table, then one JSON line.

    python benchmarks/lsp.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from alexdsl.frontend import build_network


def generate(statements: int) -> str:
    """A valid network with ``statements`` layer lines, each a conv and a relu (shapes stay 8x16x16)."""
    lines = ["network Deep", "input data: 8x16x16"]
    lines += [f"c{i}: conv(8, 3, pad=1, stride=1) | relu" for i in range(statements)]
    return "\n".join(lines) + "\n"


class Client(LanguageClient):
    def __init__(self) -> None:
        super().__init__("alexdsl-benchmark", "1")
        self.published: dict[str, asyncio.Event] = {}

        @self.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def diagnostics(params: types.PublishDiagnosticsParams) -> None:
            self.published.setdefault(f"{params.uri}#{params.version}", asyncio.Event()).set()

    async def diagnostics_for(self, uri: str, version: int) -> None:
        await self.published.setdefault(f"{uri}#{version}", asyncio.Event()).wait()


def best_and_median(samples: list[float]) -> tuple[float, float]:
    return min(samples), statistics.median(samples)


def front_end_seconds(text: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        build_network(text, "/tmp/bench.adsl")
        best = min(best, time.perf_counter() - start)
    return best


async def measure(repeat: int) -> dict[str, float]:
    client = Client()
    await client.start_io(sys.executable, "-m", "alexdsl.cli", "lsp")
    await client.initialize_async(types.InitializeParams(capabilities=types.ClientCapabilities()))
    client.initialized(types.InitializedParams())
    results: dict[str, float] = {}

    # diagnostics after an edit of a 500-line file
    text = generate(498)
    uri = "file:///tmp/bench500.adsl"
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "alexdsl", 1, text)))
    await client.diagnostics_for(uri, 1)
    position = types.TextDocumentPositionParams(types.TextDocumentIdentifier(uri), types.Position(250, 2))
    version = 1
    for mode in ("idle", "back_to_back"):
        samples = []
        for _ in range(repeat):
            version += 1
            line = 2 + version * 37 % 498
            edit = types.TextDocumentContentChangePartial(
                types.Range(types.Position(line, 8), types.Position(line, 9)), str(version % 2 + 8))
            start = time.perf_counter()
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(version=version, uri=uri), [edit]))
            await client.diagnostics_for(uri, version)
            samples.append(time.perf_counter() - start)
            if mode == "idle":  # a request waits for the rest of the analysis: the next edit finds the server idle
                await client.text_document_hover_async(types.HoverParams(position.text_document, position.position))
        results[f"diagnostics_500_{mode}_best_s"], results[f"diagnostics_500_{mode}_median_s"] = \
            best_and_median(samples)
    results["front_end_500_s"] = front_end_seconds(text, repeat)

    for name, request in (("hover", client.text_document_hover_async),
                          ("completion", client.text_document_completion_async)):
        samples = []
        for _ in range(repeat * 2):
            params = (types.HoverParams if name == "hover" else types.CompletionParams)(
                position.text_document, position.position)
            start = time.perf_counter()
            answer = await request(params)
            samples.append(time.perf_counter() - start)
            assert answer, f"{name} gave nothing"  # timing an empty answer would flatter the server
        results[f"{name}_best_s"], results[f"{name}_median_s"] = best_and_median(samples)

    # inlay hints for 10,000 layers
    big = generate(5_000)
    uri = "file:///tmp/bench10k.adsl"
    whole = types.Range(types.Position(0, 0), types.Position(5_002, 0))
    hint_params = types.InlayHintParams(types.TextDocumentIdentifier(uri), whole)
    start = time.perf_counter()
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "alexdsl", 1, big)))
    hints = await client.text_document_inlay_hint_async(hint_params)
    results["hints_10k_from_open_s"] = time.perf_counter() - start
    assert hints is not None and len(hints) == 5_000
    samples = []
    for _ in range(3):
        start = time.perf_counter()
        await client.text_document_inlay_hint_async(hint_params)
        samples.append(time.perf_counter() - start)
    results["hints_10k_request_s"] = min(samples)
    results["front_end_10k_s"] = front_end_seconds(big, 1)

    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    results = asyncio.run(measure(args.repeat))
    results["diagnostics_over_front_end"] = results["diagnostics_500_idle_median_s"] / results["front_end_500_s"]
    results["hints_10k_over_front_end"] = results["hints_10k_from_open_s"] / results["front_end_10k_s"]
    rows = [
        ("diagnostics after an edit, 500 lines", "diagnostics_500_idle", "target 0.100 s"),
        ("the same, edits back to back", "diagnostics_500_back_to_back", "target 0.100 s"),
        ("hover, 500 lines", "hover", "target 0.050 s"),
        ("completion, 500 lines", "completion", "target 0.050 s"),
    ]
    for label, key, target in rows:
        print(f"{label:<40} best {results[key + '_best_s']:.4f} s  median {results[key + '_median_s']:.4f} s  "
              f"({target})")
    print(f"{'front end alone, 500 lines':<40} best {results['front_end_500_s']:.4f} s")
    print(f"{'inlay hints, 10,000 layers, from open':<40} {results['hints_10k_from_open_s']:.3f} s (target 1 s)")
    print(f"{'inlay hints, 10,000 layers, request':<40} {results['hints_10k_request_s']:.3f} s")
    print(f"{'front end alone, 10,000 layers':<40} {results['front_end_10k_s']:.3f} s")
    print(json.dumps({k: round(v, 4) for k, v in results.items()}))


if __name__ == "__main__":
    main()
