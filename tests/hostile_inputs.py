"""Generators of hostile files for the fuzz tests and benchmarks/fuzz.py (issue 22).

Each generator writes small files that declare far more than they hold: weights with lying
headers, compression bombs, expanded tensors, unreadable dtypes, images that declare 20000 x
20000 pixels. They are built byte by byte (no 3 GiB buffer is ever made here), so a test can
run each input in a child process limited to 2 GB (:func:`run_capped`) and fail if alexdsl
allocates what the file declares instead of refusing it.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import resource
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
LENET = TESTS.parent / "examples" / "lenet.adsl"
MEMORY_CAP = 2 * 1024**3  # bytes of address space a child may use
GIB = 1024**3


# files built by hand -------------------------------------------------------------------------------
def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """An .npy version 1.0 header declaring ``shape`` of ``descr``."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def zip_of(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip of (name, data as stored, method, crc32, declared uncompressed size), sizes taken as given."""
    body, directory = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, size in members:
        offset = body.tell()
        encoded = name.encode()
        common = struct.pack("<HHHHHIII", 20, 0, method, 0, 0x21, crc, len(data), size)
        body.write(b"PK\x03\x04" + common + struct.pack("<HH", len(encoded), 0) + encoded + data)
        directory.write(b"PK\x01\x02" + struct.pack("<H", 20) + common
                        + struct.pack("<HHHHHII", len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    start, count = body.tell(), len(members)
    return (body.getvalue() + directory.getvalue()
            + b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, count, count, len(directory.getvalue()), start, 0))


def deflated_zeros(prefix: bytes, size: int, chunk: int = 1 << 20) -> tuple[bytes, int]:
    """A raw deflate stream of ``prefix`` then ``size`` zero bytes (made from one compressed chunk
    repeated, so it costs a few MB, not ``size``), and the CRC-32 of the whole."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    piece = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(size, chunk)
    tail = compressor.compress(bytes(rest)) + compressor.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    zeros = bytes(chunk)
    for _ in range(count):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(rest), crc)
    return head + piece * count + tail, crc


def npz_lying_header(declared: int = 30 * 10**9) -> bytes:
    """A stored .npy member whose header declares ``declared`` bytes of float32, holding 16."""
    data = npy_header((declared // 4,)) + bytes(16)
    return zip_of([("conv1.weight.npy", data, 0, zlib.crc32(data), len(data))])


def npz_lying_directory(declared: int = 30 * 10**9) -> bytes:
    """As above, but the zip's sizes lie too: the member says it holds all ``declared`` bytes."""
    header = npy_header((declared // 4,))
    data = header + bytes(16)
    return zip_of([("conv1.weight.npy", data, 0, zlib.crc32(data), min(len(header) + declared, 2**32 - 1))])


@functools.lru_cache(maxsize=4)
def npz_deflate_bomb(size: int = 3 * GIB, key: str = "conv1.weight") -> bytes:
    """An honest savez_compressed-like member: ``size`` bytes of float32 zeros deflated to ~``size``/1000."""
    header = npy_header((size // 4,))
    stream, crc = deflated_zeros(header, size)
    return zip_of([(f"{key}.npy", stream, 8, crc, len(header) + size)])


def safetensors_file(entries: dict[str, dict[str, Any]], data: bytes = b"") -> bytes:
    header = json.dumps(entries).encode()
    return struct.pack("<Q", len(header)) + header + data


def torch_expanded(dtype: str, elements: int = 2_500_000_000, key: str = "conv1.weight") -> bytes:
    """A state_dict holding one value expanded to ``elements`` (1.7 KB on disk, 10 GB as float32)."""
    import torch

    buffer = io.BytesIO()
    torch.save({key: torch.zeros(1, dtype=getattr(torch, dtype)).expand(elements)}, buffer)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A valid 68-byte-ish PNG header whose IHDR declares ``width`` x ``height`` (the data is one byte)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


def weights_files(rng: random.Random) -> Iterator[tuple[str, str, bytes]]:
    """(label, file name, bytes) of hostile weights files for LeNet; each must be refused."""
    yield "npz header declaring 30 GB", "huge_declared.npz", npz_lying_header()
    yield "npz whose zip sizes lie too", "lying_zip.npz", npz_lying_directory()
    yield "npz deflate bomb 3 GiB", "bomb.npz", npz_deflate_bomb()
    yield "npz deflate bomb of a key the network has not", "bomb_other.npz", npz_deflate_bomb(3 * GIB, "intruder")
    yield "pt expanded float64", "expanded64.pt", torch_expanded("float64")
    yield "pt expanded bfloat16", "expanded_bf16.pt", torch_expanded("bfloat16")
    yield "pt expanded float32", "expanded32.pt", torch_expanded("float32")
    yield "safetensors F8_E4M3", "f8.safetensors", safetensors_file(
        {"conv1.weight": {"dtype": "F8_E4M3", "shape": [20, 1, 5, 5], "data_offsets": [0, 500]}}, bytes(500))
    yield "safetensors offsets past the end", "offsets.safetensors", safetensors_file(
        {"conv1.weight": {"dtype": "F32", "shape": [750_000_000, 10], "data_offsets": [0, 30 * 10**9]}})
    yield "safetensors header length 2**63", "length.safetensors", struct.pack("<Q", 2**63) + b"{}"
    yield "safetensors nested header", "nested.safetensors", struct.pack("<Q", 100_000) + b"[" * 100_000
    declared = rng.choice([2**31, 2**33, 10**10, 30 * 10**9])
    yield f"npz header declaring {declared} bytes", "random_declared.npz", npz_lying_header(declared)


def bomb_pngs() -> Iterator[tuple[str, bytes]]:
    yield "png 20000x20000", png_declaring(20000, 20000)
    yield "png 65535x65535", png_declaring(65535, 65535)
    yield "png 1x400000000", png_declaring(1, 400_000_000)


# running one input under a memory cap ----------------------------------------------------------------
def run_capped(code: str, timeout: float, memory: int = MEMORY_CAP) -> dict[str, Any]:
    """Run ``code`` (Python, with this folder importable) in a child limited to ``memory`` bytes of
    address space and ``timeout`` seconds. The code prints one JSON line as its last output;
    returns it, or {"outcome": "crash"/"timeout", "detail": ...} if the child died or hung."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              preexec_fn=cap, env=env, cwd=TESTS.parent)
    except subprocess.TimeoutExpired:
        return {"outcome": "timeout", "detail": f"more than {timeout} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"outcome": "crash", "detail": f"exit {done.returncode}: {done.stderr[-2000:]}"}
    return json.loads(lines[-1])


CHILD = '''
import json, sys, warnings
warnings.simplefilter("ignore")
from alexdsl.errors import AlexDSLError
try:
{body}
    result = {{"outcome": "accepted"}}
except AlexDSLError as error:
    text = str(error)
    result = {{"outcome": "refused", "detail": text, "traceback": "Traceback" in text}}
except BaseException as error:
    import traceback
    result = {{"outcome": "crash", "detail": traceback.format_exc()[-3000:]}}
print(json.dumps(result))
'''


def child(body: str) -> str:
    """The child program running ``body`` (indented statements) and printing its outcome."""
    return CHILD.format(body="\n".join("    " + line for line in body.strip().splitlines()))


def weights_check(path: Path, how: str = "executor") -> str:
    """A child that loads ``path`` for LeNet through the executor, torch or the CLI's reader."""
    body = {
        "executor": f"import alexdsl\nfrom alexdsl.backends import cupy\n"
                    f"cupy.compile(alexdsl.load({str(LENET)!r}), {str(path)!r}, device='cpu')",
        "torch": f"import alexdsl, alexdsl.torch\nm = alexdsl.torch.build(alexdsl.load({str(LENET)!r}))\n"
                 f"alexdsl.torch.load_weights(m, {str(path)!r})",
        "network": f"import alexdsl\nfrom alexdsl.weights import load_for_network\n"
                   f"load_for_network({str(path)!r}, alexdsl.load({str(LENET)!r}))",
    }[how]
    return child(body)


def cli_check(args: list[str]) -> str:
    """A child that runs the CLI with ``args`` and reports a clean error (exit 1) as refused."""
    return child(f"from alexdsl.cli import main\nimport contextlib, io\nout = io.StringIO()\n"
                 f"code = 0\n"
                 f"with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):\n"
                 f"    try:\n        main({args!r})\n"
                 f"    except SystemExit as stop:\n        code = stop.code\n"
                 f"text = out.getvalue()\n"
                 f"if code:\n    raise AlexDSLError(text)")


Generator = Callable[[random.Random], Iterator[tuple[str, str, bytes]]]


# the language server over stdio, spoken by hand ----------------------------------------------------------
class LspPipe:
    """``alexdsl lsp`` in a child (address space capped), with raw bytes in and parsed messages out."""

    def __init__(self, env: dict[str, str] | None = None, memory: int = MEMORY_CAP) -> None:
        import queue
        import threading

        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

        self.process = subprocess.Popen(
            [sys.executable, "-m", "alexdsl.cli", "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, preexec_fn=cap, cwd=TESTS.parent,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **(env or {})})
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.next_id = 0
        self.seen: list[dict[str, Any]] = []  # messages read while waiting for another

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line in (b"\r\n", b"\n") and length is not None:
                    break
            self.messages.put(json.loads(stream.read(length)))

    def write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, method: str, params: Any, request: bool = False) -> int | None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        body = json.dumps(message).encode()
        self.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return message.get("id")

    def wait(self, test: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first message passing ``test`` (others are kept for later waits); AssertionError after ``timeout`` s."""
        import queue
        import time

        for i, message in enumerate(self.seen):
            if test(message):
                return self.seen.pop(i)
        end = time.monotonic() + timeout
        while True:
            try:
                message = self.messages.get(timeout=min(1.0, max(0.01, end - time.monotonic())))
            except queue.Empty:
                if self.process.poll() is None and time.monotonic() < end:
                    continue
                raise AssertionError(f"no answer in {timeout} s; server stderr: {self.stderr_tail()}") from None
            if test(message):
                return message
            self.seen.append(message)
            if time.monotonic() > end:
                raise AssertionError(f"no answer in {timeout} s; server stderr: {self.stderr_tail()}")

    def response(self, request: int, timeout: float) -> dict[str, Any]:
        return self.wait(lambda m: m.get("id") == request and "method" not in m, timeout)

    def initialize(self, timeout: float) -> None:
        request = self.send("initialize", {"processId": None, "rootUri": None, "capabilities": {}}, request=True)
        assert request is not None
        self.response(request, timeout)
        self.send("initialized", {})

    def stderr_tail(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")[-3000:]

    def close(self, timeout: float) -> tuple[int, str]:
        """Close stdin (the client is gone); the exit status and the end of stderr."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -9, "did not exit"
        return self.process.returncode, self.stderr_tail()


def edit_storm(rng: random.Random, text: str, count: int) -> Iterator[tuple[dict[str, Any], str]]:
    """``count`` incremental edits (LSP didChange content changes) of ``text``: each with the text after it."""
    for _ in range(count):
        lines = text.split("\n")
        line = rng.randrange(len(lines))
        column = rng.randint(0, len(lines[line]))
        end = min(len(lines[line]), column + rng.randint(0, 5))
        # no astral characters: LSP columns count UTF-16 units, these count code points
        inserted = rng.choice(["", "x", "(", ")", "relu", " | ", "\n", "conv(8, 3)", "repeat 3 ", "é", "#"])
        change = {"range": {"start": {"line": line, "character": column}, "end": {"line": line, "character": end}},
                  "text": inserted}
        lines[line] = lines[line][:column] + inserted + lines[line][end:]
        text = "\n".join(lines)
        yield change, text
