"""Plugin ops: examples/plugins/scaled_tanh.py works in every command and on every backend.

The plugin is loaded the three documented ways (--plugin, ALEXDSL_PLUGINS, the alexdsl.ops
entry point); its values are checked against torch.nn.functional-based formulas and across
backends, and a lowering it does not declare gives a located error naming op and backend.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import EXAMPLES, ROOT

import alexdsl
from alexdsl.cli import main
from alexdsl.errors import AlexDSLError
from alexdsl.ops import registry
from alexdsl.plugins import load_plugins

PLUGIN = str(EXAMPLES / "plugins" / "scaled_tanh.py")
DYT = str(EXAMPLES / "plugins" / "dyt.py")  # a plugin op with weights
LENET5 = str(EXAMPLES / "plugins" / "lenet5.adsl")


def cli(*args: str) -> CliRunner:
    result = CliRunner().invoke(main, ["--plugin", PLUGIN, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_without_the_plugin_the_op_is_unknown() -> None:
    result = CliRunner().invoke(main, ["check", LENET5])
    assert result.exit_code == 1 and "unknown op 'scaled_tanh'" in result.output


def test_check_shapes_fmt_and_draw_know_the_plugin_op(tmp_path: Path) -> None:
    assert "ok (15 layers, 61,706 params)" in cli("check", LENET5).output  # LeNet-5 with a full C3: 61,706
    table = cli("shapes", LENET5).output
    assert "c1_scaled_tanh  scaled_tanh   6x28x28" in table
    cli("fmt", "--check", LENET5)
    cli("draw", LENET5, "-o", str(tmp_path / "lenet5.dot"))
    assert "scaled_tanh" in (tmp_path / "lenet5.dot").read_text()


def test_every_backend_computes_the_plugin_op(tmp_path: Path) -> None:
    """torch module, NumPy executor, ONNX Runtime and the reference agree layer by layer."""
    pytest.importorskip("onnxruntime")
    result = cli("compare", LENET5, "--backends", "reference,torch,cupy,onnx", "--tolerance", "1e-5")
    assert "c5_scaled_tanh" in result.output


def test_plugin_values_match_the_formula() -> None:
    torch = pytest.importorskip("torch")
    load_plugins([PLUGIN])
    from alexdsl.backends.executor import compile as compile_network
    from alexdsl.torch import build

    net = alexdsl.parse("network P\ninput x: 3x5x5\ny: scaled_tanh(a=1.5, b=0.25)\n")
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 5)).astype(np.float32) * 4
    expected = 1.5 * np.tanh(0.25 * x.astype(np.float64))
    executor = compile_network(net, device="cpu")
    np.testing.assert_allclose(executor(x), expected, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(build(net)(torch.from_numpy(x)).numpy(), expected, rtol=1e-6, atol=1e-6)


def test_compile_run_export_and_train_with_the_plugin(tmp_path: Path) -> None:
    cli("compile", LENET5, "--backend", "cupy", "-o", str(tmp_path / "lenet5_cupy.py"))
    cli("compile", LENET5, "--backend", "torch", "-o", str(tmp_path / "lenet5_torch.py"))
    assert "op_function('scaled_tanh')" in (tmp_path / "lenet5_cupy.py").read_text()
    assert "1.7159 * torch.tanh(0.6667 * c1)" in (tmp_path / "lenet5_torch.py").read_text()
    for backend in ("cupy", "torch"):
        cli("run", LENET5, "--backend", backend, "--batch", "2")
    pytest.importorskip("onnx")
    cli("export", LENET5, "--format", "onnx", "-o", str(tmp_path / "lenet5.onnx"))
    result = cli("train", LENET5, "--data", "synthetic:64", "--epochs", "1", "--out", str(tmp_path / "run"),
                 "--quiet")
    assert (tmp_path / "run" / "weights.safetensors").exists(), result.output


def test_the_plugin_op_imports_back_from_onnx(tmp_path: Path) -> None:
    """Its from_onnx takes its own export's Mul(Tanh(Mul(x, b)), a): the same network, the same layer names."""
    pytest.importorskip("onnx")
    load_plugins([PLUGIN])
    cli("export", LENET5, "--format", "onnx", "-o", str(tmp_path / "lenet5.onnx"))
    result = cli("import", "onnx", str(tmp_path / "lenet5.onnx"), "-o", str(tmp_path / "again.adsl"))
    assert result.exit_code == 0, result.output
    from alexdsl.interop.onnx_import import import_onnx

    original = alexdsl.load(LENET5)
    imported, weights = import_onnx(tmp_path / "lenet5.onnx")
    tanhs = [layer for layer in imported.layers() if layer.op == "scaled_tanh"]
    assert [t.name for t in tanhs] == [t.name for t in original.layers() if t.op == "scaled_tanh"]
    assert all(t.attrs == original.layer(t.name).attrs for t in tanhs)
    assert "| scaled_tanh" in (tmp_path / "again.adsl").read_text()


def test_a_lowering_the_plugin_lacks_is_a_located_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--plugin", PLUGIN, "export", LENET5, "--format", "prototxt", "-o",
                                       str(tmp_path / "x.prototxt")])
    assert result.exit_code == 1
    assert "lenet5.adsl:7:19: error: op 'scaled_tanh' has no Caffe layer (layer 'c1_scaled_tanh')" in result.output
    assert not (tmp_path / "x.prototxt").exists()
    load_plugins([PLUGIN])
    op = registry.lookup("scaled_tanh")
    registry.register(dataclasses.replace(op, lower=dataclasses.replace(op.lower, executor=None, torch=None)),
                      override=True)
    net = alexdsl.load(LENET5)
    from alexdsl.backends.executor.codegen import generate_source as cupy_source
    from alexdsl.backends.torch.codegen import generate_source as torch_source

    for generate, backend in ((cupy_source, "cupy"), (torch_source, "torch")):
        with pytest.raises(AlexDSLError, match=f"op 'scaled_tanh' has no {backend} lowering") as info:
            generate(net)
        assert str(info.value).startswith(f"{LENET5}:7:19: error:")


def test_a_name_already_taken_needs_override() -> None:
    relu = registry.lookup("relu")
    with pytest.raises(ValueError, match="already registered.*override=True"):
        registry.register(relu)
    assert registry.register(dataclasses.replace(relu, summary="Mine: max(x, 0)."), override=True)
    assert registry.lookup("relu").summary == "Mine: max(x, 0)."


def test_plugin_errors_are_plain_messages(tmp_path: Path) -> None:
    clash = tmp_path / "clash.py"
    clash.write_text("from alexdsl.ops.registry import lookup, register\nregister(lookup('relu'))\n")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    for plugin, message in ((clash, "op 'relu' is already registered"), (broken, "RuntimeError: boom"),
                            ("no_such_module_here", "No module named 'no_such_module_here'")):
        result = CliRunner().invoke(main, ["--plugin", str(plugin), "check", LENET5])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_highlighting_knows_a_loaded_plugin_op() -> None:
    from pygments.token import Name

    from alexdsl.highlight import AlexDSLLexer

    def kind(text: str) -> object:
        return next(t for t, v in AlexDSLLexer().get_tokens(text) if v == "scaled_tanh")

    assert kind("y: scaled_tanh\n") == Name
    load_plugins([PLUGIN])
    assert kind("y: scaled_tanh\n") == Name.Builtin


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "alexdsl.cli", *args], capture_output=True, text=True,
                            env={**os.environ, **env}, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_plugins_from_the_environment_and_from_entry_points(tmp_path: Path) -> None:
    _run(["check", LENET5], {"ALEXDSL_PLUGINS": PLUGIN})
    package = tmp_path / "site"
    (package / "mypkg_ops-1.0.dist-info").mkdir(parents=True)
    (package / "mypkg_ops.py").write_text(Path(PLUGIN).read_text())
    (package / "mypkg_ops-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg-ops\n"
                                                                  "Version: 1.0\n")
    (package / "mypkg_ops-1.0.dist-info" / "entry_points.txt").write_text(textwrap.dedent("""\
        [alexdsl.ops]
        scaled_tanh = mypkg_ops
    """))
    path = os.pathsep.join([str(package), os.environ.get("PYTHONPATH", "")])
    result = _run(["shapes", LENET5], {"PYTHONPATH": path, "ALEXDSL_PLUGINS": ""})
    assert "scaled_tanh" in result.stdout


def test_the_excerpts_in_extending_md_are_from_the_plugins() -> None:
    """docs/extending.md quotes examples/plugins/*.py (``...`` stands for what it leaves out)."""
    import re

    doc = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    sources = {path.name: {line.strip() for line in path.read_text(encoding="utf-8").splitlines()}
               for path in (EXAMPLES / "plugins").glob("*.py")}
    excerpts = re.findall(r"```py\n(.*?)```", doc, re.S)
    assert len(excerpts) == 4
    for excerpt in excerpts:
        lines = [line.strip() for line in excerpt.splitlines() if line.strip() and "..." not in line]
        holders = [name for name, source in sources.items() if all(line in source for line in lines)]
        assert holders, f"no example plugin holds every line of:\n{excerpt}"


def test_a_torch_lowering_needs_a_forward_or_a_module() -> None:
    from alexdsl.ops.lowering import TorchLowering, call_module

    assert TorchLowering(module=lambda layer, ctx: "nn.Identity()").forward is call_module
    with pytest.raises(ValueError, match="needs a forward expression, or a module to call"):
        TorchLowering()


def test_a_plugin_op_with_weights_computes_its_formula_everywhere(tmp_path: Path) -> None:
    """dyt's weights reach the executor's function and torch's ParameterDict, and survive ONNX both ways."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    load_plugins([DYT])
    from alexdsl.backends.executor import compile as compile_network
    from alexdsl.interop.onnx import export_onnx
    from alexdsl.interop.onnx_import import import_onnx
    from alexdsl.torch import build, load_weights

    net = alexdsl.parse("network D\ninput x: 4x5x5\ny: dyt\n")
    rng = np.random.default_rng(0)
    weights = {"y.alpha": np.array([0.7], np.float32), "y.weight": rng.normal(size=4).astype(np.float32),
               "y.bias": rng.normal(size=4).astype(np.float32)}
    x = rng.normal(size=(2, 4, 5, 5)).astype(np.float32) * 3
    expected = (weights["y.weight"].reshape(-1, 1, 1) * np.tanh(0.7 * x.astype(np.float64))
                + weights["y.bias"].reshape(-1, 1, 1))
    np.testing.assert_allclose(compile_network(net, weights, device="cpu")(x), expected, rtol=1e-5, atol=1e-5)
    module = build(net)
    assert sorted(module.state_dict()) == ["y.alpha", "y.bias", "y.weight"]
    load_weights(module, {key: torch.from_numpy(value) for key, value in weights.items()})
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), expected, rtol=1e-5, atol=1e-5)
    path = tmp_path / "d.onnx"
    path.write_bytes(export_onnx(net, weights).SerializeToString())
    imported, imported_weights = import_onnx(path)
    assert [layer.op for layer in imported.layers()] == ["input", "dyt"]
    for key, value in weights.items():
        np.testing.assert_array_equal(imported_weights[key], value)


@pytest.mark.slow
def test_the_op_contract_tests_run_over_a_plugin_named_in_the_environment() -> None:
    """The command docs/extending.md gives: the suite loads $ALEXDSL_PLUGINS before collecting."""
    import re
    import shlex

    doc = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    line = re.search(r"^\$ ALEXDSL_PLUGINS=(\S+) python (-m pytest .*)$", doc, re.M)
    assert line, "docs/extending.md no longer shows how to run the contract tests on a plugin"
    result = subprocess.run([sys.executable, *shlex.split(line.group(2))], capture_output=True, text=True,
                            env={**os.environ, "ALEXDSL_PLUGINS": line.group(1)}, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.search(r"\b(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 5 and "failed" not in result.stdout, result.stdout  # dyt's cases ran
