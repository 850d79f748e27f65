"""A long fuzzing campaign against the front end and the IR reader; keeps every crashing input.

    python benchmarks/fuzz.py --minutes 60 --out fuzz-out

runs the generators of tests/adsl_mutations.py (mutated ``.adsl`` examples, and mutated IR JSON
through ``alexdsl.from_json``) in a child process limited to ``--memory-gb`` of address
space. An input is a crash when the child raises anything but AlexDSLError, when an accepted
source fails the round trip (JSON and formatter), when reading it takes longer than
``--timeout`` seconds (or the whole check three times that), or when the child dies. Each
crash is saved to OUT as the input and a ``.txt`` with what happened; OUT/summary.json holds
the counts (docs/fuzzing.md records a run). Sources may expand to FUZZ_MAX_LAYERS layers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from adsl_mutations import FUZZ_MAX_LAYERS, adsl_inputs, check_round_trips, json_inputs  # noqa: E402 - shared with the tests

import alexdsl  # noqa: E402
from alexdsl.errors import AlexDSLError  # noqa: E402


def check(kind: str, name: str, text: str, limit: float) -> tuple[str, str]:
    """("accepted" | "rejected" | "crash", detail) for one input; reading it may take ``limit`` seconds."""
    started = time.monotonic()
    try:
        network = (alexdsl.parse(text, name, max_layers=FUZZ_MAX_LAYERS) if kind == "adsl"
                   else alexdsl.from_json(text, name))
    except AlexDSLError:
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
            check_round_trips(network, text, name)
        except AlexDSLError as error:
            return "crash", f"round trip refused an accepted network:\n{error}"
        except BaseException:  # noqa: BLE001
            return "crash", traceback.format_exc()
    return "accepted", ""


def worker(conn: Connection, memory_bytes: int, limit: float) -> None:
    """Check inputs from ``conn`` until it closes, in at most ``memory_bytes`` of address space."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    while True:
        try:
            kind, name, text = conn.recv()
        except EOFError:
            return
        conn.send(check(kind, name, text, limit))


class Child:
    """The worker process; restarted after it hangs or dies."""

    def __init__(self, memory_bytes: int, limit: float):
        self.memory_bytes = memory_bytes
        self.limit = limit
        self.start()

    def start(self) -> None:
        context = multiprocessing.get_context("fork")
        self.conn, child_end = context.Pipe()
        self.process = context.Process(target=worker, args=(child_end, self.memory_bytes, self.limit), daemon=True)
        self.process.start()
        child_end.close()

    def restart(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()
        self.start()

    def run(self, kind: str, name: str, text: str) -> tuple[str, str]:
        self.conn.send((kind, name, text))
        if not self.conn.poll(3 * self.limit):  # reading, then the JSON and formatter round trips
            self.restart()
            return "crash", f"no answer within {3 * self.limit:g} s"
        try:
            return self.conn.recv()
        except EOFError:
            code = self.process.exitcode
            self.restart()
            return "crash", f"the child died (exit code {code}); out of memory?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--out", type=Path, required=True, help="folder for crashing inputs and summary.json")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds reading one input may take before it counts as a hang")
    parser.add_argument("--memory-gb", type=float, default=2.0, help="address space of the checking process")
    parser.add_argument("--json-every", type=int, default=4, help="one IR JSON mutant per this many inputs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    child = Child(int(args.memory_gb * 1024**3), args.timeout)
    sources, irs = adsl_inputs(args.seed), json_inputs(args.seed)
    counts: dict[str, dict[str, int]] = {kind: {"inputs": 0, "accepted": 0, "rejected": 0, "crash": 0}
                                         for kind in ("adsl", "json")}
    slowest = (0.0, "")
    end = time.monotonic() + 60 * args.minutes
    index = 0
    while time.monotonic() < end:
        kind = "json" if index % args.json_every == args.json_every - 1 else "adsl"
        name, text = next(irs if kind == "json" else sources)
        started = time.monotonic()
        verdict, detail = child.run(kind, name, text)
        seconds = time.monotonic() - started
        if seconds > slowest[0]:
            slowest = (seconds, f"{kind}-{index:07d}")
            if seconds > args.timeout / 2:  # kept to look at, not counted as a crash
                (args.out / f"slow-{index:07d}.txt").write_text(text, encoding="utf-8", errors="surrogatepass")
        counts[kind]["inputs"] += 1
        counts[kind][verdict] += 1
        if verdict == "crash":
            stem = args.out / f"{kind}-{index:07d}"
            stem.with_suffix(".adsl" if kind == "adsl" else ".json").write_text(text, encoding="utf-8",
                                                                                 errors="surrogatepass")
            stem.with_suffix(".txt").write_text(f"mutant of {name}, seed {args.seed}\n{detail}\n", encoding="utf-8")
            print(f"crash: {stem.name} ({detail.strip().splitlines()[-1] if detail.strip() else '?'})", flush=True)
        index += 1
    child.process.kill()
    summary = {"minutes": args.minutes, "seed": args.seed, "slowest_input_s": round(slowest[0], 2),
               "slowest_input": slowest[1], **counts}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
