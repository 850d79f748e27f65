"""The test suite itself: skip reasons say how to enable a test, and CI runs README's test command."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
from types import SimpleNamespace

from conftest import EXTRA_OF_MODULE, ROOT, add_install_hint


def test_a_skip_for_a_missing_package_says_how_to_install_it() -> None:
    report = SimpleNamespace(skipped=True, longrepr=("t.py", 3, "Skipped: could not import 'onnxruntime': "
                                                                "No module named 'onnxruntime'"))
    add_install_hint(report)
    assert report.longrepr[2].endswith("; to run it: pip install -e \".[onnx]\"")
    torch = SimpleNamespace(skipped=True, longrepr=("t.py", 3, "Skipped: could not import 'torch': no"))
    add_install_hint(torch)
    assert "pip install torch==2.13.0 && pip install -e \".[torch]\"" in torch.longrepr[2]
    other = SimpleNamespace(skipped=True, longrepr=("t.py", 3, "Skipped: no CUDA device"))
    add_install_hint(other)
    assert other.longrepr[2] == "Skipped: no CUDA device"


def test_the_hints_name_extras_that_exist() -> None:
    extras = importlib.metadata.metadata("alexdsl").get_all("Provides-Extra")
    assert set(EXTRA_OF_MODULE.values()) <= set(extras)


def readme_test_command() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = re.search(r"^\$ pip install torch.* && (pytest [^\n]*)$", readme, re.M)
    assert line, "README.md no longer shows the test command"
    return shlex.split(line.group(1))


def test_ci_runs_readme_test_command_then_the_slow_tests() -> None:
    command = readme_test_command()
    assert command[command.index("-m") + 1] == "not gpu and not slow"
    ci = [shlex.split(line, comments=True) for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if "pytest" in line]
    runs = [words[3:words.index("||")] for words in ci if words[:3] == ["run_tests", "python", "-m"] and "||" in words]
    assert command in runs, "CI no longer runs README's test command"
    assert ["pytest", "-q", "-m", "slow and not gpu"] in runs
