"""A long fuzzing campaign against every way into alexdsl; keeps every crashing input.

    python benchmarks/fuzz.py --minutes 60 --out fuzz-out [--surfaces adsl,json,weights,...]

runs seeded generators, in turn, for each surface (``--surfaces``, default all):

* ``adsl``, ``json``: mutated ``.adsl`` examples and IR JSON (tests/adsl_mutations.py);
* ``prototxt``: mutated Caffe prototxts through ``import_prototxt`` (tests/test_fuzz_interop.py);
* ``onnx``, ``weights``, ``image``: edited or damaged ONNX models, weights files (lying headers,
  compression bombs, expanded tensors, unreadable dtypes) and images (declaring up to 70000 x
  70000 pixels), from tests/hostile_inputs.py, read for LeNet;
* ``checkpoint``: a real checkpoint with one to three fields replaced, resumed by ``train``;
* ``lsp``: a language-server session over stdio, fed oversized messages, lying lengths, huge
  documents, edit storms and bad requests; it must answer a shutdown afterwards and exit cleanly.

Each input is checked in a child process limited to ``--memory-gb`` of address space. An input
is a crash when the child raises anything but AlexDSLError (a MemoryError included, and an
AlexDSLError that blames memory), when an accepted source fails the round trip (JSON and
formatter), when it takes longer than ``--timeout`` seconds (or the whole check three times
that), or when the child dies. Each crash is saved to OUT as the input and a ``.txt`` with what
happened; OUT/summary.json holds the counts per surface (docs/fuzzing.md records runs). Sources
may expand to FUZZ_MAX_LAYERS layers.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import random
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import hostile_inputs  # noqa: E402
from adsl_mutations import FUZZ_MAX_LAYERS, adsl_inputs, check_round_trips, json_inputs  # noqa: E402 - shared with the tests

import alexdsl  # noqa: E402
from alexdsl.errors import AlexDSLError  # noqa: E402

SURFACES = ("adsl", "json", "prototxt", "onnx", "weights", "image", "checkpoint", "lsp")
MEMORY_WORDS = ("ran out of memory", "MemoryError")  # an error that blames memory is a crash here


def check(kind: str, name: str, payload: Any, limit: float) -> tuple[str, str]:
    """("accepted" | "rejected" | "crash", detail) for one input; reading it may take ``limit`` seconds."""
    started = time.monotonic()
    try:
        network = READERS[kind](name, payload)
    except AlexDSLError as error:
        if any(word in str(error) for word in MEMORY_WORDS):
            return "crash", f"an error that blames memory:\n{error}"
        network = None
    except BaseException:  # noqa: BLE001 - the point: anything else is a crash, MemoryError included
        return "crash", traceback.format_exc()
    seconds = time.monotonic() - started
    if seconds > limit:
        return "crash", f"reading it took {seconds:.1f} s"
    if network is None:
        return "rejected", ""
    if kind == "adsl":
        try:
            check_round_trips(network, payload, name)
        except AlexDSLError as error:
            return "crash", f"round trip refused an accepted network:\n{error}"
        except BaseException:  # noqa: BLE001
            return "crash", traceback.format_exc()
    return "accepted", ""


@functools.cache
def _scratch() -> Path:
    """The child's folder for the file under test (one at a time, overwritten)."""
    return Path(tempfile.mkdtemp(prefix="alexdsl-fuzz-"))


def _in_file(name: str, data: bytes) -> Path:
    for old in _scratch().iterdir():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    path = _scratch() / name
    path.write_bytes(data)
    return path


@functools.cache
def _lenet() -> alexdsl.Network:
    return alexdsl.load(hostile_inputs.LENET)


def _read_prototxt(name: str, text: str) -> object:
    from alexdsl.interop.caffe import import_prototxt

    return alexdsl.parse(import_prototxt(text, name), name + ".adsl")


def _read_onnx(name: str, data: bytes) -> object:
    from alexdsl.interop.onnx import import_onnx

    return import_onnx(_in_file(name, data))


def _read_weights(name: str, data: bytes) -> object:
    from alexdsl.weights import load_for_network

    return load_for_network(_in_file(name, data), _lenet())


def _read_image(name: str, data: bytes) -> object:
    from alexdsl.data import Preprocess, load_image

    return load_image(_in_file(name, data), (3, 28, 28), Preprocess())


@functools.cache
def _good_checkpoint() -> Path:
    """A real checkpoint of a small network after one epoch (made once per child)."""
    from test_hostile_files import SMALL

    from alexdsl.backends.torch.train import train

    out = Path(tempfile.mkdtemp(prefix="alexdsl-fuzz-good-"))
    train(alexdsl.parse(SMALL), "synthetic:32", out, epochs=1, batch_size=16, progress=False, log=None)
    return out


def _resume(name: str, seed: int) -> object:
    """Resume training from the good checkpoint with fields tampered as ``seed`` draws them."""
    import torch
    from test_hostile_files import SMALL

    from alexdsl.backends.torch.train import CHECKPOINT, train

    state = torch.load(_good_checkpoint() / CHECKPOINT, weights_only=True)
    hostile_inputs.tamper(state, random.Random(seed))
    out = _in_file(CHECKPOINT, b"").parent
    torch.save(state, out / CHECKPOINT)
    return train(alexdsl.parse(SMALL), "synthetic:32", out, epochs=2, batch_size=16, resume=True, progress=False,
                 log=None)


LSP_LIMIT = 200_000  # ALEXDSL_MAX_LSP_MESSAGE_BYTES of the fuzzed servers


def _lsp_session(name: str, seed: int) -> object:
    """One hostile session with a fresh server; AlexDSLError never comes from here, a failure is a crash."""
    pipe = hostile_inputs.LspPipe({"ALEXDSL_MAX_LSP_MESSAGE_BYTES": str(LSP_LIMIT)})
    try:
        pipe.initialize(60)
        for data in hostile_inputs.lsp_session(random.Random(seed), LSP_LIMIT):
            pipe.write(data)
        request = pipe.send("shutdown", None, request=True)
        pipe.response(request, 60)  # type: ignore[arg-type]
        code, stderr = pipe.close(30)
    finally:
        if pipe.process.poll() is None:
            pipe.process.kill()
    if code != 0 or "MemoryError" in stderr:
        raise RuntimeError(f"the server exited with {code}: {stderr}")
    return True


READERS = {
    "adsl": lambda name, text: alexdsl.parse(text, name, max_layers=FUZZ_MAX_LAYERS),
    "json": lambda name, text: alexdsl.from_json(text, name),
    "prototxt": _read_prototxt, "onnx": _read_onnx, "weights": _read_weights, "image": _read_image,
    "checkpoint": _resume, "lsp": _lsp_session,
}


def inputs(kind: str, seed: int) -> Iterator[tuple[str, Any]]:
    """Endless (name, payload) pairs of one surface."""
    if kind == "adsl":
        return adsl_inputs(seed)
    if kind == "json":
        return json_inputs(seed)
    if kind == "prototxt":
        from test_fuzz_interop import prototxt_inputs

        return prototxt_inputs(seed)
    if kind in ("checkpoint", "lsp"):
        return ((f"{kind}-seed-{seed}-{i}", seed * 1_000_003 + i) for i in range(10**12))
    return getattr(hostile_inputs, f"{kind}_inputs")(seed)


def worker(conn: Connection, memory_bytes: int) -> None:
    """Check inputs from ``conn`` until it closes, in at most ``memory_bytes`` of address space."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    while True:
        try:
            kind, name, payload, limit = conn.recv()
        except EOFError:
            return
        conn.send(check(kind, name, payload, limit))


class Child:
    """The worker process; restarted after it hangs or dies."""

    def __init__(self, memory_bytes: int):
        self.memory_bytes = memory_bytes
        self.start()

    def start(self) -> None:
        context = multiprocessing.get_context("fork")
        self.conn, child_end = context.Pipe()
        self.process = context.Process(target=worker, args=(child_end, self.memory_bytes), daemon=True)
        self.process.start()
        child_end.close()

    def restart(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()
        self.start()

    def run(self, kind: str, name: str, payload: Any, limit: float) -> tuple[str, str]:
        self.conn.send((kind, name, payload, limit))
        if not self.conn.poll(3 * limit):  # reading, then the JSON and formatter round trips
            self.restart()
            return "crash", f"no answer within {3 * limit:g} s"
        try:
            return self.conn.recv()
        except EOFError:
            code = self.process.exitcode
            self.restart()
            return "crash", f"the child died (exit code {code}); out of memory?"


SLOW_SURFACES = {"checkpoint": 6.0, "lsp": 12.0}  # times --timeout: a training step, a server's start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--out", type=Path, required=True, help="folder for crashing inputs and summary.json")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds reading one input may take before it counts as a hang")
    parser.add_argument("--memory-gb", type=float, default=2.0, help="address space of the checking process")
    parser.add_argument("--surfaces", default=",".join(SURFACES), help=f"comma-separated, of {', '.join(SURFACES)}")
    parser.add_argument("--weight", action="append", default=[], metavar="SURFACE=N",
                        help="inputs of SURFACE per round (default 1 each; adsl 3)")
    args = parser.parse_args()
    surfaces = [s.strip() for s in args.surfaces.split(",") if s.strip()]
    unknown = sorted(set(surfaces) - set(SURFACES))
    if unknown:
        parser.error(f"unknown surfaces {', '.join(unknown)}; choose from {', '.join(SURFACES)}")
    weights = {"adsl": 3, **{k: int(v) for k, v in (w.split("=", 1) for w in args.weight)}}
    args.out.mkdir(parents=True, exist_ok=True)
    child = Child(int(args.memory_gb * 1024**3))
    streams = {kind: inputs(kind, args.seed) for kind in surfaces}
    schedule = [kind for kind in surfaces for _ in range(weights.get(kind, 1))]
    counts: dict[str, dict[str, Any]] = {kind: {"inputs": 0, "accepted": 0, "rejected": 0, "crash": 0,
                                                "slowest_s": 0.0} for kind in surfaces}
    end = time.monotonic() + 60 * args.minutes
    index = 0
    while time.monotonic() < end:
        kind = schedule[index % len(schedule)]
        name, payload = next(streams[kind])
        limit = args.timeout * SLOW_SURFACES.get(kind, 1.0)
        started = time.monotonic()
        verdict, detail = child.run(kind, name, payload, limit)
        seconds = time.monotonic() - started
        counts[kind]["slowest_s"] = round(max(counts[kind]["slowest_s"], seconds), 2)
        counts[kind]["inputs"] += 1
        counts[kind][verdict] += 1
        if verdict == "crash":
            stem = args.out / f"{kind}-{index:07d}"
            if isinstance(payload, bytes):
                stem.with_suffix(Path(name).suffix or ".bin").write_bytes(payload)
            else:
                stem.with_suffix(f".{kind}").write_text(str(payload), encoding="utf-8", errors="surrogatepass")
            stem.with_suffix(".txt").write_text(f"{name}, seed {args.seed}\n{detail}\n", encoding="utf-8")
            print(f"crash: {stem.name} ({detail.strip().splitlines()[-1] if detail.strip() else '?'})", flush=True)
        elif seconds > limit / 2 and isinstance(payload, str):  # kept to look at, not counted as a crash
            (args.out / f"slow-{index:07d}.{kind}").write_text(payload, encoding="utf-8", errors="surrogatepass")
        index += 1
    child.process.kill()
    summary = {"minutes": args.minutes, "seed": args.seed, "memory_gb": args.memory_gb, **counts}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
