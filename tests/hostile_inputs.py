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
import time
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
        "executor": f"import alexdsl\nfrom alexdsl.backends import executor\n"
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
        self.errors = bytearray()  # the end of the server's stderr, drained so that its logging never blocks it
        threading.Thread(target=self._read, daemon=True).start()
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()
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

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.errors += line
            del self.errors[:-20_000]

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
        """The end of the server's stderr (all of it once the server has exited)."""
        if self.process.poll() is not None:
            self.drain.join(5)  # until it has read the last lines
        return self.errors.decode(errors="replace")[-3000:] + ("" if self.process.poll() is not None
                                                               else "\n(still running)")

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


# endless seeded streams, for benchmarks/fuzz.py ------------------------------------------------------------
def _genuine_weights(suffix: str, rng: random.Random) -> bytes:
    """LeNet's weights in one format, in a float dtype drawn from ``rng``."""
    import numpy as np

    import alexdsl

    shapes = alexdsl.load(LENET).state_keys()
    generator = np.random.default_rng(rng.randrange(2**32))
    dtype = rng.choice(["float32", "float16", "float64"])
    arrays = {k: generator.standard_normal(shape).astype(dtype) for k, shape in shapes.items()}
    if suffix == ".npz":
        buffer = io.BytesIO()
        (np.savez_compressed if rng.random() < 0.5 else np.savez)(buffer, **arrays)
        return buffer.getvalue()
    if suffix == ".safetensors":
        from safetensors.numpy import save
        return save(arrays)
    import torch

    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, buffer)
    return buffer.getvalue()


def _damaged(rng: random.Random, data: bytes) -> bytes:
    """``data`` truncated, bit-flipped, with a run of bytes overwritten or a length field blown up."""
    data = bytearray(data)
    how = rng.randrange(4)
    if how == 0:
        return bytes(data[: rng.randrange(len(data))])
    if how == 1:
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    start = rng.randrange(len(data))
    if how == 2:
        data[start:start + 8] = rng.choice([b"\xff" * 8, bytes(8), struct.pack("<Q", rng.getrandbits(64))])
        return bytes(data)
    field = rng.randrange(max(1, len(data) - 4))  # a 4-byte little-endian number (zip sizes, header lengths)
    data[field:field + 4] = struct.pack("<I", rng.choice([0xFFFFFFFF, 0x7FFFFFFF, rng.getrandbits(32)]))
    return bytes(data)


def weights_inputs(seed: int) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes): the hostile files of :func:`weights_files` with random sizes, and genuine
    LeNet files in every format, damaged."""
    rng = random.Random(seed)
    genuine = {suffix: _genuine_weights(suffix, rng) for suffix in (".npz", ".safetensors", ".pt")}
    while True:
        if rng.random() < 0.3:
            label, name, data = rng.choice(list(weights_files(rng)))
        else:
            suffix = rng.choice(list(genuine))
            name, data = f"damaged{suffix}", _damaged(rng, genuine[suffix])
        yield name, data


def image_inputs(seed: int) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes): PNG headers declaring random sizes, and small genuine images damaged."""
    from PIL import Image

    rng = random.Random(seed)
    while True:
        if rng.random() < 0.4:
            yield "declared.png", png_declaring(rng.choice([1, rng.randint(1, 70000)]), rng.randint(1, 70000))
            continue
        image = Image.new(rng.choice(["L", "RGB", "RGBA", "P", "I;16"]), (rng.randint(1, 64), rng.randint(1, 64)))
        buffer = io.BytesIO()
        fmt = rng.choice(["PNG", "JPEG", "BMP", "PPM", "TIFF", "WEBP", "GIF"])
        try:
            image.save(buffer, fmt)
        except (OSError, ValueError, KeyError):
            image.convert("RGB").save(buffer, fmt)
        yield f"image.{fmt.lower()}", _damaged(rng, buffer.getvalue()) if rng.random() < 0.8 else buffer.getvalue()


HOSTILE_VALUES: list[Any] = [10**400, -(10**400), 2**64, -1, float("nan"), float("inf"), 1e308, "x", None, [], {},
                             True, [0] * 3, {"a": 1}]


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every leaf of a checkpoint (dicts, and lists of dicts or lists, are walked)."""
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in leaves(item, (*path, key))]
    if isinstance(value, list) and value and all(isinstance(item, (dict, list)) for item in value):
        return [leaf for i, item in enumerate(value) for leaf in leaves(item, (*path, i))]
    return [path] if path else []


def tamper(state: dict[str, Any], rng: random.Random) -> str:
    """Replace one or a few leaves of ``state`` (in place) by hostile values; the fields changed."""
    import torch

    changed = []
    paths = [p for p in leaves(state) if p[0] not in ("sampler", "network")]
    for path in rng.sample(paths, rng.choice([1, 1, 1, 2, 3])):
        holder = state
        for key in path[:-1]:
            holder = holder[key]
        old = holder[path[-1]]
        if isinstance(old, torch.Tensor):
            new = rng.choice([old.double() * 1e300, old.reshape(-1)[:1], old.to(torch.int8) + 100, torch.zeros(3, 3),
                              7, old * float("nan"), old.unsqueeze(0).expand(2, *old.shape)])
        else:
            new = rng.choice([v for v in HOSTILE_VALUES if v != old and type(v) is not type(old)])
        holder[path[-1]] = new
        changed.append("/".join(map(str, path)))
    return ", ".join(changed)


def lsp_session(rng: random.Random, limit: int) -> Iterator[bytes]:
    """Raw bytes a hostile client sends after ``initialize``: oversized bodies, lying lengths, garbage
    headers, huge documents, edit storms and random requests (the server must answer a shutdown after)."""
    uri = "file:///tmp/fuzz.adsl"

    def message(payload: dict[str, Any]) -> bytes:
        body = json.dumps(payload).encode()
        return b"Content-Length: %d\r\n\r\n" % len(body) + body

    text = LENET.read_text()
    yield message({"jsonrpc": "2.0", "method": "textDocument/didOpen",
                   "params": {"textDocument": {"uri": uri, "languageId": "alexdsl", "version": 1, "text": text}}})
    version = 1
    for _ in range(rng.randint(5, 40)):
        kind = rng.randrange(7)
        if kind == 0:  # over the limit, request or notification
            request = {"id": rng.randint(1000, 10**6)} if rng.random() < 0.5 else {}
            yield message({"jsonrpc": "2.0", **request, "method": "textDocument/hover",
                           "params": {"padding": "p" * rng.randint(limit + 1, 2 * limit)}})
        elif kind == 1:  # a header line of up to a megabyte, or an unmatched header
            yield rng.choice([b"X" * rng.randint(1, 1 << 20) + b"\r\n", b"Content-Type: x\r\n\r\n",
                              b"Content-Length: 0\r\n\r\n"])
        elif kind == 2:  # a huge document, inside the limit
            big = text + "".join(f"x{i}: relu  # {'q' * rng.randint(0, 2000)}\n" for i in range(rng.randint(1, 2000)))
            body = big.encode()[: limit // 2]
            version += 1
            yield message({"jsonrpc": "2.0", "method": "textDocument/didChange",
                           "params": {"textDocument": {"uri": uri, "version": version},
                                      "contentChanges": [{"text": body.decode(errors="ignore")}]}})
            text = body.decode(errors="ignore")
        elif kind == 3:  # an edit storm
            storm = list(edit_storm(rng, text, rng.randint(10, 300)))
            for change, _ in storm:
                version += 1
                yield message({"jsonrpc": "2.0", "method": "textDocument/didChange",
                               "params": {"textDocument": {"uri": uri, "version": version},
                                          "contentChanges": [change]}})
            text = storm[-1][1]
        elif kind == 4:  # requests at random places, some with parameters that do not fit
            method = rng.choice(["textDocument/hover", "textDocument/completion", "textDocument/definition",
                                 "textDocument/references", "textDocument/documentSymbol", "textDocument/formatting",
                                 "textDocument/inlayHint", "textDocument/rename", "textDocument/semanticTokens/full"])
            position = {"line": rng.choice([0, 3, 10**9, -1]), "character": rng.choice([0, 5, 10**9, -1])}
            yield message({"jsonrpc": "2.0", "id": rng.randint(1, 10**6), "method": method,
                           "params": {"textDocument": {"uri": rng.choice([uri, "file:///nowhere.adsl"])},
                                      "position": position, "newName": "y", "options": {},
                                      "context": {"includeDeclaration": True},
                                      "range": {"start": position, "end": position}}})
        elif kind == 5:  # JSON that is not a message
            yield message(rng.choice([{}, [], {"jsonrpc": "2.0"}, {"id": [1]}, {"method": 7}]))  # type: ignore[arg-type]
        else:  # a body that is not JSON, with its true length
            body = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
            yield b"Content-Length: %d\r\n\r\n" % len(body) + body


def onnx_inputs(seed: int) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes): LeNet's ONNX export with its graph edited (two nodes writing one output,
    a node removed, a dangling input, huge dims or attributes) or its bytes damaged."""
    import onnx

    import alexdsl
    from alexdsl.interop.onnx import export_onnx

    rng = random.Random(seed)
    good = export_onnx(alexdsl.load(LENET)).SerializeToString()
    while True:
        model = onnx.load_from_string(good)
        graph = model.graph
        for _ in range(rng.randint(1, 3)):
            nodes = list(graph.node)
            node = rng.choice(nodes)
            how = rng.randrange(6)
            if how == 0 and len(nodes) > 1:  # two nodes write the same output
                node.output[0] = rng.choice([n for n in nodes if n is not node]).output[0]
            elif how == 1:
                graph.node.remove(node)
            elif how == 2 and node.input:
                node.input[rng.randrange(len(node.input))] = rng.choice(["nowhere", "", node.output[0]])
            elif how == 3 and any(t.dims for t in graph.initializer):
                tensor = rng.choice([t for t in graph.initializer if t.dims])
                tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice([0, -1, 2**31, 2**62])
            elif how == 4 and node.attribute:
                attribute = rng.choice(list(node.attribute))
                if attribute.ints:
                    attribute.ints[rng.randrange(len(attribute.ints))] = rng.choice([0, -5, 2**40, 2**62])
                else:
                    attribute.i = rng.choice([0, -5, 2**40, 2**62])
            else:
                dims = graph.input[0].type.tensor_type.shape.dim
                if dims:
                    dims[rng.randrange(len(dims))].dim_value = rng.choice([0, 1, 10**6, 2**40])
        data = model.SerializeToString()
        yield "model.onnx", _damaged(rng, data) if rng.random() < 0.2 else data
