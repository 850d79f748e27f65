"""Per-layer profiles (alexdsl.profiling, ``alexdsl run --profile/--profile-out``): tables and Chrome traces."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy
import pytest
from click.testing import CliRunner
from conftest import EXAMPLES

import alexdsl
from alexdsl.backends.executor import compile as compile_executor
from alexdsl.backends.executor.codegen import generate_source
from alexdsl.cli import main
from alexdsl.profiling import Profile, profile_executor, profile_torch_module

NET = """network Small
input x: 3x12x12
c1: conv(4, 3, pad=1) | bn1: batchnorm | relu | maxpool(2)
c2: conv(4, 3, pad=1) | relu
sum: bn1_maxpool, c2 -> add
head: global_avgpool | fc(5)
"""


def check_trace(trace: dict, calls: int) -> list[dict]:
    """The Trace Event Format that chrome://tracing and Perfetto load; every step lies inside its forward."""
    assert trace["displayTimeUnit"] == "ms"
    events = trace["traceEvents"]
    assert any(e["ph"] == "M" and e["name"] == "process_name" for e in events)
    complete = [e for e in events if e["ph"] == "X"]
    for event in complete:
        assert {"name", "cat", "ph", "ts", "dur", "pid", "tid", "args"} <= event.keys()
        assert isinstance(event["ts"], float | int) and isinstance(event["dur"], float | int)
        assert event["dur"] >= 0 and event["ts"] >= 0
    forwards = [e for e in complete if e["name"] == "forward"]
    assert len(forwards) == calls
    steps = [e for e in complete if e["name"] != "forward"]
    for step in steps:
        parent = forwards[step["args"]["call"]]
        assert parent["ts"] <= step["ts"] + 1e-3
        assert step["ts"] + step["dur"] <= parent["ts"] + parent["dur"] + 1e-3
    return steps


def test_the_executor_profile_names_fused_groups_and_keeps_outputs() -> None:
    net = alexdsl.parse(NET)
    source = generate_source(net)
    x = numpy.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(numpy.float32)
    plain = compile_executor(net, device="cpu")
    want = plain(x)
    profiled = compile_executor(net, device="cpu")
    profile = Profile("Small")
    profile_executor(profiled, profile)
    got = [profiled(x) for _ in range(3)]
    assert all(numpy.array_equal(g, want) for g in got)
    assert generate_source(net) == source
    assert "forward" not in vars(plain)  # only the profiled instance runs the timed copy
    totals = profile.totals()
    names = {step.name: step.kind for step in totals}
    assert names["c1 + bn1 + bn1_relu"] == "conv2d"
    assert names["sum"] == "add"
    assert list(totals.values()) == sorted(totals.values(), reverse=True)
    assert len(profile.calls) == 3
    for call, (_, seconds) in enumerate(profile.calls):
        inside = sum(s for _, c, _, s in profile.events if c == call)
        assert 0 < inside <= seconds
    steps = check_trace(profile.chrome_trace(), 3)
    assert {s["name"] for s in steps} == set(names)


def test_the_table_is_sorted_with_shares_that_add_up() -> None:
    net = alexdsl.parse(NET)
    executor = compile_executor(net, device="cpu")
    profile = Profile("Small")
    assert profile.table() == "profile of Small: nothing was run"
    profile_executor(executor, profile)
    executor(numpy.zeros((1, 3, 12, 12), numpy.float32))
    table = profile.table()
    steps, kinds = table.split("\n\n")
    rows = [line.split() for line in steps.splitlines()[2:]]
    times = [float(row[0]) for row in rows]
    assert times == sorted(times, reverse=True)
    assert rows[-1][2] == "100.0%"
    assert sum(float(row[1].rstrip("%")) for row in rows) == pytest.approx(100, abs=0.1 * len(rows))
    assert kinds.splitlines()[-1].split()[2] == "100.0%"
    assert re.search(r"^ +[\d.]+ +[\d.]+% +[\d.]+%  conv2d +2$", kinds, re.M)


def test_the_torch_profile_names_layers_and_functional_ops() -> None:
    torch = pytest.importorskip("torch", reason="install torch (pip install 'alexdsl[torch]') to profile it")
    from alexdsl.backends.torch import build

    module = build(alexdsl.parse(NET)).eval()
    x = torch.zeros((2, 3, 12, 12))
    with torch.no_grad():
        want = module(x)
        profile = Profile("Small")
        profile_torch_module(module, profile)
        assert torch.equal(module(x), want)
    kinds = {step.name: step.kind for step in profile.totals()}
    assert kinds["c1"] == "Conv2d" and kinds["bn1"] == "BatchNorm2d"
    assert {"Linear", "relu", "max_pool2d"} <= set(kinds.values()), kinds
    check_trace(profile.chrome_trace(), 1)


@pytest.mark.parametrize("backend", ["cupy", "torch"])
def test_run_profile_prints_the_table_and_writes_a_chrome_trace(tmp_path: Path, backend: str) -> None:
    if backend == "torch":
        pytest.importorskip("torch", reason="install torch (pip install 'alexdsl[torch]') to run --backend torch")
    trace = tmp_path / "out" / "trace.json"
    result = CliRunner().invoke(main, ["run", str(EXAMPLES / "lenet.adsl"), "--backend", backend, "--batch", "2",
                                       "--device", "cpu", "--profile", "--profile-out", str(trace)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "profile of LeNet" in result.output and "share" in result.output
    steps = check_trace(json.loads(trace.read_text()), 1)  # random input: one batch after the warm-up
    assert any(s["cat"] in ("conv2d", "Conv2d") for s in steps)


def test_run_profile_out_refuses_an_unwritable_path_before_running(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(main, ["run", str(EXAMPLES / "lenet.adsl"), "--device", "cpu",
                                       "--profile-out", str(tmp_path / "file" / "trace.json")])
    assert result.exit_code != 0
    assert "cannot write the output" in result.output and "Traceback" not in result.output
    assert "images/s" not in result.output
