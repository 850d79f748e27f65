"""Hostile files and paths (issue 9): output paths, weights, checkpoints, sizes that cannot fit.

Every case must end in a clear ``AlexDSLError`` (exit status 1 and ``PATH: error: ...`` on the
command line), never a traceback, and must leave nothing half-written.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from conftest import EXAMPLES

import alexdsl
from alexdsl.backends import executor as executor_backend
from alexdsl.cli import main
from alexdsl.errors import AlexDSLError
from alexdsl.fileio import output_target, write_text_atomic
from alexdsl.weights import WeightsWarning, load_for_network, read_weights

LENET = EXAMPLES / "lenet.adsl"


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def assert_clean_error(result: Result, *fragments: str) -> None:
    """Exit status 1, no traceback, and every fragment in the output."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, TypeError)), \
        result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def export_json(output: Path | str) -> Result:
    return cli("export", LENET, "--format", "json", "-o", output)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# output paths -------------------------------------------------------------------------------------
def test_output_under_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    for output in (tmp_path / "plain" / "net.json", tmp_path / "plain" / "deeper" / "net.json"):
        assert_clean_error(export_json(output), f"{output}: error: cannot write the output",
                           f"'{tmp_path / 'plain'}' is a file, not a folder")
    assert (tmp_path / "plain").read_text() == "x"


@pytest.mark.parametrize("output", ["/proc/alexdsl-test.json", "/proc/self/alexdsl-test.json",
                                    "/sys/alexdsl-test.json"])
def test_output_in_proc_or_sys_is_a_clear_error(output: str) -> None:
    assert_clean_error(export_json(output), f"{output}: error: cannot write the output")
    assert not os.path.exists(output)


def test_symlink_to_a_regular_file_is_written_through(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    inode = target.stat().st_ino
    link = tmp_path / "link.json"
    link.symlink_to(target.name)
    result = export_json(link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == target.name  # the link stays
    assert target.read_text() == alexdsl.load(LENET).to_json()  # the target has the new text
    assert target.stat().st_ino != inode  # replaced by rename, not truncated in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_fifo_is_refused_and_kept(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert_clean_error(export_json(fifo), f"{fifo}: error: cannot write the output: it is a FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert leftovers(tmp_path) == []


def test_link_to_a_device_is_refused_and_the_device_kept(tmp_path: Path) -> None:
    """A link to /dev/null: a regression would replace the link in tmp_path, never the device."""
    before = os.stat("/dev/null")
    link = tmp_path / "null.json"
    link.symlink_to("/dev/null")
    assert_clean_error(export_json(link), f"{link}: error: cannot write the output: it is a character device",
                       "'/dev/null'")
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


@pytest.mark.parametrize("device", ["/dev/full", "/dev/null"])
def test_devices_are_refused_before_anything_is_written(device: str) -> None:
    """output_target only inspects: it refuses a device before a byte could be written (even as root)."""
    with pytest.raises(AlexDSLError, match=f"{device}: error: cannot write the output: it is a character device"):
        output_target(device)


def test_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(AlexDSLError, match="it is a directory"):
        write_text_atomic(tmp_path / "folder", "x")
    assert (tmp_path / "folder").is_dir()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    from alexdsl.fileio import atomic_path

    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(AlexDSLError, match="out.txt: error: cannot write the output"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    assert target.read_text() == "old" and leftovers(tmp_path) == []


# weights files ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lenet() -> alexdsl.Network:
    return alexdsl.load(LENET)


def lenet_weights(network: alexdsl.Network, dtype: str = "float32") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(shape).astype(dtype) for k, shape in network.state_keys().items()}


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def huge_npy_member() -> bytes:
    """An .npy header that declares 10**12 float32 values, followed by 16 bytes."""
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(16)


def zipped(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def corrupt_npz_files(network: alexdsl.Network) -> dict[str, bytes]:
    good = npz_bytes(lenet_weights(network))
    object_array = io.BytesIO()
    np.save(object_array, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return {
        "empty": b"",
        "random bytes": bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
        "truncated": good[: len(good) // 2],
        "truncated end": good[:-30],
        "a zip of text": zipped({"conv1.weight.npy": b"not an array"}),
        "a pickled object array": zipped({"conv1.weight.npy": object_array.getvalue()}),
        "a header declaring 4 TB": zipped({"conv1.weight.npy": huge_npy_member()}),
        "a deflated header declaring 4 TB": zipped({"conv1.weight.npy": huge_npy_member()}, zipfile.ZIP_DEFLATED),
        "bit flips": bytes(b ^ 0xFF if 200 <= i < 260 else b for i, b in enumerate(good)),
    }


def test_corrupt_npz_files_are_clear_errors(tmp_path: Path, lenet: alexdsl.Network) -> None:
    for label, data in corrupt_npz_files(lenet).items():
        path = tmp_path / "w.npz"
        path.write_bytes(data)
        with pytest.raises(AlexDSLError) as info:
            read_weights(path)
        assert str(info.value).startswith(f"{path}: error: "), label
        result = cli("export", LENET, "--format", "onnx", "-o", tmp_path / "w.onnx", "--weights", path)
        assert_clean_error(result, f"{path}: error: ")
        assert not (tmp_path / "w.onnx").exists()


def test_corrupt_safetensors_and_torch_files_are_clear_errors(tmp_path: Path) -> None:
    junk = bytes(np.random.default_rng(2).integers(0, 256, 2048, dtype=np.uint8))
    for name, data in [("w.safetensors", junk), ("w.safetensors", struct.pack("<Q", 2**40) + b"{}"),
                       ("w.pt", junk), ("w.pth", b"")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(AlexDSLError, match=f"{path}: error: not a readable"):
            read_weights(path)


def test_weights_that_are_not_regular_files_or_too_large(tmp_path: Path, lenet: alexdsl.Network,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    link = tmp_path / "zero.npz"
    link.symlink_to("/dev/zero")
    with pytest.raises(AlexDSLError, match="not a regular file"):
        read_weights(link)
    with pytest.raises(AlexDSLError, match="must be a .safetensors, .npz, .pt or .pth file"):
        read_weights(tmp_path / "w.bin")
    path = tmp_path / "w.npz"
    path.write_bytes(npz_bytes(lenet_weights(lenet)))
    monkeypatch.setenv("ALEXDSL_MAX_WEIGHTS_BYTES", "1000")
    with pytest.raises(AlexDSLError, match="over the limit of 1000 bytes"):
        read_weights(path)


def test_integer_and_bool_weights_are_refused(tmp_path: Path, lenet: alexdsl.Network) -> None:
    for dtype in ("int8", "bool", "int64", "complex64"):
        weights = lenet_weights(lenet)
        weights["conv1.weight"] = weights["conv1.weight"].astype(dtype)
        path = tmp_path / "w.npz"
        np.savez(path, **weights)
        with pytest.raises(AlexDSLError, match=rf"1 weights are not floating point: 'conv1.weight' \({dtype}\)"):
            read_weights(path)
        with pytest.raises(AlexDSLError, match="not floating-point arrays"):
            executor_backend.compile(lenet, weights, device="cpu")


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_float16_and_float64_are_converted_with_a_warning(tmp_path: Path, lenet: alexdsl.Network,
                                                          dtype: str) -> None:
    weights = lenet_weights(lenet, dtype)
    path = tmp_path / "w.npz"
    np.savez(path, **weights)
    with pytest.warns(WeightsWarning, match=f"converted {len(weights)} {dtype} weights to float32"):
        loaded = read_weights(path)
    assert all(v.dtype == np.float32 for v in loaded.values())
    np.testing.assert_array_equal(loaded["conv1.weight"], weights["conv1.weight"].astype(np.float32))
    result = cli("export", LENET, "--format", "onnx", "-o", tmp_path / "w.onnx", "--weights", path)
    assert result.exit_code == 0, result.output
    assert f"{path}: warning: converted {len(weights)} {dtype} weights to float32" in result.output


def test_the_three_formats_give_the_same_executor_and_torch_outputs(tmp_path: Path, lenet: alexdsl.Network) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    import alexdsl.torch

    weights = lenet_weights(lenet)
    save_file(weights, str(tmp_path / "w.safetensors"))
    np.savez(tmp_path / "w.npz", **weights)
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, tmp_path / "w.pt")
    x = np.random.default_rng(3).standard_normal((2, 1, 28, 28)).astype(np.float32)
    module = alexdsl.torch.build(lenet).eval()
    alexdsl.torch.load_weights(module, weights)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    for name in ("w.safetensors", "w.npz", "w.pt"):
        got = executor_backend.compile(lenet, tmp_path / name, device="cpu")(x)
        # float32 sums of terms up to ~1e5 round to ~1e-2 whatever the order: tolerance relative to the scale
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
        fresh = alexdsl.torch.build(lenet).eval()
        alexdsl.torch.load_weights(fresh, tmp_path / name)
        with torch.no_grad():
            np.testing.assert_array_equal(fresh(torch.from_numpy(x)).numpy(), want)


def test_weights_of_another_network_give_one_error_with_counts(tmp_path: Path, lenet: alexdsl.Network) -> None:
    other = alexdsl.load(EXAMPLES / "alexnet.adsl")
    path = tmp_path / "alexnet.npz"
    np.savez(path, **{k: np.zeros(1, np.float32) for k in other.state_keys()})  # shapes never read for these
    mine, theirs = set(lenet.state_keys()), set(other.state_keys())
    missing, unexpected = mine - theirs, theirs - mine
    shared = mine & theirs
    with pytest.raises(AlexDSLError) as info:
        load_for_network(path, lenet)
    assert len(info.value.diagnostics) == 1
    text = str(info.value)
    counts = [f"{len(missing)} missing", f"{len(unexpected)} unexpected", f"{len(shared)} mis-shaped"]
    assert text.startswith(f"{path}: error: the weights do not fit the network: "
                           + ", ".join(c for c in counts if not c.startswith("0 ")))
    assert f"unexpected ({len(unexpected)})" in text
    if len(unexpected) > 10:
        assert f"... and {len(unexpected) - 10} more" in text
    result = cli("compare", LENET, "--backends", "reference,cupy", "--weights", path)
    assert_clean_error(result, "the weights do not fit the network")
    assert result.output.count("error:") == 1


# checkpoints -------------------------------------------------------------------------------------------
SMALL = """network Small
input data: 3x8x8
input label: class(4)
conv1: conv(4, 3, pad=1) | relu | maxpool(2)
fc1: fc(4)
loss: softmax_loss(fc1, label)
accuracy: accuracy(fc1, label) @test
"""


def tampered_checkpoints(good: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Loadable (weights_only) checkpoints that are wrong in one place each."""
    import copy

    import torch

    def changed(path: tuple[Any, ...], value: Any = None, delete: bool = False) -> dict[str, Any]:
        state = copy.deepcopy(good)
        holder = state
        for key in path[:-1]:
            holder = holder[key]
        if delete:
            del holder[path[-1]]
        else:
            holder[path[-1]] = value
        return state

    first_param = next(iter(good["model"]))
    return {  # label: (checkpoint, what the error must say)
        "a list": ([1, 2, 3], "expected a dict, found list"),
        "a tensor": (torch.zeros(3), "expected a dict, found Tensor"),
        "no model": (changed(("model",), delete=True), "missing entries: model"),
        "negative epoch": (changed(("epoch",), -1), "epoch: expected an integer >= 0, found -1"),
        "epoch as text": (changed(("epoch",), "1"), "epoch: expected an integer, found str"),
        "negative step": (changed(("step",), -5), "step: expected an integer >= 0, found -5"),
        "float global_step": (changed(("global_step",), 1.5), "global_step: expected an integer, found float"),
        "model entry not a tensor": (changed(("model", first_param), 3), f"model['{first_param}']: expected a tensor"),
        "model entry reshaped": (changed(("model", first_param), torch.zeros(2, 2)), "1 mis-shaped"),
        "model entry removed": (changed(("model", first_param), delete=True), "1 missing"),
        "model extra entry": (changed(("model", "intruder.weight"), torch.zeros(1)), "unexpected (1): 'intruder"),
        "optimizer None": (changed(("optimizer",), None), "optimizer: expected a dict, found NoneType"),
        "no param groups": (changed(("optimizer", "param_groups"), []), "expected a list of 1, found a list of 0"),
        "state of parameter 99": (changed(("optimizer", "state", 99), {"momentum_buffer": torch.zeros(1)}),
                                  "99 is not one of this network's"),
        "scheduler without last_epoch": (changed(("scheduler", "last_epoch"), delete=True),
                                         "scheduler: missing entries last_epoch"),
        "scheduler last_epoch as text": (changed(("scheduler", "last_epoch"), "x"),
                                         "scheduler['last_epoch']: expected an integer, found str"),
        "history as text": (changed(("history",), "abc"), "history: expected a list, found str"),
        "history entry without loss": (changed(("history", 0), {"epoch": 1}), "history[0]['train_loss']"),
        "history longer than epochs": (changed(("history",), good["history"] * 3), "expected 1 entries"),
        "sums as a list": (changed(("sums",), []), "sums: expected a dict, found list"),
        "torch rng cut": (changed(("rng", "torch"), good["rng"]["torch"][:10]), "rng['torch']"),
        "numpy rng position": (changed(("rng", "numpy", "pos"), 10**6),
                               "rng['numpy']['pos']: expected an integer from 0 to 624, found 1000000"),
        "python rng state short": (changed(("rng", "python", "state"), torch.zeros(3, dtype=torch.int64)),
                                   "rng['python']['state']"),
        "no rng": (changed(("rng",), delete=True), "missing entries: rng"),
        "config batch_size text": (changed(("config", "batch_size"), "16"), "config['batch_size']"),
        "config None": (changed(("config",), None), "config: expected a dict"),
        "another batch size": (changed(("config", "batch_size"), 32), "written with batch_size=32"),
        **round_3_checkpoints(good, changed),
    }


def round_3_checkpoints(good: dict[str, Any], changed: Callable[..., dict[str, Any]]) -> dict[str, tuple[Any, str]]:
    """The tampered fields of issue 22: out-of-range RNG states, huge numbers, duplicated ids, bad buffers."""
    import torch

    keys = good["rng"]["numpy"]["keys"]
    parameter = next(iter(good["optimizer"]["state"]))
    buffer = good["optimizer"]["state"][parameter]["momentum_buffer"]
    params = good["optimizer"]["param_groups"][0]["params"]
    return {
        "numpy keys past 32 bits": (changed(("rng", "numpy", "keys"), keys + 2**40),
                                    "rng['numpy']['keys']: expected 32-bit unsigned words"),
        "numpy keys negative": (changed(("rng", "numpy", "keys"), keys - 2**33), "rng['numpy']['keys']"),
        "numpy pos 2**64": (changed(("rng", "numpy", "pos"), 2**64), "rng['numpy']['pos']: expected an integer"),
        "numpy has_gauss 7": (changed(("rng", "numpy", "has_gauss"), 7), "rng['numpy']['has_gauss']"),
        "numpy cached_gaussian 10**400": (changed(("rng", "numpy", "cached_gaussian"), 10**400),
                                          "rng['numpy']['cached_gaussian']: expected a finite number"),
        "numpy keys as floats": (changed(("rng", "numpy", "keys"), keys.double()), "rng['numpy']['keys']"),
        "python state past 32 bits": (changed(("rng", "python", "state"), good["rng"]["python"]["state"] + 2**40),
                                      "rng['python']['state']"),
        "python position 10**6": (changed(("rng", "python", "state"),
                                          torch.cat([good["rng"]["python"]["state"][:-1], torch.tensor([10**6])])),
                                  "rng['python']['state']"),
        "python version 99": (changed(("rng", "python", "version"), 99), "rng['python']['version']"),
        "python gauss text": (changed(("rng", "python", "gauss"), "x"), "rng['python']['gauss']"),
        "python gauss 10**400": (changed(("rng", "python", "gauss"), 10**400), "rng['python']['gauss']"),
        "torch rng garbage": (changed(("rng", "torch"), torch.full_like(good["rng"]["torch"], 255)), "rng['torch']"),
        "torch rng as int64": (changed(("rng", "torch"), good["rng"]["torch"].long()), "rng['torch']"),
        "scheduler last_epoch 10**400": (changed(("scheduler", "last_epoch"), 10**400), "scheduler['last_epoch']"),
        "scheduler last_epoch -5": (changed(("scheduler", "last_epoch"), -5), "scheduler['last_epoch']"),
        "scheduler last_epoch float": (changed(("scheduler", "last_epoch"), 1e300), "scheduler['last_epoch']"),
        "momentum 10**400": (changed(("optimizer", "param_groups", 0, "momentum"), 10**400),
                             "optimizer['param_groups'][0]['momentum']: expected a finite number"),
        "lr nan": (changed(("optimizer", "param_groups", 0, "lr"), float("nan")),
                   "optimizer['param_groups'][0]['lr']: expected a finite number"),
        "nesterov text": (changed(("optimizer", "param_groups", 0, "nesterov"), "yes"),
                          "optimizer['param_groups'][0]['nesterov']"),
        "duplicated param ids": (changed(("optimizer", "param_groups", 0, "params"), [params[0]] * len(params)),
                                 "optimizer['param_groups'][0]['params']: expected this network's parameter ids"),
        "momentum buffer an int": (changed(("optimizer", "state", parameter, "momentum_buffer"), 3),
                                   f"optimizer['state'][{parameter}]['momentum_buffer']: expected a tensor"),
        "momentum buffer reshaped": (changed(("optimizer", "state", parameter, "momentum_buffer"),
                                             torch.zeros(buffer.numel() + 1)),
                                     f"optimizer['state'][{parameter}]['momentum_buffer']: expected a tensor of shape"),
        "momentum buffer of ints": (changed(("optimizer", "state", parameter, "momentum_buffer"),
                                            torch.zeros(buffer.shape, dtype=torch.int64)),
                                    "expected a floating-point tensor"),
        "model entry of ints": (changed(("model", next(iter(good["model"]))),
                                        torch.zeros(next(iter(good["model"].values())).shape, dtype=torch.int32)),
                                "expected a floating-point tensor, found int32"),
        "momentum buffer past float32": (changed(("optimizer", "state", parameter, "momentum_buffer"),
                                                 buffer.double() + 1e300),
                                         f"optimizer['state'][{parameter}]['momentum_buffer']: expected finite float32 "
                                         f"values, found {buffer.numel()} that are not"),
        "model weight nan": (changed(("model", next(iter(good["model"]))),
                                     next(iter(good["model"].values())) * float("nan")), "expected finite float32"),
        "sums loss 10**400": (changed(("sums", "loss"), 10**400), "sums['loss']: expected a finite number"),
        "history loss inf": (changed(("history", 0, "train_loss"), float("inf")), "history[0]['train_loss']"),
        "global_step 10**400": (changed(("global_step",), 10**400), "global_step: expected an integer >= 0"),
    }


@pytest.mark.slow
def test_tampered_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from alexdsl.backends.torch.train import CHECKPOINT, train

    network = alexdsl.parse(SMALL)
    options: dict[str, Any] = {"batch_size": 16, "progress": False, "log": None}
    train(network, "synthetic:32", tmp_path / "good", epochs=1, **options)
    good = torch.load(tmp_path / "good" / CHECKPOINT, weights_only=True)
    variants = tampered_checkpoints(good)
    assert len(variants) >= 50
    run = tmp_path / "run"
    run.mkdir()
    for label, (state, message) in variants.items():
        torch.save(state, run / CHECKPOINT)
        with pytest.raises(AlexDSLError) as info:
            train(network, "synthetic:32", run, epochs=2, resume=True, **options)
        assert str(info.value).startswith(f"{run / CHECKPOINT}: error:"), label
        assert message in str(info.value), (label, str(info.value))
    (run / CHECKPOINT).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(AlexDSLError, match="cannot read the checkpoint"):
        train(network, "synthetic:32", run, epochs=2, resume=True, **options)
    torch.save(good, run / CHECKPOINT)  # the untouched checkpoint still resumes
    result = train(network, "synthetic:32", run, epochs=2, resume=True, **options)
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_negative_epoch_is_named(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from alexdsl.backends.torch.train import CHECKPOINT, train

    network = alexdsl.parse(SMALL)
    options: dict[str, Any] = {"batch_size": 16, "progress": False, "log": None}
    train(network, "synthetic:32", tmp_path, epochs=1, **options)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    state["epoch"] = -3
    torch.save(state, tmp_path / CHECKPOINT)
    with pytest.raises(AlexDSLError, match="epoch: expected an integer >= 0, found -3"):
        train(network, "synthetic:32", tmp_path, epochs=2, resume=True, **options)


# sizes that cannot fit ------------------------------------------------------------------------------------
HUGE = "network Huge\ninput data: 3x64x64\ninput label: class(10)\nf: fc(2000000000)\n" \
       "o: fc(10)\nloss: softmax_loss(o, label)\n"


@pytest.mark.parametrize("command", [
    ["run", "{file}", "--batch", "2"],
    ["train", "{file}", "--data", "synthetic:8", "--out", "{out}"],
    ["export", "{file}", "--format", "onnx", "-o", "{out}/huge.onnx"],
    ["compare", "{file}"],
])
def test_commands_refuse_what_cannot_fit(tmp_path: Path, command: list[str]) -> None:
    source = tmp_path / "huge.adsl"
    source.write_text(HUGE)
    args = [part.format(file=source, out=tmp_path / "out") for part in command]
    result = cli(*args, env={"ALEXDSL_MEMORY_LIMIT": "4G"})
    assert_clean_error(result, f"{source}: error: {command[0]} Huge with batch ", "more than the 4.0 GiB available")
    number, unit = re.search(r"needs about ([\d.]+) (\w+)", result.output).groups()
    needed = float(number) * 1024 ** ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"].index(unit)
    assert needed >= 4 * alexdsl.parse(HUGE).totals()["params"]  # at least the float32 weights
    assert not (tmp_path / "out").exists()


def test_memory_limit_variable_is_checked(tmp_path: Path) -> None:
    result = cli("run", LENET, "--batch", "2", env={"ALEXDSL_MEMORY_LIMIT": "lots"})
    assert_clean_error(result, "ALEXDSL_MEMORY_LIMIT='lots' is not a size")
    result = cli("run", LENET, "--batch", "2", env={"ALEXDSL_MEMORY_LIMIT": "1M"})
    assert_clean_error(result, "error: run LeNet with batch 2 needs about", "more than the 1.0 MiB available")
    assert cli("run", LENET, "--batch", "2", env={"ALEXDSL_MEMORY_LIMIT": "2G"}).exit_code == 0


# small ones ------------------------------------------------------------------------------------------------
def test_label_input_cannot_take_a_shape(tmp_path: Path) -> None:
    source = tmp_path / "small.adsl"
    source.write_text(SMALL)
    result = cli("shapes", source, "--input", "label=3x8x8")
    assert_clean_error(result, f"{source}:3:1: error: --input gives a shape to 'label', a label input",
                       "received: 3x8x8")


def test_backend_errors_name_the_file(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    source = tmp_path / "bad.adsl"
    source.write_text("network Bad\ninput data: 3x8x8\ntrain: conv(4, 3)\ny: relu\n")
    result = cli("compile", source, "--backend", "torch", "-o", tmp_path / "bad_torch.py")
    assert_clean_error(result, f"{source}:", "error:")  # a location, or at least the file


def test_train_refuses_an_unwritable_out_before_training(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    source = tmp_path / "small.adsl"
    source.write_text(SMALL)
    (tmp_path / "plain").write_text("x")
    out = tmp_path / "plain" / "run"
    result = cli("train", source, "--data", "synthetic:8", "--epochs", "1", "--out", out)
    assert_clean_error(result, f"{out / 'weights.safetensors'}: error: cannot write the output",
                       "is a file, not a folder")
    assert "epoch 1" not in result.output


def test_torch_files_must_be_plain_torch_save_archives(tmp_path: Path, lenet: alexdsl.Network) -> None:
    """.pt files are memory-mapped, so a storage is never read before its tensor is checked: the legacy
    format (which declares storage sizes it may not hold) and compressed entries (a deflate bomb) are refused."""
    torch = pytest.importorskip("torch", reason="reading .pt files needs PyTorch: pip install 'alexdsl[torch]'")
    tensors = {k: torch.from_numpy(v) for k, v in lenet_weights(lenet).items()}
    torch.save(tensors, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(AlexDSLError, match="not a torch.save zip archive.*saved before PyTorch 1.6"):
        load_for_network(tmp_path / "legacy.pt", lenet)
    torch.save(tensors, tmp_path / "plain.pt")
    with zipfile.ZipFile(tmp_path / "plain.pt") as plain, \
            zipfile.ZipFile(tmp_path / "packed.pt", "w", zipfile.ZIP_DEFLATED) as packed:
        for member in plain.infolist():
            packed.writestr(member.filename, plain.read(member))
    with pytest.raises(AlexDSLError, match="compressed entries .*which torch.save never writes"):
        load_for_network(tmp_path / "packed.pt", lenet)
    loaded = load_for_network(tmp_path / "plain.pt", lenet)
    assert all(loaded[k].flags.writeable and np.array_equal(loaded[k], v.numpy()) for k, v in tensors.items())
