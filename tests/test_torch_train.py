"""Training: outputs, exact resumption after SIGKILL, torchrun with gloo, errors, the CLI command."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")

import click  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from conftest import EXAMPLES, ROOT  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import alexdsl  # noqa: E402
import alexdsl.torch  # noqa: E402
from alexdsl.backends.torch.module_file import write_torch_module  # noqa: E402
from alexdsl.backends.torch.train import cpu_threads, train  # noqa: E402
from alexdsl.cli.train import train_command  # noqa: E402
from alexdsl.errors import AlexDSLError  # noqa: E402

SMALL = """network Small
input data: 3x8x8
input label: class(4)
conv1: conv(8, 3, pad=1) | relu | maxpool(2)
fc1: fc(16) | relu | dropout(0.3)
fc2: fc(4)
loss: softmax_loss(fc2, label)
accuracy: accuracy(fc2, label) @test
"""
NO_DROPOUT = SMALL.replace(" | dropout(0.3)", "")


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.adsl"
    path.write_text(SMALL)
    return path


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_train_writes_weights_metrics_checkpoint_and_plot(tmp_path):
    network = alexdsl.parse(SMALL)
    result = train(network, "synthetic:64", tmp_path / "run", epochs=2, batch_size=16, progress=False, log=None)
    out = tmp_path / "run"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and len(result.history) == 2
    record = json.loads(lines[-1])
    assert {"epoch", "train_loss", "val_loss", "val_accuracy", "seconds"} <= set(record)
    assert record["epoch"] == 2 and 0.0 <= record["val_accuracy"] <= 1.0
    weights = load_file(str(out / "weights.safetensors"))
    state = result.module.state_dict()
    assert list(weights) == list(state) or set(weights) == set(state)
    for key, value in state.items():
        assert torch.equal(weights[key], value.cpu())
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["step"] == 0
    assert {"model", "optimizer", "scheduler", "rng", "sampler", "history"} <= set(checkpoint)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


RUN_SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
import alexdsl
from alexdsl.backends.torch.codegen import build
from alexdsl.backends.torch.train import train
source, out, resume, delay = sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4])
network = alexdsl.load(source)
torch.manual_seed(0)
module = build(network)
if delay:
    forward = module.forward
    def slow(*args):
        time.sleep(delay)
        return forward(*args)
    module.forward = slow
train(network, "synthetic:64", out, module=module, epochs=2, batch_size=8, resume=resume, checkpoint_every=2,
      progress=False, log=None, seed=5)
"""


@pytest.mark.slow  # 13 s of CPU: trains in two fresh processes
def test_resume_after_sigkill_mid_epoch_gives_identical_weights(small, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    env = child_env()
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    subprocess.run([sys.executable, str(script), str(small), str(whole), "0", "0"], env=env, check=True, timeout=120)

    child = subprocess.Popen([sys.executable, str(script), str(small), str(broken), "0", "0.05"], env=env)
    killed_at = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and child.poll() is None:
            path = broken / "checkpoint.pt"
            if path.exists():
                state = torch.load(path, weights_only=True)
                if state["epoch"] == 1 and state["step"] >= 4:
                    os.kill(child.pid, signal.SIGKILL)
                    killed_at = (state["epoch"], state["step"])
                    break
            time.sleep(0.01)
    finally:
        if child.poll() is None and killed_at is None:
            child.kill()
        child.wait(timeout=30)
    assert killed_at is not None, "the run finished before it could be killed"
    assert child.returncode == -signal.SIGKILL
    assert len((broken / "metrics.jsonl").read_text().splitlines()) == 1  # killed during epoch 2

    subprocess.run([sys.executable, str(script), str(small), str(broken), "1", "0"], env=env, check=True, timeout=120)
    a, b = load_file(str(whole / "weights.safetensors")), load_file(str(broken / "weights.safetensors"))
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key

    def strip(path: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in path.read_text().splitlines()]

    assert strip(whole / "metrics.jsonl") == strip(broken / "metrics.jsonl")


DDP_SCRIPT = """
import os, sys, torch
torch.set_num_threads(1)
import alexdsl
from alexdsl.backends.torch.train import train
source, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
network = alexdsl.load(source)
result = train(network, "synthetic:64", out, epochs=2, batch_size=batch, progress=False, log=None, seed=2,
               device="cpu")
rank = int(os.environ.get("RANK", "0"))
torch.save(result.module.state_dict(), os.path.join(out, f"rank{rank}.pt"))
"""


@pytest.mark.slow  # 16 s of CPU: three training processes
def test_torchrun_two_gloo_processes_match_one_process(tmp_path):
    source = tmp_path / "small.adsl"
    source.write_text(NO_DROPOUT)
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = child_env()
    single, double = tmp_path / "single", tmp_path / "double"
    subprocess.run([sys.executable, str(script), str(source), str(single), "8"], env=env, check=True, timeout=120)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(script), str(source), str(double), "4"], env=env, timeout=180,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rank0 = torch.load(double / "rank0.pt", weights_only=True)
    rank1 = torch.load(double / "rank1.pt", weights_only=True)
    reference = torch.load(single / "rank0.pt", weights_only=True)
    for key in reference:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], reference[key], rtol=1e-4, atol=1e-5)
    assert not (double / "rank1").exists()
    written = load_file(str(double / "weights.safetensors"))
    assert all(torch.equal(written[k], rank0[k]) for k in rank0)
    assert len((double / "metrics.jsonl").read_text().splitlines()) == 2


def test_failed_run_keeps_good_weights(tmp_path):
    network = alexdsl.parse(SMALL)
    out = tmp_path / "run"
    train(network, "synthetic:32", out, epochs=1, batch_size=8, progress=False, log=None)
    before = (out / "weights.safetensors").read_bytes()
    metrics = (out / "metrics.jsonl").read_text()
    with pytest.raises(AlexDSLError, match="diverged"):
        train(network, "synthetic:32", out, epochs=2, batch_size=8, lr=1e12, progress=False, log=None)
    assert (out / "weights.safetensors").read_bytes() == before
    assert (out / "metrics.jsonl").read_text() == metrics


def test_user_errors(tmp_path):
    network = alexdsl.parse(SMALL)
    with pytest.raises(AlexDSLError, match="unknown device"):
        train(network, "synthetic:8", tmp_path / "a", epochs=1, device="tpu0", log=None)
    if not torch.cuda.is_available():
        with pytest.raises(AlexDSLError, match="CUDA is not available"):
            train(network, "synthetic:8", tmp_path / "a", epochs=1, device="cuda", log=None)
    with pytest.raises(AlexDSLError, match="no checkpoint"):
        train(network, "synthetic:8", tmp_path / "b", epochs=1, resume=True, log=None)
    with pytest.raises(AlexDSLError, match="unknown data source"):
        train(network, "imagenet", tmp_path / "c", epochs=1, log=None)
    nolabel = alexdsl.parse("network N\ninput data: 3x8x8\nc: conv(4, 3)\n")
    with pytest.raises(AlexDSLError, match="one tensor input and one label"):
        train(nolabel, "synthetic", tmp_path / "d", log=None)


def test_resume_continues_with_more_epochs(tmp_path):
    network = alexdsl.parse(NO_DROPOUT)
    out = tmp_path / "run"
    train(network, "synthetic:32", out, epochs=1, batch_size=8, progress=False, log=None)
    result = train(network, "synthetic:32", out, epochs=2, batch_size=8, resume=True, progress=False, log=None)
    assert [h["epoch"] for h in result.history] == [1, 2]
    with pytest.raises(AlexDSLError, match="batch_size=8"):
        train(network, "synthetic:32", out, epochs=3, batch_size=4, resume=True, log=None)


def cli() -> click.Group:
    @click.group()
    @click.option("--debug", is_flag=True)
    def main(debug: bool) -> None:
        pass

    main.add_command(train_command)
    return main


def test_train_command(small, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(cli(), ["train", str(small), "--data", "synthetic:32", "--epochs", "1", "--batch-size", "8",
                                   "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and (out / "weights.safetensors").exists()
    bad = runner.invoke(cli(), ["train", str(small), "--data", str(tmp_path / "missing"), "--out", str(out)])
    assert bad.exit_code == 1 and "unknown data source" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(cli(), ["train", str(small), "--data", "synthetic", "--device", "abacus", "--out", str(out)])
    assert bad.exit_code == 1 and "unknown device 'abacus'" in bad.output
    other = tmp_path / "other.adsl"
    other.write_text(SMALL.replace("fc(16)", "fc(12)"))
    bad = runner.invoke(cli(), ["train", str(other), "--data", "synthetic:8", "--out", str(tmp_path / "o"),
                                "--weights", str(out / "weights.safetensors")])
    assert bad.exit_code == 1 and "'fc1.weight' has the wrong shape: expected (12, 128)" in bad.output
    assert "received (16, 128)" in bad.output and "Traceback" not in bad.output


def test_write_torch_module(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    network = alexdsl.load(EXAMPLES / "lenet.adsl")
    path = write_torch_module(network)
    assert path == Path("lenet_torch.py")
    assert path.read_text() == alexdsl.torch.generate_source(network)
    assert write_torch_module(network, tmp_path / "sub" / "x.py").exists()


def test_build_then_load_trained_weights(tmp_path):
    network = alexdsl.parse(NO_DROPOUT)
    result = train(network, "synthetic:32", tmp_path / "run", epochs=1, batch_size=8, progress=False, log=None)
    fresh = alexdsl.torch.build(network)
    alexdsl.torch.load_weights(fresh, tmp_path / "run" / "weights.safetensors")
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), result.module.eval()(x))


def test_lenet_trains_stably_on_synthetic_data_with_its_own_solver(tmp_path):
    """The smoke-test data of ``train --help``: LeNet's own lr and momentum, the loss finite and falling."""
    network = alexdsl.load(EXAMPLES / "lenet.adsl")
    result = train(network, "synthetic:256", tmp_path / "run", epochs=2, progress=False, log=None, device="cpu")
    first, second = result.history
    for record in result.history:
        assert all(map(math.isfinite, (record["train_loss"], record["val_loss"]))), record
        assert record["val_loss"] < 2 * math.log(10), record  # unscaled data gave val_loss 7,295 here
    assert second["train_loss"] < first["train_loss"] and second["val_loss"] < first["val_loss"], result.history


def test_cpu_threads_one_for_small_steps_and_the_caller_keeps_its_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    lenet, alexnet = alexdsl.load(EXAMPLES / "lenet.adsl"), alexdsl.load(EXAMPLES / "alexnet.adsl")
    assert cpu_threads(lenet, 32) == 1
    assert cpu_threads(alexnet, 32) is None  # torch's default: all cores
    assert cpu_threads(lenet, 32, requested=3) == 3
    with pytest.raises(AlexDSLError, match="--threads 0"):
        cpu_threads(lenet, 32, requested=0)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu_threads(lenet, 32) is None  # the user's setting wins

    seen = []

    class Spy(torch.nn.Module):
        """The network's module, recording torch's thread count during the forward pass."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            seen.append(torch.get_num_threads())
            return self.inner(x)

        def loss(self, outputs, label):
            return self.inner.loss(outputs, label)

        def metrics(self, outputs, label):
            return self.inner.metrics(outputs, label)

        def param_groups(self, lr, decay):
            return self.inner.param_groups(lr, decay)

    network = alexdsl.parse(NO_DROPOUT)
    before = torch.get_num_threads()
    train(network, "synthetic:16", tmp_path / "run", module=Spy(alexdsl.torch.build(network)), epochs=1,
          batch_size=8, threads=1, progress=False, log=None, device="cpu")
    assert set(seen) == {1} and torch.get_num_threads() == before


@pytest.mark.slow
def test_lenet_on_digits_reaches_97_percent_on_both_backends(tmp_path):
    """The acceptance run; then the executor reproduces the accuracy torch measured."""
    pytest.importorskip("sklearn")
    from alexdsl.data import open_source
    from alexdsl.inference import evaluate, make_predictor

    network = alexdsl.load(EXAMPLES / "lenet.adsl")
    result = train(network, "digits", tmp_path / "lenet", epochs=10, progress=False, log=None, device="cpu")
    assert result.final["val_accuracy"] >= 0.97, result.history
    source = open_source("digits", network.shapes["data"], 10)
    weights = str(tmp_path / "lenet" / "weights.safetensors")
    for backend in ("cupy", "torch"):
        predict, _ = make_predictor(network, backend, weights, device="cpu")
        measured = evaluate(predict, source, batch=64, k=5)
        assert measured["top1"] == pytest.approx(result.final["val_accuracy"], abs=1 / measured["samples"]), backend



def test_train_on_an_image_folder(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for i, name in enumerate(["a", "b", "c"]):
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for j in range(4):
                Image.new("RGB", (12, 10), (80 * i, 20 * j, 255 - 80 * i)).save(folder / f"{j}.png")
    network = alexdsl.parse(SMALL.replace("input label: class(4)",
                                          "input label: class(4)\npreprocess data(resize=10, crop=8, mirror=true, "
                                          "mean=(128, 128, 128), scale=0.01)"))
    result = train(network, str(tmp_path / "images"), tmp_path / "run", epochs=2, batch_size=4, progress=False,
                   log=None)
    assert len(result.history) == 2 and result.final["val_accuracy"] is not None
